"""Estimated cost: the price lookup and arithmetic (models/prices.py), the fold that records each attempt's
tokens and cost (binding/patches.py), the bind that copies the factory's prices into the binding, and the
spending metrics, counted once per attempt (controllers/jobs.py)."""

import copy
import datetime

import pytest

from gigafactory import config, kubeclient, operating
from gigafactory.binding import patches
from gigafactory.models import agentjobs, factories, prices
from gigafactory.scheduling import cycle, snapshots

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)
PRICES = [
    {"model": "claude-sonnet-4-5", "inputPerMillion": 3, "outputPerMillion": 15},
    {"model": "claude-*", "inputPerMillion": 1, "outputPerMillion": 5},
    {"model": "claude-opus-*", "inputPerMillion": 15, "outputPerMillion": 75},
    {"model": "gpt-4o-mini", "inputPerMillion": 0.15, "outputPerMillion": 0.6},
]


@pytest.mark.parametrize(
    "table, model, expected",
    [
        pytest.param(PRICES, "claude-sonnet-4-5", "claude-sonnet-4-5", id="exact-wins"),
        pytest.param(PRICES, "claude-opus-4-1-20250805", "claude-opus-*", id="longest-prefix"),
        pytest.param(PRICES, "claude-haiku-4-5", "claude-*", id="shorter-prefix"),
        pytest.param(PRICES, "gpt-4o", None, id="no-price"),
        pytest.param([*PRICES, {"model": "*", "inputPerMillion": 9, "outputPerMillion": 9}], "gpt-4o", "*", id="default"),
        pytest.param([], "claude-sonnet-4-5", None, id="no-prices"),
    ],
)
def test_the_price_of_a_model(table, model, expected) -> None:
    found = prices.find(table, model)
    assert (found or {}).get("model") == expected


@pytest.mark.parametrize(
    "input_tokens, output_tokens, price, expected",
    [
        pytest.param(1_000_000, 1_000_000, PRICES[0], 18.0, id="a-million-each"),
        pytest.param(12_345, 678, PRICES[0], 0.047205, id="small"),
        pytest.param(0, 0, PRICES[0], 0.0, id="nothing"),
        pytest.param(1_000_000, 0, {"model": "free", "inputPerMillion": 0, "outputPerMillion": 0}, 0.0, id="free"),
        pytest.param(-5, 10, PRICES[0], 0.00015, id="negative-counts-nothing"),
    ],
)
def test_cost_arithmetic(input_tokens, output_tokens, price, expected) -> None:
    assert prices.cost(input_tokens=input_tokens, output_tokens=output_tokens, price=price) == pytest.approx(expected)


def test_estimate_leaves_unpriced_models_out() -> None:
    per_model, total = prices.estimate([
        {"model": "claude-sonnet-4-5", "inputTokens": 100_000, "outputTokens": 10_000},  # 0.3 + 0.15
        {"model": "gpt-4o-mini", "inputTokens": 1_000_000, "outputTokens": 0},  # 0.15
        {"model": "mystery", "inputTokens": 10**9, "outputTokens": 10**9},
    ], PRICES)
    assert per_model == {"claude-sonnet-4-5": 0.45, "gpt-4o-mini": 0.15} and total == 0.6
    assert prices.estimate([{"model": "mystery", "inputTokens": 5}], PRICES) == ({}, None)


def test_prices_in_the_factory_schema() -> None:
    spec = factories.FactorySpec.model_validate({"agents": ["claude-code"], "prices": PRICES})
    assert spec.prices[2].model == "claude-opus-*" and spec.prices[3].input_per_million == 0.15
    with pytest.raises(ValueError):
        factories.FactorySpec.model_validate({"agents": ["a"], "prices": [{"model": "m", "inputPerMillion": -1, "outputPerMillion": 1}]})
    limits = agentjobs.AgentLimits.model_validate({"cost": 2.5})
    assert limits.cost == 2.5
    with pytest.raises(ValueError):
        agentjobs.AgentLimits.model_validate({"cost": 0})


