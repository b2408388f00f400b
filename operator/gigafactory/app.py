"""The operator's work, the same for every entry point (kopfmain hosts it for `gigafactory operator`
and `kopf run -m gigafactory.kopfmain`): the Operator, with the leader elector when
GIGAFACTORY_LEADER_ELECTION is on. It runs until cancelled; it ends by itself only with an error
(lost leadership, a loop that died), and then the process ends. kopfmain keeps the Operator in
kopf's memo, where kopf's Factory delete handler (factorykopf.py) finds it."""

import logging

from gigafactory import config, electing, kubeclient, operating

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


def build(settings: config.OperatorSettings, client: kubeclient.Client) -> operating.Operator:
    return operating.Operator(settings, client)


async def work(operator: operating.Operator) -> None:
    """The operator's work with the elector its settings ask for, until cancelled or it fails."""
    await operator.run(build_elector(operator.settings, operator.client))
