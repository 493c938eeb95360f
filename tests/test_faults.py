"""Exactly once under redelivery, crashes and bad messages, on the live stack.

Each test drives the real clients and emulators and counts what matters: flow runs per
request (Prefect API), objects (GCS emulator) and completion messages (clipping-complete).
"""

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1, storage
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import AwaitingRetry, Crashed

from agent_pool.crash_sweep import sweep_crashed_runs
from agent_pool.listener import RequestListener
from clipping.messages import ClipRequest, ClipState
from clipping.outcomes import RequestOutcomes
from clipping.settings import Settings, get_settings
from cutting import probe
from proxy.accepted import AcceptedRequests
from proxy.auth import digest
from stack.lifecycle import Stack
from stack.processes import kill_flow_processes
from stack.provision import ensure_sample_recording
from tests.live_stack import CompletionLog, clip_body, runs_for, task_state, wait_until_finished

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack_database() -> str:
    """Load and restarts on the production shape: SQLite answers "database is locked"."""
    return "postgresql"


# Long enough for a second or third delivery to have made a second clip, were it to.
DUPLICATE_GRACE_S = 5.0
# Spans three of the listener's backoffs (2, 4, 8 s); bench/faults.py holds 20 s.
PREFECT_OUTAGE_S = 12.0
# The suite runs a burst of 16 (about 35 s here); bench/faults.py runs 200 with faults.
BURST_SIZE = int(os.environ.get("CLIPPING_TEST_BURST", "16"))
# Requests published before each restart in the restarts test.
RESTART_WAVE = 4


def _publish(settings: Settings, data: bytes) -> None:
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(settings.topic_path(settings.requests_topic), data).result(timeout=30)


def _request(recording: Path, request_id: str, hand_id: str, **changes: object) -> ClipRequest:
    return ClipRequest.model_validate(
        clip_body(recording, request_id=request_id, hand_id=hand_id, **changes)
    )


def _objects(prefix: str) -> list[storage.Blob]:
    client = storage.Client(project="gg-poker", credentials=AnonymousCredentials())
    return list(client.list_blobs("gg-subclips", prefix=prefix))


def _assert_exactly_once(
    prefect_api: httpx.Client, completions: CompletionLog, request: ClipRequest
) -> None:
    assert completions.count(request.request_id) == 1
    _assert_exactly_once_runs_and_objects(prefect_api, request)


def _assert_exactly_once_runs_and_objects(prefect_api: httpx.Client, request: ClipRequest) -> None:
    assert len(runs_for(prefect_api, request.request_id)) == 1
    assert sorted(blob.name for blob in _objects(f"{request.hand_id}/")) == sorted(
        [request.object_name, request.poster_object_name]
    )


def test_the_same_request_published_three_times_makes_one_clip(
    settings_of_stack: Settings,
    recording: Path,
    completions: CompletionLog,
    prefect_api: httpx.Client,
) -> None:
    request = _request(recording, "dup-1", "hand-dup")
    for _ in range(3):
        _publish(settings_of_stack, request.model_dump_json().encode())
    assert completions.wait_for("dup-1").status is ClipState.COMPLETED
    time.sleep(DUPLICATE_GRACE_S)
    _assert_exactly_once(prefect_api, completions, request)


class _DiesBeforeAck:
    """A pulled message handed to a listener that dies right after creating the run."""

    def __init__(self, received: pubsub_v1.types.ReceivedMessage) -> None:
        self.data = received.message.data
        self.delivery_attempt = received.delivery_attempt
        self.acked = False

    def ack(self) -> None:
        """The process is gone: the ack never reaches Pub/Sub."""

    def nack(self) -> None:
        raise AssertionError("the run should have been created")