def bound_job(*, report: dict | None = None, **status) -> dict:
    base = {
        "phase": "Running", "attempt": 2,
        "assignment": {"factory": "pool", "pod": "p1", "attempt": 2, "lease": "gf-u-2", "boundAt": "2026-11-24T11:00:00Z",
                       "score": 80, "prices": PRICES},
        "attempts": [{"attempt": 1, "outcome": "AgentFailed", "counted": True, "tokens": [{"model": "x", "inputTokens": 5}],
                      "cost": 0.25}],
        "tokens": 5, "cost": 0.25,
    }
    if report is not None:
        base["report"] = report
    return {"metadata": {"name": "j", "namespace": "team-a", "uid": "u", "resourceVersion": "9", "generation": 1},
            "spec": {"queue": "backend", "repo": {"branch": "agent/j"}}, "status": {**base, **status}}


REPORT = {"attempt": 2, "pod": "p1", "outcome": "Succeeded", "exitCode": 0, "result": {"branch": "agent/j", "commit": "c0ffee"},
          "tokens": [{"model": "claude-sonnet-4-5", "inputTokens": 100_000, "outputTokens": 10_000, "requests": 4,
                      "cost": 0.000001},  # a runner's own figure: ignored, the operator prices the tokens
                     {"model": "unpriced-model", "inputTokens": 1000, "outputTokens": 10, "requests": 1}]}


def test_the_fold_records_tokens_and_cost_and_adds_them_to_the_job_totals() -> None:
    status = patches.fold_patch(body=bound_job(report=REPORT), now=NOW)["status"]
    record = status["attempts"][-1]
    assert record["tokens"] == [
        {"model": "claude-sonnet-4-5", "inputTokens": 100_000, "outputTokens": 10_000, "requests": 4, "cost": 0.45},
        {"model": "unpriced-model", "inputTokens": 1000, "outputTokens": 10, "requests": 1},
    ]
    assert record["cost"] == 0.45
    assert status["tokens"] == 5 + 110_000 + 1010 and status["cost"] == 0.7
    agentjobs.AgentJobStatus.model_validate(status)  # what the fold writes, the schema takes


@pytest.mark.parametrize(
    "assignment_prices, report_tokens, expected",
    [
        pytest.param([], REPORT["tokens"], {"cost": 0.25, "tokens": 5 + 111_010}, id="no-prices-no-cost-added"),
        pytest.param(PRICES, [], {"cost": 0.25, "tokens": 5}, id="no-tokens"),
    ],
)
def test_the_fold_without_prices_or_tokens(assignment_prices, report_tokens, expected) -> None:
    body = bound_job(report={**REPORT, "tokens": report_tokens})
    body["status"]["assignment"]["prices"] = assignment_prices
    status = patches.fold_patch(body=body, now=NOW)["status"]
    assert "cost" not in status["attempts"][-1]
    assert {key: status[key] for key in ("cost", "tokens")} == expected


def test_a_job_with_no_spending_gets_no_totals() -> None:
    body = bound_job(report={**REPORT, "tokens": []})
    for key in ("tokens", "cost"):
        del body["status"][key]
    status = patches.fold_patch(body=body, now=NOW)["status"]
    assert "tokens" not in status and "cost" not in status


def test_the_bind_copies_the_factory_prices_into_the_binding() -> None:
    job = snapshots.JobInfo(namespace="n", name="j", uid="u", resource_version="5", attempt=0)
    pod = snapshots.PodInfo(name="p1", namespace="r", factory="pool", slots=1, agents=frozenset({"script"}))
    decision = cycle.Decision(job=job, pod=pod, score=87, scores={}, attempt=1)
    body = {"metadata": {"name": "j", "namespace": "n", "uid": "u", "resourceVersion": "5"}, "status": {"phase": "Pending"}}
    assert patches.bind_patch(body=body, decision=decision, now=NOW, model_prices=PRICES)["status"]["assignment"]["prices"] == PRICES
    assert "prices" not in patches.bind_patch(body=body, decision=decision, now=NOW)["status"]["assignment"]


