"""Recovery of clip runs that cannot finish on their own, as Prefect automations.

Applied idempotently by ``python -m deployments``:

- **rerun crashed runs**: a run whose process died (killed, host lost, server unreachable
  at start) is marked Crashed by its worker; it is put back to Scheduled
  (``AwaitingRetry``) so a worker runs it again, and the flow skips the steps its records
  show as done. The flow gives up after ``CLIPPING_MAX_FLOW_ATTEMPTS`` runs.
- **crash runs that stopped beating**: a running clip run emits a liveness beat every
  few seconds (``flows/liveness.py``), the first as its flow function starts; when
  neither a beat nor a later state follows its start or its last beat within
  ``ALIVE_WITHIN`` its process or host is gone (a kill -9 of the worker and the
  flow together, a power loss), so the run is marked Crashed, and the first automation
  reruns it on a surviving worker. The change is proposed, not forced: Prefect refuses
  to turn a finished run into a crashed one.
- **reschedule runs stuck before running**: a worker that dies after claiming a run
  (Pending/Submitting) leaves it there forever; if no later state follows within
  ``STUCK_BEFORE_RUNNING``, the run is rescheduled for the other worker.
"""

import logging
from datetime import timedelta
from uuid import UUID

from prefect.automations import Automation, ChangeFlowRunState, EventTrigger, Posture
from prefect.client.schemas.objects import StateType
from prefect.events.schemas.automations import ResourceSpecificationDict

from flows.liveness import ALIVE_EVENT, ALIVE_WITHIN

logger = logging.getLogger(__name__)

# A flow process starts in ~4 s here, and under a burst in well under a minute.
STUCK_BEFORE_RUNNING = timedelta(seconds=120)
_LATER_STATES = {
    f"prefect.flow-run.{state}"
    for state in ("Running", "Completed", "Failed", "Crashed", "Cancelling", "Cancelled",
                  "Scheduled", "AwaitingRetry")
}  # fmt: skip


def _reschedule(message: str) -> ChangeFlowRunState:
    return ChangeFlowRunState(
        state=StateType.SCHEDULED, name="AwaitingRetry", message=message, force=False
    )


def recovery_automations(deployment_id: UUID) -> list[Automation]:
    of_clip_runs: ResourceSpecificationDict = {
        "prefect.resource.id": f"prefect.deployment.{deployment_id}"
    }
    return [
        Automation(
            name="clip-hand: rerun crashed runs",
            description="Reschedule crashed clip-hand runs so a surviving worker completes them.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Crashed"},
                match_related=of_clip_runs,
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=[_reschedule("rescheduled after a crash")],
        ),
        Automation(
            name="clip-hand: crash runs that stopped beating",
            description="A running clip run whose liveness beats stopped lost its host: "
            "mark it Crashed so it is rerun elsewhere.",
            # Armed by the run's start too: a host lost before its first beat reached the
            # server (a kill right after Running, a loaded event pipeline) must not leave
            # the run Running for good.
            trigger=EventTrigger(
                after={ALIVE_EVENT, "prefect.flow-run.Running"},
                expect={ALIVE_EVENT, *_LATER_STATES},
                for_each={"prefect.resource.id"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related=of_clip_runs,
                posture=Posture.Proactive,
                threshold=1,
                within=ALIVE_WITHIN,
            ),
            actions=[
                ChangeFlowRunState(
                    state=StateType.CRASHED,
                    name=None,
                    message=f"no liveness beat for {ALIVE_WITHIN.total_seconds():g} s "
                    "(worker or host lost)",
                    force=False,
                )
            ],
        ),
        Automation(
            name="clip-hand: reschedule runs stuck before running",
            description="A run claimed by a worker that died never starts: reschedule it.",
            trigger=EventTrigger(
                after={"prefect.flow-run.Pending"},
                expect=_LATER_STATES,
                for_each={"prefect.resource.id"},
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related=of_clip_runs,
                posture=Posture.Proactive,
                threshold=1,
                within=STUCK_BEFORE_RUNNING,
            ),
            actions=[_reschedule("rescheduled: claimed but never started (worker lost?)")],
        ),
    ]


def ensure_recovery_automations(deployment_id: UUID) -> None:
    for wanted in recovery_automations(deployment_id):
        try:
            # Prefect types read's overloads as async; called sync it returns the automation.
            existing: Automation = Automation.read(name=wanted.name)  # type: ignore[assignment]
        except ValueError:
            wanted.create()
            logger.info("created automation %r", wanted.name)
            continue
        wanted.id = existing.id
        wanted.update()
        logger.info("updated automation %r", wanted.name)
