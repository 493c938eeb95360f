"""Crash recovery for clip runs, as a Prefect automation applied idempotently.

When a run crashes (its flow process was killed, its host died) the worker or the server
marks it Crashed; this automation puts it back to Scheduled (``AwaitingRetry``) so a worker
runs it again, and the flow skips the steps its records show as done. The flow gives up
after ``CLIPPING_MAX_FLOW_ATTEMPTS`` runs, so a clip that always crashes stops.
"""

import logging
from datetime import timedelta
from uuid import UUID

from prefect.automations import Automation, ChangeFlowRunState, EventTrigger, Posture
from prefect.client.schemas.objects import StateType

logger = logging.getLogger(__name__)

RERUN_CRASHED = "clip-hand: rerun crashed runs"


def ensure_crash_recovery(deployment_id: UUID) -> None:
    wanted = Automation(
        name=RERUN_CRASHED,
        description="Reschedule crashed clip-hand runs so the surviving worker completes them.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match_related={"prefect.resource.id": f"prefect.deployment.{deployment_id}"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message="rescheduled after a crash",
            )
        ],
    )
    try:
        existing = Automation.read(name=RERUN_CRASHED)
    except ValueError:
        wanted.create()
        logger.info("created automation %r", RERUN_CRASHED)
        return
    wanted.id = existing.id
    wanted.update()
    logger.info("updated automation %r", RERUN_CRASHED)
