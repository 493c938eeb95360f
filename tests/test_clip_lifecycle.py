"""A clip's life on a keyless local stack: signed without a key file, its links signed
again on read, cancelled while it runs, deleted by its owner.

The stack runs with ``keyless``: no service runs with a key file; they take their identity
from the metadata-server stand-in and sign through its IAM ``signBlob`` (which signs with
the stack's key, so the test verifies with that key's public half). Links live 40 s and
are signed again when they have less than 30 s left, so a status call a few seconds later
shows the re-signing in real time (waiting for a moment, never for speed).
"""

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from clipping.settings import Settings
from stack.completions import CompletionLog
from stack.config import StackConfig
from stack.lifecycle import Stack
from stack.processes import flow_processes
from stack.throwaway import on_database
from tests.live_stack import clip_body, runs_for, wait_until_finished
from tests.media import SourceSpec, start_recorder
from tests.signed_urls import verify_v4_url
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

LINK_TTL = timedelta(seconds=40)
LINK_MIN_VALID = timedelta(seconds=30)
# Bounds on waiting for the stack, far above what it needs: not speed requirements.
PATIENCE_S = 120.0


@pytest.fixture(scope="module")
def stack_config(
    tmp_path_factory: pytest.TempPathFactory, stack_database: str
) -> Iterator[StackConfig]:
    config = StackConfig.on_free_ports(tmp_path_factory.mktemp("stack"))
    with on_database(config.model_copy(update={"keyless": True}), stack_database) as keyless:
        yield keyless


