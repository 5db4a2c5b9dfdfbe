-- Argo CD health of a Greenlight Release (greenlight.dev/v1alpha1).
--
-- Base library only (Argo CD runs argocd-cm health checks without string.* and math.*
-- unless useOpenLibs is set). Messages are the controller's: status.message, followed by
-- status.summary (one `stage=Phase` per stage of the pipeline) where it helps.
--
--   no status, or status.observedGeneration behind metadata.generation -> Progressing
--   phase Invalid (the spec does not validate)                          -> Degraded
--   phase Failed (failed at a stage; never promoted further)           -> Degraded
--   Stalled=True (a stage's write is refused by the apiserver)         -> Degraded
--   phase Succeeded (rolled out at every stage)                         -> Healthy
--   phase Superseded (a newer release took its place): nothing is wrong
--     with it, it simply will not go further                            -> Healthy
--   phase Progressing or Pending                                        -> Progressing
--   otherwise the kstatus conditions decide.

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

local function isTrue(c)
  return c ~= nil and c.status == "True"
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

-- "message (dev=Succeeded test=Progressing prod=-)"
local function withSummary(message, summary)
  if text(summary) == nil then
    return message
  end
  return message .. " (" .. summary .. ")"
end

local status = obj.status
local generation = tonumber(obj.metadata.generation)
if status == nil then
  return result("Progressing", "waiting for the Greenlight controller to report the release's status")
end
local observed = tonumber(status.observedGeneration)
if generation ~= nil and (observed == nil or observed < generation) then
  return result("Progressing", "waiting for the Greenlight controller to observe generation " .. generation)
end

local phase = status.phase
local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
local progressing = condition(status, "Progressing")
local reconciling = condition(status, "Reconciling")

if phase == "Invalid" then
  return result("Degraded", "invalid spec: " .. (text(status.message, stalled and stalled.message) or "see the conditions"))
end
if phase == "Failed" then
  return result("Degraded", withSummary(text(status.message, stalled and stalled.message) or "failed", status.summary))
end
if isTrue(stalled) then
  return result("Degraded", withSummary(text(stalled.message, status.message) or "stalled", status.summary))
end
if phase == "Succeeded" then
  return result("Healthy", withSummary(text(status.message) or "rolled out at every stage", status.summary))
end
if phase == "Superseded" then
  return result("Healthy", "superseded by a newer release: " .. (text(status.message) or "it goes no further"))
end
if phase == "Progressing" or phase == "Pending" then
  return result("Progressing", withSummary(text(status.message, progressing and progressing.message) or phase, status.summary))
end

if isTrue(ready) then
  return result("Healthy", text(ready.message, status.message) or "ready")
end
if isTrue(progressing) or isTrue(reconciling) then
  return result("Progressing", text(status.message, progressing and progressing.message,
    reconciling and reconciling.message) or "reconciling")
end
return result("Unknown", text(status.message) or "the release reports no known state")
