"""Request limits: body size (413), body read time (408), a per-key rate (429)."""

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimits:
    """ASGI middleware reading every request body whole before the app sees it.

    413 for a body over ``max_bytes``, declared or streamed (at most ``max_bytes`` of it is
    read); 408 when the body has not arrived within ``read_timeout_seconds`` of the first
    read, and the connection is closed, so a client sending a partial body cannot hold it.
    The body is then replayed: the app never sees a partial body, and a chunked one is
    measured as it arrives. Both answers come before the key is checked: they protect the
    proxy, and reading the body is what they limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_seconds = read_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        try:
            # One deadline for the whole body: a per-read timeout would let a client
            # dribble a byte at a time for ever.
            async with asyncio.timeout(self.read_timeout_seconds):
                messages = await self._read_body(receive)
        except TimeoutError:
            detail = f"the request body did not arrive within {self.read_timeout_seconds:g} s"
            await _answer(send, 408, detail, close=True)
            return
        if messages is None:
            await self._too_large(send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> list[Message] | None:
        """The body's messages, or None once more than ``max_bytes`` arrived."""
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                return None
            if message["type"] != "http.request" or not message.get("more_body"):
                return messages

    async def _too_large(self, send: Send) -> None:
        # The connection stays open: the server discards the rest of the body, and closing
        # on unread data would reset the connection before the client reads the answer.
        detail = f"the request body is larger than {self.max_bytes} bytes"
        await _answer(send, 413, detail, close=False)


async def _answer(send: Send, status: int, detail: str, close: bool) -> None:
    """A problem answer; with ``close``, the server closes the connection after it."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets per key: ``burst`` requests at once, refilled at ``per_minute``.

    Per proxy instance; several instances each allow the rate. ``clock`` (monotonic
    seconds) is injectable so a test decides how much time passes.
    """

    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_second = per_minute / 60.0
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def retry_after(self, key: str) -> float:
        """0 when ``key`` may proceed now (and takes a token), else seconds to wait."""
        now = self._clock()
        bucket = self._buckets.setdefault(key, _Bucket(tokens=float(self.burst), updated=now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.per_second)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.per_second
