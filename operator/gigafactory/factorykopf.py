"""The Factory lifecycle as kopf handlers: kopf owns the Factory's finalizer, and its one delete
handler waits for the operator's drain before kopf lets the Factory go.

- **The finalizer** is kopf's (`settings.persistence.finalizer`), under the name the operator gave
  it before kopf did, `gigafactory.dev/drain`: kopf recognises its finalizer by name alone, so a
  Factory that carries it already needs no migration. kopf adds it to every Factory it sees (that is
  what a mandatory delete handler asks of it) and removes it only when the handler below returned.
- **The drain** stays the controllers' (binding/lifecycle.py decides, controllers/finalizing.py
  writes): the handler asks the running Operator (kopf's memo, put there by kopfmain) to let the
  Factory's bindings go and awaits `Operator.drain`, which returns once none is left. Not polling:
  an asyncio event the controllers set; the wait is bounded by the drain's end (its deadline plus
  the stop grace), and one stop grace more for the last undo writes to land, and then kopf is told
  to call again (TemporaryError).
- **Leadership**: every replica runs kopf, but only the leader's Operator works. A standby's handler
  waits in `drain` for its Operator to work (it never will while another leads) and raises
  TemporaryError when the wait ends: it never returns, so its kopf never removes the finalizer. The
  handler has no filter (`when=`, labels...) on purpose: kopf removes its finalizer from an object
  that no delete handler matches. No handler timeout or retry limit either: a handler that kopf
  gives up on counts as done, and the finalizer would go.
- **What kopf stores on a Factory**: nothing while a drain goes as planned. A handler that must be
  called again keeps its progress (start, retries, the delay) in the annotation
  `kopf.gigafactory.dev/drain` (plus `kopf.gigafactory.dev/touch-dummy`, kopf's wake-up write after a
  delay) — on the object, because after a restart or failover the next leader's kopf reads it there;
  not in `status` (the status is the scheduling loop's, and the CRD's schema would prune it). No diff
  base: no handler here reacts to a change, so kopf needs none, and keeping one would write
  `last-handled-configuration` on every Factory at each spec change, from every replica. No Events
  from kopf (the operator writes its own where a user needs them).

Enrolment status stays where it is written today: the scheduling loop's Factory status (phase,
Ready, pods, slots; controllers/statuses.py) comes from the heartbeats the loop sees, and a second
writer of `status.conditions` here would race its merge patches.
"""

import datetime
import logging
from typing import Any

import kopf

from gigafactory import constants, operating
from gigafactory.binding import lifecycle

PROGRESS_PREFIX = f"kopf.{constants.GROUP}"  # kopf.gigafactory.dev/<handler id>
RETRY_SECONDS = 1.0  # when a wait ended undrained: kopf writes the progress, and calls again this much later

logger = logging.getLogger(__name__)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf keeps no diff base on Factories: only the delete handler is registered, and a deletion
    needs none (every non-deleting event is a 'creation' with no handler: nothing is written)."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = constants.FINALIZER_FACTORY
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PROGRESS_PREFIX, v1=False)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.enabled = False


@kopf.on.startup()
async def configure_persistence(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Before kopf watches anything (startup handlers come first)."""
    configure(settings)


def wait_seconds(factory: kopf.Body, *, now: datetime.datetime, stop_grace_seconds: float) -> float:
    """How long the handler waits for the drain: until the drain ends at the latest (every binding
    left is undone then), and one stop grace more for those undo writes (and their retries) to land."""
    ends = lifecycle.drain_ends(factory, stop_grace_seconds=stop_grace_seconds)
    left = 0.0 if ends is None else max((ends - now).total_seconds(), 0.0)
    return left + stop_grace_seconds


@kopf.on.delete(constants.GROUP, constants.VERSION, constants.FACTORY_PLURAL, id="drain", errors=kopf.ErrorsMode.TEMPORARY)
async def drain(name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A deleted Factory: returns (and kopf removes the finalizer) once no binding of it is left."""
    operator = getattr(memo, "operator", None)
    if not isinstance(operator, operating.Operator):
        raise kopf.TemporaryError("the operator's work is not running", delay=RETRY_SECONDS)
    timeout = wait_seconds(body, now=operator.now(), stop_grace_seconds=operator.settings.stop_grace_seconds)
    if not operator.started:
        logger.info("factory deleted: standing by, the leader drains it", extra={"factory": name})
    if not await operator.drain(name, timeout=timeout):
        raise kopf.TemporaryError(("bindings are still held" if operator.started else "standing by: the leader drains")
                                  + f" after {timeout:.0f}s", delay=RETRY_SECONDS)
    logger.info("factory drained", extra={"factory": name})
