"""Pub/Sub listener: one ``clip-hand`` flow run per clip request.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m agent_pool.listener

StreamingPull on the ``clipping-worker`` subscription of ``clipping-requests``. Each valid
request becomes a flow run of the ``clip-hand`` deployment with
``idempotency_key = request_id``, and the message is acked only once the run exists, so a
redelivery finds the same run instead of making a second clip. An invalid message, or a
request id reused with a different body, is answered with a ``rejected`` completion that
carries the reason, then acked. When Prefect is unreachable the message is nacked after a
growing backoff, and nothing is acked that was not handled; after
``CLIPPING_MAX_DELIVERY_ATTEMPTS`` deliveries it is parked on ``clipping-requests-dead``
with its reason (attribute ``reason``), a ``failed`` completion is published and recorded
with the request's records in the bucket (where the proxy's status finds it). The
subscription's own dead-letter policy is the backstop if the listener itself keeps dying.
Every 30 s the listener also sweeps clip runs left Crashed (``agent_pool.crash_sweep``).
"""

import argparse
import json
import logging
import signal
import threading
import time
from typing import Any
from uuid import UUID

from google.cloud.pubsub_v1 import SubscriberClient
from google.cloud.pubsub_v1.subscriber.message import Message
from google.cloud.pubsub_v1.types import FlowControl
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from pydantic import ValidationError

from agent_pool.crash_sweep import sweep_crashed_runs
from blocks import ClipBucket
from clipping.messages import ClipCompletion, ClipRequest, ClipState, describe_validation_error
from clipping.pubsub import publish_data, publish_model
from clipping.settings import Settings, get_settings
from flows.records import ClipRecords

logger = logging.getLogger("clipping.listener")

DEPLOYMENT_WAIT_S = 2.0
BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 30.0
SWEEP_INTERVAL_S = 30.0
MAX_ATTRIBUTE_CHARS = 1000  # Pub/Sub caps attribute values at 1024 bytes


class RequestListener:
    """Handles one Pub/Sub message at a time per callback thread."""

    def __init__(self, settings: Settings, prefect: SyncPrefectClient, deployment_id: UUID):
        self.settings = settings
        self.prefect = prefect
        self.deployment_id = deployment_id
        # Run creation is serialised: concurrent writes on a SQLite-backed server fail
        # with "database is locked", and one create takes ~15 ms anyway.
        self._create_lock = threading.Lock()

    def handle(self, message: Message) -> None:
        try:
            request = ClipRequest.model_validate_json(message.data)
        except ValidationError as error:
            self._reject(message, _request_id_of(message.data), describe_validation_error(error))
            return
        try:
            run_parameters = self._create_run(request)
        except Exception as error:
            self._retry_later(message, request, error)
            return
        if run_parameters != _parameters(request):
            self._reject(
                message,
                request.request_id,
                "request_id was already used for a different request",
            )
            return
        message.ack()

    def _create_run(self, request: ClipRequest) -> dict[str, Any]:
        with self._create_lock:
            run = self.prefect.create_flow_run_from_deployment(
                self.deployment_id,
                parameters=_parameters(request),
                idempotency_key=request.request_id,
            )
        logger.info("request %s: flow run %s (%s)", request.request_id, run.id, run.name)
        return run.parameters

    def _retry_later(self, message: Message, request: ClipRequest, error: Exception) -> None:
        """Nack after a backoff; park the request once it has been delivered too often."""
        attempt = message.delivery_attempt or 1
        reason = f"could not create a flow run ({type(error).__name__}: {error})"
        if attempt >= self.settings.max_delivery_attempts:
            self._park(message, request, f"{reason}; gave up after {attempt} deliveries")
            return
        delay = min(BACKOFF_FIRST_S * 2 ** (attempt - 1), BACKOFF_MAX_S)
        logger.warning(
            "request %s: %s; delivery %d, retrying in %.0f s",
            request.request_id,
            reason,
            attempt,
            delay,
        )
        # Holding the message (the client keeps extending its lease) delays the redelivery
        # without acking anything: a Prefect outage is waited out instead of spun on.
        time.sleep(delay)
        message.nack()

    def _park(self, message: Message, request: ClipRequest, reason: str) -> None:
        """Move the request to the dead-letter topic with its reason, and tell M6 it failed.

        No run exists for it, so the failure is also recorded as the request's announcement:
        the status endpoint answers ``failed`` with the reason instead of ``queued``.
        """
        logger.error(
            "request %s parked on %s: %s",
            request.request_id,
            self.settings.dead_letter_topic,
            reason,
        )
        failure = ClipCompletion(
            request_id=request.request_id,
            hand_id=request.hand_id,
            status=ClipState.FAILED,
            reason=reason,
        )
        try:
            publish_data(
                self.settings.topic_path(self.settings.dead_letter_topic),
                message.data,
                request_id=request.request_id,
                reason=reason[:MAX_ATTRIBUTE_CHARS],
            )
            publish_model(
                self.settings.topic_path(self.settings.completions_topic),
                failure,
                request_id=request.request_id,
                status=ClipState.FAILED.value,
            )
            bucket = ClipBucket.from_settings(self.settings).storage()
            ClipRecords(bucket, request.request_id).record_announcement(failure)
        except Exception:
            logger.exception("request %s: could not park it; nacked", request.request_id)
            message.nack()
            return
        message.ack()

    def _reject(self, message: Message, request_id: str | None, reason: str) -> None:
        logger.warning("request %s rejected: %s", request_id, reason)
        rejection = ClipCompletion(request_id=request_id, status=ClipState.REJECTED, reason=reason)
        try:
            publish_model(
                self.settings.topic_path(self.settings.completions_topic),
                rejection,
                request_id=request_id or "",
                status=ClipState.REJECTED.value,
            )
        except Exception:
            logger.exception("request %s: could not publish the rejection; nacked", request_id)
            message.nack()
            return
        message.ack()


