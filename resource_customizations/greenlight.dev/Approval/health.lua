-- Argo CD health of a Greenlight Approval (greenlight.dev/v1alpha1).
--
-- An Approval is one person's decision, immutable once created. Its status has no
-- observedGeneration of its own and one condition, `Verified`:
--   True,  reason Verified         the approver stamp is this operator's and the decision is
--                                  recorded in the Release's audit trail; the message says
--                                  at which approval gate it counts, or why it does not
--   True,  reason ReleaseNotFound  signed, but its Release (or Stage) does not exist yet; the
--          or StageNotFound        controller takes it up when it appears (Git applies in any
--                                  order)
--   False, reason Unverified       no valid stamp: the decision counts nowhere
--
--   no status or no Verified condition, or Verified observed an older
--     generation                                                      -> Progressing
--   Stalled=True (should the kind get kstatus conditions)             -> Degraded
--   Verified=False                                                    -> Degraded
--   Verified=True, reason Verified                                    -> Healthy
--   Verified=True, Release or Stage not found yet                     -> Progressing
--
-- A verified decision that no gate takes (wrong group, self-approval, given for an earlier
-- Release of that name) stays Healthy: only the message tells it apart, and reading that
-- needs the string library, which Argo CD withholds from argocd-cm health checks by
-- default. A `reject` decision is as healthy as an `approve`: the Release shows the outcome.

local hs = {}

local function condition(status, wanted)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function text(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "string" and v ~= "" then
      return v
    end
  end
  return nil
end

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

local status = obj.status
local verified = condition(status, "Verified")
local stalled = condition(status, "Stalled")
local generation = tonumber(obj.metadata.generation)

if verified == nil and stalled == nil then
  return result("Progressing", "waiting for the Greenlight controller to verify the approver stamp")
end
local observed = verified and tonumber(verified.observedGeneration)
if generation ~= nil and observed ~= nil and observed < generation then
  return result("Progressing", "waiting for the Greenlight controller to observe generation " .. generation)
end
if stalled ~= nil and stalled.status == "True" then
  return result("Degraded", text(stalled.message, status.message) or "stalled")
end
if verified == nil then
  return result("Progressing", "waiting for the Greenlight controller to verify the approver stamp")
end

local message = text(verified.message, status.message)
if verified.status == "False" then
  return result("Degraded", message or "the approver stamp does not verify: the decision counts nowhere")
end
if verified.status == "True" and verified.reason == "Verified" then
  return result("Healthy", message or "verified and recorded")
end
if verified.status == "True" then
  return result("Progressing", "signed, waiting for its release and stage: " .. (message or text(verified.reason) or "not found yet"))
end
return result("Progressing", message or "waiting for the Greenlight controller to verify the approver stamp")
