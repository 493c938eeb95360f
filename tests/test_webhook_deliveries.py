"""Webhook deliveries on both databases, and completions read from Pub/Sub to the callback.

The store (``proxy.webhooks.WebhookDeliveries``) on SQLite and PostgreSQL: enqueueing is
idempotent, a claim is exclusive (two proxies claiming at the same moment each get their
own deliveries), a lease that ran out passes the delivery on and fences its first holder.
Then the whole way in one process: a completion published on the topic (the fallback
Pub/Sub emulator, the subscription made by ``deployments.pubsub``) reaches a loopback
receiver, signed, through the consumer and deliverer the proxy's lifespan runs.
"""

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from google.cloud import pubsub_v1

from clipping.messages import ClipCompletion, ClipRequest, ClipState
from clipping.settings import Settings
from deployments.pubsub import ensure_topology
from proxy.accepted import AcceptedRequests
from proxy.settings import ProxySettings
from proxy.webhooks import (
    CLAIM_LEASE,
    Deliverer,
    WebhookDeliveries,
    Webhooks,
    signing_secret,
    whsec,
)
from stack.config import free_port
from tests.pubsub_clients import HOST, emulator
from tests.test_webhooks import COMPLETION, MASTER, OWNER, START, Clock, Received, verify

pytestmark = pytest.mark.integration


@pytest.fixture
def stores(database_url: str) -> Iterator[tuple[WebhookDeliveries, WebhookDeliveries]]:
    """Two stores of one database, as two proxy instances have."""
    first, second = WebhookDeliveries(database_url), WebhookDeliveries(database_url)
    yield first, second
    first.close()
    second.close()


def test_enqueueing_is_idempotent_and_keeps_utc_times(
    stores: tuple[WebhookDeliveries, WebhookDeliveries],
) -> None:
    store, other = stores
    assert store.enqueue("msg_r1_completed", "r1", "https://h.example/c", COMPLETION, START)
    assert not other.enqueue("msg_r1_completed", "r1", "https://h.example/c", "{}", START)
    row = other.get("msg_r1_completed")
    assert row is not None
    assert (row.body, row.attempts, row.next_attempt_at, row.claimed_until) == (
        COMPLETION,
        0,
        START,
        None,
    )
    assert other.get("msg_r2_completed") is None


