"""The operator process, the same for every entry point (`gigafactory operator`, `kopf run -m
gigafactory.kopfmain`): its client, its leader elector when GIGAFACTORY_LEADER_ELECTION is on, the
Operator's work, and how it ends — on SIGTERM/SIGINT quietly, on lost leadership or a crashed loop
with an error, so that the Deployment restarts it."""

import asyncio
import contextlib
import logging
import signal

from gigafactory import config, electing, kubeclient, observing, operating

logger = logging.getLogger(__name__)

USER_AGENT = "gigafactory-operator"


def build_elector(settings: config.OperatorSettings, client: kubeclient.Client) -> electing.LeaderElector | None:
    """The leader elector the settings ask for (None: every replica works; run one only)."""
    if not settings.leader_election:
        return None
    return electing.LeaderElector(client, namespace=settings.namespace, name=settings.leader_lease_name,
                                  lease_seconds=settings.leader_lease_seconds,
                                  renew_deadline_seconds=settings.leader_lease_seconds * 0.75,
                                  retry_seconds=max(0.5, settings.leader_lease_seconds / 4))


async def work(settings: config.OperatorSettings, client: kubeclient.Client) -> None:
    """The operator's work with the elector the settings ask for, until cancelled or it fails."""
    await operating.Operator(settings, client).run(build_elector(settings, client))


async def main(settings: config.OperatorSettings) -> None:
    client = kubeclient.Client.from_kubeconfig(settings.kubeconfig, user_agent=USER_AGENT)
    task = asyncio.create_task(work(settings, client))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        logger.info("operator stopped")
    except electing.LostLeadership as exc:
        logger.error("leadership lost, exiting to restart as a standby: %s", exc)
        raise SystemExit(1) from None
    finally:
        await client.close()


def run(settings: config.OperatorSettings) -> None:
    observing.setup_logging(settings.log_level)
    asyncio.run(main(settings))
