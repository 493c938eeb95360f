"""Pub/Sub listener: one ``clip-hand`` flow run per clip request.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m agent_pool.listener

StreamingPull on the ``clipping-worker`` subscription of ``clipping-requests``. Each valid
request becomes a flow run of the ``clip-hand`` deployment with
``idempotency_key = request_id``, and the message is acked only once the run exists, so a
redelivery finds the same run instead of making a second clip. An invalid message, or a
request id reused with a different body, is answered with a ``rejected`` completion that
carries the reason, then acked. When Prefect or Pub/Sub fails, the message is nacked and
comes back later; nothing is acked that was not handled.
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

from clipping.messages import ClipCompletion, ClipRequest, ClipState, describe_validation_error
from clipping.pubsub import publish_model
from clipping.settings import Settings, get_settings

logger = logging.getLogger("clipping.listener")

DEPLOYMENT_WAIT_S = 2.0


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
        except Exception:
            logger.exception("request %s: could not create a flow run; nacked", request.request_id)
            message.nack()
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
        while not stop.wait(1.0):
            if streaming_pull.done():
                streaming_pull.result()  # raises the reason the stream ended
        streaming_pull.cancel()
        streaming_pull.result()
        logger.info("stopped")


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
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(get_settings(), stop)


if __name__ == "__main__":
    main()
