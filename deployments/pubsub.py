"""The Pub/Sub topology the service relies on, created idempotently.

Topics ``clipping-requests``, ``clipping-complete`` and ``clipping-requests-dead``; the
``clipping-worker`` subscription with a dead-letter policy, so a request that keeps failing
is parked instead of redelivered forever; a subscription that keeps what is parked; and
``clipping-webhooks`` and ``clipping-metrics`` on ``clipping-complete``, from which the
proxy sends the callbacks and counts the completions.

On real Pub/Sub, dead-lettering also needs the Pub/Sub service agent
(``service-PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com``) to be a publisher on the
dead-letter topic and a subscriber on ``clipping-worker``.
"""

import contextlib
import logging

from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1
from google.protobuf import duration_pb2

from clipping.settings import Settings

logger = logging.getLogger(__name__)

# Long enough for a run to be created even while Prefect retries; the client extends it.
REQUEST_ACK_DEADLINE_S = 60
RETRY_BACKOFF = (1, 60)


def ensure_topology(settings: Settings) -> None:
    publisher = pubsub_v1.PublisherClient()
    with pubsub_v1.SubscriberClient() as subscriber:
        for topic in (
            settings.requests_topic,
            settings.completions_topic,
            settings.dead_letter_topic,
        ):
            with contextlib.suppress(AlreadyExists):
                publisher.create_topic(name=settings.topic_path(topic))
                logger.info("created topic %s", topic)
        _ensure_subscription(
            subscriber,
            name=settings.subscription_path(settings.requests_subscription),
            topic=settings.topic_path(settings.requests_topic),
            ack_deadline_seconds=REQUEST_ACK_DEADLINE_S,
            dead_letter_policy={
                "dead_letter_topic": settings.topic_path(settings.dead_letter_topic),
                "max_delivery_attempts": settings.max_delivery_attempts,
            },
            retry_policy={
                "minimum_backoff": duration_pb2.Duration(seconds=RETRY_BACKOFF[0]),
                "maximum_backoff": duration_pb2.Duration(seconds=RETRY_BACKOFF[1]),
            },
        )
        _ensure_subscription(
            subscriber,
            name=settings.subscription_path(settings.dead_letter_subscription),
            topic=settings.topic_path(settings.dead_letter_topic),
        )
        _ensure_subscription(
            subscriber,
            name=settings.subscription_path(settings.webhooks_subscription),
            topic=settings.topic_path(settings.completions_topic),
        )
        _ensure_subscription(
            subscriber,
            name=settings.subscription_path(settings.metrics_subscription),
            topic=settings.topic_path(settings.completions_topic),
        )
    publisher.stop()


def ensure_subscription(settings: Settings, subscription: str, topic: str) -> None:
    """A plain subscription (e.g. an audit one) on one of the service's topics."""
    with pubsub_v1.SubscriberClient() as subscriber:
        _ensure_subscription(
            subscriber,
            name=settings.subscription_path(subscription),
            topic=settings.topic_path(topic),
        )


def _ensure_subscription(subscriber: pubsub_v1.SubscriberClient, **request: object) -> None:
    with contextlib.suppress(AlreadyExists):
        subscriber.create_subscription(request=request)
        logger.info("created subscription %s", request["name"])
