-- Argo CD health of a gigafactory.dev/AgentJob (argocd-cm: resource.customizations.health.gigafactory.dev_AgentJob)
local hs = {}
local phase = nil
if obj.status ~= nil then phase = obj.status.phase end
local function condition_message(kind)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == kind and c.message ~= nil and c.message ~= "" then return c.message end
    end
  end
  return nil
end
if obj.spec ~= nil and obj.spec.suspend == true and phase ~= "Succeeded" and phase ~= "Failed" and phase ~= "Cancelled" then
  hs.status = "Suspended"
  hs.message = "spec.suspend is set"
elseif phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "the agent's branch was pushed"
  if obj.status.result ~= nil and obj.status.result.branch ~= nil then
    hs.message = "pushed " .. obj.status.result.branch
  end
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = condition_message("Failed") or "the job failed"
elseif phase == "Cancelled" then
  hs.status = "Suspended"
  hs.message = "the job was cancelled"
elseif phase == "Running" then
  hs.status = "Progressing"
  hs.message = "the agent is running"
elseif phase == "Bound" then
  hs.status = "Progressing"
  hs.message = "bound to a runner, waiting for its claim"
else
  hs.status = "Progressing"
  hs.message = condition_message("Scheduled") or "waiting to be scheduled"
end
return hs
