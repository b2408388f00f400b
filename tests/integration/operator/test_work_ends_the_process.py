"""When the operator's work (informers, scheduling loop, controllers) dies, the process ends with
status 1 so that its Deployment restarts it: kopf must not go on running, answering its probes as if
all were well. Real kopf, logged in to the session's API server; only the work is replaced by one
that fails after it started."""

import asyncio

import pytest

from gigafactory import app, config, kopfmain


async def test_a_work_task_that_dies_ends_gigafactory_operator_with_status_1(kubeconfig, monkeypatch) -> None:
    started = asyncio.Event()

    async def dying_work(operator: object) -> None:
        started.set()
        await asyncio.sleep(0)  # (it ran, then:)
        raise RuntimeError("the scheduling loop died")

    monkeypatch.setattr(app, "work", dying_work)
    settings = config.OperatorSettings(kubeconfig=kubeconfig, http_port=0)
    with pytest.raises(SystemExit) as ended:  # (awaited in this task: asyncio lets a SystemExit out of the loop)
        await kopfmain.main(settings)
    assert started.is_set() and ended.value.code == 1


async def test_a_cancelled_operator_stops_without_an_error(kubeconfig, monkeypatch) -> None:
    """The other way round: a stop from outside (SIGTERM, kopf's stop flag) is a clean stop, not a failure."""
    running = asyncio.Event()

    async def idle_work(operator: object) -> None:
        running.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(app, "work", idle_work)
    settings = config.OperatorSettings(kubeconfig=kubeconfig, http_port=0)
    task = asyncio.create_task(kopfmain.main(settings))
    await asyncio.wait_for(running.wait(), timeout=60)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
