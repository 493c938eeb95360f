"""Publishing models as JSON messages. Client libraries are imported lazily (slow imports)."""

from functools import lru_cache
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient

PUBLISH_TIMEOUT_S = 30.0


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
    """
    return publisher().publish(topic_path, data, **attributes).result(timeout=timeout)
