"""Pub/Sub listener: one ``clip-hand`` flow run per clip request.

    PREFECT_API_URL=http://127.0.0.1:4200/api PREFECT_API_AUTH_STRING=... \\
    python -m agent_pool.listener

StreamingPull on the ``clipping-worker`` subscription of ``clipping-requests``. Each valid
request becomes a flow run of the ``clip-hand`` deployment with
``idempotency_key = request_id``, and the message is acked only once the run exists, so a
redelivery finds the same run instead of making a second clip.

No message stops the listener: whatever happens while handling one ends in an ack (the run
exists, or the request was rejected or parked with a reason) or a nack, never in an
exception out of the callback. Outcomes go through ``clipping.outcomes`` (one per request):

- an invalid message is answered with a ``rejected`` completion carrying the reason, under
  the request id it claims; a message claiming an id that already has a run or an outcome
  (a reused id, or a forgery) announces nothing under it and is parked instead;
- while Prefect (or anything else the handling needs) fails, the message is nacked after a
  growing backoff; after ``CLIPPING_MAX_DELIVERY_ATTEMPTS`` deliveries it is parked on
  ``clipping-requests-dead`` with its reason (attribute ``reason``) and, for a valid
  request, settled as ``failed`` (the proxy's status then answers it).

Each message is handled in a span of its own trace context (``clipping.tracing``): it
continues the message's ``traceparent`` attribute (the proxy's span), or starts a new trace
without one; its lines carry the trace and the request id (``clipping.logs``), and the flow
run is tagged ``trace:<trace id>`` so the flow logs under the same trace.

The subscription's own dead-letter policy is the backstop if the listener itself keeps
dying. When the stream ends (an emulator or Pub/Sub restart), the listener subscribes again.
With NAS sites (``clipping.sites``) each run goes to the work queue of the site whose root
holds the recording. Every 30 s it also sweeps clip runs left Crashed
(``agent_pool.crash_sweep``). Its metrics
(``agent_pool.metrics``) are on ``CLIPPING_LISTENER_METRICS_PORT``.
"""

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from google.cloud.pubsub_v1 import SubscriberClient
from google.cloud.pubsub_v1.types import FlowControl
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey
from prefect.client.schemas.objects import FlowRun
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, ConfigDict, ValidationError

from agent_pool import metrics
from agent_pool.crash_sweep import sweep_crashed_runs
from clipping.logs import LISTENER, bind_log_fields, configure_logging, log_context
from clipping.messages import (
    ClipCompletion,
    ClipRequest,
    ClipState,
    describe_validation_error,
    is_safe_token,
)
from clipping.outcomes import RequestOutcomes
from clipping.pubsub import publish_data
from clipping.settings import Settings, get_settings
from clipping.spans import configure_span_export
from clipping.tracing import TraceContext, current_span, in_span

logger = logging.getLogger("clipping.listener")

DEPLOYMENT_WAIT_S = 2.0
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 30.0
SWEEP_INTERVAL_S = 30.0
RESUBSCRIBE_S = 2.0
MAX_ATTRIBUTE_CHARS = 1000  # Pub/Sub caps attribute values at 1024 bytes


class Message(Protocol):
    """What the listener uses of a Pub/Sub message."""

    data: bytes
    delivery_attempt: int | None

    def ack(self) -> None: ...

    def nack(self) -> None: ...


class _ClaimedId(BaseModel):
    """The one field read from a message that failed validation."""

    model_config = ConfigDict(extra="ignore")

    request_id: Any = None


