-- Asks the stage to abort its rollout in progress: traffic back to the primary and a rollback
-- to the release that ran before. The controller honours an abort whatever the generation.
--
-- Greenlight is steered by creating a StageCommand (greenlight.dev/v1alpha1), never by
-- writing to the Stage: this action returns one "create" operation (Argo CD 2.8+) and no
-- patch. Greenlight's admission webhook stamps who asked (spec.requestedBy) and binds the
-- command to this Stage object (spec.stageRef); whatever a client writes there is replaced,
-- so neither is set here. Created by Argo CD, the requester is Argo CD's own service account;
-- spec.comment says the request came through Argo CD.
--
-- The name is "abort-<stage>-<UTC time to the second>" (the prefix kubectl greenlight uses):
-- Argo CD creates with the given name, and os.date is one of the two os functions its
-- sandbox keeps. The command carries no Argo CD tracking label and no ownerReference: it is
-- a kept record, neither pruned with the Application nor collected with the Stage.

local os = require("os")

local command = {}
command.apiVersion = "greenlight.dev/v1alpha1"
command.kind = "StageCommand"
command.metadata = {}
command.metadata.name = "abort-" .. obj.metadata.name .. "-" .. os.date("!%Y%m%d%H%M%S")
command.metadata.namespace = obj.metadata.namespace
command.spec = {}
command.spec.stage = obj.metadata.name
command.spec.action = "abort"
command.spec.comment = "requested through Argo CD"

local impacted = {}
impacted.operation = "create"
impacted.resource = command
local result = {}
result[1] = impacted
return result