def test_a_redelivery_after_the_run_was_created_makes_no_second_run(
    live_stack: Stack,
    settings_of_stack: Settings,
    recording: Path,
    completions: CompletionLog,
    prefect_api: httpx.Client,
) -> None:
    settings = settings_of_stack
    request = _request(recording, "redelivered-1", "hand-redelivered")
    subscription = settings.subscription_path(settings.requests_subscription)
    live_stack.stop("listener")
    try:
        _publish(settings, request.model_dump_json().encode())
        with pubsub_v1.SubscriberClient() as subscriber:
            (received,) = subscriber.pull(
                subscription=subscription, max_messages=1, timeout=30
            ).received_messages
            with get_client(sync_client=True) as prefect:
                deployment = prefect.read_deployment_by_name(settings.deployment)
                listener = RequestListener(
                    settings, prefect, deployment.id, RequestOutcomes.from_settings(settings)
                )
                listener.handle(_DiesBeforeAck(received))
            assert len(runs_for(prefect_api, "redelivered-1")) == 1
            # The dead listener's lease lapses: Pub/Sub delivers the message again.
            subscriber.modify_ack_deadline(
                subscription=subscription, ack_ids=[received.ack_id], ack_deadline_seconds=0
            )
    finally:
        live_stack.start("listener")
    listener_log = live_stack.supervisor.log_path("listener")
    deadline = time.monotonic() + 60
    while "request redelivered-1: flow run" not in listener_log.read_text():
        assert time.monotonic() < deadline, "the message was not redelivered"
        time.sleep(0.2)
    assert completions.wait_for("redelivered-1").status is ClipState.COMPLETED
    time.sleep(DUPLICATE_GRACE_S)
    _assert_exactly_once(prefect_api, completions, request)


def test_requests_arriving_while_prefect_is_down_all_complete_once(
    live_stack: Stack,
    proxy: httpx.Client,
    recording: Path,
    completions: CompletionLog,
    prefect_api: httpx.Client,
) -> None:
    live_stack.stop("prefect-server")
    try:
        accepted = [
            proxy.post("/v1/clip/request", json=clip_body(recording, hand_id=f"hand-outage-{n}"))
            for n in range(10)
        ]
        assert [answer.status_code for answer in accepted] == [202] * 10
        time.sleep(PREFECT_OUTAGE_S)
    finally:
        live_stack.start("prefect-server")
    request_ids = [answer.json()["request_id"] for answer in accepted]
    completions.wait_for_all(request_ids, timeout=300)
    time.sleep(DUPLICATE_GRACE_S)
    for request_id in request_ids:
        assert completions.wait_for(request_id).status is ClipState.COMPLETED
        assert completions.count(request_id) == 1
        assert len(runs_for(prefect_api, request_id)) == 1


def test_a_burst_of_requests_all_complete_on_both_workers(
    live_stack: Stack,
    proxy: httpx.Client,
    recording: Path,
    completions: CompletionLog,
) -> None:
    request_ids = [
        proxy.post(
            "/v1/clip/request", json=clip_body(recording, hand_id="hand-burst", end_seconds=6.0)
        ).json()["request_id"]
        for _ in range(BURST_SIZE)
    ]
    completions.wait_for_all(request_ids, timeout=60 + 8 * BURST_SIZE)
    finished = [completions.wait_for(request_id) for request_id in request_ids]
    assert {completion.status for completion in finished} == {ClipState.COMPLETED}
    assert {completion.agent_id for completion in finished} == set(live_stack.config.workers)
    assert all(completions.count(request_id) == 1 for request_id in request_ids)
    clips = [blob for blob in _objects("hand-burst/") if blob.name.endswith(".mp4")]
    assert len(clips) == BURST_SIZE


def test_a_burst_survives_restarts_of_the_emulator_the_listener_and_a_worker(
    live_stack: Stack,
    settings_of_stack: Settings,
    recording: Path,
    completions: CompletionLog,
    prefect_api: httpx.Client,
) -> None:
    """Published straight onto the topic, so nothing but Pub/Sub (the default emulator,
    durable across a kill) holds the requests while the restarts happen."""
    requests = [
        _request(recording, f"restarts-{n}", f"hand-restarts-{n}", end_seconds=6.0)
        for n in range(3 * RESTART_WAVE)
    ]
    restarts = ["pubsub-emulator", "listener", live_stack.config.workers[0]]
    for wave, name in enumerate(restarts):
        for request in requests[wave * RESTART_WAVE : (wave + 1) * RESTART_WAVE]:
            _publish(settings_of_stack, request.model_dump_json().encode())
        live_stack.stop(name, kill=True)
        live_stack.start(name)
    ids = [request.request_id for request in requests]
    completions.wait_for_all(ids, timeout=120 + 8 * len(ids))
    time.sleep(DUPLICATE_GRACE_S)
    for request in requests:
        assert completions.wait_for(request.request_id).status is ClipState.COMPLETED
        _assert_exactly_once(prefect_api, completions, request)


