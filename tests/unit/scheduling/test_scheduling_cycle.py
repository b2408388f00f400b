"""The cycle end to end on small snapshots: ordering, fairness, assume, pins, explanations."""

import datetime

import pytest

from gigafactory.scheduling import cycle, plugins, queues, snapshots

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)


def ago(seconds: float) -> datetime.datetime:
    return NOW - datetime.timedelta(seconds=seconds)


def job(name: str, **kw) -> snapshots.JobInfo:
    base = dict(namespace="team-a", name=name, uid=f"uid-{name}", resource_version="1", agent="script", created_at=ago(10))
    return snapshots.JobInfo(**{**base, **kw})


def factory(name: str, **kw) -> snapshots.FactoryInfo:
    base = dict(name=name, agents=frozenset({"script"}), slots_per_pod=1)
    return snapshots.FactoryInfo(**{**base, **kw})


def pods(factory_name: str, count: int, **kw) -> list[snapshots.PodInfo]:
    base = dict(namespace="runners", factory=factory_name, slots=1, agents=frozenset({"script"}))
    return [snapshots.PodInfo(name=f"{factory_name}-{i}", **{**base, **kw}) for i in range(count)]


def run(jobs, pod_list, factory_list, **profile_kw) -> cycle.CycleResult:
    snap = snapshots.Snapshot(now=NOW, jobs=jobs, pods=pod_list, factories={f.name: f for f in factory_list})
    return cycle.run(snap, plugins.default_profile(**profile_kw))


def bound(result: cycle.CycleResult) -> dict[str, str]:
    return {d.job.name: d.pod.name for d in result.decisions}


@pytest.mark.parametrize(
    "jobs, expected",
    [
        pytest.param([job("low", priority=0, created_at=ago(30)), job("high", priority=10)], ["high", "low"], id="priority-first"),
        pytest.param([job("new", created_at=ago(5)), job("old", created_at=ago(50))], ["old", "new"], id="then-age"),
        pytest.param(
            [job("high-new", priority=5, created_at=ago(0)), job("low-aged", priority=0, created_at=ago(360))],
            ["low-aged", "high-new"], id="aging-overtakes",  # 360 s at 60 s/point = +6 > 5
        ),
        pytest.param(
            [job("high-new", priority=7, created_at=ago(0)), job("low-aged", priority=0, created_at=ago(360))],
            ["high-new", "low-aged"], id="aging-not-yet",
        ),
        pytest.param(
            [job("backoff-ended", priority=0, created_at=ago(3600), requeue_at=ago(1)), job("fresh", priority=1, created_at=ago(1))],
            ["fresh", "backoff-ended"], id="aging-restarts-after-backoff",
        ),
    ],
)
def test_order_within_a_queue(jobs, expected) -> None:
    entries = queues.order(jobs, now=NOW, aging_seconds_per_point=60)
    assert [e.job.name for e in entries] == expected


def test_round_robin_across_queues() -> None:
    deep = [job(f"deep-{i}", queue="deep", priority=100, created_at=ago(100 - i)) for i in range(5)]
    other = [job("other-0", queue="other"), job("other-1", queue="other", created_at=ago(5))]
    entries = queues.order(deep + other, now=NOW, aging_seconds_per_point=60)
    names = [e.job.name for e in entries]
    # One per queue per round: the other queue's head is second, not sixth.
    assert names[:4] == ["deep-0", "other-0", "deep-1", "other-1"]
    assert [e.position for e in entries if e.job.queue == "deep"] == [1, 2, 3, 4, 5]


def test_deep_queue_does_not_starve_another_when_slots_are_scarce() -> None:
    jobs = [job(f"deep-{i}", queue="deep", priority=100) for i in range(10)] + [job("small", queue="small")]
    result = run(jobs, pods("pool", 2), [factory("pool")])
    assert "small" in bound(result)


def test_assume_never_overfills_a_pod() -> None:
    result = run([job(f"j{i}") for i in range(5)], pods("pool", 2, slots=2), [factory("pool", slots_per_pod=2)])
    per_pod: dict[str, int] = {}
    for name in bound(result).values():
        per_pod[name] = per_pod.get(name, 0) + 1
    assert per_pod == {"pool-0": 2, "pool-1": 2}
    assert [e.message for e in result.unschedulable] == ["0/2 factory pods fit: 2 full"]


