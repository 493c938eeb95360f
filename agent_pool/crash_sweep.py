"""Backstop for the "rerun crashed runs" automation, run periodically by the listener.

The automation reacts to each Crashed event. A worker that reports a crash late (it
retries while the Prefect server is down) can overwrite the rescheduled state with a
second Crashed whose event the automation misses; measured in bench/faults.py, that run
stayed Crashed. The sweep reschedules clip runs left Crashed longer than
``SWEEP_GRACE``, and fails for good (announcing it) a run that crashed
``CLIPPING_MAX_FLOW_ATTEMPTS`` times, whether it is left Crashed or was rescheduled
again by the automation (which cannot count), so a run crashing before it even starts
is not rescheduled forever.
"""

import logging
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateName,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import AwaitingRetry, Failed

from clipping.outcomes import RequestOutcomes, run_outcome

logger = logging.getLogger("clipping.listener")

SWEEP_GRACE = timedelta(seconds=60)


def sweep_crashed_runs(
    prefect: SyncPrefectClient,
    deployment_id: UUID,
    max_attempts: int,
    outcomes: RequestOutcomes,
    grace: timedelta = SWEEP_GRACE,
) -> None:
    for run in _crashed_or_rescheduled_runs(prefect, deployment_id):
        crashes = sum(
            1 for state in prefect.read_flow_run_states(run.id) if state.type is StateType.CRASHED
        )
        if crashes >= max_attempts:
            reason = f"crashed {crashes} times; giving up"
            prefect.set_flow_run_state(run.id, Failed(message=reason), force=True)
            outcomes.settle(run_outcome(run.parameters, str(run.id), reason))
            logger.error("flow run %s %s", run.id, reason)
        elif run.state_type is StateType.CRASHED and _age(run) >= grace:
            prefect.set_flow_run_state(
                run.id, AwaitingRetry(message="rescheduled by the crash sweep"), force=True
            )
            logger.warning("flow run %s was left crashed; rescheduled", run.id)


def _age(run: FlowRun) -> timedelta:
    return datetime.now(UTC) - run.state.timestamp if run.state else timedelta(0)


def _crashed_or_rescheduled_runs(prefect: SyncPrefectClient, deployment_id: UUID) -> list[FlowRun]:
    """Runs left Crashed, and runs awaiting a retry (the automation cannot count crashes)."""
    of_deployment = DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
    return [
        run
        for state in (
            FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED])),
            FlowRunFilterState(name=FlowRunFilterStateName(any_=["AwaitingRetry"])),
        )
        for run in prefect.read_flow_runs(
            deployment_filter=of_deployment,
            flow_run_filter=FlowRunFilter(state=state),
            limit=200,
        )
    ]
