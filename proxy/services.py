"""What the proxy's endpoints use, built once per app: ``create_app`` puts one ``Services``
on ``app.state`` and its lifespan opens (and closes) the parts that hold connections."""

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from google.cloud.storage import Bucket
from prefect.client.orchestration import PrefectClient

from clipping.messages import NewClipRequest
from clipping.outcomes import RequestOutcomes
from clipping.pubsub import publish_data, publish_model
from clipping.settings import Settings
from proxy.accepted import AcceptedRequests
from proxy.auth import ApiKeys
from proxy.limits import RateLimiter
from proxy.links import ClipLinks
from proxy.metrics import ProxyMetrics
from proxy.settings import ProxySettings


class Publisher:
    """Publishes accepted requests to ``clipping-requests``."""

    def __init__(self, settings: Settings, timeout_seconds: float) -> None:
        self._topic = settings.topic_path(settings.requests_topic)
        self._timeout = timeout_seconds

    async def publish(self, clip: NewClipRequest) -> str:
        """The message id; raises whatever publishing raised."""
        return await asyncio.to_thread(
            publish_model, self._topic, clip, timeout=self._timeout, request_id=clip.request_id
        )

    async def republish(self, request_id: str, body: bytes) -> None:
        """Publish an accepted request's recorded body again (``proxy.reconcile``)."""
        await asyncio.to_thread(
            publish_data, self._topic, body, timeout=self._timeout, request_id=request_id
        )


@dataclass
class Services:
    """Everything the endpoints use; ``accepted``, ``outcomes``, ``bucket`` and ``prefect``
    exist while the app runs (its lifespan opens and closes them)."""

    settings: Settings
    proxy_settings: ProxySettings
    keys: ApiKeys
    limiter: RateLimiter
    publisher: Publisher
    links: ClipLinks
    metrics: ProxyMetrics
    prefect_settings: Any  # prefect.settings.Settings, built once (~50 ms of CPU each)
    profile: Any = None
    accepted: AcceptedRequests | None = None
    outcomes: RequestOutcomes | None = None
    bucket: Bucket | None = None
    prefect: PrefectClient | None = None


def services_of(request: Request) -> Services:
    return request.app.state.services
