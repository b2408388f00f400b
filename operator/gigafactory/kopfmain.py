"""`kopf run -m gigafactory.kopfmain`: the same operator under kopf's process management.

`gigafactory operator` is the main entry; this module lets teams that run their operators with
`kopf run` (its logging, probes and signal handling) do so. Kopf hosts the process; the operator's
work (app.work: the informers, the scheduling loop, the lifecycle controllers, and the leader
elector when GIGAFACTORY_LEADER_ELECTION is on) is one task started at kopf's startup and stopped at
its cleanup. When that task ends by itself — lost leadership, a loop that died — the process ends
too (kopf's own shutdown, by SIGTERM), so that the Deployment restarts it, instead of kopf running on
and looking healthy with nothing working. Settings come from GIGAFACTORY_* as usual; kopf itself
logs in with the same GIGAFACTORY_KUBECONFIG, and without it both use the in-cluster service account.
See docs/architecture.md for what kopf does here and what it does not.
"""

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import kopf

from gigafactory import app, config, kubeclient

logger = logging.getLogger(__name__)


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf logs in where the operator's own client goes: the file GIGAFACTORY_KUBECONFIG names when
    set (explicit: never a user's default kubeconfig by accident), else the in-cluster service account."""
    path = config.OperatorSettings().kubeconfig
    if not path:
        return kopf.login_with_service_account(settings=settings, **kwargs)
    # kopf's kubeconfig login reads only $KUBECONFIG; point it at our file for the call.
    saved = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = path
    try:
        return kopf.login_with_kubeconfig(settings=settings, **kwargs)
    finally:
        if saved is None:
            del os.environ["KUBECONFIG"]
        else:
            os.environ["KUBECONFIG"] = saved


def end_process_when_done(task: "asyncio.Task[None]") -> None:
    """The work ended without being asked to (cleanup cancels it): end the process through kopf's
    own signal handling, so its shutdown runs as for any SIGTERM."""
    if task.cancelled():
        return
    error = task.exception()
    logger.error("the operator's work ended (%s): the process exits to be restarted", error or "returned", exc_info=error)
    os.kill(os.getpid(), signal.SIGTERM)


@kopf.on.startup()
async def start_operator(memo: kopf.Memo, **_: Any) -> None:
    settings = config.OperatorSettings()
    memo.client = kubeclient.Client.from_kubeconfig(settings.kubeconfig, user_agent=app.USER_AGENT)
    memo.task = asyncio.create_task(app.work(settings, memo.client), name="gigafactory-operator")
    memo.task.add_done_callback(end_process_when_done)


@kopf.on.cleanup()
async def stop_operator(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "task", None)
    if task is not None:
        task.remove_done_callback(end_process_when_done)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # (its error is logged already)
            await task
    client = getattr(memo, "client", None)
    if client is not None:
        await client.close()
