"""The ``clip-hand`` flow: cut -> upload -> sign -> notify, for one ClipRequest.

Deployed from ``prefect.yaml`` onto the ``nas-pool`` process work pool and started by the
Pub/Sub listener (``agent_pool.listener``). Run one by hand, without a deployment:

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.clip_hand request.json

Every request ends with exactly one ``clipping-complete`` message: the flow settles the
success, the ``on_failure`` hook the final failure with its reason, both through
``clipping.outcomes`` (the one owner of a request's outcome).

Each run configures its process's logging first (``clipping.logs``: ``CLIPPING_LOG_FORMAT``,
appended to ``CLIPPING_FLOW_LOG_FILE``; Prefect's API handler stays, so the UI shows the
run's logs) and logs, run loggers and ``clipping.*`` alike, with the request's ids, its
flow run and agent, in the trace the listener tagged the run with (``clipping.tracing``).
"""

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from uuid import UUID

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.schemas.objects import FlowRun
from prefect.flows import Flow
from prefect.logging.loggers import flow_run_logger
from prefect.states import Failed, State

from clipping.bucket import ClipBucket
from clipping.logs import FLOW, configure_logging, log_context
from clipping.messages import ClipCompletion, ClipRequest, ClipState
from clipping.outcomes import RequestOutcomes, publish_completion, run_outcome
from clipping.records import UploadedClip, UploadRecord, discard_objects
from clipping.settings import CLIP_FLOW, get_settings
from clipping.signing import SignedUrl, UrlSigner
from clipping.spans import configure_span_export
from clipping.tracing import TraceContext, in_span
from cutting import CutClip, CutError, cut_clip, write_poster
from flows.final_failure import fail_for_good
from flows.liveness import beating
from flows.upload import upload_file

POSTER_FILE = "poster.jpg"
# A wait for a recording being written is shown (and logged) this often.
PHASE_INTERVAL_SECONDS = 5.0


@task(name="cut")
def cut(request: ClipRequest, scratch: Path) -> CutClip:
    """Cut the clip and write its poster (``scratch/poster.jpg``), reporting progress."""
    settings = get_settings()
    logger = get_run_logger()
    output_for = request.output or settings.default_output
    logger.info(
        "cutting %s [%.3f s, %.3f s) in %s mode, for %s output",
        request.nas_video_path,
        request.start_seconds,
        request.end_seconds,
        request.mode.value,
        output_for.value,
    )
    progress = ProgressArtifact(f"Cutting {request.hand_id} ({request.mode.value})")
    clip = cut_clip(
        Path(request.nas_video_path),
        request.start_seconds,
        request.end_seconds,
        request.mode,
        scratch / "clip.mp4",
        on_progress=progress.update,
        on_phase=progress.show_phase,
        max_clip_seconds=settings.max_clip_seconds,
        output_for=output_for,
    )
    write_poster(clip.path, scratch / POSTER_FILE)
    progress.update(100.0)
    logger.info(
        "cut %.3f s to %.3f s (%.3f s, %d bytes)%s",
        clip.start_seconds,
        clip.end_seconds,
        clip.duration_seconds,
        clip.size_bytes,
        f"; clamped: {clip.clamp_reason}" if clip.clamp_reason else "",
    )
    return clip


@task(name="upload", retries=3, retry_delay_seconds=[1, 5, 15])
def upload(scratch: Path, bucket: ClipBucket, request: ClipRequest) -> None:
    """Stream clip and poster to their deterministic names: a retry overwrites, never duplicates.

    An object appears only when its upload completes, so an interrupted upload leaves
    nothing behind. Chunks are streamed from disk (``flows.upload``): memory does not
    grow with the clip or the chunk size.
    """
    chunk_bytes = get_settings().upload_chunk_bytes
    gcs = bucket.storage()
    for local, object_name, content_type in (
        (scratch / "clip.mp4", request.object_name, "video/mp4"),
        (scratch / POSTER_FILE, request.poster_object_name, "image/jpeg"),
    ):
        size = upload_file(gcs.blob(object_name), local, content_type, chunk_bytes)
        get_run_logger().info("uploaded gs://%s/%s (%d bytes)", bucket.name, object_name, size)


@task(name="sign")
def sign(object_names: list[str]) -> list[SignedUrl]:
    """URLs of ``CLIPPING_SIGNED_URL_TTL`` (12 h at most without a key file)."""
    settings = get_settings()
    signer = UrlSigner.from_settings(settings)
    return [signer.sign(name, settings.signed_url_ttl) for name in object_names]


