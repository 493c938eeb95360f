"""The same Pub/Sub behaviour, checked with the real client against both emulators.

Each test runs once against Google's official emulator (skipped when it is not installed) and
once against ``emulators.pubsub``, the fallback (the default), so the fallback is held to the
behaviour the service relies on. The fallback's durability (its ``--data-dir``, which the official
emulator lacks) is checked on the fallback alone: it is killed with SIGKILL and restarted on the
same data dir. Last, a stack that restarts its emulator re-applies the topology, on both.
The emulators and clients are ``tests.pubsub_clients``; what takes an ack deadline to show
is ``tests/test_pubsub_deadlines.py``.
"""

import os
import queue
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.pubsub_v1 import types

import emulators.pubsub
from clipping.settings import get_settings
from emulators.pubsub import PubSubEmulator
from stack.config import StackConfig, free_port
from stack.lifecycle import Stack
from stack.processes import marked_processes
from stack.provision import COMPLETIONS_AUDIT_SUBSCRIPTION
from tests.pubsub_clients import HOST, PROJECT, Clients, clients_of, emulator, skip_unless_installed

pytestmark = pytest.mark.integration


def test_admin_calls_and_their_errors(clients: Clients) -> None:
    topic = clients.topic()
    subscription = clients.subscription(topic)

    assert clients.publisher.get_topic(topic=topic).name == topic
    created = clients.subscriber.get_subscription(subscription=subscription)
    assert (created.topic, created.ack_deadline_seconds) == (topic, 10)
    assert list(clients.publisher.list_topic_subscriptions(topic=topic)) == [subscription]
    with pytest.raises(exceptions.AlreadyExists):
        clients.publisher.create_topic(name=topic)
    with pytest.raises(exceptions.AlreadyExists):
        clients.subscriber.create_subscription(name=subscription, topic=topic)
    with pytest.raises(exceptions.NotFound):
        clients.publisher.get_topic(topic=f"{topic}-missing")
    with pytest.raises(exceptions.NotFound):
        clients.subscriber.get_subscription(subscription=f"{subscription}-missing")
    with pytest.raises(exceptions.NotFound):
        clients.subscriber.create_subscription(name=f"{subscription}-2", topic=f"{topic}-missing")
    with pytest.raises(exceptions.InvalidArgument):
        clients.publisher.create_topic(name=f"{PROJECT}/topics/no spaces")


def test_nacked_message_is_redelivered_with_a_new_ack_id(clients: Clients) -> None:
    topic = clients.topic()
    subscription = clients.subscription(topic)
    message_id = clients.publish(topic, b"nack me")

    with clients.streaming(subscription) as received:
        first = received.get(timeout=10)
        first.nack()
        second = received.get(timeout=10)
        second.ack()

    assert first.message_id == second.message_id == message_id
    assert first.ack_id != second.ack_id


def test_flow_control_caps_outstanding_messages(clients: Clients) -> None:
    topic = clients.topic()
    subscription = clients.subscription(topic)
    for i in range(5):
        clients.publish(topic, f"clip {i}".encode())

    flow_control = pubsub_v1.types.FlowControl(max_messages=2)
    with clients.streaming(subscription, flow_control=flow_control) as received:
        outstanding = [received.get(timeout=10), received.get(timeout=10)]
        with pytest.raises(queue.Empty):
            received.get(timeout=1)
        outstanding.pop().ack()
        outstanding.append(received.get(timeout=10))
        with pytest.raises(queue.Empty):
            received.get(timeout=1)
        for message in outstanding:
            message.ack()


def test_dead_letter_policy_forwards_after_max_delivery_attempts(clients: Clients) -> None:
    # The official emulator implements dead-letter policies, so this runs against both.
    dead_letter_topic = clients.topic()
    dead_letters = clients.subscription(dead_letter_topic)
    topic = clients.topic()
    policy = {"dead_letter_topic": dead_letter_topic, "max_delivery_attempts": 5}
    subscription = clients.subscription(topic, dead_letter_policy=policy)
    clients.publish(topic, b"poison", kind="poison")

    attempts = []
    with clients.streaming(subscription) as received:
        for _ in range(5):
            message = received.get(timeout=10)
            attempts.append(message.delivery_attempt)
            message.nack()
        with clients.streaming(dead_letters) as dead:
            forwarded = dead.get(timeout=10)
            forwarded.ack()
        with pytest.raises(queue.Empty):
            received.get(timeout=1)

    assert attempts == [1, 2, 3, 4, 5]
    assert forwarded.data == b"poison"
    assert forwarded.attributes["kind"] == "poison"


