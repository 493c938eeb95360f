"""Request limits: body size (413) and a per-key rate (429) on the request endpoint."""

import json
import time
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """ASGI middleware answering 413 for bodies over ``max_bytes``, declared or streamed.

    The body is read here, before the app (at most ``max_bytes`` of it), then replayed: the
    app never sees a partial body, and a chunked one is measured as it arrives.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                await self._too_large(send)
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps(
            {"detail": f"the request body is larger than {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@dataclass
class _Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


class RateLimiter:
    """Token buckets per key: ``burst`` requests at once, refilled at ``per_minute``.

    Per proxy instance; several instances each allow the rate.
    """

    def __init__(self, per_minute: float, burst: int) -> None:
        self.per_second = per_minute / 60.0
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def retry_after(self, key: str) -> float:
        """0 when ``key`` may proceed now (and takes a token), else seconds to wait."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(key, _Bucket(tokens=float(self.burst), updated=now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.per_second)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.per_second
