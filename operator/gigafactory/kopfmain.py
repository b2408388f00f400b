"""The operator process: a kopf operator, for `gigafactory operator` (what the chart runs) and for
`kopf run -m gigafactory.kopfmain` alike.

kopf hosts the process: its login (ours points it at GIGAFACTORY_KUBECONFIG, else the in-cluster
service account; kopf logs in again when its credentials stop working), logging, signal handling,
its startup and cleanup phases. The operator's work (app.work: the informers, the scheduling loop,
the lifecycle controllers, and the leader elector when GIGAFACTORY_LEADER_ELECTION is on) is one task
started at kopf's startup and stopped at its cleanup; its Operator is in kopf's memo (`memo.operator`).
When that task ends by itself — lost leadership, a loop that died — the process ends too, through
kopf's shutdown, so that the Deployment restarts it instead of kopf running on and looking healthy
with nothing working.
kopf watches Factories, and only them: their finalizer and the wait for a deleted one's drain are
kopf handlers (factorykopf.py, registered by importing it here). AgentJob events stay off kopf's
per-object machinery: docs/architecture.md says what kopf does here, what it does not, and why.
"""

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import time
from typing import Any

import kopf

from gigafactory import app, config, electing, factorykopf, kubeauth, kubeclient, observing

# The registry our handlers (here and in factorykopf) went into when they were imported: `kopf run -m`
# finds them in kopf's default registry, and main() hands this one to kopf.operator explicitly, since
# the default is process-wide state that another kopf run in the process may replace (kopf's own CLI
# sets it and never puts it back).
REGISTRY = kopf.get_default_registry()

HANDLERS = (factorykopf.drain,)  # kopf's resource handlers: registered with kopf on import

logger = logging.getLogger(__name__)


def settings_of(memo: Any) -> config.OperatorSettings:
    """The settings `gigafactory operator` passed in the memo (its --kubeconfig among them); under
    `kopf run`, GIGAFACTORY_* as usual."""
    given = getattr(memo, "settings", None)
    return given if isinstance(given, config.OperatorSettings) else config.OperatorSettings()


@kopf.on.login()
async def login(memo: Any = None, **_: Any) -> kopf.ConnectionInfo:
    """kopf logs in where the operator's own client goes: the kubeconfig file the settings name when
    set (explicit: never a user's default kubeconfig by accident), else the in-cluster service account.
    Read afresh on every call, with our own loader (no $KUBECONFIG set for kopf's, which would change
    it for the whole process): kopf calls this at start, after a 401 and when `expiration` passes, so a
    rotated token file is read again and an exec plugin run again (kubeauth)."""
    credentials = kubeclient.load_credentials(settings_of(memo).kubeconfig)
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
async def start_operator(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    # No handler of ours needs kopf to follow CRDs being added or removed (and the chart's ClusterRole
    # grants nothing on CustomResourceDefinitions): the Factory CRD is found once, at start.
    settings.scanning.disabled = True
    ours = settings_of(memo)
    memo.client = kubeclient.Client.from_kubeconfig(ours.kubeconfig, user_agent=app.USER_AGENT)
    memo.operator = app.build(ours, memo.client)  # what kopf's Factory handlers ask (factorykopf.py)
    memo.task = asyncio.create_task(app.work(memo.operator), name="gigafactory-operator")
    end = getattr(memo, "end", None)

    def ended(task: "asyncio.Task[None]") -> None:
        """The work ended without being asked to (the cleanup cancels it): the process ends."""
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, electing.LostLeadership):
            logger.error("leadership lost, exiting to restart as a standby: %s", error)
        else:
            logger.error("the operator's work ended (%s): the process exits to be restarted", error or "returned", exc_info=error)
        if callable(end):
            end(error)  # `gigafactory operator`: stops kopf, then exits 1
        else:
            os.kill(os.getpid(), signal.SIGTERM)  # `kopf run`: kopf's own shutdown, as for any SIGTERM

    memo.ended = ended
    memo.task.add_done_callback(ended)


@kopf.on.cleanup()
async def stop_operator(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "task", None)
    if task is not None:
        task.remove_done_callback(memo.ended)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # (its error is logged already)
            await task
    client = getattr(memo, "client", None)
    if client is not None:
        await client.close()


async def main(settings: config.OperatorSettings) -> None:
    """kopf in this process: standalone (the leader election is ours, by a Lease), cluster-wide (it
    watches the cluster-scoped Factories; every other informer is the operator's). Ends with status 1
    when the work ended by itself, so that the Deployment restarts it."""
    stop = asyncio.Event()
    failures: list[BaseException | None] = []

    def end(error: BaseException | None) -> None:
        failures.append(error)
        stop.set()

    await kopf.operator(standalone=True, clusterwide=True, stop_flag=stop, registry=REGISTRY,
                        memo=kopf.Memo(settings=settings, end=end))
    if failures:
        raise SystemExit(1)
    logger.info("operator stopped")


def run(settings: config.OperatorSettings) -> None:
    observing.setup_logging(settings.log_level)
    asyncio.run(main(settings))
