"""Leader election on a coordination.k8s.io/v1 Lease: one operator replica active, the others standby.

Why our own and not kopf's peering: kopf's peering pauses operators of equal priority (no standby
takes over when the active one dies; it is a freeze switch, not HA), and the official client's
`leaderelection` is synchronous and ConfigMap-based. This follows client-go's leaderelection:

- The leader renews `spec.renewTime` every `retry_seconds` with a resourceVersion precondition; if
  it cannot renew for `renew_deadline_seconds` it stops leading (and the process exits: a restart
  is the simplest way to drop every in-memory assumption). renew_deadline < lease duration, so a
  leader that stalls has stopped before anyone else may take over.
- A standby watches the one Lease (no polling: an idle standby costs one open watch) and judges
  expiry by *its own clock* from when it last saw the record change, as client-go does, so clock
  skew between nodes cannot make it take over early. It takes over with a precondition: of two
  standbys racing, one wins.
- On a clean shutdown the leader releases the Lease (empty holder), so a standby takes over at once.

Leadership is an optimization of work, not the safety of binds: every bind and report is a write
with a resourceVersion precondition, so even two leaders in a split moment cannot bind a job twice
(tests/integration/operator/test_operator.py races two active operators to show it).
"""

import asyncio
import dataclasses
import logging
import socket
import time
import uuid
from typing import Any

from gigafactory import constants, kubeclient, leases
from gigafactory.models import objects

logger = logging.getLogger(__name__)

Body = dict[str, Any]


class LostLeadership(Exception):
    """The leader could not renew within the renew deadline, or another replica holds the Lease."""


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


@dataclasses.dataclass
class LeaderElector:
    client: kubeclient.Client
    namespace: str
    name: str = "gigafactory-operator"
    identity: str = dataclasses.field(default_factory=default_identity)
    lease_seconds: int = 8
    renew_deadline_seconds: float = 6.0
    retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        self.leading = False
        self.watching = False
        self._record: tuple[Any, ...] | None = None  # holder, renewTime, transitions as last seen
        self._observed_at = 0.0  # monotonic clock when _record last changed
        self._changed = asyncio.Event()
        self._body: Body | None = None

    # --- standby ---

    def _see(self, event: str, body: Body) -> None:
        self._body = None if event == "DELETED" else body
        spec = self._spec()
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseTransitions"))
        if record != self._record:
            self._record = record
            self._observed_at = time.monotonic()
        self._changed.set()

    def _spec(self) -> objects.LeaseSpec:
        """The leader Lease's spec as last seen ({} when there is none)."""
        return objects.lease_spec(self._body or {})

    def _expired(self) -> bool:
        spec = self._spec()
        if not spec.get("holderIdentity"):
            return True
        duration = spec.get("leaseDurationSeconds") or self.lease_seconds
        return time.monotonic() - self._observed_at >= duration

    async def acquire(self) -> None:
        """Wait until this replica leads. Event-driven: wakes on a change of the Lease or when the
        current holder's lease would run out."""
        informer = kubeclient.Informer(self.client, kubeclient.LEASES, namespace=self.namespace,
                                       field_selector=f"metadata.name={self.name}", handler=self._see)
        async with informer.running():
            self.watching = True
            try:
                while not await self._try_take():
                    spec = self._spec()
                    duration = spec.get("leaseDurationSeconds") or self.lease_seconds
                    left = max(0.05, duration - (time.monotonic() - self._observed_at)) if self._body else self.retry_seconds
                    self._changed.clear()
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout=left + 0.05)
                    except asyncio.TimeoutError:
                        pass
            finally:
                self.watching = False
        self.leading = True
        logger.info("leading", extra={"identity": self.identity, "lease": f"{self.namespace}/{self.name}"})

    async def _try_take(self) -> bool:
        now = leases.format_micro_time(leases.now())
        if self._body is None:
            body = {
                "apiVersion": leases.LEASE_API_VERSION, "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace, "labels": {constants.LABEL_ROLE: constants.ROLE_LEADER}},
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds,
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
            }
            try:
                self._body = await self.client.create(kubeclient.LEASES, body, namespace=self.namespace)
                return True
            except kubeclient.AlreadyExists:
                return False  # someone else was first; the watch brings its record
            except kubeclient.ApiError as exc:
                logger.warning("cannot create the leader Lease: %s", exc)
                return False
        spec = self._spec()
        if spec.get("holderIdentity") != self.identity and not self._expired():
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (spec.get("holderIdentity") != self.identity)
        patch = {"metadata": {"resourceVersion": self._body["metadata"]["resourceVersion"]},
                 "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_seconds,
                          "acquireTime": now, "renewTime": now, "leaseTransitions": transitions}}
        try:
            self._body = await self.client.patch(kubeclient.LEASES, self.name, patch, namespace=self.namespace)
            return True
        except (kubeclient.Conflict, kubeclient.NotFound):
            return False  # another standby won the race; the watch shows it
        except kubeclient.ApiError as exc:
            logger.warning("cannot take the leader Lease: %s", exc)
            return False

    # --- leader ---

    async def hold(self) -> None:
        """Renew until cancelled; raise LostLeadership when renewing fails for the renew deadline
        or another replica took the Lease."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_seconds)
            try:
                self._body = await self.client.patch(kubeclient.LEASES, self.name, {
                    "metadata": {"resourceVersion": objects.meta(self._body or {}).get("resourceVersion")},
                    "spec": {"renewTime": leases.format_micro_time(leases.now()), "holderIdentity": self.identity},
                }, namespace=self.namespace)
                last = time.monotonic()
                continue
            except kubeclient.Conflict:
                try:
                    self._body = await self.client.get(kubeclient.LEASES, self.name, namespace=self.namespace)
                except kubeclient.ApiError:
                    pass
                if self._spec().get("holderIdentity") != self.identity:
                    self.leading = False
                    raise LostLeadership(f"the leader Lease is held by {self._spec().get('holderIdentity')}") from None
            except kubeclient.NotFound:
                self.leading = False
                raise LostLeadership("the leader Lease was deleted") from None
            except (kubeclient.ApiError, OSError, asyncio.TimeoutError) as exc:
                logger.warning("renewing the leader Lease failed: %s", exc)
            if time.monotonic() - last >= self.renew_deadline_seconds:
                self.leading = False
                raise LostLeadership(f"could not renew the leader Lease for {self.renew_deadline_seconds}s")

    async def release(self) -> None:
        """Clean shutdown: hand the Lease back so a standby takes over without waiting for expiry."""
        if not self.leading or self._body is None:
            return
        self.leading = False
        try:
            await self.client.patch(kubeclient.LEASES, self.name, {
                "metadata": {"resourceVersion": self._body["metadata"]["resourceVersion"]},
                "spec": {"holderIdentity": None, "leaseDurationSeconds": 1},
            }, namespace=self.namespace)
            logger.info("leadership released", extra={"identity": self.identity})
        except kubeclient.ApiError as exc:
            logger.warning("could not release the leader Lease: %s", exc)
