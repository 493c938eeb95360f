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


def publish_model(topic_path: str, message: BaseModel, **attributes: str) -> str:
    """Publish ``message`` as JSON and wait until Pub/Sub has stored it; return its id."""
    return publish_data(topic_path, message.model_dump_json().encode(), **attributes)


def publish_data(topic_path: str, data: bytes, **attributes: str) -> str:
    """Publish raw bytes and wait until Pub/Sub has stored them; return the message id."""
    return publisher().publish(topic_path, data, **attributes).result(timeout=PUBLISH_TIMEOUT_S)
