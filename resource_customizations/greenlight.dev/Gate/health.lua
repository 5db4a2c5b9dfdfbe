-- Argo CD health of a Greenlight Gate (greenlight.dev/v1alpha1).
--
-- A Gate's status says whether its spec compiles and resolves (Secrets, addresses), not
-- what it last measured: verdicts live on the Releases and Stages that use it. Base library
-- only (Argo CD runs argocd-cm health checks without string.* unless useOpenLibs is set).
--
--   no status, or status.observedGeneration behind metadata.generation -> Progressing
--   Stalled=True (invalid spec, a Secret or address it cannot resolve) -> Degraded
--   Ready=True                                                          -> Healthy
--   otherwise                                                           -> Progressing

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

local status = obj.status
local generation = tonumber(obj.metadata.generation)
if status == nil then
  return result("Progressing", "waiting for the Greenlight controller to check the gate")
end
local observed = tonumber(status.observedGeneration)
if generation ~= nil and (observed == nil or observed < generation) then
  return result("Progressing", "waiting for the Greenlight controller to observe generation " .. generation)
end

local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
local progressing = condition(status, "Progressing")
local reconciling = condition(status, "Reconciling")

if isTrue(stalled) then
  local message = text(stalled.message, status.message) or "see the conditions"
  if stalled.reason == "InvalidSpec" then
    message = "invalid gate: " .. message
  end
  return result("Degraded", message)
end
if isTrue(ready) then
  return result("Healthy", text(ready.message, status.message) or "the gate is valid")
end
return result("Progressing", text(status.message, progressing and progressing.message,
  reconciling and reconciling.message) or "waiting for the Greenlight controller to check the gate")