POISON = [
    (b"\xff\xfe not json", None, "Invalid JSON"),
    (b"[1, 2, 3]", None, "Input should be an object"),
    (b'{"request_id": "poison-missing"}', "poison-missing", "hand_id: Field required"),
    (
        b'{"request_id": "poison-types", "hand_id": 7, "nas_video_path": "/x",'
        b' "start_seconds": "soon", "end_seconds": null}',
        "poison-types",
        "start_seconds: Input should be a valid number",
    ),
    (
        b'{"request_id": "poison-outside", "hand_id": "h", "nas_video_path": "/etc/passwd",'
        b' "start_seconds": 1, "end_seconds": 2}',
        "poison-outside",
        "outside the configured NAS roots",
    ),
    (
        b'{"request_id": "poison-order", "hand_id": "h", "nas_video_path": "NAS/a.mp4",'
        b' "start_seconds": 9, "end_seconds": 2}',
        "poison-order",
        "start_seconds must be less than end_seconds",
    ),
    (
        b'{"request_id": "poison-huge", "hand_id": "h", "nas_video_path": "/'
        + b"a" * 1_000_000
        + b'", "start_seconds": 1, "end_seconds": 2}',
        "poison-huge",
        "at most 4096 characters",
    ),
]


def test_poison_messages_are_rejected_with_reasons_while_valid_ones_are_served(
    live_stack: Stack,
    settings_of_stack: Settings,
    recording: Path,
    completions: CompletionLog,
) -> None:
    nas_root = str(live_stack.config.nas_root).encode()
    for data, _, _ in POISON:
        _publish(settings_of_stack, data.replace(b"NAS", nas_root))
    valid = _request(recording, "after-poison", "hand-after-poison")
    _publish(settings_of_stack, valid.model_dump_json().encode())
    for _, request_id, reason in POISON:
        completions.wait_for(request_id)
        reasons = [r.reason or "" for r in completions.all_for(request_id)]
        assert any(reason in given for given in reasons), reasons
        assert {r.status for r in completions.all_for(request_id)} == {ClipState.REJECTED}
    assert completions.wait_for("after-poison").status is ClipState.COMPLETED


def test_a_flow_process_killed_mid_upload_is_rerun_and_the_object_is_whole(
    live_stack: Stack,
    proxy: httpx.Client,
    completions: CompletionLog,
    prefect_api: httpx.Client,
) -> None:
    large = ensure_sample_recording(live_stack.config.nas_root / "recordings" / "table-hd.mp4", 60)
    body = clip_body(large, hand_id="hand-killed", start_seconds=2.0, end_seconds=58.0)
    request_id = proxy.post("/v1/clip/request", json=body).json()["request_id"]
    object_name = f"hand-killed/{request_id}.mp4"

    deadline = time.monotonic() + 120
    killed: list[int] = []
    while not killed and time.monotonic() < deadline:
        run_id = proxy.get(f"/v1/clip/{request_id}/status").json().get("flow_run_id")
        if run_id and task_state(prefect_api, run_id, "upload") == "RUNNING":
            killed = kill_flow_processes(run_id)
        time.sleep(0.02)
    assert killed, "never caught the upload running"
    assert _objects(object_name) == [], "the upload finished before the kill"

    status = wait_until_finished(proxy, request_id)
    assert status["status"] == "completed", status["reason"]
    states = [
        state["type"]
        for state in prefect_api.get("/flow_run_states/", params={"flow_run_id": run_id}).json()
    ]
    assert "CRASHED" in states
    (stored,) = _objects(object_name)
    assert stored.size == status["size_bytes"]
    downloaded = live_stack.config.dir / "killed.mp4"
    downloaded.write_bytes(httpx.get(status["download_url"], timeout=60).content)
    assert downloaded.stat().st_size == stored.size
    assert probe(downloaded).duration_seconds == pytest.approx(56.0, abs=2.5)
    assert completions.count(request_id) == 1
    assert len(runs_for(prefect_api, request_id)) == 1


class _Delivery:
    """A message as the listener's callback sees it, delivered for the n-th time."""

    def __init__(self, data: bytes, delivery_attempt: int) -> None:
        self.data = data
        self.delivery_attempt = delivery_attempt
        self.outcome: str | None = None

    def ack(self) -> None:
        self.outcome = "acked"

    def nack(self) -> None:
        self.outcome = "nacked"


