"""Signed completion callbacks (webhooks), per Standard Webhooks (standardwebhooks.com).

A clip request may carry a ``callback_url``. The proxy reads ``clipping-complete`` through
a subscription of its own, ``clipping-webhooks`` (``CompletionConsumer``): for a completion
of a request it accepted with a callback URL, it records a delivery in the table
``webhook_deliveries`` of its database (``CLIPPING_PROXY_DATABASE_URL``), then acks. The
``Deliverer`` POSTs the completion's JSON there, signed with three headers:

- ``webhook-id``: ``msg_<request_id>_<status>``, the same on every attempt and for a
  repeated completion (the store keeps one delivery per id; a receiver dedupes on it);
- ``webhook-timestamp``: the attempt's time, integer unix seconds;
- ``webhook-signature``: ``v1,`` and the base64 of HMAC-SHA256 of
  ``<webhook-id>.<webhook-timestamp>.<body>`` under the key's signing secret.

Each API key has its own signing secret, ``HMAC-SHA256(CLIPPING_PROXY_WEBHOOK_SECRET, the
key's digest)``: the request's owner (``proxy.accepted``) reads it as ``whsec_<base64>`` from
``GET /v1/webhooks/secret``. Without a master secret, webhooks are off: a request with a
callback URL is refused (422) and neither the consumer nor the deliverer runs.

Delivery is at least once. A 2xx answer is success: the delivery is never sent again.
Anything else is a failure: another status (a 3xx too, as redirects are not followed), a
refused connection, no answer within 10 s. It is tried again 5 s later, then 10 s, doubling
up to 5 min apart, and given up (``given_up_at``, ``last_error``, a warning in the log) after
``CLIPPING_PROXY_WEBHOOK_MAX_ATTEMPTS`` attempts. Several proxy instances share the table:
a deliverer claims a due delivery with a guarded UPDATE that sets a lease
(``claimed_until``), so no two POST it at once, and records the result only while the lease
it took is still the row's.

URL policy (SSRF): the request model takes https URLs, and http to a loopback host
(``clipping.messages.check_callback_url``); at acceptance the proxy refuses an address
literal it would refuse later. At each attempt the host is resolved and the delivery given
up at once, with the reason, if any of its addresses is not a public one: private, loopback,
link-local, multicast, reserved, unspecified, CGNAT (shared) or otherwise not global.
``CLIPPING_PROXY_WEBHOOK_ALLOW_LOOPBACK`` admits loopback addresses, and http to them, only.
The connection goes to the address that was checked, the URL's host kept for ``Host``, TLS
SNI and the certificate check, so the name cannot resolve elsewhere between check and POST.
"""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr, ValidationError
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError

from clipping.messages import ClipCompletion, ClipRequest
from clipping.pubsub import consume_forever
from clipping.settings import Settings
from proxy.accepted import AcceptedRecord, AcceptedRequests
from proxy.db import UtcDateTime
from proxy.settings import ProxySettings

logger = logging.getLogger("clipping.proxy")

ATTEMPT_TIMEOUT_S = 10.0  # the whole attempt: resolving, connecting, the answer's headers
FIRST_RETRY = timedelta(seconds=5)
LONGEST_RETRY = timedelta(minutes=5)
CLAIM_LEASE = timedelta(seconds=60)  # well beyond an attempt
BATCH = 20  # deliveries claimed, and attempted at once, per pass
POLL_S = 1.0
MAX_ERROR_CHARS = 500
CGNAT = ipaddress.ip_network("100.64.0.0/10")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Clock = Callable[[], datetime]
Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]


def utc_now() -> datetime:
    return datetime.now(UTC)


# Signing


def signing_secret(master: SecretStr, owner: str) -> bytes:
    """The signing secret of the key whose digest is ``owner``."""
    return hmac.new(master.get_secret_value().encode(), owner.encode(), hashlib.sha256).digest()


def whsec(secret: bytes) -> str:
    """The secret as receivers are given it (Standard Webhooks' ``whsec_`` form)."""
    return f"whsec_{base64.b64encode(secret).decode()}"


def webhook_id_of(completion: ClipCompletion) -> str:
    return f"msg_{completion.request_id}_{completion.status.value}"


