"""What an agent may spend and what it spent: limits per attempt and tokens per model (the prices and
their arithmetic are in prices.py). Part of the AgentJob API (agentjobs.py re-exports these)."""

from typing import Annotated

import pydantic

from gigafactory.models import common
from gigafactory.models.common import X_LIST_MAP_KEYS, X_LIST_TYPE

__all__ = ["AgentLimits", "ModelTokens", "TokensPerModel"]


class AgentLimits(common.Model):
    """What one attempt may spend on the model, counted by the runner's model gateway."""

    requests: Annotated[int | None, pydantic.Field(ge=1, le=1_000_000, description=(
        "Model requests per attempt. The next request is refused and the attempt stopped: Stopped, BudgetExceeded."))] = None
    tokens: Annotated[int | None, pydantic.Field(ge=1, le=10_000_000_000, description=(
        "Input plus output tokens per attempt, every model together, as the API's usage figures say. Crossing it "
        "stops the attempt: Stopped, BudgetExceeded (not retried unless a retry rule says so)."))] = None
    cost: Annotated[float | None, pydantic.Field(ge=0.000001, le=1_000_000, description=(
        "Estimated cost per attempt, at the prices of the factory it runs on (Factory spec.prices, in their currency). "
        "Crossing it stops the attempt: Stopped, BudgetExceeded. A model without a price stops it too (its cost "
        "cannot be counted); a factory with no prices refuses the job (Rejected, LimitsNotEnforced)."))] = None


class ModelTokens(common.Model):
    """What an attempt's agent spent on one model, as the runner's model gateway counted it from the API's usage."""

    model: Annotated[str, pydantic.Field(max_length=256, description="The model the answers named.")]
    input_tokens: Annotated[int, pydantic.Field(ge=0, description="Input tokens (cache reads and writes included).")] = 0
    output_tokens: Annotated[int, pydantic.Field(ge=0, description="Output tokens.")] = 0
    requests: Annotated[int, pydantic.Field(ge=0, description="Answers counted.")] = 0
    cost: Annotated[float | None, pydantic.Field(ge=0, description=(
        "Estimated cost of these tokens, computed by the operator from the binding's prices (absent without a price; "
        "a runner's own figure here is ignored)."))] = None


TokensPerModel = Annotated[
    list[ModelTokens],
    pydantic.Field(max_length=32, description=(
        "Tokens per model, counted by the runner's model gateway (absent without one). The runner's own count: as "
        "trustworthy as the runner pod."), json_schema_extra={X_LIST_TYPE: "map", X_LIST_MAP_KEYS: ["model"]}),
]