class Store:
    """One stored job behind the client calls a fold makes: a merge patch with a resourceVersion
    precondition (409 when stale), get, and the binding Lease's delete."""

    def __init__(self, body: dict) -> None:
        self.body = copy.deepcopy(body)
        self.patches = 0

    async def get(self, resource, name, *, namespace=None):
        return copy.deepcopy(self.body)

    async def patch(self, resource, name, patch, *, namespace=None, subresource=None):
        if patch["metadata"]["resourceVersion"] != self.body["metadata"]["resourceVersion"]:
            raise kubeclient.Conflict(409, "Conflict", "stale")
        for key, value in patch["status"].items():
            if value is None:
                self.body["status"].pop(key, None)
            else:
                self.body["status"][key] = value
        self.body["metadata"]["resourceVersion"] = str(int(self.body["metadata"]["resourceVersion"]) + 1)
        self.patches += 1
        return copy.deepcopy(self.body)

    async def delete(self, resource, name, *, namespace=None):
        return None


def _samples(op: operating.Operator, name: str) -> dict[tuple, float]:
    return {tuple(sorted(s.labels.items())): s.value for metric in op.metrics.registry.collect()
            for s in metric.samples if s.name == name}


async def test_spending_is_counted_once_per_attempt_by_the_fold_that_went_through() -> None:
    job = bound_job(report=REPORT)
    store = Store(job)
    op = operating.Operator(config.OperatorSettings(), client=store, clock=lambda: NOW)  # type: ignore[arg-type]
    await op._fold(copy.deepcopy(job))
    labels = {"factory": "pool", "namespace": "team-a", "queue": "backend"}

    def key(**more: str) -> tuple:
        return tuple(sorted({**labels, **more}.items()))

    assert _samples(op, "gigafactory_agent_tokens_total") == {
        key(model="claude-sonnet-4-5", direction="input"): 100_000, key(model="claude-sonnet-4-5", direction="output"): 10_000,
        key(model="unpriced-model", direction="input"): 1000, key(model="unpriced-model", direction="output"): 10,
    }
    assert _samples(op, "gigafactory_agent_cost_total") == {key(model="claude-sonnet-4-5"): 0.45}
    # The same (now stale) event again, as a watch replays it: the fold's write is refused (409), the
    # fresh job holds no report any more, nothing is written or counted.
    await op._fold(copy.deepcopy(job))
    assert store.patches == 1
    assert sum(_samples(op, "gigafactory_agent_tokens_total").values()) == 111_010
    # An operator that starts anew (a restart) sees the folded job: no report, no fold, no count; its
    # counters start at zero and are never rebuilt from status.attempts.
    again = operating.Operator(config.OperatorSettings(), client=store, clock=lambda: NOW)  # type: ignore[arg-type]
    again.started = True
    spawned: list[str] = []
    again._spawn = lambda coro, name: (coro.close(), spawned.append(name))  # type: ignore[method-assign]
    again._maybe_fold(copy.deepcopy(store.body))
    assert not any(name.startswith("fold:") for name in spawned)
    assert _samples(again, "gigafactory_agent_tokens_total") == {}


def test_model_labels_are_bounded() -> None:
    op = operating.Operator(config.OperatorSettings(), client=None, clock=lambda: NOW)  # type: ignore[arg-type]
    record = {"factory": "pool", "tokens": [{"model": f"m{i}", "inputTokens": 1} for i in range(150)]}
    op.metrics.count_spending(bound_job(), record)
    models = {dict(labels)["model"] for labels in _samples(op, "gigafactory_agent_tokens_total")}
    assert len(models) == 101 and "other" in models and "m0" in models and "m149" not in models