def test_simultaneous_claims_never_share_a_delivery(
    stores: tuple[WebhookDeliveries, WebhookDeliveries],
) -> None:
    first, second = stores
    ids = [f"msg_r{n}_completed" for n in range(40)]
    for n, webhook_id in enumerate(ids):
        first.enqueue(webhook_id, f"r{n}", "https://h.example/c", COMPLETION, START)
    claimers = [first, second, first, second]
    start = threading.Barrier(len(claimers))
    claimed: list[list[str]] = [[] for _ in claimers]

    def claim(index: int) -> None:
        start.wait(timeout=30)
        deliveries = claimers[index].claim_due(START, START + CLAIM_LEASE, limit=len(ids))
        claimed[index] = [delivery.webhook_id for delivery in deliveries]

    threads = [threading.Thread(target=claim, args=(index,)) for index in range(len(claimers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [webhook_id for part in claimed for webhook_id in part]
    assert sorted(everything) == sorted(ids), "each delivery claimed exactly once"


def test_a_lease_that_ran_out_passes_the_delivery_on_and_fences_its_holder(
    stores: tuple[WebhookDeliveries, WebhookDeliveries],
) -> None:
    first, second = stores
    first.enqueue("msg_r1_completed", "r1", "https://h.example/c", COMPLETION, START)
    [held] = first.claim_due(START, START + CLAIM_LEASE, limit=5)
    assert held.claimed_until == START + CLAIM_LEASE
    almost = START + CLAIM_LEASE - timedelta(seconds=1)
    assert second.claim_due(almost, almost + CLAIM_LEASE, limit=5) == []
    later = START + CLAIM_LEASE
    [taken] = second.claim_due(later, later + CLAIM_LEASE, limit=5)
    assert not first.delivered(held, later), "the first holder's lease is gone"
    assert second.retry_at(taken, later + timedelta(seconds=5), "HTTP 500")
    row = second.get("msg_r1_completed")
    assert row is not None
    assert (row.attempts, row.delivered_at, row.claimed_until, row.last_error) == (
        1,
        None,
        None,
        "HTTP 500",
    )


def test_two_deliverers_send_a_delivery_once(
    stores: tuple[WebhookDeliveries, WebhookDeliveries],
) -> None:
    """The first deliverer's POST is held until the second has made its pass."""
    first_store, second_store = stores
    clock = Clock()
    first_store.enqueue("msg_r1_completed", "r1", "http://127.0.0.1:9/c", COMPLETION, clock.now)
    posted: list[httpx.Request] = []
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        arrived.set()
        await release.wait()
        return httpx.Response(204)

    def deliverer(store: WebhookDeliveries) -> Deliverer:
        return Deliverer(
            store,
            {"r1": OWNER}.get,
            MASTER,
            max_attempts=3,
            allow_loopback=True,
            now=clock,
            transport=httpx.MockTransport(hold),
        )

    first, second = deliverer(first_store), deliverer(second_store)

    async def race() -> tuple[int, int]:
        holding = asyncio.create_task(first.deliver_due())
        await asyncio.wait_for(arrived.wait(), 30)
        meanwhile = await second.deliver_due()
        release.set()
        return await holding, meanwhile

    assert asyncio.run(race()) == (1, 0)
    clock.advance(3600)
    assert (asyncio.run(first.deliver_due()), asyncio.run(second.deliver_due())) == (0, 0)
    assert len(posted) == 1
    row = second_store.get("msg_r1_completed")
    assert row is not None and row.delivered_at == START


# The whole way, from the topic


@pytest.fixture
def pubsub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The fallback emulator; this process's clients reach it."""
    port = free_port()
    with emulator("fallback", port, tmp_path / "pubsub.log"):
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"{HOST}:{port}")
        yield f"{HOST}:{port}"


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[Received], threading.Event]]:
    """A loopback receiver that accepts everything: its port, what it got, a got-one event."""
    received: list[Received] = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(Received(self.path, dict(self.headers), body))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1], received, arrived
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_completion_on_the_topic_reaches_the_callback_signed(
    pubsub: str,
    settings: Settings,
    tmp_path: Path,
    request_body: dict,
    receiver: tuple[int, list[Received], threading.Event],
) -> None:
    port, received, arrived = receiver
    ensure_topology(settings)
    database_url = f"sqlite:///{tmp_path / 'proxy.db'}"
    proxy_settings = ProxySettings(
        database_url=database_url,
        webhook_secret=MASTER,
        webhook_allow_loopback=True,
        count_completions=False,
    )
    accepted = AcceptedRequests(database_url)
    callback = f"http://127.0.0.1:{port}/hooks/clip"
    accepted.accept(ClipRequest.model_validate({**request_body, "callback_url": callback}), OWNER)
    completion = ClipCompletion(request_id="r1", hand_id="h1", status=ClipState.FAILED, reason="x")
    publisher = pubsub_v1.PublisherClient()

    async def run_the_proxys_part() -> bool:
        webhooks = Webhooks.start(settings, proxy_settings, accepted)
        assert webhooks is not None
        try:
            topic = settings.topic_path(settings.completions_topic)
            data = completion.model_dump_json().encode()
            await asyncio.to_thread(lambda: publisher.publish(topic, data).result(timeout=30))
            return await asyncio.to_thread(arrived.wait, 60)  # generous: bounds a failure only
        finally:
            await webhooks.stop()

    try:
        assert asyncio.run(run_the_proxys_part()), "no callback within 60 s"
    finally:
        publisher.stop()
        accepted.close()
    [delivery] = received
    timestamp = int(delivery.headers["webhook-timestamp"])
    payload = verify(whsec(signing_secret(MASTER, OWNER)), delivery, now=timestamp)
    assert payload == completion.model_dump(mode="json")
    assert delivery.headers["webhook-id"] == "msg_r1_failed"
    store = WebhookDeliveries(database_url)
    row = store.get("msg_r1_failed")
    store.close()
    assert row is not None and row.delivered_at is not None
