"""kopf's Factory delete handler over the Operator's drain (factorykopf.py, controllers/finalizing.py):
it returns — and only then does kopf remove the finalizer — once this replica works and no binding
of the factory is left; a standby's handler never returns. No API server: the Operator is built
without a client, its caches are filled by hand and its task spawner is replaced."""

import asyncio
import datetime

import kopf
import pytest

from gigafactory import config, constants, factorykopf, leases, operating

T0 = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.timezone.utc)
FACTORY = {"metadata": {"name": "pool", "uid": "f1", "deletionTimestamp": "2026-11-24T12:00:00Z",
                        "finalizers": [constants.FINALIZER_FACTORY]},
           "spec": {"drainGraceSeconds": 600}}


def operator(monkeypatch, spawned: list[str], *, working: bool = True) -> operating.Operator:
    op = operating.Operator(config.OperatorSettings(), client=None, clock=lambda: T0)  # type: ignore[arg-type]
    monkeypatch.setattr(op, "_spawn", lambda coro, name: (coro.close(), spawned.append(name)))
    if working:  # what run() does once it leads and recover() is done
        op.started = True
        op.working.set()
    return op


def binding_lease(job: str = "j") -> dict:
    return leases.build_binding_lease(job_namespace="team-a", job_name=job, job_uid=f"uid-{job}", attempt=1, factory="pool",
                                      pod="pool-0", pod_namespace="runners", claim_timeout_seconds=30, moment=T0)


async def handle(op: operating.Operator | None, body: dict = FACTORY) -> None:
    await factorykopf.drain(name=body["metadata"]["name"], body=kopf.Body(body), memo=kopf.Memo(operator=op))


async def test_the_handler_returns_only_when_the_last_binding_of_the_factory_is_gone(monkeypatch) -> None:
    spawned: list[str] = []
    op = operator(monkeypatch, spawned)
    op.factories.cache[("", "pool")] = FACTORY
    lease = binding_lease()
    op.bindings.cache[("runners", lease["metadata"]["name"])] = lease
    handler = asyncio.create_task(handle(op))
    await asyncio.sleep(0)  # (one turn: the handler asked for the drain and waits)
    # The unclaimed binding is undone at once (the write is the controllers' task) ...
    assert spawned == [f"expire:{lease['metadata']['name']}"]
    assert not handler.done()
    # ... and its Lease's deletion, as the informer delivers it, is what lets the handler return.
    del op.bindings.cache[("runners", lease["metadata"]["name"])]
    op.busy.clear()
    op._on_binding("DELETED", lease)
    await asyncio.wait_for(handler, 1)
    assert op.drains == {}
    op.timers.cancel_all()


async def test_a_factory_the_synced_caches_do_not_know_is_drained_at_once(monkeypatch) -> None:
    await asyncio.wait_for(handle(operator(monkeypatch, [])), 1)


async def test_a_factory_gone_while_its_drain_was_awaited_lets_the_handler_return(monkeypatch) -> None:
    op = operator(monkeypatch, [])
    op.factories.cache[("", "pool")] = FACTORY
    lease = binding_lease()
    op.bindings.cache[("runners", lease["metadata"]["name"])] = lease
    handler = asyncio.create_task(handle(op))
    await asyncio.sleep(0)
    op._on_factory("DELETED", FACTORY)  # (its finalizer removed by someone else)
    await asyncio.wait_for(handler, 1)
    op.timers.cancel_all()


async def test_a_standby_never_returns_it_retries(monkeypatch) -> None:
    """A standby's Operator does not work: its handler waits (bounded) and raises TemporaryError —
    a handler that returned would have kopf remove the finalizer while the leader drains."""
    op = operator(monkeypatch, [], working=False)
    monkeypatch.setattr(factorykopf, "wait_seconds", lambda *_, **__: 0.05)
    with pytest.raises(kopf.TemporaryError, match="standing by"):
        await handle(op)
    with pytest.raises(kopf.TemporaryError, match="not running"):
        await handle(None)


async def test_a_standby_that_takes_over_drains_at_once(monkeypatch) -> None:
    op = operator(monkeypatch, [], working=False)
    handler = asyncio.create_task(handle(op))
    await asyncio.sleep(0)
    assert not handler.done()
    op.started = True
    op.working.set()  # it leads now, its caches synced: the factory is unknown to them, nothing to wait for
    await asyncio.wait_for(handler, 1)


def test_the_handler_waits_until_the_drain_ends_and_one_stop_grace_beyond() -> None:
    # deletionTimestamp T0, drainGraceSeconds 600, stop grace 20: every binding is undone by T0 + 620 s.
    assert factorykopf.wait_seconds(kopf.Body(FACTORY), now=T0, stop_grace_seconds=20) == 620 + 20
    late = T0 + datetime.timedelta(seconds=900)
    assert factorykopf.wait_seconds(kopf.Body(FACTORY), now=late, stop_grace_seconds=20) == 20


def test_kopfs_finalizer_is_the_drain_finalizer_and_its_state_stays_off_kopf_zalando_org() -> None:
    settings = kopf.OperatorSettings()
    factorykopf.configure(settings)
    assert settings.persistence.finalizer == constants.FINALIZER_FACTORY == "gigafactory.dev/drain"
    patch = kopf.Patch()
    settings.persistence.progress_storage.store(key=kopf.HandlerId("drain"), record={"retries": 1}, body=kopf.Body(FACTORY), patch=patch)
    assert list(patch["metadata"]["annotations"]) == ["kopf.gigafactory.dev/drain"]
    # No diff base: nothing is stored for a Factory that changes (and nothing read back).
    patch = kopf.Patch()
    settings.persistence.diffbase_storage.store(body=kopf.Body(FACTORY), patch=patch, essence=kopf.BodyEssence(spec={}))
    assert not patch and settings.persistence.diffbase_storage.fetch(body=kopf.Body(FACTORY)) is None
    assert not settings.posting.enabled


def test_the_delete_handler_is_mandatory_and_unfiltered_so_kopf_never_drops_the_finalizer_on_its_own() -> None:
    """kopf removes its finalizer from an object no mandatory delete handler matches, and counts a
    handler that timed out or ran out of retries as done: none of that may apply to the drain."""
    registry = kopf.get_default_registry()
    handlers = [h for h in registry._changing.get_all_handlers() if h.reason == kopf.Reason.DELETE]
    assert [h.id for h in handlers] == ["drain"]
    drain = handlers[0]
    assert drain.requires_finalizer
    assert (drain.when, drain.labels, drain.annotations, drain.field, drain.value) == (None, None, None, None, None)
    assert (drain.timeout, drain.retries, drain.errors) == (None, None, kopf.ErrorsMode.TEMPORARY)