def _parameters(request: ClipRequest) -> dict[str, Any]:
    return {"request": request.model_dump(mode="json")}


def _request_id_of(data: bytes) -> str | None:
    """The id a rejected message claimed, if any, so the caller can match the rejection."""
    try:
        claimed = json.loads(data).get("request_id")
    except (ValueError, AttributeError):
        return None
    return claimed[:128] if isinstance(claimed, str) else None


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
    """Listen until ``stop`` is set."""
    with get_client(sync_client=True) as prefect, SubscriberClient() as subscriber:
        listener = RequestListener(
            settings, prefect, wait_for_deployment(prefect, settings.deployment, stop)
        )
        subscription = settings.subscription_path(settings.requests_subscription)
        streaming_pull = subscriber.subscribe(
            subscription,
            callback=listener.handle,
            flow_control=FlowControl(max_messages=settings.listener_max_messages),
        )
        logger.info("listening on %s for deployment %s", subscription, settings.deployment)
        next_sweep = time.monotonic() + SWEEP_INTERVAL_S
        while not stop.wait(1.0):
            if streaming_pull.done():
                streaming_pull.result()  # raises the reason the stream ended
            if time.monotonic() >= next_sweep:
                _sweep(prefect, listener.deployment_id, settings.max_flow_attempts)
                next_sweep = time.monotonic() + SWEEP_INTERVAL_S
        streaming_pull.cancel()
        streaming_pull.result()
        logger.info("stopped")


def _sweep(prefect: SyncPrefectClient, deployment_id: UUID, max_attempts: int) -> None:
    try:
        sweep_crashed_runs(prefect, deployment_id, max_attempts)
    except Exception:
        logger.exception("crash sweep failed; next one in %.0f s", SWEEP_INTERVAL_S)


def main() -> None:
    argparse.ArgumentParser(
        prog="python -m agent_pool.listener",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
    )
    logging.Formatter.converter = time.gmtime
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(get_settings(), stop)


if __name__ == "__main__":
    main()
