"""A Google Cloud Pub/Sub emulator, the local stack's default (``emulators.pubsub_command``).

Run it with ``python -m emulators.pubsub --host 127.0.0.1 --port 8085 [--data-dir DIR]`` and point
the clients at it with ``PUBSUB_EMULATOR_HOST=127.0.0.1:8085``. It speaks the same gRPC protocol
as the official emulator, so the unmodified ``google-cloud-pubsub`` client works against it. It
prints a line containing ``Server started`` once listening and stops cleanly on SIGTERM or SIGINT.

Implemented:

* Publisher: CreateTopic, GetTopic, ListTopics, DeleteTopic, Publish, ListTopicSubscriptions.
* Subscriber: CreateSubscription, GetSubscription, ListSubscriptions, DeleteSubscription, Pull,
  StreamingPull, Acknowledge, ModifyAckDeadline.
* At-least-once delivery: messages are fanned out to every subscription of the topic that exists
  at publish time; each delivery gets a new ack id; a nack (ack deadline 0), an expired ack
  deadline (checked every ``_TICK`` seconds) or a closed stream makes a message redeliverable
  (the official emulator waits for the deadline of a closed stream's messages); acks and
  deadline changes are taken both as unary calls and inside the stream; StreamingPull honours
  ``max_outstanding_messages`` and ``max_outstanding_bytes`` (the official emulator leaves that
  to the client); dead-letter policies set ``delivery_attempt`` and forward a message to the
  dead-letter topic after ``max_delivery_attempts`` deliveries, with the
  ``CloudPubSubDeadLetterSource*`` attributes the official emulator adds.
* The official emulator's status codes: ALREADY_EXISTS, NOT_FOUND, INVALID_ARGUMENT (and
  OUT_OF_RANGE for ``max_delivery_attempts`` outside 5..100).

Not implemented: every other RPC (UpdateTopic, UpdateSubscription, DetachSubscription,
ModifyPushConfig, Seek, snapshots, schemas, IAM) answers UNIMPLEMENTED; push, BigQuery and Cloud
Storage subscriptions, filters, message ordering, exactly-once delivery, retry policies and
retention are stored but ignored. Each subscription keeps at most ``MAX_BACKLOG`` undelivered
messages, dropping the oldest beyond that.

Durability: without ``--data-dir`` the state lives in memory and is lost on exit. With it, like
Pub/Sub itself, the emulator forgets nothing it has answered for, even when killed with SIGKILL:
every topic, subscription and unacknowledged message (with its delivery count) is written
through to ``DIR/journal.jsonl`` (``emulators.journal``) before the call that changed it
answers, and reloaded on start, when the messages that were leased become deliverable at once.
The journal is compacted at start and whenever it holds more than ``_COMPACT_MIN`` records and
twice as many as the live messages, so a publish costs one appended line, not a rewrite.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.pubsub_v1 import types

from emulators.journal import Journal, Record

MAX_BACKLOG = 100_000
"""Undelivered messages kept per subscription; the oldest are dropped beyond this."""

_MAX_BATCH = 1_000  # messages in one Pull or StreamingPull response
_MAX_PULL_WAIT = 60.0  # longest a Pull waits for messages, in seconds
_TICK = 0.5  # seconds between checks for expired ack deadlines
_WORKERS = 100  # concurrent RPCs, each open StreamingPull holds one
_MAX_REQUEST_BYTES = 20 * 1024 * 1024  # Pub/Sub accepts 10 MB publish requests
_DEFAULT_ACK_DEADLINE = 10
_DEFAULT_MAX_DELIVERY_ATTEMPTS = 5
_COMPACT_MIN = 10_000  # journal records worth compacting
# Each start numbers its ack ids from its own block, so an ack id handed out before a restart
# never names a lease made after it.
_ACK_IDS_PER_INCARNATION = 10**12
_DELETED_TOPIC = "_deleted-topic_"
_ID = r"(?!goog)[A-Za-z][\w\-.~+%]{2,254}"
_PROJECT = re.compile(r"projects/[^/]+")
_TOPIC = re.compile(rf"projects/[^/]+/topics/{_ID}", re.ASCII)
_SUBSCRIPTION = re.compile(rf"projects/[^/]+/subscriptions/{_ID}", re.ASCII)


class _Error(Exception):
    """An RPC failure with its gRPC status code."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass
