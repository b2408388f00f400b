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
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from gigafactory import constants, kubeclient, leases
from gigafactory.models import objects
from gigafactory.scheduling import framework, scaling, snapshots

logger = logging.getLogger(__name__)

Body = dict[str, Any]
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


ANNOTATION_TEMPLATE_HASH = f"{constants.GROUP}/template-hash"
TEMPLATE_FIELD = "spec.scaling.template"
# Volume types a runner pod may use: the Pod Security Standards' "restricted" list (no hostPath,
# no network filesystems mounted by the node on the pod's behalf).
ALLOWED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"})
ALLOWED_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def deployment_name(factory: str) -> str:
    return f"{factory}-runners"


def _seccomp_problem(context: Mapping[str, Any], path: str) -> str | None:
    kind = objects.field(context, "seccompProfile").get("type")
    if kind not in (None, "RuntimeDefault", "Localhost"):
        return f"{path}.seccompProfile.type: {kind} (RuntimeDefault or Localhost only)"
    return None


def _context_problems(context: Mapping[str, Any], path: str) -> list[str]:
    """What a pod- or container-level securityContext asks that a runner pod may not have."""
    problems = []
    if context.get("runAsUser") == 0:
        problems.append(f"{path}.runAsUser: 0 (runner pods run as non-root)")
    if (problem := _seccomp_problem(context, path)) is not None:
        problems.append(problem)
    if objects.field(context, "appArmorProfile").get("type") == "Unconfined":
        problems.append(f"{path}.appArmorProfile.type: Unconfined")
    selinux = objects.field(context, "seLinuxOptions")
    if selinux.get("type", "") not in ALLOWED_SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        problems.append(f"{path}.seLinuxOptions: only the container types, no user or role")
    if objects.field(context, "windowsOptions").get("hostProcess"):
        problems.append(f"{path}.windowsOptions.hostProcess: true")
    return problems


def restrict_template(template: Mapping[str, Any], *, service_account: str) -> tuple[Body, list[str]]:
    """A Factory's runner pod template as the operator runs it, and what it refuses in it (field paths).

    Forced: the pool's ServiceAccount; runAsNonRoot; seccomp RuntimeDefault unless Localhost is asked
    for; in every container no privilege escalation and all capabilities dropped. Refused (they cannot
    be forced without changing what the pod is): privileged containers, added capabilities, root,
    host namespaces, host ports, hostPath and other non-restricted volumes, sysctls, unconfined
    seccomp or AppArmor, SELinux users and roles, ephemeral containers. Whoever writes a Factory picks
    the image (that is what a pool is), never an identity or a privilege beyond the pool's."""
    forced: Body = copy.deepcopy(dict(template))
    problems: list[str] = []
    base = f"{TEMPLATE_FIELD}.spec"
    forced.setdefault("metadata", {})
    for key, value in objects.annotations(forced).items():
        if str(key).startswith(APPARMOR_PREFIX) and value == "unconfined":
            problems.append(f"{TEMPLATE_FIELD}.metadata.annotations[{key}]: unconfined")
    spec = forced.setdefault("spec", {})
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            problems.append(f"{base}.{host}: true")
    if spec.get("ephemeralContainers"):
        problems.append(f"{base}.ephemeralContainers: not allowed in a runner template")
    for index, volume in enumerate(spec.get("volumes") or ()):
        kinds = [k for k in volume if k != "name"]
        refused = [k for k in kinds if k not in ALLOWED_VOLUMES]
        if refused:
            problems.append(f"{base}.volumes[{index}].{refused[0]}: not allowed (only {', '.join(sorted(ALLOWED_VOLUMES))})")
    spec["serviceAccountName"] = service_account
    spec.pop("serviceAccount", None)  # the deprecated alias would otherwise have to agree
    pod_context = spec.setdefault("securityContext", {})
    problems += _context_problems(pod_context, f"{base}.securityContext")
    if pod_context.get("sysctls"):
        problems.append(f"{base}.securityContext.sysctls: not allowed")
    pod_context["runAsNonRoot"] = True
    if not objects.field(pod_context, "seccompProfile").get("type"):
        pod_context["seccompProfile"] = {"type": "RuntimeDefault"}
    spec.setdefault("containers", [{"name": "runner", "image": "gigafactory:latest", "args": ["runner"]}])
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or ()):
            path = f"{base}.{group}[{index}]"
            for port_index, port in enumerate(container.get("ports") or ()):
                if port.get("hostPort"):
                    problems.append(f"{path}.ports[{port_index}].hostPort: not allowed")
            context = container.setdefault("securityContext", {})
            problems += _context_problems(context, f"{path}.securityContext")
            if context.get("privileged"):
                problems.append(f"{path}.securityContext.privileged: true")
            if context.get("procMount") not in (None, "Default"):
                problems.append(f"{path}.securityContext.procMount: {context.get('procMount')}")
            if objects.field(context, "capabilities").get("add"):
                problems.append(f"{path}.securityContext.capabilities.add: not allowed")
            context["allowPrivilegeEscalation"] = False
            context["capabilities"] = {"drop": ["ALL"]}
            context.pop("privileged", None)
            if context.get("runAsNonRoot") is False:
                context["runAsNonRoot"] = True
    return forced, problems


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def service_account(pattern: str, factory: str) -> str:
    return pattern.replace("{factory}", factory)