def signature_headers(
    secret: bytes, webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


# URL policy


def address_refusal(address: IPAddress, allow_loopback: bool) -> str | None:
    """Why a callback may not go to ``address``; None if it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None if allow_loopback else f"{address} is a loopback address"
    kinds = (
        ("an unspecified", address.is_unspecified),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a shared (CGNAT)", address in CGNAT),
        ("a reserved", address.is_reserved),
        ("a private", address.is_private),
        ("a non-public", not address.is_global),
    )
    kind = next((kind for kind, matches in kinds if matches), None)
    return f"{address} is {kind} address" if kind else None


def destination_refusal(
    scheme: str, addresses: list[IPAddress], allow_loopback: bool
) -> str | None:
    """Why a callback may not go to a host that resolves to ``addresses``; None if it may."""
    if not addresses:
        return "the host resolves to no address"
    for address in addresses:
        if problem := address_refusal(address, allow_loopback):
            return problem
    if scheme != "https" and not all(address.is_loopback for address in addresses):
        return "http is allowed to loopback addresses only"
    return None


def callback_problem(clip: ClipRequest, settings: ProxySettings) -> str | None:
    """Why the proxy would refuse the request's callback (the 422 detail); None if it takes
    it. Cheap: an address literal is checked, a name only when a delivery resolves it."""
    if clip.callback_url is None:
        return None
    if settings.webhook_secret is None:
        return "body.callback_url: this proxy sends no callbacks (webhooks are not configured)"
    host = urlsplit(clip.callback_url).hostname or ""
    try:
        address = ipaddress.ip_address("127.0.0.1" if host.lower() == "localhost" else host)
    except ValueError:
        return None
    problem = address_refusal(address, settings.webhook_allow_loopback)
    return f"body.callback_url: {problem}" if problem else None


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (``getaddrinfo``, in a thread)."""
    found = await asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))


# The store