@pytest.fixture(scope="module", autouse=True)
def short_links() -> Iterator[None]:
    """Every process of the stack signs links of ``LINK_TTL`` and keeps ``LINK_MIN_VALID``."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPPING_SIGNED_URL_TTL", f"PT{LINK_TTL.seconds}S")
        env.setenv("CLIPPING_URL_MIN_VALID", f"PT{LINK_MIN_VALID.seconds}S")
        yield


@pytest.fixture(scope="module")
def stack_key(live_stack: Stack) -> RSAPublicKey:
    key = json.loads(live_stack.config.service_account_file.read_text())["private_key"]
    public_key = load_pem_private_key(key.encode(), None).public_key()
    assert isinstance(public_key, RSAPublicKey)
    return public_key


@pytest.fixture(scope="module")
def bucket(settings_of_stack: Settings) -> storage.Bucket:
    client = storage.Client(
        project=settings_of_stack.gcp_project, credentials=AnonymousCredentials()
    )
    return client.bucket(settings_of_stack.bucket)


def test_no_service_of_the_stack_has_a_key_file(live_stack: Stack) -> None:
    env = live_stack.config.env()
    assert "CLIPPING_SERVICE_ACCOUNT_FILE" not in env
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
    assert env["GCE_METADATA_HOST"].endswith(f":{live_stack.config.auth_port}")


def test_a_keyless_clip_is_signed_through_sign_blob_and_signed_again_on_read(
    live_stack: Stack,
    proxy: httpx.Client,
    recording: Path,
    stack_key: RSAPublicKey,
    completions: CompletionLog,
) -> None:
    answer = proxy.post("/v1/clip/request", json=clip_body(recording))
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    status = wait_until_finished(proxy, request_id)
    assert status["status"] == "completed", status
    announced = completions.wait_for(request_id)
    assert announced.download_url is not None and announced.expires_at is not None
    first = verify_v4_url(announced.download_url, stack_key)
    assert first.lifetime == LINK_TTL
    assert httpx.get(announced.download_url, timeout=30).status_code == 200

    # Once the announced link has less than the minimum left, status signs a new one.
    low_at = announced.expires_at - LINK_MIN_VALID
    wait_for(lambda: datetime.now(UTC) > low_at, "the announced link to run low", PATIENCE_S)
    asked_at = datetime.now(UTC)
    fresh = proxy.get(f"/v1/clip/{request_id}/status").json()
    assert fresh["download_url"] != announced.download_url
    for url in (fresh["download_url"], fresh["poster_url"]):
        facts = verify_v4_url(url, stack_key)
        assert facts.expires_at >= asked_at.replace(microsecond=0) + LINK_MIN_VALID
        assert httpx.get(url, timeout=30).status_code == 200
    assert (
        datetime.fromisoformat(fresh["expires_at"])
        == verify_v4_url(fresh["download_url"], stack_key).expires_at
    )


def test_a_running_accurate_cut_is_cancelled_stops_and_uploads_nothing(
    live_stack: Stack,
    proxy: httpx.Client,
    prefect_api: httpx.Client,
    completions: CompletionLog,
    bucket: storage.Bucket,
) -> None:
    """The run waits for a live recording to reach its end, cutting in accurate mode, when
    its owner cancels it."""
    live = live_stack.config.nas_root / "recordings" / "live-table.mp4"
    recorder = start_recorder(live, SourceSpec(seconds=600))
    try:
        wait_for(
            lambda: live.exists() and live.stat().st_size > 0, "the recorder to start", PATIENCE_S
        )
        body = clip_body(
            live, hand_id="hand-cancel", mode="accurate", start_seconds=1.0, end_seconds=300.0
        )
        request_id = proxy.post("/v1/clip/request", json=body).json()["request_id"]
        wait_for(
            lambda: proxy.get(f"/v1/clip/{request_id}/status").json()["status"] == "processing",
            "the run to start",
            PATIENCE_S,
        )
        run_id = proxy.get(f"/v1/clip/{request_id}/status").json()["flow_run_id"]
        wait_for(lambda: flow_processes(run_id), "the flow process", PATIENCE_S)

        posted = time.monotonic()
        cancelled = proxy.post(f"/v1/clip/{request_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        wait_for(lambda: not flow_processes(run_id), "the run's processes to end", PATIENCE_S)
        stopped_after = time.monotonic() - posted
        print(f"\ncancel: no process of run {run_id} left {stopped_after:.2f} s after the POST")
    finally:
        recorder.kill()
        recorder.wait()

    assert cancelled.json()["status"] == "cancelled"
    wait_for(
        lambda: runs_for(prefect_api, request_id)[0]["state_type"] == "CANCELLED",
        "Cancelled in Prefect",
        PATIENCE_S,
    )
    assert [c.status for c in completions.all_for(request_id)] == ["cancelled"]
    assert list(bucket.list_blobs(prefix="hand-cancel/")) == []
    assert not bucket.blob(f"_records/{request_id}/uploaded.json").exists()
    again = proxy.post(f"/v1/clip/{request_id}/cancel")
    assert again.status_code == 202
    assert proxy.get(f"/v1/clip/{request_id}/status").json()["status"] == "cancelled"


def test_a_run_cancelled_in_prefect_is_announced_cancelled_once(
    live_stack: Stack, proxy: httpx.Client, prefect_api: httpx.Client, completions: CompletionLog
) -> None:
    """An operator's cancel in the Prefect UI: the worker stops the run, and its
    ``on_cancellation`` hook announces the request."""
    live = live_stack.config.nas_root / "recordings" / "live-table-2.mp4"
    recorder = start_recorder(live, SourceSpec(seconds=600))
    try:
        wait_for(
            lambda: live.exists() and live.stat().st_size > 0, "the recorder to start", PATIENCE_S
        )
        body = clip_body(live, hand_id="hand-ui", mode="accurate", end_seconds=300.0)
        request_id = proxy.post("/v1/clip/request", json=body).json()["request_id"]
        wait_for(
            lambda: proxy.get(f"/v1/clip/{request_id}/status").json()["status"] == "processing",
            "the run to start",
            PATIENCE_S,
        )
        run_id = proxy.get(f"/v1/clip/{request_id}/status").json()["flow_run_id"]
        cancelling = {
            "state": {"type": "CANCELLING", "message": "cancelled in the UI"},
            "force": True,
        }
        assert (
            prefect_api.post(f"/flow_runs/{run_id}/set_state", json=cancelling).status_code == 201
        )
        announced = completions.wait_for(request_id, timeout=PATIENCE_S)
        wait_for(lambda: not flow_processes(run_id), "the run's processes to end", PATIENCE_S)
    finally:
        recorder.kill()
        recorder.wait()
    assert announced.status == "cancelled"
    assert [c.status for c in completions.all_for(request_id)] == ["cancelled"]
    assert proxy.get(f"/v1/clip/{request_id}/status").json()["status"] == "cancelled"


def test_a_deleted_clip_is_gone_and_its_status_says_so(
    proxy: httpx.Client, recording: Path, bucket: storage.Bucket
) -> None:
    request_id = proxy.post(
        "/v1/clip/request", json=clip_body(recording, hand_id="hand-del")
    ).json()["request_id"]
    status = wait_until_finished(proxy, request_id)
    assert status["status"] == "completed", status
    assert proxy.post(f"/v1/clip/{request_id}/cancel").status_code == 409
    assert proxy.delete(f"/v1/clip/{request_id}").status_code == 204
    assert list(bucket.list_blobs(prefix="hand-del/")) == []
    assert list(bucket.list_blobs(prefix=f"_records/{request_id}/")) == []
    gone = proxy.get(f"/v1/clip/{request_id}/status")
    assert (gone.status_code, gone.json()) == (
        404,
        {"detail": f"clip request {request_id!r} was deleted"},
    )
    assert httpx.get(status["download_url"], timeout=30).status_code == 404