def test_existing_bindings_hold_their_slots() -> None:
    pod_list = pods("pool", 2)
    snap = snapshots.Snapshot(now=NOW, jobs=[job("a"), job("b")], pods=pod_list, factories={"pool": factory("pool")},
                              used={pod_list[0].key: 1})
    result = cycle.run(snap, plugins.default_profile())
    assert bound(result) == {"a": "pool-1"}


def test_spread_vs_pack() -> None:
    pod_list = pods("pool", 2, slots=4)
    fac = [factory("pool", slots_per_pod=4)]
    for strategy, expected in (("spread", {"pool-0", "pool-1"}), ("pack", {"pool-0"})):
        snap = snapshots.Snapshot(now=NOW, jobs=[job("a"), job("b")], pods=pod_list, factories={"pool": fac[0]})
        result = cycle.run(snap, plugins.default_profile(capacity_strategy=strategy))
        assert set(bound(result).values()) == expected, strategy


def test_warm_repo_wins_over_cold() -> None:
    key = "0123456789ab"
    pod_list = pods("pool", 3)
    pod_list[2] = snapshots.PodInfo(name="pool-warm", namespace="runners", factory="pool", slots=1,
                                    agents=frozenset({"script"}), warm_repos=frozenset({key}))
    result = run([job("a", repo_key=key)], pod_list, [factory("pool")])
    assert bound(result) == {"a": "pool-warm"}
    assert result.decisions[0].scores["WarmRepo"] == 100


def test_cheaper_and_preferred_factories_win() -> None:
    fac = [factory("cheap", cost_weight=0.5), factory("dear", cost_weight=5)]
    result = run([job("a")], pods("cheap", 1) + pods("dear", 1), fac)
    assert bound(result) == {"a": "cheap-0"}
    fac = [factory("cheap", cost_weight=0.5), factory("gpu", cost_weight=1, capabilities=frozenset({"gpu"}))]
    result = run([job("a", preferences=(("gpu", 50),))], pods("cheap", 1) + pods("gpu", 1), fac)
    assert bound(result) == {"a": "gpu-0"}


def test_same_repo_spreads_over_pods() -> None:
    pod_list = pods("pool", 2, slots=2)
    result = run([job("a", repo_key="r1"), job("b", repo_key="r1")], pod_list, [factory("pool", slots_per_pod=2)],
                 capacity_strategy="pack")
    # Pack alone would stack both on one pod; the repo-spread score splits them.
    assert set(bound(result).values()) == {"pool-0", "pool-1"}


def test_pin_binds_only_to_its_factory_and_waits_when_it_is_full() -> None:
    fac = [factory("a"), factory("b")]
    result = run([job("x", target_factory="b"), job("y", target_factory="b")], pods("a", 3) + pods("b", 1), fac)
    assert bound(result) == {"x": "b-0"}
    assert result.unschedulable[0].job.name == "y"
    assert result.unschedulable[0].message == "0/4 factory pods fit: 3 not in target factory b, 1 full"


def test_suspended_cancelled_and_backoff_jobs_are_skipped() -> None:
    jobs = [job("s", suspended=True), job("c", cancelled=True),
            job("b", requeue_at=NOW + datetime.timedelta(seconds=30)), job("ok")]
    result = run(jobs, pods("pool", 4), [factory("pool")])
    assert set(bound(result)) == {"ok"}
    assert {j.name for j in result.skipped} == {"s", "c", "b"}
    assert not result.unschedulable


@pytest.mark.parametrize(
    "job_kw, expected",
    [
        pytest.param(
            dict(queue="backend", capabilities=frozenset({"gpu"})),
            "0/7 factory pods fit: 3 lack capability gpu, 2 full, 2 not subscribed to queue backend",
            id="mixed-reasons",
        ),
        pytest.param(dict(queue="backend", agent="aider"), "0/7 factory pods fit: 5 lack agent profile aider, 2 not subscribed to queue backend",
                     id="unknown-agent"),
        pytest.param(dict(namespace="team-z", queue="backend", capabilities=frozenset({"gpu"})),
                     "0/7 factory pods fit: 3 not serving namespace team-z, 2 full, 2 not subscribed to queue backend", id="namespace-before-capability"),
    ],
)
def test_explanation_counts_each_pods_first_failing_reason(job_kw, expected) -> None:
    fac = [
        factory("cpu", subscriptions=frozenset({"*"}), namespaces=frozenset({"team-a"})),
        factory("gpu", capabilities=frozenset({"gpu"})),
        factory("front", subscriptions=frozenset({"frontend"}), capabilities=frozenset({"gpu"})),
    ]
    pod_list = pods("cpu", 3) + pods("gpu", 2) + pods("front", 2)
    snap = snapshots.Snapshot(now=NOW, jobs=[job("x", **job_kw)], pods=pod_list, factories={f.name: f for f in fac},
                              used={p.key: 1 for p in pod_list if p.factory == "gpu"})
    result = cycle.run(snap, plugins.default_profile())
    assert [e.message for e in result.unschedulable] == [expected]