@pytest.fixture
def listener_without_prefect(settings_of_stack: Settings) -> Iterator[RequestListener]:
    """The real listener with a real Prefect client whose server is unreachable."""
    unreachable = {PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_CLIENT_MAX_RETRIES: 0}
    with temporary_settings(updates=unreachable), get_client(sync_client=True) as prefect:
        yield RequestListener(
            settings_of_stack,
            prefect,
            uuid.uuid4(),
            RequestOutcomes.from_settings(settings_of_stack),
            sleep=lambda seconds: None,
        )


def test_while_prefect_is_unreachable_a_request_is_nacked_not_acked(
    listener_without_prefect: RequestListener, recording: Path
) -> None:
    request = _request(recording, "backoff-1", "hand-backoff")
    delivery = _Delivery(request.model_dump_json().encode(), delivery_attempt=1)
    listener_without_prefect.handle(delivery)
    assert delivery.outcome == "nacked"


def test_a_request_that_keeps_failing_is_parked_with_its_reason(
    listener_without_prefect: RequestListener,
    settings_of_stack: Settings,
    recording: Path,
    completions: CompletionLog,
    proxy: httpx.Client,
) -> None:
    settings = settings_of_stack
    request = _request(recording, "parked-1", "hand-parked")
    # As if the proxy had accepted it and the listener then never reached Prefect.
    AcceptedRequests(os.environ["CLIPPING_PROXY_DATABASE_URL"]).accept(request, owner=_owner(proxy))
    assert proxy.get("/v1/clip/parked-1/status").json()["status"] == "queued"
    last_attempt = settings.max_delivery_attempts
    delivery = _Delivery(request.model_dump_json().encode(), delivery_attempt=last_attempt)
    listener_without_prefect.handle(delivery)
    assert delivery.outcome == "acked"

    failure = completions.wait_for("parked-1")
    assert failure.status is ClipState.FAILED
    assert f"gave up after {last_attempt} deliveries" in (failure.reason or "")
    with pubsub_v1.SubscriberClient() as subscriber:
        subscription = settings.subscription_path(settings.dead_letter_subscription)
        parked = subscriber.pull(subscription=subscription, max_messages=10, timeout=30)
        mine = [
            received.message
            for received in parked.received_messages
            if received.message.attributes.get("request_id") == "parked-1"
        ]
        subscriber.acknowledge(
            subscription=subscription, ack_ids=[r.ack_id for r in parked.received_messages]
        )
    (message,) = mine
    assert ClipRequest.model_validate_json(message.data) == request
    assert "could not handle the request (ConnectError" in message.attributes["reason"]
    status = proxy.get("/v1/clip/parked-1/status").json()
    assert status["status"] == "failed"
    assert status["reason"] == failure.reason


def _crashed_run(prefect: SyncPrefectClient, request: ClipRequest, crashes: int) -> UUID:
    """A clip run of the deployment left Crashed ``crashes`` times, as a dead worker leaves it."""
    deployment = prefect.read_deployment_by_name(get_settings().deployment)
    run = prefect.create_flow_run_from_deployment(
        deployment.id,
        parameters={"request": request.model_dump(mode="json")},
        idempotency_key=request.request_id,
        state=Crashed(message="infrastructure lost"),
    )
    for _ in range(crashes - 1):
        prefect.set_flow_run_state(run.id, AwaitingRetry(), force=True)
        prefect.set_flow_run_state(run.id, Crashed(message="infrastructure lost"), force=True)
    return run.id


def _sweep_after_crashes(request: ClipRequest, crashes: int) -> None:
    """Leave a run of ``request`` Crashed ``crashes`` times, then sweep (max 4 attempts)."""
    with get_client(sync_client=True) as prefect:
        run_id = _crashed_run(prefect, request, crashes)
        deployment_id = prefect.read_flow_run(run_id).deployment_id
        outcomes = RequestOutcomes.from_settings(get_settings())
        sweep_crashed_runs(prefect, deployment_id, 4, outcomes, grace=timedelta(0))


def test_the_crash_sweep_reruns_a_run_left_crashed(
    live_stack: Stack, recording: Path, completions: CompletionLog
) -> None:
    _sweep_after_crashes(_request(recording, "swept-1", "hand-swept"), crashes=1)
    assert completions.wait_for("swept-1").status is ClipState.COMPLETED


