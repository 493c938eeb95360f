"""Completion callbacks (``proxy.webhooks``) in process: signatures, retries, the URL policy.

Receivers are real HTTP servers on loopback (the deliverer allows loopback, as the local stack
does); the deliveries are on SQLite (``tests/test_webhook_deliveries.py`` runs the store on
PostgreSQL too). Time is the test's clock: a retry is due when the test moves it, never after
a sleep. Signatures are verified here as a receiver would, from the Standard Webhooks spec,
not with the proxy's code.
"""

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from clipping.messages import ClipCompletion, ClipRequest, ClipState, describe_validation_error
from clipping.settings import Settings
from proxy.accepted import AcceptedRequests
from proxy.app import create_app
from proxy.auth import digest
from proxy.deps import get_accepted, get_publisher
from proxy.settings import ProxySettings
from proxy.webhooks import (
    CompletionConsumer,
    Deliverer,
    IPAddress,
    WebhookDeliveries,
    address_refusal,
    destination_refusal,
    retry_delay,
)

pytestmark = pytest.mark.unit

MASTER = SecretStr("a-master-secret-of-the-tests")
OWNER = digest("m6-key")
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """UTC time that moves only when the test says."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A loopback HTTP server answering each POST with the next of ``statuses`` (the last
    repeats); ``hold``, when given, keeps every answer until it is set."""

    statuses: list[int]
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def url(self, path: str = "/hooks/clip") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(Received(self.path, dict(self.headers), body))
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(timeout=30)  # generous: only bounds a failed test
                index = min(len(receiver.received), len(receiver.statuses)) - 1
                self.send_response(receiver.statuses[index])
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        return Handler


