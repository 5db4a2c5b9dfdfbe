-- Argo CD health of a Greenlight Stage (greenlight.dev/v1alpha1).
--
-- Argo CD runs a health check from argocd-cm without the Lua standard libraries unless
-- `resource.customizations.useOpenLibs.greenlight.dev_Stage` is set, so this script uses
-- only the base library (no string.*, no math.*). The messages are the controller's own
-- (status.message and the kstatus conditions), so Argo CD says what `kubectl get stage`
-- says.
--
-- Decisions, in order:
--   no status, or status.observedGeneration behind metadata.generation -> Progressing
--   phase Invalid                                                      -> Degraded
--   a canary rollout paused for a person (pause step without a
--     duration, analysis that ran out of data, onFailure: pause), and
--     stalled for no other reason                                      -> Suspended
--     The controller reports this pause as Stalled; it is not broken, it waits for a
--     promote or an abort, which is what Suspended means in Argo CD (as for Argo Rollouts).
--   Stalled=True (rolled back, rollback stuck, a write refused,
--     traffic weight fought over)                                      -> Degraded
--   phase Failed (the last rollout was rolled back)                     -> Degraded
--   phase Verifying with Stalled reason VerificationHeld (verification
--     ran out of time with onTimeout: hold; a person decides)          -> Suspended
--   phase Progressing, Verifying or RollingBack                        -> Progressing
--   phase Waiting:
--     gate reported Invalid (missing or misconfigured gate): nothing
--       moves until someone fixes it                                    -> Degraded
--     manual trigger and the candidate waits at a gate: only people
--       (approvals) move it on                                          -> Suspended
--     anything else (upstream stages, schedule, window, a gate that
--       rechecks by itself): the stage runs its current release fine    -> Healthy
--   phase Idle                                                          -> Healthy
--   otherwise the kstatus conditions decide (Ready, Progressing/Reconciling).

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

-- The first argument that is a non-empty string.
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
  return result("Progressing", "waiting for the Greenlight controller to report the stage's status")
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
local rollout = status.rollout
local canary = nil
local forward = false
if rollout ~= nil then
  canary = rollout.canary
  forward = rollout.direction == "Forward"
end

if phase == "Invalid" then
  return result("Degraded", text(status.message, stalled and stalled.message) or "the stage is invalid")
end

-- The controller reports the pause itself as Stalled with reason Paused; a Stalled for any
-- other reason during the pause (a refused write, a contested route) is a fault.
local pausedOnly = stalled == nil or stalled.status ~= "True" or stalled.reason == "Paused"
if phase == "Progressing" and forward and canary ~= nil and canary.phase == "Paused" and pausedOnly then
  -- The controller's message names the step, the weight and why it waits.
  return result("Suspended", text(status.message, stalled and stalled.message, canary.pausedReason) or "canary paused")
end

if phase == "Verifying" and isTrue(stalled) and stalled.reason == "VerificationHeld" then
  return result("Suspended", text(status.message, stalled.message) or "verification held for a person")
end

if isTrue(stalled) then
  if phase == "Failed" then
    -- status.message also names the release the stage runs again.
    return result("Degraded", text(status.message, stalled.message) or "the last rollout failed")
  end
  return result("Degraded", text(stalled.message, status.message) or "stalled")
end

if phase == "Failed" then
  return result("Degraded", text(status.message) or "the last rollout failed and was rolled back")
end

if phase == "Progressing" or phase == "Verifying" or phase == "RollingBack" then
  local message = text(status.message, progressing and progressing.message) or "rolling out"
  -- A Stepping message already says "canary at N%". While the canary starts or is being
  -- promoted the weight is added; once promoted (Baking) all traffic is on the primary.
  if phase == "Progressing" and forward and canary ~= nil and canary.weight ~= nil
      and (canary.phase == "Starting" or canary.phase == "Promoting") then
    message = message .. " (canary weight " .. canary.weight .. "%)"
  end
  return result("Progressing", message)
end

if phase == "Waiting" and isTrue(ready) then
  local message = text(ready.message, status.message) or "a release waits"
  if ready.reason == "GateInvalid" then
    return result("Degraded", message)
  end
  local trigger = obj.spec and obj.spec.trigger
  if trigger ~= nil and trigger.type == "manual" and ready.reason == "WaitingForGate" then
    return result("Suspended", message)
  end
  return result("Healthy", message)
end

if phase == "Idle" and isTrue(ready) then
  return result("Healthy", text(ready.message, status.message) or "idle")
end

-- A phase this script does not know: fall back on the kstatus conditions.
if isTrue(ready) then
  return result("Healthy", text(ready.message, status.message) or "ready")
end
if isTrue(progressing) or isTrue(reconciling) then
  return result("Progressing", text(status.message, progressing and progressing.message,
    reconciling and reconciling.message) or "reconciling")
end
return result("Unknown", text(status.message, ready and ready.message) or "the stage reports no known state")