def test_explanation_with_no_pods_and_stale_pods() -> None:
    assert run([job("x")], [], []).unschedulable[0].message == "0/0 factory pods fit: no runner pod has announced itself"
    result = run([job("x")], pods("pool", 2, ready=False) + pods("orphan", 1), [factory("pool")])
    explanation = result.unschedulable[0]
    assert explanation.message == "0/3 factory pods fit: 2 heartbeat stale, 1 have no Factory object"
    assert explanation.resolvable


def test_explanation_carries_queue_position() -> None:
    result = run([job("a", queue="q"), job("b", queue="q", created_at=ago(5))], [], [])
    assert [(e.job.name, e.position) for e in result.unschedulable] == [("a", 1), ("b", 2)]
    assert result.unschedulable[1].message_with_position.endswith("(position 2 in queue q)")


def test_decision_is_next_attempt_with_score_breakdown() -> None:
    result = run([job("a", attempt=2)], pods("pool", 1), [factory("pool")])
    decision = result.decisions[0]
    assert decision.attempt == 3
    assert set(decision.scores) == {"FreeCapacity", "WarmRepo", "Preferences", "Cost", "SuccessRate", "RepoSpread"}
    assert 0 <= decision.score <= 100


def test_parse_raw_job_and_factory() -> None:
    body = {
        "metadata": {"namespace": "n", "name": "j", "uid": "u", "resourceVersion": "7", "creationTimestamp": "2026-11-24T11:00:00Z"},
        "spec": {"queue": "q", "priority": 3, "repo": {"url": "https://x/a.git"}, "agent": {"profile": "script"},
                 "requirements": {"capabilities": ["gpu"], "preferences": [{"capability": "ssd", "weight": 4}]},
                 "targetFactory": "f", "suspend": True},
        "status": {"attempt": 1},
    }
    info = snapshots.job_from_body(body)
    assert (info.queue, info.priority, info.agent, info.capabilities, info.preferences, info.target_factory, info.suspended, info.attempt) == (
        "q", 3, "script", {"gpu"}, (("ssd", 4),), "f", True, 1)
    fac = snapshots.factory_from_body({"metadata": {"name": "f", "deletionTimestamp": "x"}, "spec": {"agents": ["script"], "costWeight": 0}})
    assert fac.deleting and fac.cost_weight == 0 and fac.subscribes("anything")


def test_weights_come_from_operator_settings(monkeypatch) -> None:
    from gigafactory import config
    from gigafactory.scheduling import framework

    monkeypatch.setenv("GIGAFACTORY_WEIGHT_WARM_REPO", "0")
    monkeypatch.setenv("GIGAFACTORY_CAPACITY_STRATEGY", "pack")
    profile = plugins.default_profile(**framework.settings_values(config.OperatorSettings()))
    snap = snapshots.Snapshot(now=NOW, jobs=[job("a", repo_key="r")], pods=pods("pool", 1), factories={"pool": factory("pool")})
    decision = cycle.run(snap, profile).decisions[0]
    # A weight of 0 switches the plugin off: it is not even in the breakdown.
    assert "WarmRepo" not in decision.scores
    assert next(p for p in profile.scorers if p.name == "FreeCapacity").strategy == "pack"


def explanation(reasons: dict[str, int], pods_total: int) -> cycle.Explanation:
    return cycle.Explanation(job=job("x"), reasons=reasons, pods_total=pods_total, position=1, resolvable=True)


