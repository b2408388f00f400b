"""`kopf run -m gigafactory.kopfmain`: the same operator under kopf's process management.

`gigafactory operator` is the main entry; this module lets teams that run their operators with
`kopf run` (its logging, probes and signal handling) do so. Kopf hosts the process; the scheduling
loop, binds and folds stay off kopf's per-object machinery (see operating.py for why). Settings
come from GIGAFACTORY_* as usual; kopf itself logs in with the same GIGAFACTORY_KUBECONFIG, and
without it both use the in-cluster service account.
"""

import asyncio
import contextlib
import datetime
import time
from typing import Any

import kopf

from gigafactory import config, kubeauth, kubeclient, operating


@kopf.on.login()
async def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf logs in where the operator's own client goes: the file GIGAFACTORY_KUBECONFIG names when
    set (explicit: never a user's default kubeconfig by accident), else the in-cluster service account.
    Read afresh on every call, with our own loader (no $KUBECONFIG set for kopf's, which would change
    it for the whole process): kopf calls this at start, after a 401 and when `expiration` passes, so a
    rotated token file is read again and an exec plugin run again (kubeauth)."""
    credentials = kubeclient.load_credentials(config.OperatorSettings().kubeconfig)
    return connection_info(credentials, await credentials.current())


def connection_info(credentials: kubeauth.Credentials, auth: kubeauth.Auth) -> kopf.ConnectionInfo:
    """What kopf needs of our credentials; an exec plugin's expiry (less kubeauth's margin) becomes
    kopf's `expiration`, so kopf logs in again before it lapses."""
    material = auth.material
    expiration = None
    if material.expires is not None:
        remaining = max(material.expires - time.time(), 0.0)
        expiration = datetime.datetime.fromtimestamp(material.expires - min(kubeauth.EXEC_MARGIN, remaining / 10),
                                                     tz=datetime.timezone.utc)
    return kopf.ConnectionInfo(
        server=credentials.server, ca_path=credentials.ca_file, ca_data=credentials.ca_data, insecure=credentials.insecure or None,
        scheme="Bearer" if material.token else None, token=material.token,
        username=material.basic[0] if material.basic else None, password=material.basic[1] if material.basic else None,
        certificate_data=material.cert[0] if material.cert else None, private_key_data=material.cert[1] if material.cert else None,
        expiration=expiration)


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
