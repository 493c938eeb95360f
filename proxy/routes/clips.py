"""Clip requests (scope ``clip``): queue one, answer its status, cancel it, delete it.

A caller sees only its own requests (404 for the others, like an unknown id), an admin
every one. Lines logged while one is handled carry its request id (``clipping.logs``), and
a new request is recorded and published with the span it was accepted in
(``proxy.tracing``).
"""

import asyncio
import logging
import math
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from google.api_core.exceptions import GoogleAPIError
from google.auth.exceptions import GoogleAuthError
from pydantic import BaseModel

from clipping.logs import bind_log_fields
from clipping.messages import ClipState, ClipStatusReport, NewClipRequest
from clipping.signing import SigningError
from proxy import control
from proxy.accepted import AcceptedRecord, AcceptedRequests, RequestIdConflict
from proxy.access import Caller
from proxy.deps import (
    AcceptedDep,
    BucketDep,
    ClipCaller,
    LimiterDep,
    LinksDep,
    OutcomesDep,
    PrefectDep,
    ProxySettingsDep,
    PublisherDep,
)
from proxy.links import ClipLinks
from proxy.problems import not_found, problems
from proxy.services import Publisher
from proxy.status import find_run, report_for_run, report_of_outcome
from proxy.tracing import request_span
from proxy.webhooks import callback_problem

logger = logging.getLogger("clipping.proxy")
router = APIRouter(prefix="/v1/clip", tags=["clips"])


class ClipAccepted(BaseModel):
    request_id: str
    status: Literal[ClipState.QUEUED] = ClipState.QUEUED
    status_url: str


@router.post(
    "/request",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(401, 403, 408, 409, 413, 422, 429, 503),
)
async def request_clip(
    clip: NewClipRequest,
    request: Request,
    caller: ClipCaller,
    accepted: AcceptedDep,
    limiter: LimiterDep,
    publisher: PublisherDep,
    proxy_settings: ProxySettingsDep,
) -> ClipAccepted:
    """Queue a clip. Repeating a body with the same ``request_id`` answers the same.

    An id another caller used is refused (409).
    """
    bind_log_fields(request_id=clip.request_id, hand_id=clip.hand_id)
    if problem := callback_problem(clip, proxy_settings):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problem)
    if wait := limiter.retry_after(caller.digest):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many clip requests with this key",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    traceparent = request_span().traceparent
    try:
        is_new = accepted.accept(clip, owner=caller.digest, traceparent=traceparent)
    except RequestIdConflict as conflict:
        raise HTTPException(status.HTTP_409_CONFLICT, str(conflict)) from None
    if is_new:
        await _publish(clip, accepted, publisher)
    return ClipAccepted(
        request_id=clip.request_id,
        status_url=str(request.url_for("clip_status", request_id=clip.request_id)),
    )


async def _publish(clip: NewClipRequest, accepted: AcceptedRequests, publisher: Publisher) -> None:
    try:
        # In the request's span, which goes with the message (clipping.pubsub).
        message_id = await publisher.publish(clip)
    except Exception:
        logger.exception("request %s: publishing failed", clip.request_id)
        accepted.forget(clip.request_id)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the request could not be queued; retry later"
        ) from None
    logger.info("request %s queued as message %s", clip.request_id, message_id)


@router.get(
    "/{request_id}/status",
    name="clip_status",
    responses=problems(401, 403, 404, 408, 413, 503),
)
async def clip_status(
    request_id: str,
    caller: ClipCaller,
    accepted: AcceptedDep,
    outcomes: OutcomesDep,
    prefect: PrefectDep,
    links: LinksDep,
) -> ClipStatusReport:
    """``queued``, ``processing`` (with progress), ``completed`` (with URLs valid for
    ``CLIPPING_URL_MIN_VALID`` at least), ``failed``, ``rejected``, ``cancelled`` or
    ``expired``.

    Only the caller's own requests; an admin sees every one.
    """
    bind_log_fields(request_id=request_id)
    record = _visible_record(request_id, caller, accepted)
    if (outcome := await asyncio.to_thread(outcomes.read, request_id)) is not None:
        return await _with_current_links(links, report_of_outcome(request_id, outcome))
    run = await find_run(prefect, request_id)
    if run is not None:
        return await report_for_run(prefect, request_id, run)
    if record is not None:
        return ClipStatusReport(request_id=request_id, status=ClipState.QUEUED)
    raise _unknown_request(request_id)


