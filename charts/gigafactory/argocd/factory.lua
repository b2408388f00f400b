-- Argo CD health of a gigafactory.dev/Factory (argocd-cm: resource.customizations.health.gigafactory.dev_Factory)
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for runner pods to announce themselves"
  return hs
end
local ready = obj.status.readyPods or 0
local phase = obj.status.phase
if phase == "Ready" then
  hs.status = "Healthy"
  hs.message = ready .. " runner pods ready"
elseif phase == "Draining" then
  hs.status = "Suspended"
  hs.message = "cordoned or being deleted: no new jobs"
else
  hs.status = "Degraded"
  hs.message = "no runner pod has a fresh heartbeat"
end
return hs
