"""Fixtures for tests on a whole local stack, shared by the end-to-end and fault tests.

One stack per test module (Prefect server on SQLite or PostgreSQL, Pub/Sub and GCS emulators, token
endpoint, two workers, listener, proxy), on free ports in a temporary directory. It is
always stopped, and the session checks that nothing it started outlives it.
"""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clipping.settings import Settings, get_settings
from stack.completions import CompletionLog
from stack.config import StackConfig
from stack.lifecycle import Stack
from stack.processes import marked_processes
from stack.provision import COMPLETIONS_AUDIT_SUBSCRIPTION, ensure_sample_recording
from stack.throwaway import on_database

CLIP_TIMEOUT_S = 180.0
# Small resumable-upload chunks make an upload take long enough to be interrupted.
TEST_UPLOAD_CHUNK_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def stack_database() -> str:
    """The Prefect server's database: SQLite, the local default; a module may override it."""
    return "sqlite"


@pytest.fixture(scope="module")
def stack_config(
    tmp_path_factory: pytest.TempPathFactory, stack_database: str
) -> Iterator[StackConfig]:
    config = StackConfig.on_free_ports(tmp_path_factory.mktemp("stack"))
    with on_database(config, stack_database) as config_on_database:
        yield config_on_database


@pytest.fixture(scope="module")
def live_stack(stack_config: StackConfig) -> Iterator[Stack]:
    stack = Stack(stack_config)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPPING_UPLOAD_CHUNK_BYTES", str(TEST_UPLOAD_CHUNK_BYTES))
        with stack_config.activated():
            try:
                stack.up()
                yield stack
            finally:
                stack.down()
    assert marked_processes(str(stack_config.dir)) == [], "stack processes outlived `down`"


@pytest.fixture(scope="module")
def settings_of_stack(live_stack: Stack) -> Settings:
    return get_settings()


@pytest.fixture(scope="module")
def completions(live_stack: Stack) -> Iterator[CompletionLog]:
    log = CompletionLog(get_settings(), COMPLETIONS_AUDIT_SUBSCRIPTION)
    yield log
    log.close()


@pytest.fixture(scope="module")
def recording(live_stack: Stack) -> Path:
    return ensure_sample_recording(
        live_stack.config.nas_root / "recordings" / "table-1.mp4", seconds=20, size="320x240"
    )


@pytest.fixture(scope="module")
def proxy(live_stack: Stack) -> Iterator[httpx.Client]:
    """The proxy as M6 calls it: with the stack's ``m6`` key (scope clip)."""
    with proxy_client(live_stack.config, "m6") as client:
        yield client


@pytest.fixture(scope="module")
def admin_proxy(live_stack: Stack) -> Iterator[httpx.Client]:
    """The proxy as an operator calls it: with the stack's ``admin`` key."""
    with proxy_client(live_stack.config, "admin") as client:
        yield client


def proxy_client(config: StackConfig, client: str | None) -> httpx.Client:
    """A client of the stack's proxy with ``client``'s key, or with none."""
    headers = {"Authorization": f"Bearer {config.api_key(client)}"} if client else {}
    return httpx.Client(base_url=config.proxy_url, headers=headers, timeout=30.0)


@pytest.fixture(scope="module")
def prefect_api(live_stack: Stack) -> Iterator[httpx.Client]:
    """The stack's Prefect REST API, with its secret (it refuses anonymous requests)."""
    with live_stack.config.prefect_http() as client:
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


def task_state(prefect_api: httpx.Client, flow_run_id: str, task: str) -> str | None:
    """The state type of the run's task named ``task``, once it exists."""
    runs = prefect_api.post(
        "/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [flow_run_id]}}, "task_runs": {"name": {"like_": task}}},
    ).json()
    return runs[0]["state_type"] if runs else None