_metadata = MetaData()
_deliveries = Table(
    "webhook_deliveries",
    _metadata,
    Column("webhook_id", String(100), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime(), nullable=False, index=True),
    Column("delivered_at", UtcDateTime(), nullable=True),
    Column("given_up_at", UtcDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    # Held by the deliverer attempting it, until then (NULL: nobody).
    Column("claimed_until", UtcDateTime(), nullable=True),
)
_columns = _deliveries.c
_open = and_(_columns.delivered_at.is_(None), _columns.given_up_at.is_(None))


@dataclass(frozen=True)
class Delivery:
    """One row of ``webhook_deliveries``; times in UTC."""

    webhook_id: str
    request_id: str
    url: str
    body: str
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    given_up_at: datetime | None
    last_error: str | None
    claimed_until: datetime | None


class WebhookDeliveries:
    """The durable deliveries, on SQLite or PostgreSQL (the proxy's database)."""

    def __init__(self, database_url: str) -> None:
        self._engine = create_engine(database_url)
        _metadata.create_all(self._engine)

    def enqueue(self, webhook_id: str, request_id: str, url: str, body: str, now: datetime) -> bool:
        """Record a delivery, due ``now``; False if ``webhook_id`` was recorded before."""
        row = {"webhook_id": webhook_id, "request_id": request_id, "url": url, "body": body}
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    _deliveries.insert().values(**row, attempts=0, next_attempt_at=now)
                )
        except IntegrityError:
            return False
        return True

    def claim_due(self, now: datetime, until: datetime, limit: int) -> list[Delivery]:
        """Take the lease of up to ``limit`` due deliveries nobody holds, oldest first."""
        free = or_(_columns.claimed_until.is_(None), _columns.claimed_until <= now)
        due = (
            select(_columns.webhook_id)
            .where(_open, free, _columns.next_attempt_at <= now)
            .order_by(_columns.next_attempt_at)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            candidates = connection.execute(due).scalars().all()
        claimed = [id_ for id_ in candidates if self._claim(id_, free, until)]
        return [delivery for id_ in claimed if (delivery := self.get(id_)) is not None]

    def _claim(self, webhook_id: str, free: Any, until: datetime) -> bool:
        # Guarded: of two deliverers claiming the same row, the second matches nothing (on
        # PostgreSQL it waits for the first's commit, then sees its lease).
        claim = (
            _deliveries.update()
            .where(_columns.webhook_id == webhook_id, _open, free)
            .values(claimed_until=until)
        )
        with self._engine.begin() as connection:
            return connection.execute(claim).rowcount == 1

    def delivered(self, delivery: Delivery, at: datetime) -> bool:
        return self._settle(delivery, delivered_at=at)

    def retry_at(self, delivery: Delivery, at: datetime, error: str) -> bool:
        return self._settle(delivery, next_attempt_at=at, last_error=error)

    def give_up(self, delivery: Delivery, at: datetime, error: str) -> bool:
        return self._settle(delivery, given_up_at=at, last_error=error)

    def _settle(self, delivery: Delivery, **values: Any) -> bool:
        """Record an attempt's result, if ``delivery``'s lease is still the row's."""
        settle = (
            _deliveries.update()
            .where(
                _columns.webhook_id == delivery.webhook_id,
                _columns.claimed_until == delivery.claimed_until,
            )
            .values(**values, attempts=_columns.attempts + 1, claimed_until=None)
        )
        with self._engine.begin() as connection:
            return connection.execute(settle).rowcount == 1

    def get(self, webhook_id: str) -> Delivery | None:
        with self._engine.connect() as connection:
            row = connection.execute(
                select(_deliveries).where(_columns.webhook_id == webhook_id)
            ).one_or_none()
        if row is None:
            return None
        return Delivery(**row._asdict())

    def close(self) -> None:
        self._engine.dispose()


# Delivering


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed; ``final`` when trying again cannot help (the URL is refused)."""

    reason: str
    final: bool = False


def retry_delay(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: 5 s, doubling, at most 5 min."""
    return min(FIRST_RETRY * 2 ** (attempts - 1), LONGEST_RETRY)


class Deliverer:
    """Attempts the due deliveries, on ``now``'s clock and through ``transport`` (tests'
    stand-ins; by default, the network)."""

    def __init__(
        self,
        store: WebhookDeliveries,
        owner_of: Callable[[str], str | None],
        master_secret: SecretStr,
        *,
        max_attempts: int,
        allow_loopback: bool = False,
        now: Clock = utc_now,
        transport: httpx.AsyncBaseTransport | None = None,
        resolve: Resolve = resolve_host,
    ) -> None:
        self._store = store
        self._owner_of = owner_of
        self._master = master_secret
        self._max_attempts = max_attempts
        self._allow_loopback = allow_loopback
        self._now = now
        self._transport = transport
        self._resolve = resolve
        self._tls = httpx.create_ssl_context()

    @classmethod
    def from_settings(
        cls, settings: ProxySettings, store: WebhookDeliveries, accepted: AcceptedRequests
    ) -> "Deliverer":
        assert settings.webhook_secret is not None, "webhooks are not configured"
        return cls(
            store,
            accepted.owner,
            settings.webhook_secret,
            max_attempts=settings.webhook_max_attempts,
            allow_loopback=settings.webhook_allow_loopback,
        )

    async def deliver_due(self) -> int:
        """One pass: claim the due deliveries, attempt them at once; how many there were."""
        now = self._now()
        claimed = await asyncio.to_thread(self._store.claim_due, now, now + CLAIM_LEASE, BATCH)
        await asyncio.gather(*(self._deliver(delivery) for delivery in claimed))
        return len(claimed)

    async def _deliver(self, delivery: Delivery) -> None:
        failure = await self._attempt(delivery)
        await asyncio.to_thread(self._record, delivery, failure)

    def _record(self, delivery: Delivery, failure: Failure | None) -> None:
        now, attempt, name = self._now(), delivery.attempts + 1, delivery.webhook_id
        if failure is None:
            recorded = self._store.delivered(delivery, now)
            logger.info("webhook %s delivered (attempt %d)", name, attempt)
        elif failure.final or attempt >= self._max_attempts:
            recorded = self._store.give_up(delivery, now, failure.reason)
            logger.warning(
                "webhook %s given up after %d attempts: %s", name, attempt, failure.reason
            )
        else:
            recorded = self._store.retry_at(delivery, now + retry_delay(attempt), failure.reason)
            logger.info("webhook %s attempt %d failed: %s", name, attempt, failure.reason)
        if not recorded:
            logger.warning("webhook %s: its lease ran out before the result was recorded", name)

    async def _attempt(self, delivery: Delivery) -> Failure | None:
        """None on a 2xx answer, else the failure."""
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                return await self._post(delivery)
        except TimeoutError:
            return Failure(f"no answer within {ATTEMPT_TIMEOUT_S:g} s")
        except httpx.InvalidURL as error:
            return Failure(f"not a URL to POST to: {error}", final=True)
        except (httpx.HTTPError, OSError) as error:  # OSError: resolving the name failed
            return Failure(f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS])

    async def _post(self, delivery: Delivery) -> Failure | None:
        owner = await asyncio.to_thread(self._owner_of, delivery.request_id)
        if owner is None:
            return Failure("the request has no owner to sign for", final=True)
        url = httpx.URL(delivery.url)
        addresses = await self._resolve(url.raw_host.decode("ascii"), _port_of(url))
        if refusal := destination_refusal(url.scheme, addresses, self._allow_loopback):
            return Failure(f"refused: {refusal}", final=True)
        async with self._client() as client:
            request = self._signed(client, delivery, owner, url, addresses[0])
            response = await client.send(request, stream=True)
            await response.aclose()  # the answer's body is not read
        return _failure_of(response)

    def _client(self) -> httpx.AsyncClient:
        """One per attempt: connections are to addresses, so none may be shared between
        hosts that have the same address but their own TLS names."""
        return httpx.AsyncClient(
            transport=self._transport or httpx.AsyncHTTPTransport(verify=self._tls),
            follow_redirects=False,
            timeout=ATTEMPT_TIMEOUT_S,
            trust_env=False,  # no proxy from the environment: the checked address is the peer
        )

    def _signed(
        self,
        client: httpx.AsyncClient,
        delivery: Delivery,
        owner: str,
        url: httpx.URL,
        address: IPAddress,
    ) -> httpx.Request:
        """The POST to ``address``, named as the URL's host, signed for ``owner``."""
        body = delivery.body.encode()
        timestamp = int(self._now().timestamp())
        secret = signing_secret(self._master, owner)
        headers = {
            "Host": url.netloc.decode("ascii"),
            "Content-Type": "application/json",
            **signature_headers(secret, delivery.webhook_id, timestamp, body),
        }
        sni = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
        return client.build_request(
            "POST",
            url.copy_with(host=str(address)),
            headers=headers,
            content=body,
            extensions=sni,
        )


