"""Each Filter and Score plugin on its own: what passes, what fails, and the reason a person reads."""

import collections
import datetime

import pytest

from gigafactory.scheduling import framework, plugins, snapshots

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)


def job(**kw) -> snapshots.JobInfo:
    base = dict(namespace="team-a", name="j", uid="u", resource_version="1", agent="script", queue="default")
    return snapshots.JobInfo(**{**base, **kw})


def factory(**kw) -> snapshots.FactoryInfo:
    base = dict(name="pool-a", agents=frozenset({"script"}))
    return snapshots.FactoryInfo(**{**base, **kw})


def pod(**kw) -> snapshots.PodInfo:
    base = dict(name="p1", namespace="runners", factory="pool-a", slots=2, agents=frozenset({"script"}))
    return snapshots.PodInfo(**{**base, **kw})


def snap(pods=(), factories=(), used=None, **kw) -> snapshots.Snapshot:
    return snapshots.Snapshot(now=NOW, jobs=[], pods=list(pods), factories={f.name: f for f in factories}, used=used or {}, **kw)


@pytest.mark.parametrize(
    "plugin, j, f, reason",
    [
        pytest.param(plugins.FactoryKnown(), job(), None, "have no Factory object", id="unknown-factory"),
        pytest.param(plugins.TargetFactory(), job(target_factory="pool-b"), factory(), "not in target factory pool-b", id="pin-elsewhere"),
        pytest.param(plugins.TargetFactory(), job(target_factory="pool-a"), factory(), None, id="pin-here"),
        pytest.param(plugins.TargetFactory(), job(), factory(), None, id="no-pin"),
        pytest.param(plugins.FactorySchedulable(), job(), factory(unschedulable=True), "factory cordoned", id="cordoned"),
        pytest.param(plugins.FactorySchedulable(), job(), factory(deleting=True), "factory being deleted", id="deleting"),
        pytest.param(plugins.FactorySchedulable(), job(), factory(), None, id="schedulable"),
        pytest.param(plugins.QueueSubscription(), job(queue="backend"), factory(subscriptions=frozenset({"frontend"})), "not subscribed to queue backend", id="other-queue"),
        pytest.param(plugins.QueueSubscription(), job(queue="backend"), factory(subscriptions=frozenset({"*"})), None, id="star-queue"),
        pytest.param(plugins.QueueSubscription(), job(queue="backend"), factory(subscriptions=frozenset({"backend"})), None, id="named-queue"),
        pytest.param(plugins.NamespaceAllowed(), job(), factory(namespaces=frozenset({"team-b"})), "not serving namespace team-a", id="other-namespace"),
        pytest.param(plugins.NamespaceAllowed(), job(), factory(namespaces=frozenset({"*"})), None, id="star-namespace"),
        pytest.param(plugins.Capabilities(), job(capabilities=frozenset({"gpu", "python"})), factory(capabilities=frozenset({"python"})), "lack capability gpu", id="missing-capability"),
        pytest.param(plugins.Capabilities(), job(capabilities=frozenset({"gpu"})), factory(capabilities=frozenset({"gpu", "python"})), None, id="superset"),
        pytest.param(plugins.FactoryAgent(), job(agent="aider"), factory(), "lack agent profile aider", id="factory-lacks-agent"),
        pytest.param(plugins.FactoryAgent(), job(), factory(), None, id="factory-has-agent"),
    ],
)
def test_factory_filters(plugin, j, f, reason) -> None:
    status = plugin.filter(j, f)
    assert (None if status.ok else status.reason) == reason


@pytest.mark.parametrize(
    "plugin, p, used, reason",
    [
        pytest.param(plugins.PodReady(), pod(ready=False), 0, "heartbeat stale", id="stale"),
        pytest.param(plugins.PodReady(), pod(draining=True, ready=False), 0, "draining", id="draining"),
        pytest.param(plugins.PodReady(), pod(), 0, None, id="ready"),
        pytest.param(plugins.PodAgent(), pod(agents=frozenset({"aider"})), 0, "lack agent profile script", id="pod-lacks-agent"),
        pytest.param(plugins.FreeSlot(), pod(), 2, "full", id="full"),
        pytest.param(plugins.FreeSlot(), pod(), 1, None, id="one-free"),
        pytest.param(plugins.FreeSlot(), pod(slots=8), 2, "full", id="capped-by-slots-per-pod"),
    ],
)
def test_pod_filters(plugin, p, used, reason) -> None:
    s = snap(pods=[p], factories=[factory(slots_per_pod=2)], used={p.key: used})
    status = plugin.filter(job(), p, s)
    assert (None if status.ok else status.reason) == reason


REPO = "abc123abc123"


