"""Publishing models as JSON messages. Client libraries are imported lazily (slow imports)."""

import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from clipping.tracing import current_span

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient

PUBLISH_TIMEOUT_S = 30.0
RESUBSCRIBE_S = 5.0

logger = logging.getLogger("clipping.pubsub")


@lru_cache
def publisher() -> "PublisherClient":
    """One client per process: it holds a gRPC channel and a batching thread."""
    from google.cloud.pubsub_v1 import PublisherClient

    return PublisherClient()


def publish_model(
    topic_path: str, message: BaseModel, *, timeout: float = PUBLISH_TIMEOUT_S, **attributes: str
) -> str:
    """Publish ``message`` as JSON and wait until Pub/Sub has stored it; return its id."""
    return publish_data(
        topic_path, message.model_dump_json().encode(), timeout=timeout, **attributes
    )


def publish_data(
    topic_path: str, data: bytes, *, timeout: float = PUBLISH_TIMEOUT_S, **attributes: str
) -> str:
    """Publish raw bytes and wait until Pub/Sub has stored them; return the message id.

    After ``timeout`` it raises, but the client may still deliver the message later:
    callers rely on the request id to make a late copy harmless.

    Published while a span is current (``clipping.tracing``), the message carries it in
    its ``traceparent`` attribute (unless ``attributes`` has one): the trace goes on.
    """
    attributes = _with_trace(attributes)
    return publisher().publish(topic_path, data, **attributes).result(timeout=timeout)


def _with_trace(attributes: dict[str, str]) -> dict[str, str]:
    span = current_span()
    return {"traceparent": span.traceparent, **attributes} if span else attributes


def consume_forever(
    subscription: str,
    callback: Callable[[Any], None],
    stop: threading.Event,
    *,
    max_messages: int = 16,
) -> None:
    """StreamingPull ``subscription`` into ``callback`` (which acks or nacks each message)
    until ``stop`` is set; subscribe again whenever the stream ends (an emulator or Pub/Sub
    restart). Blocking: run it in a thread of its own."""
    from google.cloud.pubsub_v1 import SubscriberClient

    while not stop.is_set():
        try:
            with SubscriberClient() as subscriber:
                _stream(subscriber, subscription, callback, stop, max_messages)
        except Exception as error:
            logger.error(
                "%s: the stream stopped (%s: %s)", subscription, type(error).__name__, error
            )
        stop.wait(RESUBSCRIBE_S)


def _stream(
    subscriber: Any,
    subscription: str,
    callback: Callable[[Any], None],
    stop: threading.Event,
    max_messages: int,
) -> None:
    from google.cloud.pubsub_v1.types import FlowControl

    streaming_pull = subscriber.subscribe(
        subscription, callback=callback, flow_control=FlowControl(max_messages=max_messages)
    )
    logger.info("reading %s", subscription)
    while not stop.wait(1.0) and not streaming_pull.done():
        pass
    streaming_pull.cancel()
    if not stop.is_set():
        streaming_pull.result()  # raises why the stream ended