def _port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _failure_of(response: httpx.Response) -> Failure | None:
    if response.is_success:
        return None
    if 300 <= response.status_code < 400:
        location = response.headers.get("location", "")[:200]
        return Failure(f"HTTP {response.status_code}: redirect to {location!r} not followed")
    return Failure(f"HTTP {response.status_code}")


async def deliver_forever(
    deliverer: Deliverer, stop: asyncio.Event, interval_s: float = POLL_S
) -> None:
    """``deliver_due`` until ``stop`` is set (a pass under way finishes, so what it sent is
    recorded), pausing ``interval_s`` whenever a pass had room to spare."""
    while not stop.is_set():
        try:
            attempted = await deliverer.deliver_due()
        except Exception:
            logger.exception("delivering webhooks failed; next pass in %g s", interval_s)
            attempted = 0
        if attempted < BATCH:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


# Consuming completions


class Message(Protocol):
    """What the consumer uses of a Pub/Sub message."""

    data: bytes

    def ack(self) -> None: ...

    def nack(self) -> None: ...


class CompletionConsumer:
    """Turns completions into deliveries: the callback of the ``clipping-webhooks`` stream."""

    def __init__(
        self,
        store: WebhookDeliveries,
        record_of: Callable[[str], AcceptedRecord | None],
        now: Clock = utc_now,
    ) -> None:
        self._store = store
        self._record_of = record_of
        self._now = now

    def handle(self, message: Message) -> None:
        """Ack once the delivery is recorded (or none is due); nack if recording failed."""
        try:
            self.take(message.data)
        except Exception:
            logger.exception("a completion's webhook could not be recorded; nacked")
            message.nack()
            return
        message.ack()

    def take(self, data: bytes) -> bool:
        """Record the delivery a completion calls for; True if it was recorded now."""
        try:
            completion = ClipCompletion.model_validate_json(data)
        except ValidationError as error:
            logger.warning("not a completion, no webhook: %d problems", error.error_count())
            return False
        record = self._record_of(completion.request_id) if completion.request_id else None
        url = record.fields.get("callback_url") if record else None
        if record is None or not isinstance(url, str):
            return False
        return self._store.enqueue(
            webhook_id_of(completion),
            record.request_id,
            url,
            completion.model_dump_json(),
            self._now(),
        )


# In the proxy


class Webhooks:
    """The consumer (a thread) and the deliverer (a task) of a running proxy."""

    def __init__(
        self, settings: Settings, proxy_settings: ProxySettings, accepted: AcceptedRequests
    ) -> None:
        self._store = WebhookDeliveries(proxy_settings.database_url)
        consumer = CompletionConsumer(self._store, accepted.record)
        self._stop = threading.Event()
        self._consuming = threading.Thread(
            target=consume_forever,
            args=(
                settings.subscription_path(settings.webhooks_subscription),
                consumer.handle,
                self._stop,
            ),
            name="webhook-consumer",
            daemon=True,
        )
        deliverer = Deliverer.from_settings(proxy_settings, self._store, accepted)
        self._consuming.start()
        self._stop_delivering = asyncio.Event()
        self._delivering = asyncio.create_task(deliver_forever(deliverer, self._stop_delivering))

    @classmethod
    def start(
        cls, settings: Settings, proxy_settings: ProxySettings, accepted: AcceptedRequests
    ) -> "Webhooks | None":
        """Running, when webhooks are configured (``CLIPPING_PROXY_WEBHOOK_SECRET``)."""
        if proxy_settings.webhook_secret is None:
            return None
        return cls(settings, proxy_settings, accepted)

    async def stop(self) -> None:
        """Stop reading completions; let the deliveries under way end (cancelled if they
        outlast their timeout): a POST whose result was not recorded is sent again later."""
        self._stop.set()
        self._stop_delivering.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._delivering, ATTEMPT_TIMEOUT_S + POLL_S)
        await asyncio.to_thread(self._consuming.join)
        self._store.close()
