-- Asks the stage to roll out again the release whose rollout failed and was rolled back
-- here. The release is the newest entry of status.history, which is that rollout whenever
-- the stage's phase is Failed; without one the action stops with an error rather than
-- create a command the controller would refuse.
--
-- Greenlight is steered by creating a StageCommand (greenlight.dev/v1alpha1), never by
-- writing to the Stage: this action returns one "create" operation (Argo CD 2.8+) and no
-- patch. Greenlight's admission webhook stamps who asked (spec.requestedBy) and binds the
-- command to this Stage object (spec.stageRef); whatever a client writes there is replaced,
-- so neither is set here. Created by Argo CD, the requester is Argo CD's own service account;
-- spec.comment says the request came through Argo CD.
--
-- The name is "retry-<stage>-<UTC time to the second>" (the prefix kubectl greenlight uses):
-- Argo CD creates with the given name, and os.date is one of the two os functions its
-- sandbox keeps. The command carries no Argo CD tracking label and no ownerReference: it is
-- a kept record, neither pruned with the Application nor collected with the Stage.

local os = require("os")

local release = nil
if obj.status ~= nil and obj.status.phase == "Failed" and obj.status.history ~= nil then
  local last = obj.status.history[1]
  if last ~= nil and last.outcome == "RolledBack" then
    release = last.release
  end
end
if release == nil then
  error("stage " .. obj.metadata.name .. " has no rolled-back release to retry (retry applies when its phase is Failed)", 0)
end

local command = {}
command.apiVersion = "greenlight.dev/v1alpha1"
command.kind = "StageCommand"
command.metadata = {}
command.metadata.name = "retry-" .. obj.metadata.name .. "-" .. os.date("!%Y%m%d%H%M%S")
command.metadata.namespace = obj.metadata.namespace
command.spec = {}
command.spec.stage = obj.metadata.name
command.spec.action = "retry"
command.spec.release = release
command.spec.comment = "requested through Argo CD"

local impacted = {}
impacted.operation = "create"
impacted.resource = command
local result = {}
result[1] = impacted
return result
