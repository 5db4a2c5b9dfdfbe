-- Which StageCommand actions Argo CD offers on a Greenlight Stage, and when they are enabled.
-- Each action creates a StageCommand; none writes to the Stage. An action is enabled only
-- when the controller would act on the command rather than refuse it:
--
--   promote  a forward canary rollout that is Stepping (skip the remaining steps) or Paused
--            (go on past a `pause: {}` step, an analysis pause or a paused bake). The
--            controller refuses a promote with no rollout in progress, on a rolling rollout
--            (no steps to skip), and while the canary is Starting, Promoting or Baking. A
--            stage waiting at a manual trigger is moved on by Approvals, not by a promote.
--            Also a verification held past its timeout (`onTimeout: hold`): a promote
--            accepts the release as it runs.
--   abort    a forward rollout in progress, rolling or canary, in any canary phase. A
--            rollback is not aborted.
--   retry    phase Failed: the newest history entry is the rollout that was rolled back,
--            and that release is the one rolled out again.
--
-- A stage whose phase is Invalid refuses every command, so all are disabled then.
-- Base library only (no string.*), as Argo CD runs these scripts.

local actions = {}
actions["promote"] = { ["disabled"] = true, ["iconClass"] = "fa fa-fw fa-forward", ["displayName"] = "Promote" }
actions["abort"] = { ["disabled"] = true, ["iconClass"] = "fa fa-fw fa-stop", ["displayName"] = "Abort" }
actions["retry"] = { ["disabled"] = true, ["iconClass"] = "fa fa-fw fa-redo", ["displayName"] = "Retry" }

local status = obj.status
if status == nil or status.phase == "Invalid" then
  return actions
end

local rollout = status.rollout
if rollout ~= nil and rollout.direction == "Forward" then
  actions["abort"]["disabled"] = false
  local canary = rollout.canary
  if canary ~= nil and (canary.phase == "Stepping" or canary.phase == "Paused") then
    actions["promote"]["disabled"] = false
  end
  if rollout.checks ~= nil and rollout.checks.held == true then
    actions["promote"]["disabled"] = false
  end
end

if status.phase == "Failed" and rollout == nil and status.history ~= nil then
  local last = status.history[1]
  if last ~= nil and last.outcome == "RolledBack" and last.release ~= nil then
    actions["retry"]["disabled"] = false
  end
end

return actions
