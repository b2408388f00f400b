"""What the dashboard's pages compute from the caches: fleet totals, queue statistics, filters and
paging, a waiting job's explanation and queue position; and that every value is escaped."""
from __future__ import annotations

import datetime
from typing import Any

import pytest

from gigafactory.dashboard import pages, serving, views

NOW = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc)


def stamp(minutes_ago: float) -> str:
    return (NOW - datetime.timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(name: str, *, namespace: str = "team-a", queue: str = "default", phase: str | None = None, priority: int = 0,
        created: float = 10, factory: str | None = None, attempts: list[dict[str, Any]] | None = None,
        **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "1",
                     "creationTimestamp": stamp(created)},
        "spec": {"queue": queue, "priority": priority, "repo": {"url": "https://git.example.com/r.git"},
                 "task": {"prompt": "p"}, "agent": {"profile": "script"}},
        "status": {**status},
    }
    if phase:
        body["status"]["phase"] = phase
    if factory:
        body["status"]["factory"] = factory
    if attempts:
        body["status"]["attempts"] = attempts
    return body


def test_fleet_rows_totals_and_states() -> None:
    factories = [
        {"metadata": {"name": "b"}, "spec": {"agents": ["script"], "unschedulable": True, "scaling": {"maxReplicas": 3}},
         "status": {"phase": "Draining", "readyPods": 1, "slotsTotal": 2, "slotsUsed": 1, "scaling": {"currentReplicas": 1, "desiredReplicas": 3},
                    "pods": [{"name": "b-1", "namespace": "gf", "ready": True, "slots": 2, "running": 1}]}},
        {"metadata": {"name": "a"}, "spec": {"agents": ["script"], "capabilities": ["gpu"]}, "status": {"phase": "Offline"}},
    ]
    heartbeat = {"metadata": {"name": "b-1", "namespace": "gf", "labels": {"gigafactory.dev/role": "heartbeat",
                                                                            "gigafactory.dev/factory": "b", "gigafactory.dev/pod": "b-1"}},
                 "spec": {"holderIdentity": "b-1", "renewTime": (NOW - datetime.timedelta(seconds=4)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}
    fleet = views.fleet(factories, [heartbeat], [job("x"), job("y", phase="Running")], now=NOW)
    assert [f.name for f in fleet.factories] == ["a", "b"]
    b = fleet.factories[1]
    assert (b.ready_pods, b.total_pods, b.slots_used, b.slots_total) == (1, 1, 1, 2)
    assert b.states == ("cordoned", "scaling 1→3")
    assert b.pods[0].heartbeat == "4s ago" and b.heartbeat == "4s ago"
    assert fleet.factories[0].heartbeat == "never" and fleet.factories[0].capabilities == ("gpu",)
    assert (fleet.ready_pods, fleet.slots_total) == (1, 2)
    assert fleet.jobs_by_phase["Pending"] == 1 and fleet.jobs_by_phase["Running"] == 1


def test_queue_rows_count_waits_and_the_last_hour() -> None:
    ended = [{"attempt": 1, "outcome": "AgentFailed", "finishedAt": stamp(50)},
             {"attempt": 2, "outcome": "Succeeded", "finishedAt": stamp(2)}]
    rows = views.queue_rows(map(views.summarize, [
        job("old", created=30), job("new", created=1), job("run", phase="Running"),
        job("done", phase="Succeeded", attempts=ended), job("ancient", phase="Failed", attempts=[
            {"attempt": 1, "outcome": "AgentFailed", "finishedAt": stamp(90)}]),  # over an hour ago
        job("other", queue="gpu", created=5)]), now=NOW)
    default, gpu = rows
    assert (default.name, default.pending, default.active, default.oldest_wait) == ("default", 2, 1, "30m")
    assert (default.succeeded_hour, default.failed_hour) == (1, 1)
    assert len(default.buckets) == 12 and default.buckets[-1] == (1, 0) and default.buckets[2] == (0, 1)
    assert (gpu.name, gpu.pending, gpu.succeeded_hour) == ("gpu", 1, 0)


JOBS = [job(f"job-{i:03}", namespace=f"ns-{i % 3}", queue="q" + str(i % 2), created=1000 - i,
            phase=["Pending", "Running", "Succeeded"][i % 3], factory="f" if i % 3 else None) for i in range(120)]


@pytest.mark.parametrize(("query", "total", "first"), [
    pytest.param({}, 120, "job-119", id="all-newest-first"),
    pytest.param({"namespace": "ns-1"}, 40, "job-118", id="namespace"),
    pytest.param({"queue": "q0", "phase": "Pending"}, 20, "job-114", id="queue-and-phase"),
    pytest.param({"factory": "f"}, 80, "job-119", id="factory"),
    pytest.param({"q": "JOB-00"}, 10, "job-009", id="search-ignores-case"),
    pytest.param({"page": "3"}, 120, "job-019", id="third-page"),
    pytest.param({"page": "99"}, 120, "job-019", id="past-the-end-is-the-last-page"),
    pytest.param({"page": "x"}, 120, "job-119", id="garbage-page"),
    pytest.param({"namespace": "nope"}, 0, None, id="nothing"),
])
def test_job_list_filters_and_pages(query: dict[str, str], total: int, first: str | None) -> None:
    listing = views.job_list(views.newest_first(map(views.summarize, JOBS)), views.Filters.parse(query), now=NOW)
    assert listing.total == total
    assert (listing.rows[0].name if listing.rows else None) == first
    assert len(listing.rows) == min(views.PAGE_SIZE, total - (listing.page - 1) * views.PAGE_SIZE)
    assert listing.namespaces == ("ns-0", "ns-1", "ns-2") and listing.factories == ("f",)


def test_waiting_job_says_why_and_where_it_stands() -> None:
    condition = {"type": "Scheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 factory pods fit: 3 full"}
    waiting = [job("a", created=30, conditions=[condition]), job("b", created=20), job("c", created=10, priority=5),
               job("elsewhere", queue="other")]
    detail = views.job_detail(waiting[1], waiting, now=NOW, aging_seconds_per_point=60)
    # Effective priority, a point per minute waited: a 30, b 20, c 5 + 10 (the scheduler's own order).
    assert detail.position == (2, 3)
    assert views.job_detail(waiting[2], waiting, now=NOW, aging_seconds_per_point=60).position == (3, 3)
    first = views.job_detail(waiting[0], waiting, now=NOW, aging_seconds_per_point=60)
    assert first.position == (1, 3)
    assert first.explanation == "Pending: Unschedulable: 0/3 factory pods fit: 3 full"


def test_bound_job_shows_its_score_breakdown_as_the_current_attempt() -> None:
    body = job("a", phase="Running", attempt=2, assignment={
        "factory": "f", "pod": "p", "attempt": 2, "lease": "l", "boundAt": stamp(1), "score": 77, "scores": {"Cost": 50, "FreeCapacity": 90}},
        attempts=[{"attempt": 1, "outcome": "InfraError", "reason": "LeaseExpired", "factory": "g", "pod": "q",
                   "startedAt": stamp(5), "finishedAt": stamp(3), "scores": {"Cost": 10}}])
    detail = views.job_detail(body, [body], now=NOW, aging_seconds_per_point=60)
    assert detail.explanation == "Running on f/p with score 77/100" and detail.position is None
    assert [(a.attempt, a.outcome, a.current) for a in detail.attempts] == [(1, "InfraError", False), (2, "Running", True)]
    assert detail.attempts[0].duration == "2m"
    assert detail.attempts[1].scores == (("FreeCapacity", 90), ("Cost", 50))


def test_a_job_with_garbage_in_its_status_still_renders() -> None:
    body = job("a", phase="Failed", attempts=["nonsense", {"attempt": "x", "scores": "nope", "finishedAt": "yesterday"}],
               conditions="no", result={"diffstat": "no", "changedFiles": "no"})
    detail = views.job_detail(body, [body], now=NOW, aging_seconds_per_point=60)
    assert "<h1>a" in pages.job(detail, log=None, log_note="")
    assert views.job_list(views.newest_first(map(views.summarize, [body, {"metadata": "x"}])), views.Filters(), now=NOW).total == 2


@pytest.mark.parametrize("value", ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "' onmouseover='x", "{0}{name}"])
def test_every_value_is_escaped(value: str) -> None:
    markup = pages.fmt('<a title="{}">{}</a>', value, value)
    # The template's own two tags and two quotes, and not one more.
    assert markup.count("<") == 2 and markup.count('"') == 2 and "'" not in markup and "{" in markup or "{" not in value
    row = views.JobRow(namespace=value, name=value, phase=value, reason=value, queue=value, priority=0, factory=value,
                       pod=value, attempt=0, age="")
    html = pages.jobs(views.JobList(rows=(row,), total=1, page=1, pages=1, namespaces=(value,), queues=(value,), factories=(value,)),
                      views.Filters(search=value))
    assert "<script" not in html and "<img" not in html
    assert pages.url("jobs", value, "x").count("/") == 3  # a name cannot add path segments


def test_control_characters_are_shown_not_passed() -> None:
    assert pages.esc("a\x1b[2Jb\u202ec\nd\te") == "a\\x1b[2Jb\\u202ec\nd\te"


@pytest.mark.parametrize(("host", "allowed"), [
    pytest.param("127.0.0.1:17081", True, id="loopback"),
    pytest.param("localhost:8080", True, id="port-forward-any-port"),
    pytest.param("[::1]:17081", True, id="ipv6-loopback"),
    pytest.param("127.1.2.3", True, id="loopback-net"),
    pytest.param("dash.example.com", True, id="allowed-host"),
    pytest.param("attacker.example:17081", False, id="dns-rebinding"),
    pytest.param("10.0.0.1:17081", False, id="other-address"),
    pytest.param("", False, id="no-host"),
])
def test_host_check(host: str, allowed: bool) -> None:
    settings = serving.Settings(allowed_hosts=frozenset({"dash.example.com"}))
    assert serving.host_allowed(host, settings) is allowed


def test_a_finished_job_says_how_its_last_attempt_ended_and_where() -> None:
    body = job("a", phase="Failed", reason="AttemptsExhausted", attempts=[
        {"attempt": 1, "outcome": "AgentFailed", "reason": "ExitCode", "message": "exit 3", "factory": "f", "pod": "p", "score": 61}])
    detail = views.job_detail(body, [body], now=NOW, aging_seconds_per_point=60)
    assert detail.explanation == "Failed: last attempt AgentFailed ExitCode exit 3; it ran on f/p with score 61/100"
    cancelled = job("b", phase="Cancelled", reason="Cancelled")
    assert views.job_detail(cancelled, [], now=NOW, aging_seconds_per_point=60).explanation == "Cancelled"