class ProgressArtifact:
    """A Prefect progress artifact for the cut, updated at most every percent and second.

    Its description is the run's phase ("Cutting ..." or what it waits for), which the
    status API answers as ``phase``.
    """

    def __init__(self, description: str) -> None:
        self._description = description
        artifact_id = create_progress_artifact(progress=0.0, description=description)
        if not isinstance(artifact_id, UUID):  # a coroutine: dispatched to the async variant
            artifact_id.close()
            raise RuntimeError("ProgressArtifact needs a sync task: Prefect chose its async API")
        self._id = artifact_id
        self._shown, self._shown_at = 0.0, time.monotonic()
        self._phase_shown_at = -PHASE_INTERVAL_SECONDS

    def update(self, percent: float) -> None:
        now = time.monotonic()
        if percent >= 100.0 or (percent - self._shown >= 1.0 and now - self._shown_at >= 1.0):
            update_progress_artifact(self._id, min(percent, 100.0), self._description)
            self._shown, self._shown_at = percent, now

    def show_phase(self, phase: str) -> None:
        """Show and log ``phase`` (at most every ``PHASE_INTERVAL_SECONDS``); cutting resumes
        the plain description with its next progress."""
        now = time.monotonic()
        if now - self._phase_shown_at >= PHASE_INTERVAL_SECONDS:
            update_progress_artifact(self._id, self._shown, phase)
            get_run_logger().info(phase)
            self._phase_shown_at = now


@task(name="notify", retries=3, retry_delay_seconds=[1, 5, 15])
def notify(completion: ClipCompletion) -> str:
    message_id = publish_completion(get_settings(), completion)
    get_run_logger().info("announced %s as message %s", completion.status.value, message_id)
    return message_id


def running_agent() -> str | None:
    """The NAS agent running this flow: Prefect's process worker names itself to the flow
    process in ``PREFECT__WORKER_NAME`` (unset when the flow runs outside a worker)."""
    return os.environ.get("PREFECT__WORKER_NAME")


@contextmanager
def _logging_for(request: ClipRequest) -> Iterator[None]:
    """This process logs as a flow (agent and run on every line); inside, the request's ids
    and the span of the run's trace too."""
    run = {"flow_run_id": runtime.flow_run.id, "agent_id": running_agent()}
    configure_logging(FLOW, get_settings(), **run)
    configure_span_export(FLOW)
    span = TraceContext.of_run_tags(runtime.flow_run.tags)
    with (
        in_span(span, CLIP_FLOW),
        log_context(request_id=request.request_id, hand_id=request.hand_id, **run),
    ):
        yield


