"""Both sides of the protocol read what the other side wrote, and bad Leases never raise."""

import datetime

import pytest

from gigafactory import leases

T0 = datetime.datetime(2026, 11, 24, 10, 0, 0, tzinfo=datetime.timezone.utc)


def test_heartbeat_round_trip_and_readiness() -> None:
    body = leases.build_heartbeat_lease(
        pod="p1", namespace="runners", factory="pool-a", slots=2, agents=["script", "aider"],
        warm_repos=[leases.repo_key("https://x/a.git")], duration_seconds=15, moment=T0,
    )
    beat = leases.parse_heartbeat(body)
    assert beat is not None
    assert (beat.pod, beat.namespace, beat.factory, beat.slots) == ("p1", "runners", "pool-a", 2)
    assert beat.agents == {"script", "aider"}
    assert beat.warm_repos == {leases.repo_key("https://X/a")}  # same repo, other spelling
    assert beat.is_ready(T0 + datetime.timedelta(seconds=14))
    assert not beat.is_ready(T0 + datetime.timedelta(seconds=15))


def test_draining_pod_is_not_ready() -> None:
    body = leases.build_heartbeat_lease(
        pod="p1", namespace="n", factory="f", slots=1, agents=["script"], duration_seconds=15, moment=T0, draining=True
    )
    assert not leases.parse_heartbeat(body).is_ready(T0)


@pytest.mark.parametrize(
    "lease",
    [
        pytest.param({}, id="empty"),
        pytest.param({"metadata": {"labels": {"gigafactory.dev/role": "heartbeat"}}}, id="no-factory"),
        pytest.param({"metadata": {"labels": {"gigafactory.dev/role": "binding"}, "annotations": {"gigafactory.dev/attempt": "x"}}}, id="bad-attempt"),
        pytest.param({"metadata": {"labels": {"gigafactory.dev/role": "binding"}}}, id="no-annotations"),
    ],
)
def test_malformed_leases_parse_to_none(lease: dict) -> None:
    assert leases.parse_heartbeat(lease) is None
    assert leases.parse_binding(lease) is None


def test_heartbeat_with_garbage_slots_has_no_slots() -> None:
    body = leases.build_heartbeat_lease(pod="p", namespace="n", factory="f", slots=1, agents=[], duration_seconds=15, moment=T0)
    body["metadata"]["annotations"]["gigafactory.dev/slots"] = "lots"
    assert leases.parse_heartbeat(body).slots == 0


def test_binding_lifecycle_claim_moves_expiry() -> None:
    body = leases.build_binding_lease(
        job_namespace="team-a", job_name="fix", job_uid="u1", attempt=2, factory="pool-a",
        pod="p1", pod_namespace="runners", claim_timeout_seconds=30, moment=T0,
    )
    body["metadata"]["resourceVersion"] = "7"
    binding = leases.parse_binding(body)
    assert binding.name == "gf-u1-2" and binding.attempt == 2 and binding.holder == "p1"
    assert not binding.claimed and binding.stop is None
    assert binding.expires_at == T0 + datetime.timedelta(seconds=30)

    claimed_at = T0 + datetime.timedelta(seconds=10)
    patch = leases.claim_patch(pod="p1", duration_seconds=45, moment=claimed_at, resource_version="7")
    assert patch["metadata"]["resourceVersion"] == "7"
    body["spec"].update(patch["spec"])
    binding = leases.parse_binding(body)
    assert binding.claimed
    assert binding.expires_at == claimed_at + datetime.timedelta(seconds=45)


def test_stop_reasons_are_checked() -> None:
    assert leases.stop_patch("Cancelled")["metadata"]["annotations"]["gigafactory.dev/stop"] == "Cancelled"
    with pytest.raises(ValueError):
        leases.stop_patch("Because")


def test_micro_time_round_trip() -> None:
    text = leases.format_micro_time(T0)
    assert text == "2026-11-24T10:00:00.000000Z"
    assert leases.parse_time(text) == T0
    assert leases.parse_time("not a time") is None
