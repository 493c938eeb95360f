"""A request's status: its outcome once it has one, else its flow run's state and progress.

The outcome (``clipping.outcomes``, the one record of how a request ended) answers
``completed``, ``failed`` or ``rejected`` with its URL or reason, whoever settled it: the
flow, the listener (a rejection, a parked request) or the crash sweep. Until then Prefect
tells ``queued`` or ``processing`` (with the cut's progress), from the flow run whose
idempotency key is the request id.
"""

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterIdempotencyKey,
)
from prefect.client.schemas.objects import FlowRun, StateType

from clipping.messages import ClipCompletion, ClipState, ClipStatusReport

# A run's state before its request is settled. A Completed run settled its request before
# it completed, so without an outcome it is a late read; a Failed or Cancelled one is being
# settled by its hook (its reason is the state's message); a Crashed one is rerun by the
# crash automation, or failed by the listener's sweep, which settles it.
_STATE_OF_RUN = {
    StateType.SCHEDULED: ClipState.QUEUED,
    StateType.PENDING: ClipState.QUEUED,
    StateType.CRASHED: ClipState.QUEUED,
    StateType.RUNNING: ClipState.PROCESSING,
    StateType.PAUSED: ClipState.PROCESSING,
    StateType.CANCELLING: ClipState.PROCESSING,
    StateType.COMPLETED: ClipState.PROCESSING,
    StateType.FAILED: ClipState.FAILED,
    StateType.CANCELLED: ClipState.CANCELLED,
}


def report_of_outcome(request_id: str, outcome: ClipCompletion) -> ClipStatusReport:
    return ClipStatusReport.model_validate({**outcome.model_dump(), "request_id": request_id})


async def find_run(prefect: PrefectClient, request_id: str) -> FlowRun | None:
    """The flow run the listener created for ``request_id`` (its idempotency key)."""
    runs = await prefect.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            idempotency_key=FlowRunFilterIdempotencyKey(any_=[request_id])
        ),
        limit=1,
    )
    return runs[0] if runs else None


async def report_for_run(prefect: PrefectClient, request_id: str, run: FlowRun) -> ClipStatusReport:
    """``queued``, ``processing`` (with progress) or ``failed`` for a request not settled yet."""
    state = (
        _STATE_OF_RUN.get(run.state_type, ClipState.QUEUED) if run.state_type else ClipState.QUEUED
    )
    report = ClipStatusReport(request_id=request_id, status=state, flow_run_id=str(run.id))
    if state in (ClipState.FAILED, ClipState.CANCELLED):
        report.reason = run.state.message if run.state else None
    if state is ClipState.PROCESSING:
        report.progress, report.phase = await _progress_of(prefect, run)
    return report


async def _progress_of(prefect: PrefectClient, run: FlowRun) -> tuple[float | None, str | None]:
    """The cut's progress (percent) and phase from the run's progress artifact, once it has one."""
    artifacts = await prefect.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            type=ArtifactFilterType(any_=["progress"]),
        ),
        limit=1,
    )
    if not artifacts:
        return None, None
    progress = artifacts[0]
    if isinstance(progress.data, dict):
        raise TypeError(f"progress artifact {progress.id} holds {progress.data!r}, not a percent")
    return (None if progress.data is None else float(progress.data)), progress.description
