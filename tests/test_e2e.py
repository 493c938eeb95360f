"""End to end on a whole local stack: proxy -> Pub/Sub -> listener -> worker -> flow -> GCS.

One stack for the module (Prefect server on SQLite, Pub/Sub and GCS emulators, token
endpoint, two workers, listener, proxy), on free ports in a temporary directory; it is
always stopped, and the test checks nothing it started is left running.
"""

import json
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1, storage

from clipping.messages import ClipCompletion, ClipState
from clipping.settings import Settings, get_settings
from cutting import probe
from stack.config import StackConfig
from stack.lifecycle import Stack
from stack.processes import marked_processes
from stack.provision import COMPLETIONS_AUDIT_SUBSCRIPTION, ensure_sample_recording
from tests.signed_urls import verify_v4_url

pytestmark = pytest.mark.e2e

CLIP_TIMEOUT_S = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CompletionLog:
    """Every message on clipping-complete, read from the stack's audit subscription."""

    def __init__(self, settings: Settings) -> None:
        self._by_request: dict[str | None, list[ClipCompletion]] = defaultdict(list)
        self._changed = threading.Condition()
        self._subscriber = pubsub_v1.SubscriberClient()
        self._pull = self._subscriber.subscribe(
            settings.subscription_path(COMPLETIONS_AUDIT_SUBSCRIPTION), self._receive
        )

    def _receive(self, message: pubsub_v1.subscriber.message.Message) -> None:
        completion = ClipCompletion.model_validate_json(message.data)
        with self._changed:
            self._by_request[completion.request_id].append(completion)
            self._changed.notify_all()
        message.ack()

    def wait_for(self, request_id: str | None, timeout: float = 30.0) -> ClipCompletion:
        with self._changed:
            if not self._changed.wait_for(lambda: self._by_request[request_id], timeout):
                raise AssertionError(f"no completion for {request_id!r} within {timeout} s")
            return self._by_request[request_id][0]

    def count(self, request_id: str | None) -> int:
        with self._changed:
            return len(self._by_request[request_id])

    def close(self) -> None:
        self._pull.cancel()
        self._subscriber.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    config = StackConfig(
        dir=tmp_path_factory.mktemp("stack"),
        prefect_port=_free_port(),
        pubsub_port=_free_port(),
        gcs_port=_free_port(),
        token_port=_free_port(),
        proxy_port=_free_port(),
    )
    running = Stack(config)
    with config.activated():
        try:
            running.up()
            yield config
        finally:
            running.down()
    assert marked_processes(str(config.dir)) == [], "processes of the stack outlived `down`"


@pytest.fixture(scope="module")
def completions(stack: StackConfig) -> Iterator[CompletionLog]:
    log = CompletionLog(get_settings())
    yield log
    log.close()


@pytest.fixture(scope="module")
def recording(stack: StackConfig) -> Path:
    return ensure_sample_recording(
        stack.nas_root / "recordings" / "table-1.mp4", seconds=20, size="320x240"
    )


@pytest.fixture(scope="module")
def proxy(stack: StackConfig) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.proxy_url, timeout=30.0) as client:
        yield client


def _wait_until_finished(proxy: httpx.Client, request_id: str) -> dict:
    deadline = time.monotonic() + CLIP_TIMEOUT_S
    while time.monotonic() < deadline:
        status = proxy.get(f"/v1/clip/{request_id}/status").json()
        if status["status"] in {"completed", "failed", "rejected"}:
            return status
        time.sleep(0.25)
    raise AssertionError(f"{request_id} not finished after {CLIP_TIMEOUT_S} s: {status}")


def _clip_body(recording: Path, **changes: object) -> dict[str, object]:
    return {
        "hand_id": "hand-7",
        "nas_video_path": str(recording),
        "start_seconds": 4.0,
        "end_seconds": 10.0,
        "mode": "copy",
        **changes,
    }


def test_a_requested_clip_arrives_behind_a_valid_signed_url(
    stack: StackConfig, proxy: httpx.Client, recording: Path, completions: CompletionLog
) -> None:
    answer = proxy.post("/v1/clip/request", json=_clip_body(recording))
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    assert answer.json()["status"] == "queued"
    assert answer.json()["status_url"].endswith(f"/v1/clip/{request_id}/status")
    assert proxy.get(f"/v1/clip/{request_id}/status").json()["status"] in {
        "queued",
        "processing",
        "completed",
    }

    status = _wait_until_finished(proxy, request_id)
    assert status["status"] == "completed", status
    assert status["object_name"] == f"hand-7/{request_id}.mp4"
    assert status["agent_id"] in stack.workers

    downloaded = httpx.get(status["download_url"], timeout=30.0)
    assert downloaded.status_code == 200
    stored = (
        storage.Client(project="gg-poker", credentials=AnonymousCredentials())
        .bucket("gg-subclips")
        .blob(status["object_name"])
        .download_as_bytes()
    )
    assert downloaded.content == stored
    assert len(stored) == status["size_bytes"]

    clip_file = stack.dir / "downloaded.mp4"
    clip_file.write_bytes(downloaded.content)
    clip = probe(clip_file)
    assert clip.video_codec == "h264"
    assert clip.audio_codecs == ("aac",)
    # copy mode starts on the keyframe at or before 4 s (2 s GOP) and ends at 10 s.
    assert 6.0 <= clip.duration_seconds <= 8.2

    key = json.loads(stack.service_account_file.read_text())["private_key"].encode()
    facts = verify_v4_url(status["download_url"], load_pem_private_key(key, None).public_key())
    assert facts.lifetime == timedelta(days=7)
    assert facts.expires_at.isoformat().replace("+00:00", "Z") == status["expires_at"]

    announced = completions.wait_for(request_id)
    assert announced.status is ClipState.COMPLETED
    assert announced.download_url == status["download_url"]


