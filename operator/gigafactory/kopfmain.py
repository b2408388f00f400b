"""`kopf run -m gigafactory.kopfmain`: the same operator under kopf's process management.

`gigafactory operator` is the main entry; this module lets teams that run their operators with
`kopf run` (its logging, probes and signal handling) do so. Kopf hosts the process; the scheduling
loop, binds and folds stay off kopf's per-object machinery (see operating.py for why). Settings
come from GIGAFACTORY_* as usual; without GIGAFACTORY_KUBECONFIG the in-cluster account is used.
"""

import asyncio
import contextlib
from typing import Any

import kopf

from gigafactory import config, kubeclient, operating


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
