"""`kopf run -m gigafactory.kopfmain`: the same operator under kopf's process management.

`gigafactory operator` is the main entry; this module lets teams that run their operators with
`kopf run` (its logging, probes and signal handling) do so. Kopf hosts the process; the scheduling
loop, binds and folds stay off kopf's per-object machinery (see operating.py for why). Settings
come from GIGAFACTORY_* as usual; kopf itself logs in with the same GIGAFACTORY_KUBECONFIG, and
without it both use the in-cluster service account.
"""

import asyncio
import contextlib
import os
from typing import Any

import kopf

from gigafactory import config, kubeclient, operating


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


@kopf.on.startup()
async def start_operator(memo: kopf.Memo, **_: Any) -> None:
    settings = config.OperatorSettings()
    memo.client = kubeclient.Client.from_kubeconfig(settings.kubeconfig, user_agent="gigafactory-operator")
    memo.task = asyncio.create_task(operating.Operator(settings, memo.client).run(), name="gigafactory-operator")


@kopf.on.cleanup()
async def stop_operator(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "task", None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    client = getattr(memo, "client", None)
    if client is not None:
        await client.close()