def test_the_crash_sweep_gives_up_on_a_run_that_keeps_crashing(
    live_stack: Stack, recording: Path, completions: CompletionLog
) -> None:
    _sweep_after_crashes(_request(recording, "crashy-1", "hand-crashy"), crashes=4)
    failure = completions.wait_for("crashy-1")
    assert failure.status is ClipState.FAILED
    assert failure.reason == "crashed 4 times; giving up"
    # The automation may still reschedule it (it reacts to the same crashes); a rerun then
    # finds the request announced and stops: never a second message.
    time.sleep(DUPLICATE_GRACE_S)
    assert completions.count("crashy-1") == 1


def test_a_reused_request_id_with_another_body_is_parked_not_announced(
    settings_of_stack: Settings,
    recording: Path,
    completions: CompletionLog,
    prefect_api: httpx.Client,
) -> None:
    first = _request(recording, "reused-1", "hand-reused")
    _publish(settings_of_stack, first.model_dump_json().encode())
    assert completions.wait_for("reused-1").status is ClipState.COMPLETED
    second = _request(recording, "reused-1", "hand-reused", end_seconds=12.0)
    _publish(settings_of_stack, second.model_dump_json().encode())
    (parked,) = _parked_messages(settings_of_stack, "reused-1")
    assert ClipRequest.model_validate_json(parked.data) == second
    assert "already used for a different request" in parked.attributes["reason"]
    time.sleep(DUPLICATE_GRACE_S)
    assert completions.count("reused-1") == 1
    _assert_exactly_once_runs_and_objects(prefect_api, first)


def _parked_messages(settings: Settings, request_id: str) -> list[pubsub_v1.types.PubsubMessage]:
    """The messages parked under ``request_id`` (waits for the first), acknowledged."""
    subscription = settings.subscription_path(settings.dead_letter_subscription)
    deadline = time.monotonic() + 60
    with pubsub_v1.SubscriberClient() as subscriber:
        while time.monotonic() < deadline:
            pulled = subscriber.pull(subscription=subscription, max_messages=10, timeout=30)
            mine = [
                received
                for received in pulled.received_messages
                if received.message.attributes.get("request_id") == request_id
            ]
            if mine:
                subscriber.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in mine])
                return [received.message for received in mine]
    raise AssertionError(f"nothing parked under {request_id} within 60 s")


def test_an_accepted_request_the_listener_rejects_reads_rejected_with_its_reason(
    settings_of_stack: Settings, recording: Path, proxy: httpx.Client
) -> None:
    request = _request(recording, "rejected-later", "hand-rejected")
    # The proxy accepted it; what reaches the listener under that id no longer validates
    # (a recording swapped for a link out of the NAS root between the two checks, say).
    AcceptedRequests(os.environ["CLIPPING_PROXY_DATABASE_URL"]).accept(request, owner=_owner(proxy))
    invalid = {**request.model_dump(mode="json"), "nas_video_path": "/etc/passwd"}
    _publish(settings_of_stack, json.dumps(invalid).encode())
    status = wait_until_finished(proxy, "rejected-later")
    assert status["status"] == "rejected"
    assert "outside the configured NAS roots" in status["reason"]


def test_a_message_nested_5000_deep_leaves_the_listener_serving(
    live_stack: Stack,
    settings_of_stack: Settings,
    recording: Path,
    completions: CompletionLog,
) -> None:
    listener_pid = live_stack.supervisor.running()["listener"]
    nested = b'{"request_id":"p1","hand_id":' + b"[" * 5000 + b"]" * 5000 + b"}"
    _publish(settings_of_stack, nested)
    after = _request(recording, "after-nested", "hand-after-nested")
    _publish(settings_of_stack, after.model_dump_json().encode())
    assert completions.wait_for("after-nested").status is ClipState.COMPLETED
    assert live_stack.supervisor.running()["listener"] == listener_pid, "the listener restarted"
    assert "recursion" in "".join(r.reason or "" for r in completions.all_for(None)).lower()


def _owner(proxy: httpx.Client) -> str:
    """The owner the proxy records for requests made with ``proxy``'s key."""
    return digest(proxy.headers["Authorization"].removeprefix("Bearer "))