# The official emulator ignores max_outstanding_messages (the client library enforces it on its
# side, see above) and keeps a closed stream's messages leased until their ack deadline, so the
# fallback's own handling of both, and of acks inside the stream, is checked on the wire alone.
@pytest.mark.parametrize("pubsub_emulator", ["fallback"], indirect=True)
def test_fallback_stream_flow_control_in_stream_acks_and_close(clients: Clients) -> None:
    topic = clients.topic()
    subscription = clients.subscription(topic)
    published = {clients.publish(topic, f"clip {i}".encode()) for i in range(3)}
    later: queue.Queue[types.StreamingPullRequest | None] = queue.Queue()

    def requests() -> Iterator[types.StreamingPullRequest]:
        yield types.StreamingPullRequest(
            subscription=subscription, stream_ack_deadline_seconds=60, max_outstanding_messages=2
        )
        yield from iter(later.get, None)

    stream = clients.subscriber.streaming_pull(requests=requests())
    received: queue.Queue[types.ReceivedMessage] = queue.Queue()

    def read() -> None:
        with suppress(exceptions.Cancelled):
            for response in stream:
                for message in response.received_messages:
                    received.put(message)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        first, second = received.get(timeout=10), received.get(timeout=10)
        with pytest.raises(queue.Empty):
            received.get(timeout=1)
        later.put(types.StreamingPullRequest())  # the client's heartbeat
        later.put(types.StreamingPullRequest(ack_ids=[first.ack_id]))
        third = received.get(timeout=10)
    finally:
        stream.cancel()
        later.put(None)
    assert {m.message.message_id for m in (first, second, third)} == published

    response = clients.subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
    assert sorted(m.message.message_id for m in response.received_messages) == sorted(
        m.message.message_id for m in (second, third)
    )


# Durability of the fallback: an emulator killed with SIGKILL and restarted on its data dir.


@contextmanager
def _killed_at_the_end(data_dir: Path, port: int) -> Iterator[Clients]:
    """Clients of a fallback emulator on ``data_dir``, SIGKILLed at the end of the block."""
    log_path = data_dir.parent / "emulator.log"
    with (
        emulator("fallback", port, log_path, data_dir) as process,
        clients_of(f"{HOST}:{port}") as clients,
    ):
        yield clients
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _pull(clients: Clients, subscription: str, count: int) -> list[types.ReceivedMessage]:
    """Pull until ``count`` messages arrived or a pull comes back empty; leave them unacked."""
    received: list[types.ReceivedMessage] = []
    while len(received) < count:
        response = clients.subscriber.pull(
            subscription=subscription, max_messages=count - len(received), timeout=5
        )
        if not response.received_messages:
            break
        received += response.received_messages
    return received


def _ids(messages: list[types.ReceivedMessage]) -> list[str]:
    return [m.message.message_id for m in messages]