class RequestListener:
    """Handles one Pub/Sub message at a time per callback thread."""

    def __init__(
        self,
        settings: Settings,
        prefect: SyncPrefectClient,
        deployment_id: UUID,
        outcomes: RequestOutcomes,
        *,
        park: Callable[..., str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.prefect = prefect
        self.deployment_id = deployment_id
        self.outcomes = outcomes
        self._dead_letter_topic = settings.topic_path(settings.dead_letter_topic)
        self._publish_dead_letter: Callable[..., str] = park or publish_data
        self._sleep = sleep
        # Run creation is serialised: concurrent writes on a SQLite-backed server fail
        # with "database is locked", and one create takes ~15 ms anyway.
        self._create_lock = threading.Lock()

    def handle(self, message: Message) -> None:
        """The subscriber's callback: ends in an ack or a nack, and never raises.

        Handled in a span continuing the message's trace; every line logged meanwhile
        carries the request id the message claims."""
        span = TraceContext.continued(_traceparent_of(message))
        with (
            in_span(span, "listener: handle request"),
            log_context(request_id=_claimed_id(message.data)),
        ):
            self._handle(message)

    def _handle(self, message: Message) -> None:
        request, problem = _parse(message.data, self.settings)
        if (message.delivery_attempt or 1) > 1:
            metrics.LISTENER_REDELIVERIES.inc()
        try:
            if request is None:
                self._reject(message, _claimed_id(message.data), problem)
            else:
                self._start(message, request)
        except Exception as error:
            self._retry_or_park(message, request, f"{type(error).__name__}: {error}")

    def _start(self, message: Message, request: ClipRequest) -> None:
        bind_log_fields(hand_id=request.hand_id)
        outcome = self.outcomes.read(request.request_id)
        if outcome is None:
            parameters: dict[str, Any] | None = self._create_run(request)
        else:
            # Ended already: a redelivery of the same request, or a reuse of its id.
            run = self._run_of(request.request_id)
            parameters = run.parameters if run else None
        if parameters is not None and parameters != _parameters(request):
            self._park(
                message,
                f"request_id {request.request_id} was already used for a different request",
                request.request_id,
            )
            return
        if outcome is not None:
            logger.info(
                "request %s already ended as %s; message dropped",
                request.request_id,
                outcome.status,
            )
        metrics.LISTENER_MESSAGES.labels(
            "run_created" if outcome is None else "ended_already"
        ).inc()
        message.ack()

    def _create_run(self, request: ClipRequest) -> dict[str, Any]:
        span = current_span() or TraceContext.new()
        with self._create_lock:
            run = self.prefect.create_flow_run_from_deployment(
                self.deployment_id,
                parameters=_parameters(request),
                idempotency_key=request.request_id,
                tags=[span.tag],
                work_queue_name=_work_queue_of(request, self.settings),
            )
        bind_log_fields(flow_run_id=run.id)
        logger.info("request %s: flow run %s (%s)", request.request_id, run.id, run.name)
        return run.parameters

    def _reject(self, message: Message, claimed_id: str | None, reason: str) -> None:
        """Announce the rejection under the claimed id, unless that id belongs to another
        request (it has a run or an outcome): then only park the message."""
        earlier = self.outcomes.read(claimed_id) if claimed_id else None
        if (
            earlier is not None
            and earlier.status is ClipState.REJECTED
            and earlier.reason == reason
        ):
            message.ack()  # a redelivery of a message already answered
            return
        if claimed_id is not None and self._is_taken(claimed_id):
            self._park(message, f"invalid message under request id {claimed_id}, which "
                       f"belongs to another request: {reason}", claimed_id)  # fmt: skip
            return
        logger.warning("request %s rejected: %s", claimed_id or "(no valid id)", reason)
        rejection = ClipCompletion(request_id=claimed_id, status=ClipState.REJECTED, reason=reason)
        self.outcomes.settle(rejection)
        metrics.LISTENER_MESSAGES.labels("rejected").inc()
        message.ack()

    def _is_taken(self, request_id: str) -> bool:
        return self.outcomes.read(request_id) is not None or self._run_of(request_id) is not None

    def _run_of(self, request_id: str) -> FlowRun | None:
        runs = self.prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                idempotency_key=FlowRunFilterIdempotencyKey(any_=[request_id])
            ),
            limit=1,
        )
        return runs[0] if runs else None

    def _retry_or_park(self, message: Message, request: ClipRequest | None, error: str) -> None:
        """Nack after a backoff; park the message once it has been delivered too often."""
        request_id = request.request_id if request else "(invalid message)"
        attempt = message.delivery_attempt or 1
        reason = f"could not handle the request ({error})"
        if attempt >= self.settings.max_delivery_attempts:
            reason = f"{reason}; gave up after {attempt} deliveries"
            self._park(message, reason, request.request_id if request else None, request)
            return
        delay = min(BACKOFF_FIRST_S * 2 ** (attempt - 1), BACKOFF_MAX_S)
        logger.warning(
            "request %s: %s; delivery %d, retrying in %.0f s", request_id, reason, attempt, delay
        )
        # Holding the message (the client keeps extending its lease) delays the redelivery
        # without acking anything: an outage is waited out instead of spun on.
        self._sleep(delay)
        metrics.LISTENER_MESSAGES.labels("retried").inc()
        message.nack()

    def _park(
        self,
        message: Message,
        reason: str,
        request_id: str | None,
        failed: ClipRequest | None = None,
    ) -> None:
        """Move the message to the dead-letter topic with its reason and (well-formed) id;
        ``failed``, a request of ours, is settled as failed, so M6 learns why."""
        logger.error(
            "request %s parked on %s: %s",
            request_id or "(no valid id)",
            self.settings.dead_letter_topic,
            reason,
        )
        attributes = {"reason": reason[:MAX_ATTRIBUTE_CHARS]}
        if request_id:
            attributes["request_id"] = request_id
        try:
            self._publish_dead_letter(self._dead_letter_topic, message.data, **attributes)
            if failed is not None:
                self.outcomes.fail(failed.request_id, failed.hand_id, reason)
        except Exception:
            logger.exception("request %s: could not park it; nacked", request_id or "-")
            message.nack()
            return
        metrics.LISTENER_MESSAGES.labels("parked").inc()
        message.ack()


