"""The replica decision of on-demand factories (scheduling/scaling.py), as tables."""

import datetime

import pytest

from gigafactory.scheduling import plugins, scaling, snapshots

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)


def factory(name="pool", slots=2, cost=1.0, **kw) -> snapshots.FactoryInfo:
    return snapshots.FactoryInfo(name=name, agents=frozenset({"script"}), slots_per_pod=slots, cost_weight=cost, **kw)


def pods(n: int) -> list[snapshots.PodInfo]:
    return [snapshots.PodInfo(name=f"p{i}", namespace="r", factory="pool", slots=2, agents=frozenset({"script"})) for i in range(n)]


def pool(*, current=0, announced=None, used=None, bound=None, lower_since=None, min_=0, max_=10, warm=0, delay=60, slots=2):
    announced = current if announced is None else announced
    return scaling.Pool(factory=factory(slots=slots), min_replicas=min_, max_replicas=max_, warm_slots=warm,
                        scale_down_delay_seconds=delay, current_replicas=current, pods=pods(announced),
                        used={("r", k): v for k, v in (used or {}).items()},
                        last_bound={("r", k): v for k, v in (bound or {}).items()}, lower_since=lower_since)


AGO = lambda seconds: NOW - datetime.timedelta(seconds=seconds)  # noqa: E731


@pytest.mark.parametrize("p, waiting, replicas, remove, word", [
    pytest.param(pool(), 0, 0, (), "steady", id="idle-at-zero-stays-zero"),
    pytest.param(pool(), 20, 10, (), "scale up", id="burst-from-zero-clamped-to-max"),
    pytest.param(pool(), 5, 3, (), "scale up", id="burst-rounds-up-to-whole-pods"),
    pytest.param(pool(min_=2), 0, 2, (), "scale up", id="never-below-min"),
    pytest.param(pool(warm=3), 0, 2, (), "scale up", id="warm-spare-from-zero"),
    pytest.param(pool(current=2, used={"p0": 2, "p1": 1}), 0, 2, (), "steady", id="running-jobs-hold-their-pods"),
    pytest.param(pool(current=3, used={"p0": 1}), 0, 3, (), "holding", id="demand-drops-wait-for-the-delay"),
    pytest.param(pool(current=3, used={"p0": 1}, lower_since=AGO(30)), 0, 3, (), "holding", id="still-within-delay"),
    pytest.param(pool(current=3, used={"p0": 1}, lower_since=AGO(61)), 0, 1, (("r", "p1"), ("r", "p2")), "scale down",
                 id="after-the-delay-only-idle-pods-go"),
    pytest.param(pool(current=3, used={"p1": 2}, lower_since=AGO(61)), 0, 1, (("r", "p0"), ("r", "p2")), "scale down",
                 id="the-busy-pod-is-never-chosen"),
    pytest.param(pool(current=2, used={"p0": 1, "p1": 1}, lower_since=AGO(61)), 0, 2, (), "cannot",
                 id="all-busy-nothing-goes"),
    pytest.param(pool(current=2, bound={"p0": AGO(5)}, lower_since=AGO(61)), 0, 1, (("r", "p1"),), "scale down",
                 id="a-pod-just-bound-a-job-is-not-idle"),
    pytest.param(pool(current=3, announced=1, lower_since=AGO(61)), 0, 0, (("r", "p0"),), "scale down",
                 id="pods-still-starting-go-first-without-a-pod-to-pick"),
    pytest.param(pool(current=4, min_=2, lower_since=AGO(61)), 0, 2, (("r", "p0"), ("r", "p1")), "scale down",
                 id="down-to-min-not-below"),
    pytest.param(pool(current=2, warm=2, lower_since=AGO(61)), 0, 1, (("r", "p0"),), "scale down", id="keeps-the-warm-spare"),
])
def test_replica_decision(p, waiting, replicas, remove, word) -> None:
    decision = scaling.decide(p, waiting=waiting, now=NOW)
    assert (decision.replicas, decision.remove) == (replicas, remove), decision.reason
    assert decision.reason.startswith(word), decision.reason


def test_flapping_demand_does_not_flap_the_pool() -> None:
    """Demand that drops for less than the delay and comes back never shrinks the pool."""
    p = pool(current=3, used={"p0": 1})
    first = scaling.decide(p, waiting=0, now=NOW)
    assert first.replicas == 3 and first.lower_since == NOW
    again = scaling.decide(pool(current=3, used={"p0": 1}, lower_since=first.lower_since), waiting=4, now=NOW + datetime.timedelta(seconds=30))
    assert again.replicas == 3 and again.lower_since is None  # demand is back: the clock resets
    later = scaling.decide(pool(current=3, used={"p0": 1}, lower_since=again.lower_since), waiting=0, now=NOW + datetime.timedelta(seconds=50))
    assert later.replicas == 3 and later.lower_since == NOW + datetime.timedelta(seconds=50)


def test_each_waiting_job_makes_only_the_cheapest_fitting_factory_grow() -> None:
    cheap, dear, gpu = factory("cheap", cost=1), factory("dear", cost=3), factory("gpu", cost=5, capabilities=frozenset({"gpu"}))
    jobs = [snapshots.JobInfo(namespace="t", name=f"j{i}", uid=f"u{i}", resource_version="1", agent="script",
                              capabilities=frozenset({"gpu"}) if i == 0 else frozenset()) for i in range(3)]
    owned = scaling.attribute(jobs, {f.name: f for f in (dear, gpu, cheap)}, plugins.default_profile())
    assert {name: [j.name for j in js] for name, js in owned.items()} == {"cheap": ["j1", "j2"], "dear": [], "gpu": ["j0"]}
    cordoned = factory("cheap", cost=1, unschedulable=True)
    owned = scaling.attribute(jobs[1:], {f.name: f for f in (dear, cordoned)}, plugins.default_profile())
    assert [j.name for j in owned["dear"]] == ["j1", "j2"]
