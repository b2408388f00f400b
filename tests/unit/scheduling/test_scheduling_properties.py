"""Invariants of any cycle over any snapshot: no pod overfilled, every bind passes every hard
filter, every eligible job is either bound or explained, and explanations count every pod."""

import datetime

from hypothesis import given, settings, strategies as st

from gigafactory.scheduling import cycle, plugins, snapshots

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)
NAMES = st.sampled_from(["a", "b", "c"])
CAPS = st.frozensets(st.sampled_from(["gpu", "python", "ssd"]), max_size=2)
AGENTS = st.frozensets(st.sampled_from(["script", "aider"]), min_size=1)


@st.composite
def worlds(draw):
    factories = {}
    for name in draw(st.sets(NAMES, min_size=1)):
        factories[name] = snapshots.FactoryInfo(
            name=name, agents=draw(AGENTS), capabilities=draw(CAPS),
            subscriptions=draw(st.sampled_from([frozenset({"*"}), frozenset({"q1"}), frozenset({"q2", "q1"})])),
            namespaces=draw(st.sampled_from([frozenset({"*"}), frozenset({"n1"})])),
            slots_per_pod=draw(st.integers(1, 3)), cost_weight=draw(st.floats(0, 5)),
            unschedulable=draw(st.booleans()) and draw(st.booleans()),
        )
    pods = [
        snapshots.PodInfo(
            name=f"p{i}", namespace="r", factory=draw(st.sampled_from(sorted(factories) + ["ghost"])),
            slots=draw(st.integers(0, 3)), agents=draw(AGENTS), warm_repos=draw(st.frozensets(st.sampled_from(["r1", "r2"]))),
            ready=draw(st.booleans()) or draw(st.booleans()),
        )
        for i in range(draw(st.integers(0, 8)))
    ]
    used = {p.key: draw(st.integers(0, 2)) for p in pods}
    jobs = [
        snapshots.JobInfo(
            namespace=draw(st.sampled_from(["n1", "n2"])), name=f"j{i}", uid=f"u{i}", resource_version="1",
            queue=draw(st.sampled_from(["q1", "q2"])), priority=draw(st.integers(0, 3)),
            created_at=NOW - datetime.timedelta(seconds=draw(st.integers(0, 600))),
            agent=draw(st.sampled_from(["script", "aider"])), capabilities=draw(CAPS),
            target_factory=draw(st.none() | NAMES), repo_key=draw(st.sampled_from(["r1", "r2", ""])),
            suspended=draw(st.booleans()) and draw(st.booleans()),
        )
        for i in range(draw(st.integers(0, 25)))
    ]
    return snapshots.Snapshot(now=NOW, jobs=jobs, pods=pods, factories=factories, used=used)


@settings(max_examples=200, deadline=None)
@given(worlds())
def test_cycle_invariants(snap: snapshots.Snapshot) -> None:
    before = dict(snap.used)
    profile = plugins.default_profile()
    result = cycle.run(snap, profile)

    placed: dict[snapshots.PodKey, int] = {}
    for decision in result.decisions:
        job, pod = decision.job, decision.pod
        factory = snap.factories[pod.factory]
        assert all(f.filter(job, factory).ok for f in profile.factory_filters)
        assert pod.ready and job.agent in pod.agents and not job.suspended
        placed[pod.key] = placed.get(pod.key, 0) + 1
        assert 0 <= decision.score <= 100
    for pod in snap.pods:
        # Never more new binds than the pod had free slots.
        assert placed.get(pod.key, 0) <= max(0, snap.capacity(pod) - before.get(pod.key, 0))

    decided = {d.job.uid for d in result.decisions} | {e.job.uid for e in result.unschedulable} | {j.uid for j in result.skipped}
    assert decided == {j.uid for j in snap.jobs}
    for explanation in result.unschedulable:
        assert sum(explanation.reasons.values()) == len(snap.pods)
        assert explanation.message.startswith(f"0/{len(snap.pods)} factory pods fit")


@settings(max_examples=200, deadline=None)
@given(worlds())
def test_an_explained_job_really_fits_nowhere(snap: snapshots.Snapshot) -> None:
    profile = plugins.default_profile()
    result = cycle.run(snap, profile)
    for explanation in result.unschedulable:
        job = explanation.job
        for pod in snap.pods:  # free slots as the cycle left them
            factory = snap.factories.get(pod.factory)
            fits = all(f.filter(job, factory).ok for f in profile.factory_filters) and all(
                f.filter(job, pod, snap).ok for f in profile.pod_filters
            )
            assert not fits, f"{job.name} explained as unschedulable but fits {pod.name}"
