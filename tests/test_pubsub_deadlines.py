"""Pub/Sub behaviour that takes an ack deadline to show, on both emulators.

The minimum ack deadline is 10 s, so each of these waits for one. The checks are a class
per emulator: parallel runs (``--dist loadscope``) hand each class to a test process of its
own, so the official and the fallback waits run side by side. ``test_pubsub_emulators.py``
holds the rest of the behaviour.
"""

import queue
import time

import pytest
from google.pubsub_v1 import types

from tests.pubsub_clients import ACK_DEADLINE_S, Clients

pytestmark = pytest.mark.integration


class DeadlineChecks:
    """The checks; collected through the classes below, once per emulator."""

    def test_streamed_messages_are_received_and_stay_acked(self, clients: Clients) -> None:
        topic = clients.topic()
        subscription = clients.subscription(topic)
        published = {clients.publish(topic, f"clip {i}".encode(), index=str(i)) for i in range(5)}

        with clients.streaming(subscription) as received:
            messages = [received.get(timeout=10) for _ in published]
            for message in messages:
                message.ack()
            assert {m.message_id for m in messages} == published
            assert sorted((m.data, m.attributes["index"]) for m in messages) == [
                (f"clip {i}".encode(), str(i)) for i in range(5)
            ]
            with pytest.raises(queue.Empty):
                redelivered = received.get(timeout=ACK_DEADLINE_S + 1)
                pytest.fail(f"acked message {redelivered.message_id} was redelivered")

    def test_message_whose_ack_deadline_expires_is_redelivered(self, clients: Clients) -> None:
        topic = clients.topic()
        subscription = clients.subscription(topic, ack_deadline_seconds=ACK_DEADLINE_S)
        message_id = clients.publish(topic, b"forget me")

        def pull() -> list[types.ReceivedMessage]:
            response = clients.subscriber.pull(subscription=subscription, max_messages=5, timeout=5)
            return list(response.received_messages)

        first = pull()  # waits for the message, and leaves it unacked
        give_up = time.monotonic() + ACK_DEADLINE_S + 10
        while not (again := pull()) and time.monotonic() < give_up:
            pass

        assert [m.message.message_id for m in first] == [m.message.message_id for m in again]
        assert [m.message.message_id for m in again] == [message_id]
        assert again[0].ack_id != first[0].ack_id
        clients.subscriber.acknowledge(subscription=subscription, ack_ids=[again[0].ack_id])

    def test_a_restarted_subscriber_keeps_receiving(
        self, clients: Clients, pubsub_emulator: str, request: pytest.FixtureRequest
    ) -> None:
        """What a listener restart does: close the stream, open a new one, expect new messages."""
        if request.node.callspec.params["pubsub_emulator"] == "official":
            request.applymarker(
                # Not strict: the bug is intermittent (4 of 5 runs here), and a run that
                # escapes it must not fail the suite.
                pytest.mark.xfail(
                    strict=False,
                    reason="official emulator 0.8.20 often throws NoSuchMethodError "
                    "(io.grpc.InternalStatus.asRuntimeException) when a client cancels its "
                    "StreamingPull, and then delivers none of the subscription's messages",
                )
            )
        topic = clients.topic()
        subscription = clients.subscription(topic)
        clients.publish(topic, b"before the restart")
        with clients.streaming(subscription) as first:
            first.get(timeout=10).ack()
        clients.publish(topic, b"after the restart")
        with clients.streaming(subscription) as second:
            # The first message may come again (its ack can race the close): at least once.
            received = [second.get(timeout=15).data]
            if received[0] != b"after the restart":
                received.append(second.get(timeout=15).data)
            assert received[-1] == b"after the restart"


@pytest.mark.parametrize("pubsub_emulator", ["official"], indirect=True)
class TestOfficialEmulator(DeadlineChecks):
    pass


@pytest.mark.parametrize("pubsub_emulator", ["fallback"], indirect=True)
class TestFallbackEmulator(DeadlineChecks):
    pass