def test_fallback_keeps_topology_and_unacked_messages_across_a_kill(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    with _killed_at_the_end(data_dir, port) as before:
        dead_letter_topic = before.topic()
        topic = before.topic()
        # Leases outlast the test: a redelivery after the restart is not a deadline's expiry.
        plain = before.subscription(topic, ack_deadline_seconds=600)
        policy = {"dead_letter_topic": dead_letter_topic, "max_delivery_attempts": 5}
        counted = before.subscription(topic, ack_deadline_seconds=600, dead_letter_policy=policy)
        acked, leased, queued = (before.publish(topic, f"m{i}".encode()) for i in range(3))
        delivered = _pull(before, plain, 2)
        assert _ids(delivered) == [acked, leased]
        before.subscriber.acknowledge(subscription=plain, ack_ids=[delivered[0].ack_id])
        assert _ids(_pull(before, counted, 1)) == [acked]

    with _killed_at_the_end(data_dir, port) as after:
        assert after.publisher.get_topic(topic=topic).name == topic
        restored = after.subscriber.get_subscription(subscription=counted)
        assert (restored.topic, restored.ack_deadline_seconds) == (topic, 600)
        assert restored.dead_letter_policy.dead_letter_topic == dead_letter_topic
        # The acked message is gone; the leased one is deliverable again at once.
        assert sorted(_ids(_pull(after, plain, 3))) == sorted([leased, queued])
        attempts = {m.message.message_id: m.delivery_attempt for m in _pull(after, counted, 3)}
        assert attempts == {acked: 2, leased: 1, queued: 1}
        assert int(after.publish(topic, b"later")) > int(queued), "a message id was reused"


def test_fallback_ack_id_from_before_a_restart_acks_nothing_after_it(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    with _killed_at_the_end(data_dir, port) as before:
        topic = before.topic()
        subscription = before.subscription(topic, ack_deadline_seconds=600)
        published = {before.publish(topic, f"m{i}".encode()) for i in range(2)}
        stale = [m.ack_id for m in _pull(before, subscription, 2)]

    with _killed_at_the_end(data_dir, port) as after:
        leased = _pull(after, subscription, 2)
        after.subscriber.acknowledge(subscription=subscription, ack_ids=stale)
        after.subscriber.modify_ack_deadline(
            subscription=subscription, ack_ids=[m.ack_id for m in leased], ack_deadline_seconds=0
        )
        assert set(_ids(_pull(after, subscription, 2))) == published


class _Context:
    """The one thing the emulator asks of a gRPC context, for calling it in process."""

    def time_remaining(self) -> float:
        return 5.0


def test_fallback_journal_is_compacted_and_a_torn_last_line_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compact_min = 20
    monkeypatch.setattr(emulators.pubsub, "_COMPACT_MIN", compact_min)
    context: Any = _Context()
    topic, subscription = f"{PROJECT}/topics/compacted", f"{PROJECT}/subscriptions/compacted"
    dead_letter_topic = f"{PROJECT}/topics/compacted-dead"
    pull = types.PullRequest(subscription=subscription, max_messages=100, return_immediately=True)
    emulator = PubSubEmulator(tmp_path)
    emulator.create_topic(types.Topic(name=dead_letter_topic), context)
    emulator.create_topic(types.Topic(name=topic), context)
    policy = types.DeadLetterPolicy(dead_letter_topic=dead_letter_topic, max_delivery_attempts=5)
    emulator.create_subscription(
        types.Subscription(name=subscription, topic=topic, dead_letter_policy=policy), context
    )
    for i in range(100):  # 10 kept unacked; about 300 records written
        message = types.PubsubMessage(data=str(i).encode())
        emulator.publish(types.PublishRequest(topic=topic, messages=[message]), context)
        (received,) = emulator.pull(pull, context).received_messages
        if i % 10:
            ack = types.AcknowledgeRequest(subscription=subscription, ack_ids=[received.ack_id])
            emulator.acknowledge(ack, context)
    emulator.close()
    journal = tmp_path / "journal.jsonl"
    # A snapshot (counters, 2 topics, 1 subscription, at most 10 messages) and what followed it.
    assert journal.read_bytes().count(b"\n") <= 4 + 10 + compact_min + 1
    with journal.open("ab") as file:
        file.write(b'{"op":"message","pro')  # what a kill in the middle of a write leaves

    restored = PubSubEmulator(tmp_path)
    try:
        kept = restored.pull(pull, context).received_messages
    finally:
        restored.close()
    assert [m.message.data for m in kept] == [str(i).encode() for i in range(0, 100, 10)]
    assert {m.delivery_attempt for m in kept} == {2}


# The stack re-applies the topology when it (re)starts its emulator.


@pytest.mark.parametrize("kind", ["official", "fallback"])
def test_a_stack_restarting_its_emulator_reapplies_the_topology(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_unless_installed(kind)
    monkeypatch.setenv("CLIPPING_PUBSUB_EMULATOR", kind)
    config = StackConfig.on_free_ports(tmp_path)
    stack = Stack(config)
    with config.activated():
        settings = get_settings()
        try:
            stack.start("pubsub-emulator")
            stack.stop("pubsub-emulator")
            # An emulator that comes back empty: the official one always does.
            shutil.rmtree(config.dir / "pubsub", ignore_errors=True)
            stack.start("pubsub-emulator")
            with pubsub_v1.SubscriberClient() as subscriber:
                project = f"projects/{settings.gcp_project}"
                found = {s.name for s in subscriber.list_subscriptions(project=project)}
        finally:
            stack.down()
    assert marked_processes(str(config.dir)) == [], "the emulator outlived `down`"
    expected = (
        settings.requests_subscription,
        settings.dead_letter_subscription,
        settings.webhooks_subscription,
        settings.metrics_subscription,
        COMPLETIONS_AUDIT_SUBSCRIPTION,
    )
    assert found == {settings.subscription_path(name) for name in expected}
