"""Building blocks shared by the AgentJob and Factory models: the base model, conditions, selectors.

Field descriptions become `kubectl explain` text, so they are written for the person reading them.
"""

import datetime
import enum
from typing import Annotated, Any

import pydantic
from pydantic import alias_generators

# Kubernetes names (RFC 1123 labels and subdomains) and label keys and values.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A capability, queue or agent-profile name: short, lower-case, readable in a message.
TOKEN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"

# The CRD extension keys this project uses, so that a typo is a NameError, not a silent no-op.
X_VALIDATIONS = "x-kubernetes-validations"
X_LIST_TYPE = "x-kubernetes-list-type"
X_LIST_MAP_KEYS = "x-kubernetes-list-map-keys"
X_PRESERVE_UNKNOWN = "x-kubernetes-preserve-unknown-fields"


def rule(expression: str, message: str, *, field_path: str | None = None) -> "pydantic.JsonValue":
    """A CEL validation rule as the CRD schema spells it (a JSON value, as json_schema_extra takes)."""
    result: dict[str, pydantic.JsonValue] = {"rule": expression, "message": message}
    if field_path is not None:
        result["fieldPath"] = field_path
    return result


class Model(pydantic.BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python.

    Unknown fields are ignored rather than refused: the API server already prunes them, and an
    older operator must keep working while a newer CRD adds fields during an upgrade.
    """

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
        validate_default=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The wire form: camelCase keys, enums as strings, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ConditionStatus(str, enum.Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """One aspect of the object's state, in the shape of metav1.Condition."""

    type: Annotated[str, pydantic.Field(min_length=1, max_length=316, description="Type of the condition, e.g. Scheduled, Running, Complete, Failed.")]
    status: Annotated[ConditionStatus, pydantic.Field(description="True, False or Unknown.")]
    reason: Annotated[str, pydantic.Field(max_length=1024, description="One CamelCase word for programs: why the condition is what it is.")] = ""
    message: Annotated[str, pydantic.Field(max_length=32768, description="A sentence for people: what happened and what to do about it.")] = ""
    last_transition_time: Annotated[datetime.datetime | None, pydantic.Field(description="When the status last changed.")] = None
    observed_generation: Annotated[int | None, pydantic.Field(ge=0, description="The metadata.generation this condition was computed from.")] = None


class LabelSelectorRequirement(Model):
    key: Annotated[str, pydantic.Field(min_length=1, max_length=317, description="The label key the requirement applies to.")]
    operator: Annotated[str, pydantic.Field(pattern=r"^(In|NotIn|Exists|DoesNotExist)$", description="In, NotIn, Exists or DoesNotExist.")]
    values: Annotated[list[str], pydantic.Field(description="Values for In and NotIn; empty for Exists and DoesNotExist.")] = []


class LabelSelector(Model):
    """A Kubernetes label selector: every term must match."""

    match_labels: Annotated[dict[str, str], pydantic.Field(description="Labels that must be present with exactly these values.")] = {}
    match_expressions: Annotated[list[LabelSelectorRequirement], pydantic.Field(description="Set-based requirements.")] = []


Conditions = Annotated[
    list[Condition],
    pydantic.Field(
        description="The latest observations of the object's state.",
        json_schema_extra={X_LIST_TYPE: "map", X_LIST_MAP_KEYS: ["type"]},
    ),
]


# A capability, queue or agent-profile name.
Token = Annotated[str, pydantic.StringConstraints(pattern=TOKEN, min_length=1, max_length=63)]
# The name of an object in the same namespace (a Secret, a ConfigMap) or of a cluster-scoped one.
ObjectName = Annotated[str, pydantic.StringConstraints(pattern=DNS_SUBDOMAIN, min_length=1, max_length=253)]


def name_set(description: str, *, max_items: int = 64) -> Any:
    """A list of short names (capabilities, queues, profiles) where order and repeats mean nothing."""
    return pydantic.Field(description=description, max_length=max_items, json_schema_extra={X_LIST_TYPE: "set"})