@router.post(
    "/{request_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(401, 403, 404, 408, 409, 413, 503),
)
async def cancel_clip(
    request_id: str,
    caller: ClipCaller,
    accepted: AcceptedDep,
    outcomes: OutcomesDep,
    prefect: PrefectDep,
    bucket: BucketDep,
) -> ClipStatusReport:
    """Cancel a queued or processing request: it never runs, or its run is stopped; one
    ``cancelled`` completion is announced and no clip is kept.

    Cancelling it again answers the same; a request that ended otherwise is 409.
    """
    bind_log_fields(request_id=request_id)
    record = _owned_record(request_id, caller, accepted)
    try:
        outcome = await asyncio.to_thread(control.cancel_outcome, outcomes, record)
    except GoogleAPIError as error:
        logger.error("request %s: announcing the cancel failed: %s", request_id, error)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the cancel could not be announced; retry later"
        ) from None
    if outcome.status is not ClipState.CANCELLED:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"clip request {request_id!r} already ended as {outcome.status.value}",
        )
    if (run := await find_run(prefect, request_id)) is not None:
        await control.stop_run(prefect, run)
    # A run killed between its upload and its settling leaves its clip behind.
    await asyncio.to_thread(control.discard_clip, bucket, record, outcome)
    return report_of_outcome(request_id, outcome)


@router.delete(
    "/{request_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401, 403, 404, 408, 409, 413, 503),
)
async def delete_clip(
    request_id: str,
    caller: ClipCaller,
    accepted: AcceptedDep,
    outcomes: OutcomesDep,
    bucket: BucketDep,
) -> None:
    """Delete an ended request's clip, poster and records. Its status is then 404 (saying
    it was deleted) and its ``request_id`` cannot be used again.

    A request still queued or processing is 409: cancel it first.
    """
    bind_log_fields(request_id=request_id)
    record = _owned_record(request_id, caller, accepted)
    outcome = await asyncio.to_thread(outcomes.read, request_id)
    if outcome is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"clip request {request_id!r} has not ended; cancel it first"
        )
    await asyncio.to_thread(control.delete_clip, bucket, record, outcome)
    accepted.mark_deleted(request_id, datetime.now(UTC))


def _visible_record(
    request_id: str, caller: Caller, accepted: AcceptedRequests
) -> AcceptedRecord | None:
    """The request's record if the caller may see it (an admin sees requests the proxy did
    not accept, too: None). Another caller's request is answered like an unknown one."""
    record = accepted.record(request_id)
    if not caller.is_admin and (record is None or record.owner != caller.digest):
        raise _unknown_request(request_id)
    if record is not None and record.deleted_at is not None:
        raise not_found(f"clip request {request_id!r} was deleted")
    return record


def _owned_record(request_id: str, caller: Caller, accepted: AcceptedRequests) -> AcceptedRecord:
    """The caller's own request (any, for an admin), recorded by this proxy."""
    record = _visible_record(request_id, caller, accepted)
    if record is None:
        raise _unknown_request(request_id)
    return record


async def _with_current_links(links: ClipLinks, report: ClipStatusReport) -> ClipStatusReport:
    try:
        return await asyncio.to_thread(links.current, report)
    except (SigningError, GoogleAuthError) as error:
        logger.error("request %s: signing its links failed: %s", report.request_id, error)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "the clip's links cannot be signed; retry later"
        ) from None


def _unknown_request(request_id: str) -> HTTPException:
    return not_found(f"no clip request {request_id!r}")