@pytest.mark.parametrize(
    "plugin, j, f, p, extra, expected",
    [
        pytest.param(plugins.FreeCapacity(strategy="spread"), job(), factory(slots_per_pod=4), pod(slots=4), {"used": 1}, 75, id="spread-3-of-4-free"),
        pytest.param(plugins.FreeCapacity(strategy="pack"), job(), factory(slots_per_pod=4), pod(slots=4), {"used": 3}, 100, id="pack-last-slot"),
        pytest.param(plugins.FreeCapacity(strategy="pack"), job(), factory(slots_per_pod=4), pod(slots=4), {"used": 0}, 25, id="pack-empty-pod"),
        pytest.param(plugins.WarmRepo(), job(repo_key=REPO), factory(), pod(warm_repos=frozenset({REPO})), {}, 100, id="warm"),
        pytest.param(plugins.WarmRepo(), job(repo_key=REPO), factory(), pod(), {}, 0, id="cold"),
        pytest.param(plugins.Preferences(), job(preferences=(("gpu", 30), ("ssd", 10))), factory(capabilities=frozenset({"gpu"})), pod(), {}, 75, id="preference-weight-share"),
        pytest.param(plugins.Preferences(), job(), factory(), pod(), {}, 0, id="no-preferences"),
        pytest.param(plugins.Cost(), job(), factory(cost_weight=0), pod(), {}, 100, id="free-factory"),
        pytest.param(plugins.Cost(), job(), factory(cost_weight=3), pod(), {}, 25, id="costly-factory"),
        pytest.param(plugins.SuccessRate(), job(), factory(), pod(), {"ratio": 0.9}, 90, id="good-record"),
        pytest.param(plugins.SuccessRate(), job(), factory(), pod(), {}, 50, id="no-record"),
        pytest.param(plugins.RepoSpread(), job(repo_key=REPO), factory(), pod(), {"repos": {REPO: 1}}, 0, id="same-repo-already-here"),
        pytest.param(plugins.RepoSpread(), job(repo_key=REPO), factory(), pod(), {"repos": {"other": 1}}, 100, id="other-repo-here"),
    ],
)
def test_score_plugins(plugin, j, f, p, extra, expected) -> None:
    s = snap(
        pods=[p], factories=[f], used={p.key: extra.get("used", 0)},
        repos_on_pod={p.key: collections.Counter(extra.get("repos", {}))},
        success_ratio={f.name: extra["ratio"]} if "ratio" in extra else {},
    )
    assert plugin.score(j, p, f, s) == expected


@pytest.mark.parametrize(
    "scores, expected",
    [
        pytest.param([25, 50], [50, 100], id="best-becomes-100"),
        pytest.param([0, 0], [0, 0], id="all-zero-unchanged"),
        pytest.param([], [], id="empty"),
    ],
)
def test_normalize_to_max(scores, expected) -> None:
    assert framework.normalize_to_max(scores) == expected


def test_success_ratio_decays_toward_recent_outcomes() -> None:
    ratios = snapshots.SuccessRatios(half_life=5)
    assert ratios.ratio("pool-a") == 0.5
    for _ in range(20):
        ratios.record("pool-a", succeeded=False)
    for _ in range(20):
        ratios.record("pool-a", succeeded=True)
    # Twenty recent successes outweigh twenty older failures.
    assert ratios.ratio("pool-a") > 0.85


@pytest.mark.parametrize(
    "outcome, reason, verdict",
    [
        pytest.param("Succeeded", "", True, id="success"),
        pytest.param("AgentFailed", "", False, id="agent-failed"),
        pytest.param("InfraError", "ClaimTimeout", False, id="never-claimed"),
        pytest.param("InfraError", "LeaseExpired", False, id="runner-died"),
        pytest.param("InfraError", "LeaseCreateFailed", None, id="operator-could-not-write"),
        pytest.param("Rejected", "SecretNotFound", None, id="job-input-refused"),
        pytest.param("Stopped", "Cancelled", None, id="stopped-on-request"),
    ],
)
def test_which_attempts_count_for_or_against_a_factory(outcome, reason, verdict) -> None:
    assert snapshots.factory_verdict(outcome, reason) is verdict


def test_success_ratios_are_rebuilt_from_the_attempts_jobs_record() -> None:
    def attempt(factory_name: str, outcome: str, minute: int, reason: str = "") -> dict:
        return {"factory": factory_name, "outcome": outcome, "reason": reason, "finishedAt": f"2026-11-24T10:{minute:02d}:00Z"}

    bodies = [
        {"status": {"attempts": [attempt("good", "AgentFailed", 1), attempt("good", "Succeeded", 3)]}},
        {"status": {"attempts": [attempt("good", "Succeeded", 2), attempt("bad", "InfraError", 4, "LeaseExpired")]}},
        {"status": {"attempts": [attempt("bad", "Stopped", 5, "Cancelled"), attempt("bad", "Rejected", 6, "SecretNotFound")]}},
        {"status": {}},
    ]
    live = snapshots.SuccessRatios()
    for minute_order in (attempt("good", "AgentFailed", 1), attempt("good", "Succeeded", 2), attempt("good", "Succeeded", 3),
                         attempt("bad", "InfraError", 4, "LeaseExpired")):
        live.record_attempt(minute_order)
    rebuilt = snapshots.SuccessRatios.from_jobs(bodies)
    assert rebuilt.as_dict() == live.as_dict()
    assert rebuilt.ratio("good") > 0.5 > rebuilt.ratio("bad")  # a cancel or a bad Secret is not the factory's fault
