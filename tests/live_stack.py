"""Fixtures for tests on a whole local stack, shared by the end-to-end and fault tests.

One stack per test session (Prefect server on SQLite, Pub/Sub and GCS emulators, token
endpoint, two workers, listener, proxy), on free ports in a temporary directory. It is
always stopped, and the session checks that nothing it started outlives it.
"""

import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from google.cloud import pubsub_v1

from clipping.messages import ClipCompletion
from clipping.settings import Settings, get_settings
from stack.config import StackConfig
from stack.lifecycle import Stack
from stack.processes import marked_processes
from stack.provision import COMPLETIONS_AUDIT_SUBSCRIPTION, ensure_sample_recording

CLIP_TIMEOUT_S = 180.0
# Small resumable-upload chunks make an upload take long enough to be interrupted.
TEST_UPLOAD_CHUNK_BYTES = 256 * 1024


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

    def wait_for(self, request_id: str | None, timeout: float = 60.0) -> ClipCompletion:
        with self._changed:
            if not self._changed.wait_for(lambda: self._by_request[request_id], timeout):
                raise AssertionError(f"no completion for {request_id!r} within {timeout} s")
            return self._by_request[request_id][0]

    def wait_for_all(self, request_ids: list[str], timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(
                lambda: all(self._by_request[rid] for rid in request_ids), timeout
            ):
                missing = [rid for rid in request_ids if not self._by_request[rid]]
                raise AssertionError(f"{len(missing)} requests not completed: {missing[:5]}")

    def count(self, request_id: str | None) -> int:
        return len(self.all_for(request_id))

    def all_for(self, request_id: str | None) -> list[ClipCompletion]:
        with self._changed:
            return list(self._by_request[request_id])

    def close(self) -> None:
        self._pull.cancel()
        self._subscriber.close()


@pytest.fixture(scope="session")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> StackConfig:
    return StackConfig(
        dir=tmp_path_factory.mktemp("stack"),
        prefect_port=_free_port(),
        pubsub_port=_free_port(),
        gcs_port=_free_port(),
        token_port=_free_port(),
        proxy_port=_free_port(),
    )


@pytest.fixture(scope="session")
def live_stack(stack_config: StackConfig) -> Iterator[Stack]:
    stack = Stack(stack_config)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPPING_UPLOAD_CHUNK_BYTES", str(TEST_UPLOAD_CHUNK_BYTES))
        # The official emulator (0.8.20 here) stops delivering a subscription's messages
        # once a subscriber closes its stream, so a listener restart would lose requests;
        # tests/test_pubsub_emulators.py shows the defect. The fallback behaves as Pub/Sub.
        env.setenv("CLIPPING_PUBSUB_EMULATOR", "fallback")
        with stack_config.activated():
            try:
                stack.up()
                yield stack
            finally:
                stack.down()
    assert marked_processes(str(stack_config.dir)) == [], "stack processes outlived `down`"


@pytest.fixture(scope="session")
def settings_of_stack(live_stack: Stack) -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def completions(live_stack: Stack) -> Iterator[CompletionLog]:
    log = CompletionLog(get_settings())
    yield log
    log.close()


@pytest.fixture(scope="session")
def recording(live_stack: Stack) -> Path:
    return ensure_sample_recording(
        live_stack.config.nas_root / "recordings" / "table-1.mp4", seconds=20, size="320x240"
    )


@pytest.fixture(scope="session")
def proxy(live_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_stack.config.proxy_url, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="session")
def prefect_api(live_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_stack.config.prefect_api_url, timeout=30.0) as client:
        yield client


def wait_until_finished(proxy: httpx.Client, request_id: str) -> dict:
    deadline = time.monotonic() + CLIP_TIMEOUT_S
    status: dict = {}
    while time.monotonic() < deadline:
        status = proxy.get(f"/v1/clip/{request_id}/status").json()
        if status["status"] in {"completed", "failed", "rejected"}:
            return status
        time.sleep(0.25)
    raise AssertionError(f"{request_id} not finished after {CLIP_TIMEOUT_S} s: {status}")


def clip_body(recording: Path, **changes: object) -> dict[str, object]:
    return {
        "hand_id": "hand-7",
        "nas_video_path": str(recording),
        "start_seconds": 4.0,
        "end_seconds": 10.0,
        "mode": "copy",
        **changes,
    }


def runs_for(prefect_api: httpx.Client, request_id: str) -> list[dict]:
    return prefect_api.post(
        "/flow_runs/filter",
        json={"flow_runs": {"idempotency_key": {"any_": [request_id]}}},
    ).json()
