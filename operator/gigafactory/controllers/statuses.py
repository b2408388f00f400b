"""Factory statuses: what each Factory's status says of its runner pods, slots and scaling, written
only when it changed (a heartbeat renewal must not rewrite the Factory)."""

import collections
from collections.abc import Mapping
from typing import Any

from gigafactory import constants, kubeclient
from gigafactory.binding import patches
from gigafactory.controllers import base
from gigafactory.models import objects
from gigafactory.scheduling import snapshots


class FactoryStatuses(base.Base):
    def _factory_status_writes(self, snap: snapshots.Snapshot, used: Mapping[snapshots.PodKey, int],
                               scaling: Mapping[str, base.Body] | None = None, refused: Mapping[str, str] | None = None) -> list[Any]:
        by_factory: dict[str, list[snapshots.PodInfo]] = collections.defaultdict(list)
        for pod in snap.pods:
            by_factory[pod.factory].append(pod)
        writes = []
        for body in self.factories.cache.values():
            name = body["metadata"]["name"]
            info = snap.factories.get(name)
            if info is None:
                continue
            pods = sorted(by_factory.get(name, []), key=lambda p: (p.namespace, p.name))
            ready = [p for p in pods if p.ready]
            desired: dict[str, Any] = {
                "phase": ("Draining" if info.unschedulable or info.deleting else "Ready" if ready else "Offline"),
                "readyPods": len(ready),
                "slotsTotal": sum(snap.capacity(p) for p in ready),
                "slotsUsed": sum(min(used.get(p.key, 0), snap.capacity(p)) for p in ready),
                # No lastHeartbeat here: it would change with every renewal and rewrite the Factory.
                "pods": [
                    {"name": p.name, "namespace": p.namespace, "ready": p.ready, "slots": snap.capacity(p),
                     "running": used.get(p.key, 0), "warmRepos": len(p.warm_repos)}
                    for p in pods
                ],
            }
            current = objects.factory_status(body)
            generation = body["metadata"].get("generation")
            ready_status, ready_reason, ready_message = ready_condition(desired["phase"], len(ready), len(pods))
            desired["conditions"] = patches.set_condition(
                current.get("conditions"), type=constants.ConditionType.READY.value, status=ready_status,
                reason=ready_reason, message=ready_message, now=snap.now, generation=generation,
            )
            if refused is not None and name in refused:
                # A scaled factory's runner template: accepted as forced, or refused naming the fields.
                accepted = not refused[name]
                desired["conditions"] = patches.set_condition(
                    desired["conditions"], type=constants.ConditionType.TEMPLATE_ACCEPTED.value, status="True" if accepted else "False",
                    reason="Forced" if accepted else "TemplateRefused",
                    message=("the pool's ServiceAccount and a restricted security context are forced" if accepted
                             else f"runner template refused: {refused[name]}")[:1024],
                    now=snap.now, generation=generation)
            self.metrics.slots_total.labels(factory=name).set(desired["slotsTotal"])
            self.metrics.slots_used.labels(factory=name).set(desired["slotsUsed"])
            if scaling and name in scaling:
                desired["scaling"] = scaling[name]
                self.metrics.runners_desired.labels(factory=name).set(scaling[name]["desiredReplicas"])
                self.metrics.runners_ready.labels(factory=name).set(scaling[name]["readyReplicas"])
                took = self.scaler.ready_after_scale_up(name, scaling[name]["readyReplicas"], scaling[name]["desiredReplicas"], snap.now)
                if took is not None:
                    self.metrics.scale_up_seconds.observe(took)
            if all(current.get(k) == v for k, v in desired.items()):
                continue
            patch = {"status": {**desired, "observedGeneration": generation}}
            writes.append(self._patch_factory(name, patch))
        return writes

    async def _patch_factory(self, name: str, patch: base.Body) -> None:
        try:
            await self.client.patch(kubeclient.FACTORIES, name, patch, subresource="status")
        except kubeclient.NotFound:
            pass


def ready_condition(phase: str, ready: int, total: int) -> tuple[str, str, str]:
    if phase == "Draining":
        return "False", "Draining", "cordoned or being deleted: no new bindings"
    if ready:
        return "True", "PodsReady", f"{ready}/{total} runner pods ready"
    if total:
        return "False", "NoReadyPods", f"0/{total} runner pods ready (heartbeats stale or draining)"
    return "False", "NoPods", "no runner pod has announced itself"
