"""A request's status, read from Prefect: its flow run (found by idempotency key) and artifacts."""

import asyncio
import json

from google.cloud.storage import Bucket
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
from flows.records import ClipRecords

_STATE_OF_RUN = {
    StateType.SCHEDULED: ClipState.QUEUED,
    StateType.PENDING: ClipState.QUEUED,
    StateType.RUNNING: ClipState.PROCESSING,
    StateType.PAUSED: ClipState.PROCESSING,
    StateType.CANCELLING: ClipState.PROCESSING,
    StateType.COMPLETED: ClipState.COMPLETED,
    StateType.FAILED: ClipState.FAILED,
    # Not final here: the crash automation (or the listener's sweep) reruns it or fails it.
    StateType.CRASHED: ClipState.QUEUED,
    StateType.CANCELLED: ClipState.FAILED,
}


async def find_run(prefect: PrefectClient, request_id: str) -> FlowRun | None:
    """The flow run the listener created for ``request_id`` (its idempotency key)."""
    runs = await prefect.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            idempotency_key=FlowRunFilterIdempotencyKey(any_=[request_id])
        ),
        limit=1,
    )
    return runs[0] if runs else None


async def report_without_run(bucket: Bucket, request_id: str) -> ClipStatusReport:
    """An accepted request with no run yet is queued, unless the listener gave up on it:
    then its records hold the failure it announced."""
    announced = await asyncio.to_thread(ClipRecords(bucket, request_id).announced)
    if announced is None:
        return ClipStatusReport(request_id=request_id, status=ClipState.QUEUED)
    return ClipStatusReport.model_validate({**announced.model_dump(), "request_id": request_id})


async def report_for_run(prefect: PrefectClient, request_id: str, run: FlowRun) -> ClipStatusReport:
    state = _STATE_OF_RUN.get(run.state_type, ClipState.QUEUED)
    report = ClipStatusReport(request_id=request_id, status=state, flow_run_id=str(run.id))
    if state is ClipState.COMPLETED:
        completion = await _completion_of(prefect, run)
        return ClipStatusReport.model_validate(
            {**completion.model_dump(), "request_id": request_id, "status": state}
        )
    if state is ClipState.FAILED:
        report.reason = run.state.message if run.state else None
    if state is ClipState.PROCESSING:
        report.progress = await _progress_of(prefect, run)
    return report


async def _progress_of(prefect: PrefectClient, run: FlowRun) -> float | None:
    """The cut's progress (percent) from the run's progress artifact, once it has one."""
    artifacts = await prefect.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            type=ArtifactFilterType(any_=["progress"]),
        ),
        limit=1,
    )
    return float(artifacts[0].data) if artifacts and artifacts[0].data is not None else None


async def _completion_of(prefect: PrefectClient, run: FlowRun) -> ClipCompletion:
    """The completion message the flow published, kept as its table artifact."""
    artifacts = await prefect.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            type=ArtifactFilterType(any_=["table"]),
        ),
        limit=1,
    )
    if not artifacts or not isinstance(artifacts[0].data, str):
        raise LookupError(f"flow run {run.id} completed without its completion artifact")
    (row,) = json.loads(artifacts[0].data)
    return ClipCompletion.model_validate(row)
