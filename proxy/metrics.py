"""The proxy's Prometheus metrics, served on ``GET /metrics`` (scope ``admin``).

Two sources, one registry per app:

- **HTTP**: every answer counted by route template (``/v1/clip/{request_id}/status``, never
  the path itself), method and status, with its duration; ``POST /v1/clip/request`` also
  counts as accepted or refused by reason. No label holds a key, an id or a path, so the
  series stay few whatever the traffic.
- **Completions**: flow processes live for one clip, too briefly to be scraped, so their
  figures travel in the completion they announce (``step_seconds``) and the proxy reads
  every completion from its own subscription (``CLIPPING_PROXY_METRICS_SUBSCRIPTION`` on
  ``clipping-complete``). Pub/Sub hands each message of a subscription to one subscriber,
  so several proxies each count a share and Prometheus's ``sum`` is the whole. The proxy
  knows when M6 asked (its record of accepted requests), so the latency is POST to
  announcement; ``notify`` is the announcement's Pub/Sub publish time minus the moment the
  flow finished the clip.
"""

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipping.messages import ClipCompletion, ClipState
from clipping.pubsub import consume_forever
from proxy.accepted import AcceptedRecord

logger = logging.getLogger("clipping.proxy")

LATENCY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BYTES_BUCKETS = tuple(2**power for power in range(20, 33))  # 1 MiB to 4 GiB
# The refusals of POST /v1/clip/request, by status: a fixed, small set of reasons.
REFUSALS = {
    401: "unauthorized",
    403: "forbidden",
    408: "body_timeout",
    409: "conflict",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}
# A failure's reason, sorted into a few classes by what it says (first match wins).
FAILURE_CLASSES = (
    ("cancelled", ("cancelled",)),
    ("live_wait", ("waiting for the recording", "did not reach")),
    ("delivery", ("could not handle", "deliveries", "publication", "published")),
    ("crash", ("crash", "gave up after")),
    ("range", ("range", "start ", "end ", "before the requested")),
    ("cut", ("verification", "encod", "muxer", "writing the clip", "ffmpeg", "poster")),
    ("source", ("source", "recording", "audio track", "video codec", "finalized")),
)


def failure_class(reason: str | None) -> str:
    text = (reason or "").lower()
    for name, words in FAILURE_CLASSES:
        if any(word in text for word in words):
            return name
    return "other"


class ProxyMetrics:
    """The app's registry and what it counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "clipping_http_requests",
            "Proxy HTTP answers, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "clipping_http_request_duration_seconds",
            "Time to answer, by route template.",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "clipping_requests",
            "Clip requests: accepted, or refused by reason.",
            ["result"],
            registry=self.registry,
        )
        self.completions = Counter(
            "clipping_completions",
            "Requests ended, by status.",
            ["status"],
            registry=self.registry,
        )
        self.failures = Counter(
            "clipping_failures",
            "Requests failed or rejected, by reason class.",
            ["status", "reason_class"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "clipping_request_latency_seconds",
            "POST /v1/clip/request to its completed announcement, by mode.",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "clipping_step_duration_seconds",
            "The flow's steps of completed clips: cut, upload, sign, notify.",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.clip_bytes = Histogram(
            "clipping_clip_bytes",
            "Size of completed clips.",
            buckets=BYTES_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def observe_answer(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_seconds.labels(route).observe(seconds)
        if route == "/v1/clip/request" and method == "POST":
            self.requests.labels(
                "accepted" if status == 202 else REFUSALS.get(status, "other")
            ).inc()

    def observe_completion(
        self, completion: ClipCompletion, accepted_at: datetime | None, published_at: datetime
    ) -> None:
        self.completions.labels(completion.status.value).inc()
        if completion.status is not ClipState.COMPLETED:
            self.failures.labels(completion.status.value, failure_class(completion.reason)).inc()
            return
        mode = completion.mode.value if completion.mode else "unknown"
        if accepted_at is not None:
            self.latency.labels(mode).observe((published_at - accepted_at).total_seconds())
        for step, seconds in (completion.step_seconds or {}).items():
            self.step_seconds.labels(step).observe(seconds)
        self.step_seconds.labels("notify").observe(
            max(0.0, (published_at - completion.finished_at).total_seconds())
        )
        if completion.size_bytes is not None:
            self.clip_bytes.observe(completion.size_bytes)


class HttpMetrics:
    """ASGI middleware: times and counts every answer under its route's template."""

    def __init__(self, app: ASGIApp, metrics: ProxyMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_answer(
                route, scope["method"], status, time.perf_counter() - started
            )


class CompletionCounter:
    """The callback of the metrics subscription: every completion counted, then acked."""

    def __init__(
        self, metrics: ProxyMetrics, record_of: Callable[[str], AcceptedRecord | None]
    ) -> None:
        self._metrics = metrics
        self._record_of = record_of

    def handle(self, message: Any) -> None:
        try:
            completion = ClipCompletion.model_validate_json(message.data)
        except ValidationError:
            logger.warning("metrics: a message on the completions topic is not a completion")
            message.ack()
            return
        try:
            record = self._record_of(completion.request_id) if completion.request_id else None
        except Exception:
            logger.exception("metrics: the accepted record could not be read; nacked")
            message.nack()
            return
        self._metrics.observe_completion(
            completion, record.accepted_at if record else None, message.publish_time
        )
        message.ack()


class CompletionMetrics:
    """The metrics subscription's consumer thread of a running proxy."""

    def __init__(self, subscription: str, counter: CompletionCounter) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=consume_forever,
            args=(subscription, counter.handle, self._stop),
            name="completion-metrics",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