def test_the_prefect_ui_shows_the_run_with_its_artifacts(
    stack: StackConfig, proxy: httpx.Client, recording: Path
) -> None:
    request_id = proxy.post("/v1/clip/request", json=_clip_body(recording)).json()["request_id"]
    status = _wait_until_finished(proxy, request_id)
    api = httpx.Client(base_url=stack.prefect_api_url, timeout=10.0)
    run = api.get(f"/flow_runs/{status['flow_run_id']}").json()
    assert run["state_type"] == "COMPLETED"
    assert run["idempotency_key"] == request_id
    artifacts = api.post(
        "/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [status["flow_run_id"]]}}},
    ).json()
    # Prefect stores link artifacts as markdown; the link one is keyed by hand.
    link = next(artifact for artifact in artifacts if artifact["key"] == "clip-hand-7")
    assert f"({status['download_url']})" in link["data"]
    summary = next(a for a in artifacts if a["type"] == "markdown" and a["key"] is None)
    assert str(recording) in summary["data"]
    (table,) = [artifact for artifact in artifacts if artifact["type"] == "table"]
    assert json.loads(table["data"])[0]["download_url"] == status["download_url"]
    page = httpx.get(
        f"{stack.prefect_ui_url}/runs/flow-run/{status['flow_run_id']}",
        headers={"Accept": "text/html"},  # as a browser asks; the UI is a single-page app
    )
    assert page.status_code == 200
    assert "<html" in page.text.lower()


def test_a_path_outside_the_nas_roots_is_refused_before_publishing(
    proxy: httpx.Client, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.mp4"
    outside.touch()
    answer = proxy.post(
        "/v1/clip/request",
        json=_clip_body(outside, request_id="outside-1"),
    )
    assert answer.status_code == 422
    assert "outside the configured NAS roots" in answer.text
    assert proxy.get("/v1/clip/outside-1/status").status_code == 404


def test_an_unknown_request_is_404(proxy: httpx.Client) -> None:
    assert proxy.get("/v1/clip/never-asked/status").status_code == 404


def test_a_repeated_post_is_one_request_and_a_changed_one_conflicts(
    proxy: httpx.Client, recording: Path
) -> None:
    body = _clip_body(recording, request_id="repeat-1")
    first = proxy.post("/v1/clip/request", json=body)
    second = proxy.post("/v1/clip/request", json=body)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    changed = proxy.post("/v1/clip/request", json={**body, "end_seconds": 12.0})
    assert changed.status_code == 409
    assert _wait_until_finished(proxy, "repeat-1")["status"] == "completed"


def test_a_clip_that_cannot_be_cut_fails_with_its_reason(
    proxy: httpx.Client, recording: Path, completions: CompletionLog
) -> None:
    body = _clip_body(recording, start_seconds=25.0, end_seconds=30.0)
    request_id = proxy.post("/v1/clip/request", json=body).json()["request_id"]
    status = _wait_until_finished(proxy, request_id)
    assert status["status"] == "failed"
    assert status["reason"].startswith("start 25.000s is at or past the end")
    announced = completions.wait_for(request_id)
    assert announced.status is ClipState.FAILED
    assert announced.reason == status["reason"]
    time.sleep(2.0)
    assert completions.count(request_id) == 1


@pytest.mark.parametrize(
    ("data", "request_id", "reason"),
    [
        (b"\xff not json", None, "Invalid JSON"),
        (b'{"request_id": "poison-1"}', "poison-1", "hand_id: Field required"),
        (
            b'{"request_id": "poison-2", "hand_id": "h", "nas_video_path": "/etc/passwd",'
            b' "start_seconds": 1, "end_seconds": 2}',
            "poison-2",
            "outside the configured NAS roots",
        ),
    ],
)
def test_a_bad_message_on_the_topic_is_rejected_with_its_reason(
    stack: StackConfig,
    completions: CompletionLog,
    data: bytes,
    request_id: str | None,
    reason: str,
) -> None:
    settings = get_settings()
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(settings.topic_path(settings.requests_topic), data).result(timeout=30)
    rejection = completions.wait_for(request_id)
    assert rejection.status is ClipState.REJECTED
    assert reason in (rejection.reason or "")