def build_template(factory: Mapping[str, Any], *, service_account: str) -> tuple[Body, list[str]]:
    """The pod template of a scaled Factory's Deployment, as the operator runs it, and its refusals."""
    spec = objects.factory_spec(factory)
    name = objects.name(factory)
    template, problems = restrict_template(objects.field(factory, "spec", "scaling", "template"), service_account=service_account)
    template.setdefault("metadata", {}).setdefault("labels", {}).update({constants.LABEL_FACTORY: name})
    containers = template["spec"]["containers"]
    # The runner's own settings: which factory, how many slots, and who it is (Downward API).
    env: list[dict[str, Any]] = [
        {"name": "GIGAFACTORY_RUNNER_FACTORY", "value": name},
        {"name": "GIGAFACTORY_RUNNER_SLOTS", "value": str(spec.get("slotsPerPod") or 1)},
        {"name": "GIGAFACTORY_RUNNER_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GIGAFACTORY_RUNNER_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    first = containers[0]
    first["env"] = [e for e in first.get("env") or [] if e.get("name") not in {v["name"] for v in env}] + env
    return template, problems


def build_deployment(factory: Mapping[str, Any], *, namespace: str, replicas: int, service_account: str) -> Body:
    """The runner Deployment of a scaled Factory, owned by it (deleting the Factory deletes it).
    Check `build_template`'s refusals first: this builds whatever it is given."""
    meta = factory["metadata"]
    name = meta["name"]
    template, _ = build_template(factory, service_account=service_account)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": deployment_name(name), "namespace": namespace,
                     "labels": {constants.LABEL_FACTORY: name, constants.LABEL_ROLE: "runners"},
                     "annotations": {ANNOTATION_TEMPLATE_HASH: template_hash(template)},
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
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # factory → why its template is refused ("" accepted)


class Scaler:
    def __init__(self, client: kubeclient.Client, *, namespace: str, profile: framework.Profile,
                 service_account: str = "{factory}-runner") -> None:
        self.client = client
        self.namespace = namespace
        self.profile = profile
        self.service_account = service_account  # the pattern of OperatorSettings.runner_service_account
        self.reported: dict[str, str] = {}  # factory → the refusal last reported in an Event (once per change)
        self.lower_since: dict[str, datetime.datetime] = {}
        self.last_bound: dict[snapshots.PodKey, datetime.datetime] = {}
        self.leaving: set[snapshots.PodKey] = set()  # pods chosen for removal: no new binds
        self.scaled_up_at: dict[str, datetime.datetime] = {}  # factory → when demand asked for more pods

    def bound(self, pod: snapshots.PodKey, at: datetime.datetime) -> None:
        self.last_bound[pod] = at

    def plan(self, snap: snapshots.Snapshot, unschedulable: list[snapshots.JobInfo], factories: Mapping[str, Body],
             deployments: Mapping[str, Body]) -> Plan:
        scaled = {name: snap.factories[name] for name, body in factories.items()
                  if objects.factory_spec(body).get("scaling") is not None and name in snap.factories
                  and not objects.deleting(body)}
        plan = Plan(writes=[], status={}, waiting_for={})
        templates: dict[str, Body] = {}
        for name in list(scaled):
            template, problems = build_template(factories[name], service_account=service_account(self.service_account, name))
            plan.refused[name] = "; ".join(problems)[:1024]
            if plan.refused[name] != self.reported.get(name, ""):
                self.reported[name] = plan.refused[name]
                if problems:
                    plan.writes.append(self._refusal_event(name, factories[name], plan.refused[name]))
            if not problems:
                templates[name] = template
                continue
            # A refused template runs nowhere: no Deployment is made from it, and one made before
            # (by an older operator, or from an earlier template) is scaled to zero.
            del scaled[name]
            deployment = deployments.get(name)
            current = int(objects.spec(deployment or {}).get("replicas") or 0)
            plan.status[name] = {"desiredReplicas": 0, "currentReplicas": current, "readyReplicas": 0,
                                 "reason": f"runner template refused: {plan.refused[name]}"[:1024]}
            if current:
                plan.writes.append(self._scale(name, factories[name], current, scaling.Decision(replicas=0, reason="runner template refused")))
        for name in list(self.reported):
            if name not in factories:
                del self.reported[name]
        owned = scaling.attribute(unschedulable, scaled, self.profile)
        alive = {pod.key for pod in snap.pods}
        self.leaving &= alive
        for name, info in scaled.items():
            spec = objects.field(factories[name], "spec", "scaling")
            deployment = deployments.get(name)
            current = int(objects.spec(deployment or {}).get("replicas") or 0)
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
                continue
            wanted = template_hash(templates[name])
            if objects.annotations(deployment).get(ANNOTATION_TEMPLATE_HASH) != wanted:
                # Made from another template (an edit of the Factory, or by an operator that forced
                # nothing): the forced one replaces it whole; the rollout replaces the pods.
                plan.writes.append(self._retemplate(name, deployment, templates[name], wanted))
            if decision.replicas != current:
                if decision.replicas > current:
                    self.scaled_up_at.setdefault(name, snap.now)
                self.leaving |= set(decision.remove)
                plan.writes.append(self._scale(name, factories[name], current, decision))
        return plan

    async def _retemplate(self, name: str, deployment: Body, template: Body, wanted: str) -> None:
        annotations = objects.annotations(deployment)
        ops: list[Body] = [{"op": "test", "path": "/metadata/resourceVersion", "value": deployment["metadata"].get("resourceVersion")},
                           {"op": "replace", "path": "/spec/template", "value": template}]
        if annotations:
            ops.append({"op": "add", "path": "/metadata/annotations/" + ANNOTATION_TEMPLATE_HASH.replace("/", "~1"), "value": wanted})
        else:
            ops.append({"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION_TEMPLATE_HASH: wanted}})
        try:
            await self.client.patch(kubeclient.DEPLOYMENTS, deployment_name(name), ops, namespace=self.namespace, patch_type="json")
            logger.info("runner deployment template replaced", extra={"factory": name})
        except (kubeclient.Conflict, kubeclient.NotFound, kubeclient.Invalid):
            pass  # it moved meanwhile (a 422 is a failed test op): the next cycle sees the new one

    async def _refusal_event(self, name: str, factory: Body, message: str) -> None:
        logger.warning("runner template refused: %s", message, extra={"factory": name, "reason": "TemplateRefused"})
        await self._post_event(factory, reason="TemplateRefused", message=f"runner template refused: {message}", type="Warning")

    async def _create(self, factory: Body, decision: scaling.Decision) -> None:
        name = factory["metadata"]["name"]
        body = build_deployment(factory, namespace=self.namespace, replicas=decision.replicas,
                                service_account=service_account(self.service_account, name))
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
        await self._post_event(factory, reason=verb, message=f"{current} → {decision.replicas} runners: {decision.reason}")

    async def _post_event(self, factory: Body, *, reason: str, message: str, type: str = "Normal") -> None:
        name = factory["metadata"]["name"]
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": "default"},
            "involvedObject": {"apiVersion": constants.API_VERSION, "kind": constants.FACTORY_KIND, "name": name,
                               "uid": factory["metadata"].get("uid")},
            "reason": reason, "message": message[:1024], "type": type,
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