def announce_failure(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """on_failure hook: the run ended for good without a clip, so tell M6 why (once per
    request)."""
    _announce_end(flow, flow_run, state, ClipState.FAILED)


def announce_cancellation(flow: Flow, flow_run: FlowRun, state: State) -> None:
    """on_cancellation hook: a run cancelled from the Prefect UI or API ends its request as
    ``cancelled``. One cancelled through the proxy is settled already: nothing is sent."""
    _announce_end(flow, flow_run, state, ClipState.CANCELLED)


def _announce_end(
    flow: Flow,
    flow_run: FlowRun,
    state: State,
    status: Literal[ClipState.FAILED, ClipState.CANCELLED],
) -> None:
    ending = run_outcome(
        flow_run.parameters,
        str(flow_run.id),
        state.message
        or f"the clip run {'failed' if status is ClipState.FAILED else 'was cancelled'}",
        agent_id=running_agent(),
        status=status,
    )
    outcome = RequestOutcomes.from_settings(get_settings()).settle(ending)
    if outcome is ending:
        flow_run_logger(flow_run, flow).info("announced the request as %s", status.value)


@flow(
    name=CLIP_FLOW,
    retries=1,
    retry_delay_seconds=5,
    on_failure=[announce_failure],
    on_cancellation=[announce_cancellation],
)
def clip_hand(request: ClipRequest) -> ClipCompletion | State:
    """Cut one poker hand out of a NAS recording, publish it, and announce it.

    Steps already done by an earlier attempt (a retry, or a rerun after a crash) are read
    from the request's records instead of being done again.
    """
    with _logging_for(request), beating():
        return _clip(request)


def _clip(request: ClipRequest) -> ClipCompletion | State:
    settings = get_settings()
    attempt = runtime.flow_run.run_count
    if attempt > settings.max_flow_attempts:
        return Failed(message=f"gave up after {attempt - 1} attempts (crashes or failures)")
    bucket = ClipBucket.from_settings(settings)
    outcomes = RequestOutcomes.from_settings(settings, publish=notify)
    if (outcome := outcomes.read(request.request_id)) is not None:
        get_run_logger().info("already ended as %s; nothing left to do", outcome.status)
        return _final(outcome)
    timings: dict[str, float] = {}
    upload_record = UploadRecord(bucket.storage(), request.request_id)
    uploaded = upload_record.read()
    if uploaded is None:
        produced = _cut_and_upload(request, bucket, outcomes, timings)
        if not isinstance(produced, UploadedClip):
            return produced
        uploaded = produced
        upload_record.write(uploaded)
    else:
        get_run_logger().info(
            "reusing gs://%s/%s from an earlier attempt", bucket.name, uploaded.object_path
        )
    with _timed(timings, "sign"):
        signed, poster = sign([uploaded.object_path, uploaded.poster_path])
    completion = ClipCompletion(
        request_id=request.request_id,
        hand_id=request.hand_id,
        status=ClipState.COMPLETED,
        download_url=signed.url,
        expires_at=signed.expires_at,
        poster_url=poster.url,
        object_name=uploaded.object_path,
        size_bytes=uploaded.size_bytes,
        duration_seconds=uploaded.duration_seconds,
        cut_start_seconds=uploaded.start_seconds,
        cut_end_seconds=uploaded.end_seconds,
        clamped=uploaded.clamped,
        reason=uploaded.clamp_reason,
        mode=uploaded.mode,
        agent_id=running_agent(),
        flow_run_id=runtime.flow_run.id,
        step_seconds=timings,
    )
    _publish_artifacts(request, completion, bucket, timings)
    outcome = outcomes.settle(completion)
    if outcome is not completion:
        get_run_logger().info("another attempt announced it as %s", outcome.status)
    if outcome.status is ClipState.CANCELLED:
        _discard_cancelled(bucket, uploaded)
    return _final(outcome)


def _discard_cancelled(bucket: ClipBucket, uploaded: UploadedClip) -> None:
    """The request was cancelled while this run finished it: no clip of it may stay."""
    deleted = discard_objects(bucket.storage(), [uploaded.object_path, uploaded.poster_path])
    get_run_logger().info("cancelled meanwhile: deleted %s", ", ".join(deleted) or "nothing")


def _final(outcome: ClipCompletion) -> ClipCompletion | State:
    """The run's result for the request's outcome: Failed unless it completed."""
    if outcome.status is ClipState.COMPLETED:
        return outcome
    return Failed(message=outcome.reason or f"the request was {outcome.status.value}")


def _cut_and_upload(
    request: ClipRequest,
    bucket: ClipBucket,
    outcomes: RequestOutcomes,
    timings: dict[str, float],
) -> UploadedClip | ClipCompletion | State:
    """Cut in a scratch directory that is always removed, then upload; Failed if uncuttable.
    If the request ended meanwhile (cancelled while it was cut), nothing is uploaded and
    its outcome is the run's result."""
    work_dir = get_settings().work_dir
    if work_dir:
        work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clip-", dir=work_dir) as scratch:
        with _timed(timings, "cut"):
            try:
                clip = cut(request, Path(scratch))
            except CutError as error:
                # The request cannot be served as asked: fail with the reason alone, and
                # let Prefect retry only what may pass (an I/O error on the NAS).
                if error.retryable:
                    return Failed(message=str(error))
                return fail_for_good(str(error))
        if (outcome := outcomes.read(request.request_id)) is not None:
            get_run_logger().info("ended as %s while cut: not uploaded", outcome.status)
            return _final(outcome)
        with _timed(timings, "upload"):
            upload(Path(scratch), bucket, request)
    return UploadedClip(
        object_path=request.object_name,
        poster_path=request.poster_object_name,
        size_bytes=clip.size_bytes,
        duration_seconds=clip.duration_seconds,
        start_seconds=clip.start_seconds,
        end_seconds=clip.end_seconds,
        clamped=clip.clamped,
        clamp_reason=clip.clamp_reason,
        mode=clip.mode,
    )


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of the ``with`` block as ``timings[name]`` (seconds)."""
    started = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - started


def _publish_artifacts(
    request: ClipRequest, completion: ClipCompletion, bucket: ClipBucket, timings: dict[str, float]
) -> None:
    create_link_artifact(
        link=completion.download_url or "",
        link_text=f"{request.hand_id} ({completion.duration_seconds:.1f} s)",
        key=_artifact_key(request.hand_id),
        description=f"Signed download URL, valid until {completion.expires_at:%Y-%m-%d %H:%M} UTC",
    )
    create_markdown_artifact(markdown=_summary(request, completion, bucket, timings))
    create_table_artifact(
        table=[completion.model_dump(mode="json")],
        description="Completion message published on clipping-complete",
    )


def _artifact_key(hand_id: str) -> str:
    return "clip-" + hand_id.lower().replace("_", "-")


def _summary(
    request: ClipRequest, completion: ClipCompletion, bucket: ClipBucket, timings: dict[str, float]
) -> str:
    clamped = f" ({completion.reason})" if completion.clamped else ""
    timing_rows = "\n".join(f"| {name} | {seconds:.2f} s |" for name, seconds in timings.items())
    return f"""# Clip {request.hand_id}

| | |
|---|---|
| request | `{request.request_id}` |
| source | `{request.nas_video_path}` |
| requested range | {request.start_seconds:.3f} s to {request.end_seconds:.3f} s |
| cut range | {completion.cut_start_seconds:.3f} s to {completion.cut_end_seconds:.3f} s{clamped} |
| mode | {request.mode.value} |
| duration | {completion.duration_seconds:.3f} s |
| size | {completion.size_bytes:,} bytes |
| object | `gs://{bucket.name}/{completion.object_name}` |
| poster | [first frame]({completion.poster_url}) |
| agent | {completion.agent_id or "-"} |

| step | time |
|---|---|
{timing_rows}
"""


if __name__ == "__main__":
    clip_hand(ClipRequest.model_validate_json(Path(sys.argv[1]).read_text()))
