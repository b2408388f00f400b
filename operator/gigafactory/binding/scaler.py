"""On-demand factories, the I/O part: the operator owns one Deployment of runner pods per Factory
with `spec.scaling` and sets its replicas after each scheduling cycle (scheduling/scaling.py decides).

Scale-down never interrupts work: the decision names idle pods only; the operator first stops binding
to them (they count as draining in its own snapshots: the operator is the only one that binds), marks
each with `controller.kubernetes.io/pod-deletion-cost: "-1000"` so the ReplicaSet removes exactly those,
then lowers the replicas. The ReplicaSet's SIGTERM starts the runner's shutdown protocol (drain,
release, delete its heartbeat).
"""

import copy
import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Any

from gigafactory import constants, kubeclient, leases
from gigafactory.scheduling import framework, scaling, snapshots

logger = logging.getLogger(__name__)

Body = dict[str, Any]
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


def deployment_name(factory: str) -> str:
    return f"{factory}-runners"


def build_deployment(factory: Mapping[str, Any], *, namespace: str, replicas: int) -> Body:
    """The runner Deployment of a scaled Factory, owned by it (deleting the Factory deletes it)."""
    meta = factory["metadata"]
    spec = factory.get("spec") or {}
    name = meta["name"]
    template = copy.deepcopy((spec.get("scaling") or {}).get("template") or {})
    template.setdefault("metadata", {}).setdefault("labels", {}).update({constants.LABEL_FACTORY: name})
    pod_spec = template.setdefault("spec", {})
    containers = pod_spec.setdefault("containers", [{"name": "runner", "image": "gigafactory:latest", "args": ["runner"]}])
    # The runner's own settings: which factory, how many slots, and who it is (Downward API).
    env = [
        {"name": "GIGAFACTORY_RUNNER_FACTORY", "value": name},
        {"name": "GIGAFACTORY_RUNNER_SLOTS", "value": str(spec.get("slotsPerPod") or 1)},
        {"name": "GIGAFACTORY_RUNNER_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GIGAFACTORY_RUNNER_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    first = containers[0]
    first["env"] = [e for e in first.get("env") or [] if e.get("name") not in {v["name"] for v in env}] + env
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": deployment_name(name), "namespace": namespace,
                     "labels": {constants.LABEL_FACTORY: name, constants.LABEL_ROLE: "runners"},
                     "ownerReferences": [{"apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "name": name,
                                          "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {constants.LABEL_FACTORY: name}}, "template": template},
    }


@dataclasses.dataclass
class Plan:
    writes: list[Any]
    status: dict[str, Body]  # factory → status.scaling
    waiting_for: dict[str, str]  # job uid → the factory it waits on while that factory scales up
    recheck_at: datetime.datetime | None = None  # when a held scale-down is due (nothing else may wake the loop)


class Scaler:
    def __init__(self, client: kubeclient.Client, *, namespace: str, profile: framework.Profile) -> None:
        self.client = client
        self.namespace = namespace
        self.profile = profile
        self.lower_since: dict[str, datetime.datetime] = {}
        self.last_bound: dict[snapshots.PodKey, datetime.datetime] = {}
        self.leaving: set[snapshots.PodKey] = set()  # pods chosen for removal: no new binds
        self.scaled_up_at: dict[str, datetime.datetime] = {}  # factory → when demand asked for more pods

    def bound(self, pod: snapshots.PodKey, at: datetime.datetime) -> None:
        self.last_bound[pod] = at

    def plan(self, snap: snapshots.Snapshot, unschedulable: list[snapshots.JobInfo], factories: Mapping[str, Body],
             deployments: Mapping[str, Body]) -> Plan:
        scaled = {name: snap.factories[name] for name, body in factories.items()
                  if (body.get("spec") or {}).get("scaling") is not None and name in snap.factories
                  and not (body.get("metadata") or {}).get("deletionTimestamp")}
        owned = scaling.attribute(unschedulable, scaled, self.profile)
        plan = Plan(writes=[], status={}, waiting_for={})
        alive = {pod.key for pod in snap.pods}
        self.leaving &= alive
        for name, info in scaled.items():
            spec = (factories[name].get("spec") or {}).get("scaling") or {}
            deployment = deployments.get(name)
            current = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)
            pods = [p for p in snap.pods if p.factory == name and p.key not in self.leaving]
            pool = scaling.Pool(
                factory=info, min_replicas=int(spec.get("minReplicas") or 0), max_replicas=int(spec.get("maxReplicas", 10)),
                warm_slots=int(spec.get("warmSlots") or 0), scale_down_delay_seconds=int(spec.get("scaleDownDelaySeconds", 300)),
                current_replicas=current, pods=pods, used=snap.used, last_bound=self.last_bound,
                lower_since=self.lower_since.get(name))
            decision = scaling.decide(pool, waiting=len(owned.get(name, [])), now=snap.now)
            if decision.lower_since is None:
                self.lower_since.pop(name, None)
            else:
                self.lower_since[name] = decision.lower_since
                due = decision.lower_since + datetime.timedelta(seconds=pool.scale_down_delay_seconds)
                # Busy or just-bound pods may free up later than the delay: look again then, too.
                due = max(due, snap.now + datetime.timedelta(seconds=1))
                plan.recheck_at = due if plan.recheck_at is None else min(plan.recheck_at, due)
            ready = sum(1 for p in pods if p.ready)
            plan.status[name] = {"desiredReplicas": decision.replicas, "currentReplicas": current,
                                 "readyReplicas": ready, "reason": decision.reason[:1024]}
            for job in owned.get(name, []):
                plan.waiting_for[job.uid] = f"factory {name} is scaling up ({ready}/{decision.replicas} runners ready)"
            if deployment is None:
                plan.writes.append(self._create(factories[name], decision))
                if decision.replicas:
                    self.scaled_up_at.setdefault(name, snap.now)
            elif decision.replicas != current:
                if decision.replicas > current:
                    self.scaled_up_at.setdefault(name, snap.now)
                self.leaving |= set(decision.remove)
                plan.writes.append(self._scale(name, factories[name], current, decision))
        return plan

    async def _create(self, factory: Body, decision: scaling.Decision) -> None:
        name = factory["metadata"]["name"]
        body = build_deployment(factory, namespace=self.namespace, replicas=decision.replicas)
        try:
            await self.client.create(kubeclient.DEPLOYMENTS, body, namespace=self.namespace)
            logger.info("runner deployment created", extra={"factory": name, "count": decision.replicas})
        except kubeclient.AlreadyExists:
            return
        # A factory first seen with demand waiting starts above zero: that is a scale-up too
        # (an operator that starts late, or jobs submitted with the factory, must not hide it).
        if decision.replicas > 0:
            await self._event(name, factory, 0, decision)

    async def _scale(self, name: str, factory: Body, current: int, decision: scaling.Decision) -> None:
        for namespace, pod in decision.remove:
            try:  # which pods the ReplicaSet takes first
                await self.client.patch(kubeclient.PODS, pod, {"metadata": {"annotations": {DELETION_COST: "-1000"}}}, namespace=namespace)
            except kubeclient.NotFound:
                pass
        await self.client.patch(kubeclient.DEPLOYMENTS, deployment_name(name), {"spec": {"replicas": decision.replicas}},
                                namespace=self.namespace)
        logger.info("runner deployment scaled", extra={"factory": name, "count": decision.replicas, "reason": decision.reason})
        await self._event(name, factory, current, decision)

    async def _event(self, name: str, factory: Body, current: int, decision: scaling.Decision) -> None:
        verb = "ScaledUp" if decision.replicas > current else "ScaledDown"
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": "default"},
            "involvedObject": {"apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "name": name,
                               "uid": factory["metadata"].get("uid")},
            "reason": verb, "message": f"{current} → {decision.replicas} runners: {decision.reason}"[:1024], "type": "Normal",
            "source": {"component": "gigafactory-operator"}, "reportingComponent": "gigafactory-operator",
            "firstTimestamp": leases.now().strftime("%Y-%m-%dT%H:%M:%SZ"), "lastTimestamp": leases.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            await self.client.create(kubeclient.EVENTS, event, namespace="default")
        except kubeclient.ApiError:
            pass

    def ready_after_scale_up(self, factory: str, ready: int, desired: int, now: datetime.datetime) -> float | None:
        """Seconds from the demand to the pods being ready, once they are (for the metric)."""
        began = self.scaled_up_at.get(factory)
        if began is None or ready < desired:
            return None
        del self.scaled_up_at[factory]
        return (now - began).total_seconds()