Serve = Callable[..., Receiver]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(statuses, ..., tls=None)``: a running ``Receiver`` (https with ``tls``),
    stopped after the test."""
    servers: list[ThreadingHTTPServer] = []
    threads: list[threading.Thread] = []

    def start(*args: object, tls: ssl.SSLContext | None = None, **kwargs: object) -> Receiver:
        receiver = Receiver(*args, **kwargs)  # type: ignore[arg-type]
        server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.handler())
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        receiver.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        servers.append(server)
        threads.append(thread)
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[WebhookDeliveries]:
    deliveries = WebhookDeliveries(f"sqlite:///{tmp_path / 'proxy.db'}")
    yield deliveries
    deliveries.close()


def deliverer(
    store: WebhookDeliveries, clock: Clock, *, max_attempts: int = 8, **options: object
) -> Deliverer:
    options.setdefault("allow_loopback", True)
    return Deliverer(
        store,
        {"r1": OWNER}.get,
        MASTER,
        max_attempts=max_attempts,
        now=clock,
        **options,  # type: ignore[arg-type]
    )


def deliver(deliverer: Deliverer) -> int:
    return asyncio.run(deliverer.deliver_due())


COMPLETION = ClipCompletion(
    request_id="r1", hand_id="h1", status=ClipState.COMPLETED, finished_at=START
).model_dump_json()
WEBHOOK_ID = "msg_r1_completed"


def enqueue(store: WebhookDeliveries, url: str, clock: Clock) -> None:
    assert store.enqueue(WEBHOOK_ID, "r1", url, COMPLETION, clock.now) is True


def verify(whsec: str, received: Received, now: int, tolerance_s: int = 300) -> dict:
    """What a receiver does (standardwebhooks.com): check the timestamp is recent, that one
    of the ``v1`` signatures is the HMAC of ``id.timestamp.body``; the payload."""
    assert whsec.startswith("whsec_")
    secret = base64.b64decode(whsec.removeprefix("whsec_"))
    headers = {name.lower(): value for name, value in received.headers.items()}
    message_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    assert abs(now - int(timestamp)) <= tolerance_s, "replayed or stale"
    signed = f"{message_id}.{timestamp}.".encode() + received.body
    expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s[:3] == "v1,"]
    assert any(hmac.compare_digest(expected, signature) for signature in given), "bad signature"
    return json.loads(received.body)


# The caller's secret, and the model's and the route's refusals


def proxy_settings_of(tmp_path: Path, **changes: object) -> ProxySettings:
    return ProxySettings(
        api_keys=SecretStr("clip:m6-key,admin:admin-key"),
        database_url=f"sqlite:///{tmp_path / 'accepted.db'}",
        count_completions=False,
        **changes,  # type: ignore[arg-type]
    )


class StubPublisher:
    async def publish(self, clip: ClipRequest) -> str:
        return "message-1"


@pytest.fixture
def accepted(tmp_path: Path) -> Iterator[AcceptedRequests]:
    store = AcceptedRequests(f"sqlite:///{tmp_path / 'accepted.db'}")
    yield store
    store.close()


def app_of(
    settings: Settings, proxy_settings: ProxySettings, accepted: AcceptedRequests
) -> FastAPI:
    """The app without its lifespan: what the endpoints use is given to them."""
    app = create_app(settings, proxy_settings)
    app.dependency_overrides[get_accepted] = lambda: accepted
    app.dependency_overrides[get_publisher] = StubPublisher
    return app


def test_the_secret_endpoint_gives_a_clip_key_its_own_secret(
    settings: Settings, tmp_path: Path, accepted: AcceptedRequests
) -> None:
    configured = proxy_settings_of(tmp_path, webhook_secret=MASTER)
    client = TestClient(app_of(settings, configured, accepted))
    mine = client.get("/v1/webhooks/secret", headers={"Authorization": "Bearer m6-key"})
    assert mine.status_code == 200
    assert mine.headers["Cache-Control"] == "no-store"
    secret = mine.json()["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert client.get("/v1/webhooks/secret").status_code == 401
    bad_key = client.get("/v1/webhooks/secret", headers={"Authorization": "Bearer nope"})
    assert bad_key.status_code == 401
    admin = client.get("/v1/webhooks/secret", headers={"Authorization": "Bearer admin-key"})
    assert admin.status_code == 403
    other_master = proxy_settings_of(tmp_path, webhook_secret=SecretStr("another-master-secret"))
    again = TestClient(app_of(settings, other_master, accepted)).get(
        "/v1/webhooks/secret", headers={"Authorization": "Bearer m6-key"}
    )
    assert again.json()["secret"] not in (secret, None)


def test_the_secret_endpoint_is_503_while_webhooks_are_off(
    settings: Settings, tmp_path: Path, accepted: AcceptedRequests
) -> None:
    client = TestClient(app_of(settings, proxy_settings_of(tmp_path), accepted))
    answer = client.get("/v1/webhooks/secret", headers={"Authorization": "Bearer m6-key"})
    assert answer.status_code == 503
    assert answer.json() == {"detail": "webhooks are not configured on this proxy"}


BAD_CALLBACKS = {
    "not a URL": ("hooks at example.com", "must not contain spaces"),
    "relative": ("/hooks/clip", "must be an absolute https URL"),
    "another scheme": ("ftp://example.com/hook", "must be an absolute https URL"),
    "no host": ("https:///hook", "must be an absolute https URL"),
    "http to the internet": ("http://example.com/hook", "must be https"),
    "credentials": ("https://user:pw@example.com/hook", "must not carry credentials"),
    "a bad port": ("https://example.com:99999/hook", "invalid port"),
    "too long": ("https://example.com/" + "a" * 2048, "at most 2048 characters"),
    "not a string": (42, "valid string"),
}


@pytest.mark.parametrize(("url", "reason"), BAD_CALLBACKS.values(), ids=BAD_CALLBACKS.keys())
def test_an_invalid_callback_url_is_422_with_the_reason(
    settings: Settings,
    tmp_path: Path,
    accepted: AcceptedRequests,
    request_body: dict,
    url: object,
    reason: str,
) -> None:
    client = TestClient(
        app_of(settings, proxy_settings_of(tmp_path, webhook_secret=MASTER), accepted)
    )
    answer = client.post(
        "/v1/clip/request",
        json={**request_body, "callback_url": url},
        headers={"Authorization": "Bearer m6-key"},
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith("body.callback_url: ")
    assert reason in answer.json()["detail"]
    assert "r1" not in accepted
    assert (
        client.post("/v1/clip/request", json={**request_body, "callback_url": url}).status_code
        == 401
    )


def post_with_callback(
    settings: Settings, tmp_path: Path, accepted: AcceptedRequests, body: dict, changes: dict
) -> httpx.Response:
    """POST ``body`` as m6 to a proxy with ``changes`` to its settings."""
    client = TestClient(app_of(settings, proxy_settings_of(tmp_path, **changes), accepted))
    return client.post("/v1/clip/request", json=body, headers={"Authorization": "Bearer m6-key"})


@pytest.mark.parametrize(
    ("url", "changes", "reason"),
    [
        ("https://hooks.example.com/clip", {}, "this proxy sends no callbacks"),
        ("https://10.0.0.7/clip", {"webhook_secret": MASTER}, "10.0.0.7 is a private address"),
        (
            "https://169.254.169.254/latest",
            {"webhook_secret": MASTER},
            "169.254.169.254 is a link-local address",
        ),
        ("http://127.0.0.1:9/clip", {"webhook_secret": MASTER}, "127.0.0.1 is a loopback address"),
        ("http://localhost:9/clip", {"webhook_secret": MASTER}, "is a loopback address"),
    ],
    ids=["webhooks off", "private", "link-local", "loopback", "localhost"],
)
def test_the_proxy_refuses_a_callback_it_would_not_send(
    settings: Settings,
    tmp_path: Path,
    accepted: AcceptedRequests,
    request_body: dict,
    url: str,
    changes: dict,
    reason: str,
) -> None:
    answer = post_with_callback(
        settings, tmp_path, accepted, {**request_body, "callback_url": url}, changes
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith("body.callback_url: ")
    assert reason in answer.json()["detail"]
    assert "r1" not in accepted


@pytest.mark.parametrize(
    ("url", "changes"),
    [
        ("https://hooks.example.com/clip?tenant=7", {"webhook_secret": MASTER}),
        ("http://127.0.0.1:9/clip", {"webhook_secret": MASTER, "webhook_allow_loopback": True}),
        ("http://[::1]:9/clip", {"webhook_secret": MASTER, "webhook_allow_loopback": True}),
    ],
)
def test_a_request_with_a_callback_is_accepted_and_recorded_with_it(
    settings: Settings,
    tmp_path: Path,
    accepted: AcceptedRequests,
    request_body: dict,
    url: str,
    changes: dict,
) -> None:
    answer = post_with_callback(
        settings, tmp_path, accepted, {**request_body, "callback_url": url}, changes
    )
    assert answer.status_code == 202, answer.text
    record = accepted.record("r1")
    assert record is not None
    assert (record.fields["callback_url"], record.owner) == (url, OWNER)


def test_the_model_takes_no_callback_by_default_and_round_trips_one(request_body: dict) -> None:
    without = ClipRequest.model_validate(request_body)
    assert without.callback_url is None
    # Serialized as before callbacks: recorded bodies and run parameters still compare equal.
    assert "callback_url" not in without.model_dump_json()
    assert "callback_url" not in without.model_dump(mode="json")
    with_callback = ClipRequest.model_validate(
        {**request_body, "callback_url": "https://hooks.example.com/c"}
    )
    assert ClipRequest.model_validate_json(with_callback.model_dump_json()) == with_callback
    with pytest.raises(ValidationError) as refused:
        ClipRequest.model_validate({**request_body, "callback_url": "http://10.0.0.1/c"})
    assert describe_validation_error(refused.value) == (
        "callback_url: Value error, must be https (http only to a loopback host)"
    )


# Delivering


def test_a_delivery_is_retried_until_accepted_then_never_sent_again(
    serve: Serve,
    store: WebhookDeliveries,
    clock: Clock,
    settings: Settings,
    tmp_path: Path,
    accepted: AcceptedRequests,
) -> None:
    """Fails twice (5 s, then 10 s later), accepted the third time; the receiver verifies
    every attempt with the secret its key reads from the secret endpoint."""
    receiver = serve([500, 503, 204])
    enqueue(store, receiver.url(), clock)
    sender = deliverer(store, clock)
    assert deliver(sender) == 1
    assert deliver(sender) == 0  # the retry is not due yet
    clock.advance(4.9)
    assert deliver(sender) == 0
    clock.advance(0.1)
    assert deliver(sender) == 1
    clock.advance(9.9)
    assert deliver(sender) == 0
    clock.advance(0.1)
    assert deliver(sender) == 1
    sent_at = [START, START + timedelta(seconds=5), START + timedelta(seconds=15)]
    for _ in range(3):
        clock.advance(3600)
        assert deliver(sender) == 0
    assert len(receiver.received) == 3

    configured = proxy_settings_of(tmp_path, webhook_secret=MASTER)
    whsec = (
        TestClient(app_of(settings, configured, accepted))
        .get("/v1/webhooks/secret", headers={"Authorization": "Bearer m6-key"})
        .json()["secret"]
    )
    for received, at in zip(receiver.received, sent_at, strict=True):
        assert verify(whsec, received, now=int(at.timestamp())) == json.loads(COMPLETION)
        assert received.headers["webhook-id"] == WEBHOOK_ID
        assert received.headers["webhook-timestamp"] == str(int(at.timestamp()))
        assert received.headers["Content-Type"] == "application/json"
        assert received.headers["Host"] == f"127.0.0.1:{receiver.port}"
        assert received.path == "/hooks/clip"
    with pytest.raises(AssertionError, match="bad signature"):
        verify(whsec.replace(whsec[-6:], "AAAAA="), receiver.received[0], int(START.timestamp()))
    row = store.get(WEBHOOK_ID)
    assert row is not None
    assert (row.attempts, row.delivered_at, row.given_up_at) == (3, sent_at[2], None)
    assert row.last_error == "HTTP 503"  # of the last failed attempt
    assert row.claimed_until is None


def test_a_receiver_that_never_accepts_is_given_up_at_the_bound(
    serve: Serve,
    store: WebhookDeliveries,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = serve([500])
    enqueue(store, receiver.url(), clock)
    sender = deliverer(store, clock, max_attempts=4)
    waits = []
    while deliver(sender):
        row = store.get(WEBHOOK_ID)
        assert row is not None
        if row.given_up_at is None:
            waits.append((row.next_attempt_at - clock.now).total_seconds())
        clock.advance(600)
    assert len(receiver.received) == 4
    assert waits == [5.0, 10.0, 20.0]
    row = store.get(WEBHOOK_ID)
    assert row is not None
    assert (row.attempts, row.delivered_at, row.last_error) == (4, None, "HTTP 500")
    assert row.given_up_at == START + timedelta(seconds=3 * 600)
    assert any(
        record.levelno == logging.WARNING
        and "given up after 4 attempts: HTTP 500" in record.message
        for record in caplog.records
    )
    clock.advance(86400)
    assert deliver(sender) == 0
    assert len(receiver.received) == 4


def test_the_backoff_doubles_from_5_s_up_to_5_min() -> None:
    assert [retry_delay(n).total_seconds() for n in range(1, 10)] == [
        5,
        10,
        20,
        40,
        80,
        160,
        300,
        300,
        300,
    ]


def test_a_redirect_is_a_failure_and_not_followed(
    serve: Serve, store: WebhookDeliveries, clock: Clock
) -> None:
    target = serve([204])
    redirecting = serve([307], headers={"Location": target.url("/elsewhere")})
    enqueue(store, redirecting.url(), clock)
    assert deliver(deliverer(store, clock)) == 1
    assert (len(redirecting.received), len(target.received)) == (1, 0)
    row = store.get(WEBHOOK_ID)
    assert row is not None
    assert row.delivered_at is None and row.given_up_at is None
    assert row.last_error is not None
    assert row.last_error.startswith("HTTP 307: redirect to 'http://127.0.0.1:")
    assert row.last_error.endswith("/elsewhere' not followed")


def test_a_refused_connection_is_retried(store: WebhookDeliveries, clock: Clock) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    enqueue(store, "http://127.0.0.1:9/hook", clock)
    assert deliver(deliverer(store, clock, transport=httpx.MockTransport(refuse))) == 1
    row = store.get(WEBHOOK_ID)
    assert row is not None
    assert (row.attempts, row.given_up_at, row.last_error) == (
        1,
        None,
        "ConnectError: connection refused",
    )
    assert row.next_attempt_at == START + timedelta(seconds=5)


REFUSED = {
    "https://10.1.2.3/hook": "10.1.2.3 is a private address",
    "https://192.168.1.20:8443/hook": "192.168.1.20 is a private address",
    "https://169.254.169.254/latest/meta-data": "169.254.169.254 is a link-local address",
    "https://[fe80::1]/hook": "fe80::1 is a link-local address",
    "https://[fd00::5]/hook": "fd00::5 is a private address",
    "https://100.64.0.9/hook": "100.64.0.9 is a shared (CGNAT) address",
    "https://224.0.0.1/hook": "224.0.0.1 is a multicast address",
    "https://0.0.0.0/hook": "0.0.0.0 is an unspecified address",
    "https://240.0.0.1/hook": "240.0.0.1 is a reserved address",
    "https://[::ffff:10.0.0.1]/hook": "10.0.0.1 is a private address",
    "https://127.0.0.1/hook": "127.0.0.1 is a loopback address",
    "http://localhost:9/hook": "is a loopback address",
}


@pytest.mark.parametrize(("url", "reason"), REFUSED.items(), ids=REFUSED.keys())
def test_a_non_public_address_is_refused_at_once_without_a_post(
    store: WebhookDeliveries, clock: Clock, url: str, reason: str
) -> None:
    posted: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(204)

    transport = httpx.MockTransport(answer)
    enqueue(store, url, clock)
    sender = deliverer(store, clock, allow_loopback=False, transport=transport)
    assert deliver(sender) == 1
    row = store.get(WEBHOOK_ID)
    assert row is not None
    assert row.given_up_at == START
    assert row.last_error is not None
    assert row.last_error.startswith("refused: ") and reason in row.last_error
    clock.advance(3600)
    assert deliver(sender) == 0
    assert posted == []


def test_a_name_is_checked_by_what_it_resolves_to_and_posted_to_that_address(
    store: WebhookDeliveries, clock: Clock
) -> None:
    """The connection goes to the address checked; the name is kept for Host and TLS SNI."""
    answers = {"inside.example.com": ["1.1.1.1", "10.0.0.5"], "hooks.example.com": ["8.8.4.4"]}
    posted: list[httpx.Request] = []

    async def resolve(host: str, port: int) -> list[IPAddress]:
        assert port == 443
        return [ipaddress.ip_address(address) for address in answers[host]]

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(200)

    transport = httpx.MockTransport(answer)
    for host in answers:
        store.enqueue(f"msg_{host}", "r1", f"https://{host}/hook?x=1", COMPLETION, clock.now)
    assert deliver(deliverer(store, clock, transport=transport, resolve=resolve)) == 2
    inside = store.get("msg_inside.example.com")
    assert inside is not None and inside.last_error == "refused: 10.0.0.5 is a private address"
    [request] = posted
    assert str(request.url) == "https://8.8.4.4/hook?x=1"
    assert request.headers["Host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"


def certificate_for(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``name`` and its key, as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


@pytest.mark.parametrize(
    ("served_name", "delivered"), [("hooks.test", True), ("other.test", False)]
)
def test_https_to_the_checked_address_still_verifies_the_hosts_certificate(
    serve: Serve,
    store: WebhookDeliveries,
    clock: Clock,
    tmp_path: Path,
    served_name: str,
    delivered: bool,
) -> None:
    """Pinned to 127.0.0.1, the POST still names hooks.test: in SNI, in Host, and as the
    name the certificate must be for (another name's certificate fails the attempt)."""
    certificate, key = certificate_for(served_name)
    (tmp_path / "cert.pem").write_bytes(certificate)
    (tmp_path / "key.pem").write_bytes(key)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []

    def sni(sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        names.append(name)

    server_tls.sni_callback = sni
    receiver = serve([204], tls=server_tls)

    async def resolve(host: str, port: int) -> list[IPAddress]:
        assert (host, port) == ("hooks.test", receiver.port)
        return [ipaddress.ip_address("127.0.0.1")]

    trusting = httpx.AsyncHTTPTransport(
        verify=ssl.create_default_context(cadata=certificate.decode())
    )
    enqueue(store, f"https://hooks.test:{receiver.port}/hook", clock)
    assert deliver(deliverer(store, clock, transport=trusting, resolve=resolve)) == 1
    row = store.get(WEBHOOK_ID)
    assert row is not None
    assert names == ["hooks.test"]
    if delivered:
        assert row.delivered_at == START
        [received] = receiver.received
        assert received.headers["Host"] == f"hooks.test:{receiver.port}"
    else:
        assert row.delivered_at is None
        assert row.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in row.last_error
        assert receiver.received == []


@pytest.mark.parametrize(
    ("address", "allow_loopback", "refusal"),
    [
        ("8.8.8.8", False, None),
        ("2606:4700:4700::1111", False, None),
        ("127.0.0.1", True, None),
        ("::1", True, None),
        ("127.0.0.1", False, "127.0.0.1 is a loopback address"),
        ("10.0.0.1", True, "10.0.0.1 is a private address"),
        ("169.254.1.1", True, "169.254.1.1 is a link-local address"),
        ("192.0.2.1", False, "192.0.2.1 is a private address"),  # documentation range
        ("::", True, ":: is an unspecified address"),
    ],
)
def test_the_address_policy(address: str, allow_loopback: bool, refusal: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address), allow_loopback) == refusal


def test_http_goes_to_loopback_only() -> None:
    public, loopback = [ipaddress.ip_address("8.8.8.8")], [ipaddress.ip_address("127.0.0.1")]
    assert destination_refusal("https", public, False) is None
    assert destination_refusal("http", public, True) == "http is allowed to loopback addresses only"
    assert destination_refusal("http", loopback, True) is None
    assert destination_refusal("https", [], True) == "the host resolves to no address"


def test_a_deliverer_holding_a_delivery_keeps_another_from_sending_it(
    serve: Serve, store: WebhookDeliveries, clock: Clock, tmp_path: Path
) -> None:
    """Two deliverers (two proxies) over one database: while the first one's POST is held
    by the receiver, the second finds nothing to claim; the delivery is sent once."""
    receiver = serve([200], hold=threading.Event())
    enqueue(store, receiver.url(), clock)
    other_store = WebhookDeliveries(f"sqlite:///{tmp_path / 'proxy.db'}")
    first, second = deliverer(store, clock), deliverer(other_store, clock)

    async def race() -> tuple[int, int]:
        holding = asyncio.create_task(first.deliver_due())
        assert await asyncio.to_thread(receiver.arrived.wait, 30)
        meanwhile = await second.deliver_due()
        assert receiver.hold is not None
        receiver.hold.set()
        return await holding, meanwhile

    assert asyncio.run(race()) == (1, 0)
    clock.advance(3600)
    assert (deliver(first), deliver(second)) == (0, 0)
    assert len(receiver.received) == 1
    other_store.close()


# Consuming completions


class FakeMessage:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.acked = self.nacked = False

    def ack(self) -> None:
        self.acked = True

    def nack(self) -> None:
        self.nacked = True


def test_a_completion_of_a_request_with_a_callback_is_enqueued_once(
    store: WebhookDeliveries, accepted: AcceptedRequests, clock: Clock, request_body: dict
) -> None:
    url = "https://hooks.example.com/clip"
    accepted.accept(ClipRequest.model_validate({**request_body, "callback_url": url}), OWNER)
    accepted.accept(ClipRequest.model_validate({**request_body, "request_id": "r2"}), OWNER)
    consumer = CompletionConsumer(store, accepted.record, clock)
    messages = [
        FakeMessage(COMPLETION.encode()),
        FakeMessage(COMPLETION.encode()),  # a repeated announcement
        FakeMessage(COMPLETION.replace('"r1"', '"r2"').encode()),  # no callback
        FakeMessage(COMPLETION.replace('"r1"', '"unknown"').encode()),
        FakeMessage(b"not json"),
    ]
    for message in messages:
        consumer.handle(message)
    assert [message.acked for message in messages] == [True] * 5
    row = store.get(WEBHOOK_ID)
    assert row is not None
    assert (row.url, row.request_id, row.attempts, row.next_attempt_at) == (url, "r1", 0, START)
    assert json.loads(row.body) == json.loads(COMPLETION)
    assert store.get("msg_r2_completed") is None


def test_a_completion_whose_delivery_cannot_be_recorded_is_nacked(
    store: WebhookDeliveries, accepted: AcceptedRequests, request_body: dict
) -> None:
    def broken(request_id: str) -> None:
        raise RuntimeError("database unreachable")

    message = FakeMessage(COMPLETION.encode())
    CompletionConsumer(store, broken).handle(message)
    assert (message.acked, message.nacked) == (False, True)
