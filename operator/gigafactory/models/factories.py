"""The Factory resource: a pool of runner pods that execute AgentJobs, its spec and its status.

A Factory is cluster-scoped: one pool may serve many teams' namespaces. Its runner pods announce
themselves with heartbeat Leases labelled with the factory's name (see docs/protocol.md); the
operator aggregates those into the status, so heartbeats never rewrite the Factory object.
"""

import datetime
import enum
from typing import Annotated, Any

import pydantic

from gigafactory import constants
from gigafactory.models import common
from gigafactory.models.common import X_LIST_MAP_KEYS, X_LIST_TYPE, X_PRESERVE_UNKNOWN, X_VALIDATIONS, rule


class FactoryPhase(str, enum.Enum):
    READY = "Ready"  # at least one runner pod with a fresh heartbeat
    DRAINING = "Draining"  # cordoned or being deleted: no new bindings
    OFFLINE = "Offline"  # no runner pod with a fresh heartbeat


class ScalingSpec(common.Model):
    """On-demand scaling: the operator owns a Deployment of runner pods and sets its replicas from demand."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={X_VALIDATIONS: [rule("self.maxReplicas >= self.minReplicas", "maxReplicas must be at least minReplicas")]}
    )

    min_replicas: Annotated[int, pydantic.Field(ge=0, le=1000, description="Never fewer runner pods than this.")] = 0
    max_replicas: Annotated[int, pydantic.Field(ge=0, le=1000, description="Never more runner pods than this.")] = 10
    warm_slots: Annotated[int, pydantic.Field(ge=0, le=1000, description="Idle slots to keep ready for the next burst.")] = 0
    scale_down_delay_seconds: Annotated[
        int, pydantic.Field(ge=0, le=86400, description="How long a runner must stay idle before it is removed.")
    ] = 300
    template: Annotated[
        dict[str, Any],
        pydantic.Field(
            description="The runner pod template (a PodTemplateSpec) of the Deployment the operator manages.",
            json_schema_extra={X_PRESERVE_UNKNOWN: True},
        ),
    ] = {}

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> "ScalingSpec":
        if self.max_replicas < self.min_replicas:
            raise ValueError("maxReplicas must be at least minReplicas")
        return self


class ModelPrice(common.Model):
    """What one model costs, per million tokens: an estimate for the record and for spec.agent.limits.cost."""

    model: Annotated[str, pydantic.Field(min_length=1, max_length=256, description=(
        "The model's name as the API answers with it, or a prefix ending in '*' (claude-sonnet-4*), or '*' alone for "
        "every model without an entry of its own. The exact name wins, then the longest prefix."))]
    input_per_million: Annotated[float, pydantic.Field(ge=0, le=1_000_000, description=(
        "Price of a million input tokens (cache reads and writes are counted as input), in the platform's currency."))]
    output_per_million: Annotated[float, pydantic.Field(ge=0, le=1_000_000, description="Price of a million output tokens.")]


Prices = Annotated[
    list[ModelPrice],
    pydantic.Field(max_length=64, description=(
        "Estimated prices per model, per million tokens, in the platform's currency (docs/agents.md#prices). The "
        "operator copies them into each binding (status.assignment.prices): the runner enforces spec.agent.limits.cost "
        "with them and the operator records each attempt's estimated cost."),
        json_schema_extra={X_LIST_TYPE: "map", X_LIST_MAP_KEYS: ["model"]}),
]


class FactorySpec(common.Model):
    """What the pool offers and which jobs it takes."""

    capabilities: Annotated[list[common.Token], common.name_set("What the runners offer (for the jobs' requirements), e.g. python, gpu.")] = []
    agents: Annotated[
        list[common.Token],
        pydantic.Field(
            min_length=1,
            max_length=64,
            description="Agent profiles the runners can execute, e.g. claude-code, aider, script.",
            json_schema_extra={X_LIST_TYPE: "set"},
        ),
    ]
    slots_per_pod: Annotated[int, pydantic.Field(ge=1, le=64, description="Jobs one runner pod runs at once (a pod may announce fewer).")] = 1
    subscriptions: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=r"^(\*|[a-z0-9]([-a-z0-9_.]*[a-z0-9])?)$", max_length=63)]],
        pydantic.Field(
            min_length=1, max_length=64, description='Queues this factory takes jobs from; "*" means every queue.', json_schema_extra={X_LIST_TYPE: "set"}
        ),
    ] = ["*"]
    namespaces: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$", max_length=63)]],
        pydantic.Field(
            min_length=1, max_length=256, description='Namespaces whose jobs this factory takes; "*" means all.', json_schema_extra={X_LIST_TYPE: "set"}
        ),
    ] = ["*"]
    cost_weight: Annotated[
        float, pydantic.Field(ge=0, le=100, description="Relative cost of running here; cheaper factories score higher.")
    ] = 1.0
    prices: Prices = []
    unschedulable: Annotated[bool, pydantic.Field(description="Cordon: no new bindings; running jobs finish. Deleting the Factory drains it.")] = False
    drain_grace_seconds: Annotated[
        int,
        pydantic.Field(ge=0, le=86400, description="When the Factory is deleted: how long running jobs may go on before they are "
                       "stopped and requeued elsewhere. Unclaimed bindings move at once."),
    ] = 600
    scaling: Annotated[ScalingSpec | None, pydantic.Field(description="Scale runner pods from zero with demand. Unset: runners are managed elsewhere.")] = None


class RunnerPod(common.Model):
    """One runner pod as the operator last saw its heartbeat."""

    name: Annotated[str, pydantic.Field(description="Pod name.")]
    namespace: Annotated[str | None, pydantic.Field(description="Pod namespace.")] = None
    ready: Annotated[bool, pydantic.Field(description="Whether its heartbeat is fresh and it accepts jobs.")] = False
    slots: Annotated[int, pydantic.Field(ge=0, description="Jobs it may run at once.")] = 0
    running: Annotated[int, pydantic.Field(ge=0, description="Jobs bound to it now.")] = 0
    last_heartbeat: Annotated[datetime.datetime | None, pydantic.Field(description="When it last renewed its heartbeat Lease.")] = None
    warm_repos: Annotated[int, pydantic.Field(ge=0, description="Repositories it holds a mirror of.")] = 0


class ScalingStatus(common.Model):
    desired_replicas: Annotated[int, pydantic.Field(ge=0, description="Runner pods the operator wants.")] = 0
    current_replicas: Annotated[int, pydantic.Field(ge=0, description="Runner pods that exist.")] = 0
    ready_replicas: Annotated[int, pydantic.Field(ge=0, description="Runner pods that announced themselves.")] = 0
    reason: Annotated[str, pydantic.Field(max_length=1024, description="Why the desired count is what it is.")] = ""


class FactoryStatus(common.Model):
    """The pool as the operator sees it."""

    phase: Annotated[FactoryPhase, pydantic.Field(description="Ready, Draining or Offline.")] = FactoryPhase.OFFLINE
    conditions: common.Conditions = []
    observed_generation: Annotated[int | None, pydantic.Field(ge=0, description="The generation the status was computed from.")] = None
    pods: Annotated[
        list[RunnerPod],
        pydantic.Field(max_length=5000, description="Runner pods with a heartbeat Lease.", json_schema_extra={X_LIST_TYPE: "map", X_LIST_MAP_KEYS: ["name"]}),
    ] = []
    ready_pods: Annotated[int, pydantic.Field(ge=0, description="Pods with a fresh heartbeat.")] = 0
    slots_total: Annotated[int, pydantic.Field(ge=0, description="Slots of the ready pods.")] = 0
    slots_used: Annotated[int, pydantic.Field(ge=0, description="Jobs bound to the ready pods.")] = 0
    scaling: Annotated[ScalingStatus | None, pydantic.Field(description="On-demand scaling, when spec.scaling is set.")] = None


class Factory(common.Model):
    """A pool of runner pods that executes AgentJobs."""

    api_version: Annotated[str, pydantic.Field(description="gigafactory.dev/v1alpha1")] = constants.API_VERSION
    kind: Annotated[str, pydantic.Field(description="Factory")] = constants.FACTORY_KIND
    metadata: Annotated[dict[str, Any], pydantic.Field(description="Standard object metadata.")] = {}
    spec: FactorySpec
    status: FactoryStatus = FactoryStatus()
