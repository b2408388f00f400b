"""The chaos harness's own rules (no processes, no server)."""

import asyncio
import pathlib
import time

from tests.chaos import harness


def test_binding_leases_are_checked_only_after_the_operators_own_timings() -> None:
    # A fold or undo whose Lease deletion failed leaves the Lease to its expiry timer (a binding Lease
    # or claim timeout after its last renewal), or to a new leader (a leader Lease, twice over, plus a
    # stop grace): the check may not call a Lease left before that a leak.
    config = harness.Config(work_dir=pathlib.Path("."))
    assert config.settle_seconds() >= (max(config.binding_lease, config.claim_timeout) + 2 * config.leader_lease
                                       + config.stop_grace)


def test_a_lease_removed_within_the_settle_time_is_no_violation_and_one_that_stays_is() -> None:
    gone_at = time.monotonic() + 0.6

    async def leaving() -> list[dict]:
        return [{"metadata": {"name": "gf-x-1"}}] if time.monotonic() < gone_at else []

    async def staying() -> list[dict]:
        return [{"metadata": {"name": "gf-y-1"}}]

    assert asyncio.run(harness.wait_until_gone(leaving, 5.0, interval=0.05)) == []
    started = time.monotonic()
    assert asyncio.run(harness.wait_until_gone(staying, 0.5, interval=0.05)) == ["gf-y-1"]
    assert 0.5 <= time.monotonic() - started < 3