class _Delivery:
    """One message in one subscription, with the number of times it was delivered there."""

    message: types.PubsubMessage
    size: int
    attempts: int = 0


@dataclass(eq=False)
class _Stream:
    """One open StreamingPull call and the flow control it asked for."""

    subscription: _Subscription
    ack_deadline: int
    max_messages: int
    max_bytes: int
    open: bool = True
    outstanding: int = 0
    outstanding_bytes: int = 0
    error: _Error | None = None

    def has_room(self) -> bool:
        return (not self.max_messages or self.outstanding < self.max_messages) and (
            not self.max_bytes or self.outstanding_bytes < self.max_bytes
        )


@dataclass
class _Lease:
    """A delivered, not yet acknowledged message."""

    delivery: _Delivery
    deadline: float  # time.monotonic()
    stream: _Stream | None


@dataclass(eq=False)
class _Subscription:
    proto: types.Subscription
    backlog: deque[_Delivery] = field(default_factory=lambda: deque(maxlen=MAX_BACKLOG))
    leases: dict[str, _Lease] = field(default_factory=dict)


class PubSubEmulator:
    """The topics, subscriptions and messages, and the RPC methods that act on them.

    Every RPC method takes the request and the gRPC context and runs under one lock; waiting
    readers (Pull, StreamingPull) sleep on its condition and are woken by every change. A daemon
    thread expires ack deadlines. With a ``data_dir``, the state is restored from its journal and
    every change is written through to it (see the module's docstring).
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        self._cond = threading.Condition()
        self._topics: dict[str, types.Topic] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._last_message_id = 0
        self._incarnation = 0
        self._journal = Journal(data_dir) if data_dir else None
        if self._journal:
            self._restore(self._journal)
        self._ack_ids = itertools.count(self._incarnation * _ACK_IDS_PER_INCARNATION + 1)
        threading.Thread(target=self._expire_forever, name="ack-deadlines", daemon=True).start()

    def close(self) -> None:
        """Release the data directory, if any; the emulator must not be used after."""
        if self._journal:
            self._journal.close()

    # Publisher

    def create_topic(self, topic: types.Topic, context: grpc.ServicerContext) -> types.Topic:
        _check_name(_TOPIC, "topics", topic.name)
        with self._cond:
            if topic.name in self._topics:
                raise _Error(grpc.StatusCode.ALREADY_EXISTS, "Topic already exists")
            self._topics[topic.name] = topic
            self._write(_proto_record("topic", topic))
        return topic

    def get_topic(
        self, request: types.GetTopicRequest, context: grpc.ServicerContext
    ) -> types.Topic:
        with self._cond:
            return self._topic(request.topic)

    def list_topics(
        self, request: types.ListTopicsRequest, context: grpc.ServicerContext
    ) -> types.ListTopicsResponse:
        prefix = _check_project(request.project) + "/topics/"
        with self._cond:
            names, token = _page(
                [n for n in self._topics if n.startswith(prefix)],
                request.page_size,
                request.page_token,
            )
            return types.ListTopicsResponse(
                topics=[self._topics[n] for n in names], next_page_token=token
            )

    def delete_topic(
        self, request: types.DeleteTopicRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self._cond:
            self._topic(request.topic)
            self._remove_topic(request.topic)
            self._write({"op": "delete_topic", "name": request.topic})
        return empty_pb2.Empty()

    def publish(
        self, request: types.PublishRequest, context: grpc.ServicerContext
    ) -> types.PublishResponse:
        with self._cond:
            self._topic(request.topic)
            if not request.messages:
                raise _Error(grpc.StatusCode.INVALID_ARGUMENT, "No messages to publish")
            if any(not m.data and not m.attributes for m in request.messages):
                raise _Error(grpc.StatusCode.INVALID_ARGUMENT, "Some messages are empty")
            ids = [
                self._fan_out(request.topic, m.data, dict(m.attributes), m.ordering_key)
                for m in request.messages
            ]
            self._cond.notify_all()
        return types.PublishResponse(message_ids=ids)

    def list_topic_subscriptions(
        self, request: types.ListTopicSubscriptionsRequest, context: grpc.ServicerContext
    ) -> types.ListTopicSubscriptionsResponse:
        # Like the official emulator, an unknown (but well-formed) topic has no subscriptions.
        _check_name(_TOPIC, "topics", request.topic)
        with self._cond:
            names, token = _page(
                [n for n, s in self._subscriptions.items() if s.proto.topic == request.topic],
                request.page_size,
                request.page_token,
            )
        return types.ListTopicSubscriptionsResponse(subscriptions=names, next_page_token=token)

    # Subscriber: administration

    def create_subscription(
        self, sub: types.Subscription, context: grpc.ServicerContext
    ) -> types.Subscription:
        _check_name(_SUBSCRIPTION, "subscriptions", sub.name)
        if not 0 <= sub.ack_deadline_seconds <= 600:
            raise _Error(grpc.StatusCode.INVALID_ARGUMENT, "ack_deadline_secs out of bounds")
        sub.ack_deadline_seconds = sub.ack_deadline_seconds or _DEFAULT_ACK_DEADLINE
        sub.message_retention_duration = sub.message_retention_duration or timedelta(days=7)
        policy = sub.dead_letter_policy
        if policy.dead_letter_topic:
            policy.max_delivery_attempts = (
                policy.max_delivery_attempts or _DEFAULT_MAX_DELIVERY_ATTEMPTS
            )
            if not 5 <= policy.max_delivery_attempts <= 100:
                raise _Error(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"max_delivery_attempts must be between 5 and 100, got "
                    f"{policy.max_delivery_attempts}",
                )
        with self._cond:
            if sub.name in self._subscriptions:
                raise _Error(grpc.StatusCode.ALREADY_EXISTS, "Subscription already exists")
            if sub.topic not in self._topics:
                raise _Error(grpc.StatusCode.NOT_FOUND, "Subscription topic does not exist")
            if policy.dead_letter_topic and policy.dead_letter_topic not in self._topics:
                raise _Error(grpc.StatusCode.NOT_FOUND, "Dead letter topic not found")
            self._subscriptions[sub.name] = _Subscription(sub)
            self._write(_proto_record("subscription", sub))
        return sub

    def get_subscription(
        self, request: types.GetSubscriptionRequest, context: grpc.ServicerContext
    ) -> types.Subscription:
        with self._cond:
            return self._subscription(request.subscription).proto

    def list_subscriptions(
        self, request: types.ListSubscriptionsRequest, context: grpc.ServicerContext
    ) -> types.ListSubscriptionsResponse:
        prefix = _check_project(request.project) + "/subscriptions/"
        with self._cond:
            names, token = _page(
                [n for n in self._subscriptions if n.startswith(prefix)],
                request.page_size,
                request.page_token,
            )
            return types.ListSubscriptionsResponse(
                subscriptions=[self._subscriptions[n].proto for n in names],
                next_page_token=token,
            )

    def delete_subscription(
        self, request: types.DeleteSubscriptionRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self._cond:
            self._subscription(request.subscription)
            del self._subscriptions[request.subscription]
            self._write({"op": "delete_subscription", "name": request.subscription})
            self._cond.notify_all()  # its open streams end with NOT_FOUND
        return empty_pb2.Empty()

    # Subscriber: delivery

    def pull(self, request: types.PullRequest, context: grpc.ServicerContext) -> types.PullResponse:
        if request.max_messages <= 0:
            raise _Error(grpc.StatusCode.INVALID_ARGUMENT, "No max_messages specified")
        remaining = context.time_remaining()
        if remaining is None or remaining > _MAX_PULL_WAIT:
            remaining = _MAX_PULL_WAIT
        # Wait for messages until just before the caller's deadline, like the official emulator.
        give_up = time.monotonic() + (0 if request.return_immediately else remaining - 1)
        with self._cond:
            while True:
                sub = self._subscription(request.subscription)
                left = give_up - time.monotonic()
                if sub.backlog or left <= 0:
                    received = self._deliver(
                        sub, min(request.max_messages, _MAX_BATCH), sub.proto.ack_deadline_seconds
                    )
                    return types.PullResponse(received_messages=received)
                self._cond.wait(left)

    def acknowledge(
        self, request: types.AcknowledgeRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self._cond:
            sub = self._subscription(request.subscription)
            if not request.ack_ids:
                raise _Error(grpc.StatusCode.INVALID_ARGUMENT, "No ack ids specified.")
            self._ack(sub, request.ack_ids)
        return empty_pb2.Empty()

    def modify_ack_deadline(
        self, request: types.ModifyAckDeadlineRequest, context: grpc.ServicerContext
    ) -> empty_pb2.Empty:
        with self._cond:
            sub = self._subscription(request.subscription)
            if not request.ack_ids:
                raise _Error(grpc.StatusCode.INVALID_ARGUMENT, "No ack ids specified.")
            self._modify(
                sub, request.ack_ids, [request.ack_deadline_seconds] * len(request.ack_ids)
            )
        return empty_pb2.Empty()

    def streaming_pull(
        self, requests: Iterator[types.StreamingPullRequest], context: grpc.ServicerContext
    ) -> Iterator[types.StreamingPullResponse]:
        first = next(requests, None)
        if first is None:
            return
        try:
            with self._cond:
                sub = self._subscription(first.subscription)
                stream = _Stream(
                    sub,
                    first.stream_ack_deadline_seconds or sub.proto.ack_deadline_seconds,
                    first.max_outstanding_messages,
                    first.max_outstanding_bytes,
                )
                self._apply_stream_request(stream, first)
        except _Error as error:
            context.abort(error.code, error.details)
        context.add_callback(lambda: self._close(stream))
        threading.Thread(
            target=self._read_stream, args=(stream, requests), name="streaming-pull", daemon=True
        ).start()
        while received := self._next_batch(stream):
            yield types.StreamingPullResponse(received_messages=received)
        if stream.error:
            context.abort(stream.error.code, stream.error.details)

    # Helpers; all expect the lock to be held.

    def _topic(self, name: str) -> types.Topic:
        _check_name(_TOPIC, "topics", name)
        if name not in self._topics:
            raise _Error(grpc.StatusCode.NOT_FOUND, "Topic not found")
        return self._topics[name]

    def _subscription(self, name: str) -> _Subscription:
        _check_name(_SUBSCRIPTION, "subscriptions", name)
        if name not in self._subscriptions:
            raise _Error(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")
        return self._subscriptions[name]

    def _fan_out(
        self, topic: str, data: bytes, attributes: dict[str, str], ordering_key: str = ""
    ) -> str:
        """Publish one message: queue it on every subscription of the topic; return its id."""
        self._last_message_id += 1
        message = types.PubsubMessage(
            data=data,
            attributes=attributes,
            ordering_key=ordering_key,
            message_id=str(self._last_message_id),
            publish_time=datetime.now(UTC),
        )
        size = _size(message)
        targets = [sub for sub in self._subscriptions.values() if sub.proto.topic == topic]
        for sub in targets:
            sub.backlog.append(_Delivery(message, size))
        self._write(_message_record(message, {sub.proto.name: 0 for sub in targets}))
        return message.message_id

    def _deliver(
        self, sub: _Subscription, limit: int, deadline: int, stream: _Stream | None = None
    ) -> list[types.ReceivedMessage]:
        """Lease up to ``limit`` backlog messages (as far as the stream's flow control allows)."""
        received: list[types.ReceivedMessage] = []
        dead_letter = bool(sub.proto.dead_letter_policy.dead_letter_topic)
        while sub.backlog and len(received) < limit and (stream is None or stream.has_room()):
            delivery = sub.backlog.popleft()
            delivery.attempts += 1
            ack_id = f"{sub.proto.name}:{next(self._ack_ids)}"
            sub.leases[ack_id] = _Lease(delivery, time.monotonic() + deadline, stream)
            if stream:
                stream.outstanding += 1
                stream.outstanding_bytes += delivery.size
            received.append(
                types.ReceivedMessage(
                    ack_id=ack_id,
                    message=delivery.message,
                    delivery_attempt=delivery.attempts if dead_letter else 0,
                )
            )
        if received:
            self._write(_ids_record("delivered", sub, [r.message for r in received]))
        return received

    def _release(self, sub: _Subscription, ack_id: str) -> _Delivery | None:
        """End a lease; return its message, or None if the ack id is stale."""
        lease = sub.leases.pop(ack_id, None)
        if lease is None:
            return None
        if lease.stream:
            lease.stream.outstanding -= 1
            lease.stream.outstanding_bytes -= lease.delivery.size
        self._cond.notify_all()
        return lease.delivery

    def _requeue(self, sub: _Subscription, delivery: _Delivery) -> None:
        """Make a message redeliverable, or dead-letter it when it has used up its attempts."""
        policy = sub.proto.dead_letter_policy
        if (
            policy.dead_letter_topic in self._topics
            and delivery.attempts >= policy.max_delivery_attempts
        ):
            message = delivery.message
            project, sub_id = sub.proto.name.split("/")[1::2]
            attributes = {
                **message.attributes,
                "CloudPubSubDeadLetterSourceDeliveryCount": str(delivery.attempts),
                "CloudPubSubDeadLetterSourceSubscription": sub_id,
                "CloudPubSubDeadLetterSourceSubscriptionProject": project,
                "CloudPubSubDeadLetterSourceTopicPublishTime": message.publish_time.isoformat(
                    timespec="milliseconds"
                ).replace("+00:00", "Z"),
            }
            self._fan_out(policy.dead_letter_topic, message.data, attributes, message.ordering_key)
            self._write(_ids_record("done", sub, [message]))
        else:
            sub.backlog.appendleft(delivery)
        self._cond.notify_all()

    def _nack(self, sub: _Subscription, ack_ids: list[str]) -> None:
        """End these leases and make their messages redeliverable."""
        for ack_id in ack_ids:
            if delivery := self._release(sub, ack_id):
                self._requeue(sub, delivery)

    def _expire_forever(self) -> None:
        """Every ``_TICK`` seconds, make the messages whose ack deadline passed redeliverable."""
        while True:
            time.sleep(_TICK)
            with self._cond:
                now = time.monotonic()
                for sub in self._subscriptions.values():
                    self._nack(sub, [a for a, lease in sub.leases.items() if lease.deadline <= now])

    def _ack(self, sub: _Subscription, ack_ids: Sequence[str]) -> None:
        for ack_id in ack_ids:
            _check_ack_id(sub, ack_id)
        released = [self._release(sub, ack_id) for ack_id in ack_ids]
        if acked := [delivery.message for delivery in released if delivery]:
            self._write(_ids_record("done", sub, acked))

    def _modify(self, sub: _Subscription, ack_ids: Sequence[str], seconds: Sequence[int]) -> None:
        if len(ack_ids) != len(seconds):
            raise _Error(
                grpc.StatusCode.INVALID_ARGUMENT,
                "modify_deadline_ack_ids and modify_deadline_seconds differ in length",
            )
        for ack_id, deadline in zip(ack_ids, seconds, strict=True):
            _check_ack_id(sub, ack_id)
            if deadline < 0:
                raise _Error(grpc.StatusCode.INVALID_ARGUMENT, "Ack deadline cannot be negative")
        for ack_id, deadline in zip(ack_ids, seconds, strict=True):
            if deadline == 0:
                self._nack(sub, [ack_id])
            elif lease := sub.leases.get(ack_id):
                lease.deadline = time.monotonic() + deadline

    def _apply_stream_request(self, stream: _Stream, request: types.StreamingPullRequest) -> None:
        """Apply the acks, deadline changes and new stream ack deadline carried by a request."""
        if request.stream_ack_deadline_seconds:
            stream.ack_deadline = request.stream_ack_deadline_seconds
        self._ack(stream.subscription, request.ack_ids)
        self._modify(
            stream.subscription, request.modify_deadline_ack_ids, request.modify_deadline_seconds
        )

    def _read_stream(self, stream: _Stream, requests: Iterator[types.StreamingPullRequest]) -> None:
        """Consume a stream's later requests (acks, deadline changes, heartbeats) until it ends."""
        try:
            for request in requests:
                with self._cond:
                    self._apply_stream_request(stream, request)
        except _Error as error:
            stream.error = error
        except grpc.RpcError:
            pass  # the client cancelled the call
        finally:
            self._close(stream)

    def _next_batch(self, stream: _Stream) -> list[types.ReceivedMessage]:
        """Wait for messages to send on the stream; return [] once it is closed."""
        with self._cond:
            while stream.open:
                sub = stream.subscription
                if self._subscriptions.get(sub.proto.name) is not sub:
                    stream.error = _Error(grpc.StatusCode.NOT_FOUND, "Subscription does not exist")
                    break
                if received := self._deliver(sub, _MAX_BATCH, stream.ack_deadline, stream):
                    return received
                self._cond.wait()
            return []

    def _close(self, stream: _Stream) -> None:
        """Close a stream and make its unacknowledged messages redeliverable."""
        with self._cond:
            stream.open = False
            sub = stream.subscription
            self._nack(sub, [a for a, lease in sub.leases.items() if lease.stream is stream])
            self._cond.notify_all()

    def _remove_topic(self, name: str) -> None:
        del self._topics[name]
        for sub in self._subscriptions.values():
            if sub.proto.topic == name:
                sub.proto.topic = _DELETED_TOPIC

    # Durability; all expect the lock to be held (or the emulator not to be serving yet).

    def _write(self, record: Record) -> None:
        """Write a change through to the journal, if any, before the call that made it answers."""
        if self._journal is None:
            return
        self._journal.append(record)
        live = sum(len(sub.backlog) + len(sub.leases) for sub in self._subscriptions.values())
        if self._journal.appended > max(_COMPACT_MIN, 2 * live):
            self._journal.rewrite(self._snapshot())

    def _snapshot(self) -> Iterator[Record]:
        """The fewest records that rebuild the current state; leased messages come first."""
        yield {"op": "counters", "message_id": self._last_message_id, "start": self._incarnation}
        yield from (_proto_record("topic", topic) for topic in self._topics.values())
        subscriptions = self._subscriptions
        yield from (_proto_record("subscription", sub.proto) for sub in subscriptions.values())
        messages: dict[str, tuple[types.PubsubMessage, dict[str, int]]] = {}
        for name, sub in subscriptions.items():
            for delivery in [*(lease.delivery for lease in sub.leases.values()), *sub.backlog]:
                message = delivery.message
                messages.setdefault(message.message_id, (message, {}))[1][name] = delivery.attempts
        yield from (_message_record(message, to) for message, to in messages.values())

    def _restore(self, journal: Journal) -> None:
        """Rebuild the state from the journal as a new start, then compact the journal."""
        pending: dict[str, dict[str, _Delivery]] = {}  # subscription -> message id -> delivery
        for record in journal.read():
            self._replay(record, pending)
        for name, deliveries in pending.items():
            self._subscriptions[name].backlog.extend(deliveries.values())
        self._incarnation += 1
        journal.rewrite(self._snapshot())

    def _replay(self, record: Record, pending: dict[str, dict[str, _Delivery]]) -> None:
        """Apply one journal record; messages are collected in ``pending`` meanwhile."""
        match record:
            case {"op": "counters", "message_id": int(last), "start": int(incarnation)}:
                self._last_message_id = max(self._last_message_id, last)
                self._incarnation = incarnation
            case {"op": "topic", "proto": str(proto)}:
                topic = types.Topic.deserialize(_decode(proto))
                self._topics[topic.name] = topic
            case {"op": "delete_topic", "name": str(name)}:
                self._remove_topic(name)
            case {"op": "subscription", "proto": str(proto)}:
                sub = types.Subscription.deserialize(_decode(proto))
                self._subscriptions[sub.name] = _Subscription(sub)
                pending[sub.name] = {}
            case {"op": "delete_subscription", "name": str(name)}:
                del self._subscriptions[name], pending[name]
            case {"op": "message", "proto": str(proto), "to": dict(to)}:
                message = types.PubsubMessage.deserialize(_decode(proto))
                self._last_message_id = max(self._last_message_id, int(message.message_id))
                for name, attempts in to.items():
                    pending[name][message.message_id] = _Delivery(message, _size(message), attempts)
            case {"op": "delivered", "on": str(name), "ids": list(ids)}:
                for message_id in ids:
                    pending[name][message_id].attempts += 1
            case {"op": "done", "on": str(name), "ids": list(ids)}:
                for message_id in ids:
                    del pending[name][message_id]
            case _:
                raise ValueError(f"not a journal record: {record!r}")


def _size(message: types.PubsubMessage) -> int:
    return types.PubsubMessage.pb(message).ByteSize()


def _proto_record(op: str, proto: types.Topic | types.Subscription) -> Record:
    return {"op": op, "proto": _encode(type(proto).serialize(proto))}


def _message_record(message: types.PubsubMessage, to: dict[str, int]) -> Record:
    """A message queued on the subscriptions ``to`` maps to its delivery counts there."""
    return {"op": "message", "proto": _encode(types.PubsubMessage.serialize(message)), "to": to}


def _ids_record(op: str, sub: _Subscription, messages: list[types.PubsubMessage]) -> Record:
    return {"op": op, "on": sub.proto.name, "ids": [m.message_id for m in messages]}


def _encode(proto: bytes) -> str:
    return base64.b64encode(proto).decode()


def _decode(proto: str) -> bytes:
    return base64.b64decode(proto)


def _check_name(pattern: re.Pattern[str], kind: str, name: str) -> None:
    if not pattern.fullmatch(name):
        raise _Error(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid [{kind}] name: (name={name})")


def _check_project(project: str) -> str:
    if not _PROJECT.fullmatch(project):
        raise _Error(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid project name: {project!r}")
    return project


def _check_ack_id(sub: _Subscription, ack_id: str) -> None:
    name, _, number = ack_id.rpartition(":")
    if not number.isdigit():
        raise _Error(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid ack id (ack_id={ack_id})")
    if name != sub.proto.name:
        raise _Error(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Subscription {sub.proto.name} received an invalid ack ID {ack_id}, "
            f"meant for subscription: {name}",
        )


def _page(names: list[str], size: int, token: str) -> tuple[list[str], str]:
    """One page of names in order, after ``token``; the next token is the page's last name."""
    rest = sorted(n for n in names if n > token)
    page = rest[: size or 100]
    return page, page[-1] if len(rest) > len(page) else ""


def _handler(
    method: Callable[..., Any], request_type: Any, response_type: Any, *, streaming: bool = False
) -> grpc.RpcMethodHandler:
    if streaming:
        return grpc.stream_stream_rpc_method_handler(
            method,
            request_deserializer=request_type.deserialize,
            response_serializer=response_type.serialize,
        )

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(request, context)
        except _Error as error:
            context.abort(error.code, error.details)

    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=request_type.deserialize,
        response_serializer=response_type.SerializeToString
        if response_type is empty_pb2.Empty
        else response_type.serialize,
    )


def build_server(host: str, port: int, data_dir: Path | None = None) -> grpc.Server:
    """Return a gRPC server bound to host:port serving an emulator (not started yet).

    The emulator keeps its state in ``data_dir`` if given, else in memory. Raises OSError if
    the address cannot be bound, e.g. because the port is taken, or the data dir is in use.
    """
    e = PubSubEmulator(data_dir)
    empty = empty_pb2.Empty
    publisher = {
        "CreateTopic": _handler(e.create_topic, types.Topic, types.Topic),
        "GetTopic": _handler(e.get_topic, types.GetTopicRequest, types.Topic),
        "ListTopics": _handler(e.list_topics, types.ListTopicsRequest, types.ListTopicsResponse),
        "DeleteTopic": _handler(e.delete_topic, types.DeleteTopicRequest, empty),
        "Publish": _handler(e.publish, types.PublishRequest, types.PublishResponse),
        "ListTopicSubscriptions": _handler(
            e.list_topic_subscriptions,
            types.ListTopicSubscriptionsRequest,
            types.ListTopicSubscriptionsResponse,
        ),
    }
    subscriber = {
        "CreateSubscription": _handler(
            e.create_subscription, types.Subscription, types.Subscription
        ),
        "GetSubscription": _handler(
            e.get_subscription, types.GetSubscriptionRequest, types.Subscription
        ),
        "ListSubscriptions": _handler(
            e.list_subscriptions, types.ListSubscriptionsRequest, types.ListSubscriptionsResponse
        ),
        "DeleteSubscription": _handler(
            e.delete_subscription, types.DeleteSubscriptionRequest, empty
        ),
        "Pull": _handler(e.pull, types.PullRequest, types.PullResponse),
        "StreamingPull": _handler(
            e.streaming_pull,
            types.StreamingPullRequest,
            types.StreamingPullResponse,
            streaming=True,
        ),
        "Acknowledge": _handler(e.acknowledge, types.AcknowledgeRequest, empty),
        "ModifyAckDeadline": _handler(e.modify_ack_deadline, types.ModifyAckDeadlineRequest, empty),
    }
    server = grpc.server(
        ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="pubsub"),
        handlers=[
            grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
            grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber),
        ],
        # gRPC Python enables SO_REUSEPORT by default, so a second server on a taken port would
        # bind silently and share it.
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", _MAX_REQUEST_BYTES),
        ],
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # newer grpcio raises instead of returning 0; it logs the cause
        bound = 0
    if not bound:
        e.close()
        raise OSError(f"cannot listen on {address} (is the port already in use?)")
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m emulators.pubsub",
        description="Google Cloud Pub/Sub emulator (gRPC). Point clients at it with "
        "PUBSUB_EMULATOR_HOST=HOST:PORT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    parser.add_argument("--port", type=int, default=8085, help="port to listen on (%(default)s)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep topics, subscriptions and unacknowledged messages in this directory, across "
        "restarts and kills (default: in memory only)",
    )
    args = parser.parse_args(argv)
    try:
        server = build_server(args.host, args.port, args.data_dir)
    except OSError as error:
        parser.exit(1, f"error: {error}\n")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(f"[pubsub] Server started, listening on {args.host}:{args.port}", flush=True)
    stop.wait()
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