def _work_queue_of(request: ClipRequest, settings: Settings) -> str | None:
    """The queue of the site holding the recording (validation refused a request no site
    serves); None without sites: the deployment's own queue."""
    site = settings.site_of(Path(request.nas_video_path))
    return site.work_queue if site else None


def _parameters(request: ClipRequest) -> dict[str, Any]:
    return {"request": request.model_dump(mode="json")}


def _traceparent_of(message: Message) -> str | None:
    """The message's ``traceparent`` attribute, if it has one (fakes may have no
    attributes at all)."""
    value = (getattr(message, "attributes", None) or {}).get("traceparent")
    return value if isinstance(value, str) else None


def _parse(data: bytes, settings: Settings) -> tuple[ClipRequest | None, str]:
    """The request (validated under ``settings``), or None and why not. Never raises,
    whatever the bytes."""
    try:
        return ClipRequest.model_validate_json(data, context={"settings": settings}), ""
    except ValidationError as error:
        return None, describe_validation_error(error)
    except Exception as error:  # a validator failing on a hostile body, say
        return None, f"message: not a valid clip request ({type(error).__name__})"


def _claimed_id(data: bytes) -> str | None:
    """The id an invalid message claims, when it is a well-formed one: only such an id is
    logged or announced under (a free-form one could forge log lines)."""
    try:
        claimed = _ClaimedId.model_validate_json(data).request_id
    except Exception:
        return None
    return claimed if isinstance(claimed, str) and is_safe_token(claimed) else None


def wait_for_deployment(prefect: SyncPrefectClient, name: str, stop: threading.Event) -> UUID:
    """The deployment's id; waits (logging) while it has not been applied yet."""
    while not stop.is_set():
        try:
            return prefect.read_deployment_by_name(name).id
        except ObjectNotFound:
            logger.warning("deployment %s not found; run `python -m deployments`", name)
            stop.wait(DEPLOYMENT_WAIT_S)
    raise SystemExit(0)


def serve(settings: Settings, stop: threading.Event) -> None:
    """Listen until ``stop`` is set; subscribe again whenever the stream ends."""
    with get_client(sync_client=True) as prefect, SubscriberClient() as subscriber:
        listener = RequestListener(
            settings,
            prefect,
            wait_for_deployment(prefect, settings.deployment, stop),
            RequestOutcomes.from_settings(settings),
        )
        subscription = settings.subscription_path(settings.requests_subscription)
        next_sweep = time.monotonic() + SWEEP_INTERVAL_S
        while not stop.is_set():
            streaming_pull = subscriber.subscribe(
                subscription,
                callback=listener.handle,
                flow_control=FlowControl(max_messages=settings.listener_max_messages),
            )
            logger.info("listening on %s for deployment %s", subscription, settings.deployment)
            while not stop.wait(1.0) and not streaming_pull.done():
                if time.monotonic() >= next_sweep:
                    _sweep(prefect, listener)
                    next_sweep = time.monotonic() + SWEEP_INTERVAL_S
            streaming_pull.cancel()
            _log_end_of_stream(streaming_pull, stop)
            stop.wait(0 if stop.is_set() else RESUBSCRIBE_S)
        logger.info("stopped")


def _log_end_of_stream(streaming_pull: Any, stop: threading.Event) -> None:
    try:
        streaming_pull.result()
    except Exception as error:
        if not stop.is_set():
            logger.error(
                "the subscription stream ended (%s: %s); subscribing again in %.0f s",
                type(error).__name__,
                error,
                RESUBSCRIBE_S,
            )


def _sweep(prefect: SyncPrefectClient, listener: RequestListener) -> None:
    try:
        sweep_crashed_runs(
            prefect, listener.deployment_id, listener.settings.max_flow_attempts, listener.outcomes
        )
        metrics.record_queued_runs(prefect, listener.deployment_id)
    except Exception:
        logger.exception("crash sweep failed; next one in %.0f s", SWEEP_INTERVAL_S)


def main() -> None:
    argparse.ArgumentParser(
        prog="python -m agent_pool.listener",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args()
    configure_logging(LISTENER, get_settings())
    configure_span_export(LISTENER)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    settings = get_settings()
    metrics.serve_metrics(settings.metrics_host, settings.listener_metrics_port)
    serve(settings, stop)


if __name__ == "__main__":
    main()