@pytest.mark.parametrize(
    "reasons, total",
    [
        pytest.param({"full": 2, "lack capability gpu,ssd": 3, "not subscribed to queue backend": 2}, 7, id="mixed"),
        pytest.param({"heartbeat stale": 1}, 1, id="one"),
        pytest.param({}, 0, id="no-pods"),
    ],
)
def test_reasons_round_trip_through_the_message(reasons, total) -> None:
    assert cycle.reasons_of(cycle.explain(reasons, total)) == reasons


@pytest.mark.parametrize(
    "current, new, ago, due",
    [
        pytest.param(None, explanation({"full": 2}, 2), 0, True, id="first-explanation"),
        pytest.param("0/2 factory pods fit: 2 full", explanation({"full": 2}, 2), 999, False, id="same-message-never"),
        pytest.param("0/2 factory pods fit: 2 full", explanation({"full": 2}, 3), 5, False, id="pod-joined-counts-wait"),
        pytest.param("0/2 factory pods fit: 2 full", explanation({"full": 1, "heartbeat stale": 1}, 2), 5, False, id="pod-went-stale-counts-wait"),
        pytest.param("0/2 factory pods fit: 2 full", explanation({"full": 1, "heartbeat stale": 1}, 2), 60, True, id="counts-refresh-when-old"),
        pytest.param("0/2 factory pods fit: 2 full", explanation({"factory cordoned": 2}, 2), 0, True, id="cordon-at-once"),
        pytest.param("0/2 factory pods fit: 2 full", explanation({"full": 1, "lack capability gpu": 1}, 2), 0, True, id="new-static-reason-at-once"),
        pytest.param("0/1 factory pods fit: 1 lack capability gpu", explanation({"lack capability gpu": 1, "full": 1}, 2), 0, True,
                     id="first-busy-pod-at-once"),
        pytest.param("0/0 factory pods fit: no runner pod has announced itself", explanation({"full": 2}, 2), 0, True, id="pods-appear-at-once"),
        pytest.param("0/2 factory pods fit: 2 full", explanation({}, 0), 0, True, id="all-pods-gone-at-once"),
        pytest.param("written by someone else", explanation({"full": 2}, 2), 0, True, id="foreign-message"),
    ],
)
def test_explanation_is_rewritten_at_once_for_substance_and_late_for_counts(current, new, ago, due) -> None:
    assert cycle.explanation_due(current=current, new=new, written_ago=ago, refresh_seconds=60) is due


@pytest.mark.parametrize(
    "attempts, pod_names, expected",
    [
        pytest.param([{"pod": "pool-0", "outcome": "InfraError", "reason": "ClaimTimeout"}], 2, "pool-1", id="never-claimed-goes-elsewhere"),
        pytest.param([{"pod": "pool-0", "outcome": "InfraError", "reason": "LeaseExpired"}], 2, "pool-1", id="runner-died-goes-elsewhere"),
        pytest.param([{"pod": "pool-0", "outcome": "InfraError", "reason": "ClaimTimeout"}], 1, "pool-0", id="back-when-nothing-else-fits"),
        pytest.param([{"pod": "pool-0", "outcome": "AgentFailed", "reason": ""}], 2, "pool-0", id="agent-failure-is-not-the-pods"),
        pytest.param([{"pod": "pool-0", "outcome": "InfraError", "reason": "ClaimTimeout"}] + [{"pod": "pool-1", "outcome": "AgentFailed"}] * 3,
                     2, "pool-0", id="only-recent-attempts"),
    ],
)
def test_a_pod_that_let_a_binding_go_gets_the_job_back_only_when_nothing_else_fits(attempts, pod_names, expected) -> None:
    # pool-0 is the better pod by every score: warm for the job's repository, emptier.
    pod_list = [snapshots.PodInfo(name="pool-0", namespace="runners", factory="pool", slots=2, agents=frozenset({"script"}),
                                  warm_repos=frozenset({"r"})),
                snapshots.PodInfo(name="pool-1", namespace="runners", factory="pool", slots=2, agents=frozenset({"script"}))][:pod_names]
    avoid = snapshots.lost_bindings(attempts)
    snap = snapshots.Snapshot(now=NOW, jobs=[job("x", repo_key="r", avoid_pods=avoid)], pods=pod_list,
                              factories={"pool": factory("pool", slots_per_pod=2)}, used={("runners", "pool-1"): 1})
    result = cycle.run(snap, plugins.default_profile())
    assert bound(result) == {"x": expected}
