"""Pub/Sub emulators for the tests that hold both to the same behaviour: start one of
either kind, and the real clients with shortcuts (``tests/test_pubsub_*.py``).

The ``pubsub_emulator`` fixture is parametrized (official, fallback) and started once per
module; ``clients`` are fresh real clients of it.
"""

import os
import queue
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.message import Message

from emulators import OFFICIAL_PUBSUB_EMULATOR, pubsub_command
from stack.config import free_port

HOST = "127.0.0.1"
PROJECT = "projects/clipping-test"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 60
ACK_DEADLINE_S = 10  # the minimum the client leases streamed messages for, too


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the emulator's process group, then SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def skip_unless_installed(kind: str) -> None:
    if kind == "official" and not OFFICIAL_PUBSUB_EMULATOR.exists():
        pytest.skip(f"the official Pub/Sub emulator is not installed ({OFFICIAL_PUBSUB_EMULATOR})")


@contextmanager
def emulator(
    kind: str, port: int, log_path: Path, data_dir: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A running emulator of the kind on HOST:port, stopped at the end of the block."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLIPPING_PUBSUB_EMULATOR", kind)
        command = pubsub_command(HOST, port, data_dir)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        give_up = time.monotonic() + STARTUP_TIMEOUT_S
        while not accepts_connections(port):
            if process.poll() is not None or time.monotonic() > give_up:
                pytest.fail(
                    f"{kind} Pub/Sub emulator did not listen on {HOST}:{port} "
                    f"(exit code {process.poll()}); its log:\n{log_path.read_text()}"
                )
            time.sleep(0.1)
        yield process
    finally:
        stop(process)


@pytest.fixture(scope="module", params=["official", "fallback"])
def pubsub_emulator(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``host:port`` of a running emulator of the parametrized kind, started once per module."""
    kind = request.param
    skip_unless_installed(kind)
    port = free_port()
    log_path = tmp_path_factory.mktemp(f"pubsub-{kind}") / "emulator.log"
    with emulator(kind, port, log_path):
        yield f"{HOST}:{port}"


@dataclass
class Clients:
    """The real clients, with shortcuts that create uniquely named topics and subscriptions."""

    publisher: pubsub_v1.PublisherClient
    subscriber: pubsub_v1.SubscriberClient

    def topic(self, **fields: object) -> str:
        name = f"{PROJECT}/topics/t-{uuid.uuid4().hex[:12]}"
        self.publisher.create_topic(request={"name": name, **fields})
        return name

    def subscription(self, topic: str, **fields: object) -> str:
        name = f"{PROJECT}/subscriptions/s-{uuid.uuid4().hex[:12]}"
        self.subscriber.create_subscription(request={"name": name, "topic": topic, **fields})
        return name

    def publish(self, topic: str, data: bytes, **attributes: str) -> str:
        return self.publisher.publish(topic, data, **attributes).result(timeout=10)

    @contextmanager
    def streaming(self, subscription: str, **kwargs: object) -> Iterator["queue.Queue[Message]"]:
        """Stream the subscription (StreamingPull); yield the queue its messages arrive on."""
        received: queue.Queue[Message] = queue.Queue()
        future = self.subscriber.subscribe(subscription, received.put, **kwargs)
        try:
            yield received
        finally:
            future.cancel()
            future.result(timeout=10)


@contextmanager
def clients_of(emulator: str) -> Iterator[Clients]:
    """Fresh clients of the emulator at ``host:port``, closed at the end of the block."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUBSUB_EMULATOR_HOST", emulator)
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
    try:
        yield Clients(publisher, subscriber)
    finally:
        subscriber.close()
        publisher.stop()
        publisher.transport.close()


@pytest.fixture
def clients(pubsub_emulator: str) -> Iterator[Clients]:
    with clients_of(pubsub_emulator) as clients:
        yield clients
