"""End to end on the local stack: proxy -> Pub/Sub -> listener -> worker -> flow -> GCS."""

import json
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from clipping.messages import ClipState
from cutting import probe
from stack.lifecycle import Stack
from tests.clip_checks import clean_frames, expected_numbers
from tests.live_stack import CompletionLog, clip_body, wait_until_finished
from tests.media import SourceSpec, make_source
from tests.signed_urls import verify_v4_url

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack_database(request: pytest.FixtureRequest) -> str:
    """The local default and the production shape of the Prefect server."""
    return request.param


def test_a_requested_clip_arrives_behind_a_valid_signed_url(
    live_stack: Stack, proxy: httpx.Client, recording: Path, completions: CompletionLog
) -> None:
    answer = proxy.post("/v1/clip/request", json=clip_body(recording))
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["request_id"]
    assert answer.json()["status"] == "queued"
    assert answer.json()["status_url"].endswith(f"/v1/clip/{request_id}/status")
    assert proxy.get(f"/v1/clip/{request_id}/status").json()["status"] in {
        "queued",
        "processing",
        "completed",
    }

    status = wait_until_finished(proxy, request_id)
    assert status["status"] == "completed", status
    assert status["object_name"] == f"hand-7/{request_id}.mp4"
    assert status["agent_id"] in live_stack.config.workers

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

    clip_file = live_stack.config.dir / "downloaded.mp4"
    clip_file.write_bytes(downloaded.content)
    clip = probe(clip_file)
    assert clip.video_codec == "h264"
    assert clip.audio_codecs == ("aac",)
    # copy mode starts on the keyframe at or before 4 s (2 s GOP) and ends at 10 s.
    assert 6.0 <= clip.duration_seconds <= 8.2

    key = json.loads(live_stack.config.service_account_file.read_text())["private_key"].encode()
    facts = verify_v4_url(status["download_url"], load_pem_private_key(key, None).public_key())
    assert facts.lifetime == timedelta(days=7)
    assert facts.expires_at.isoformat().replace("+00:00", "Z") == status["expires_at"]

    poster = httpx.get(status["poster_url"], timeout=30.0)
    assert poster.status_code == 200
    assert poster.content.startswith(b"\xff\xd8")  # a JPEG
    verify_v4_url(status["poster_url"], load_pem_private_key(key, None).public_key())

    announced = completions.wait_for(request_id)
    assert announced.status is ClipState.COMPLETED
    assert announced.download_url == status["download_url"]
    assert announced.poster_url == status["poster_url"]
    assert announced.clamped is False


def test_the_prefect_ui_shows_the_run_with_its_artifacts(
    live_stack: Stack, proxy: httpx.Client, recording: Path
) -> None:
    request_id = proxy.post("/v1/clip/request", json=clip_body(recording)).json()["request_id"]
    status = wait_until_finished(proxy, request_id)
    api = live_stack.config.prefect_http(timeout=10.0)
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
    (progress,) = [artifact for artifact in artifacts if artifact["type"] == "progress"]
    assert progress["data"] == 100.0
    (table,) = [artifact for artifact in artifacts if artifact["type"] == "table"]
    assert json.loads(table["data"])[0]["download_url"] == status["download_url"]
    page = httpx.get(
        f"{live_stack.config.prefect_ui_url}/runs/flow-run/{status['flow_run_id']}",
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
        json=clip_body(outside, request_id="outside-1"),
    )
    assert answer.status_code == 422
    assert "outside the configured NAS roots" in answer.text
    assert proxy.get("/v1/clip/outside-1/status").status_code == 404


def test_an_unknown_request_is_404(proxy: httpx.Client) -> None:
    assert proxy.get("/v1/clip/never-asked/status").status_code == 404


def test_a_repeated_post_is_one_request_and_a_changed_one_conflicts(
    proxy: httpx.Client, recording: Path
) -> None:
    body = clip_body(recording, request_id="repeat-1")
    first = proxy.post("/v1/clip/request", json=body)
    second = proxy.post("/v1/clip/request", json=body)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    changed = proxy.post("/v1/clip/request", json={**body, "end_seconds": 12.0})
    assert changed.status_code == 409
    assert wait_until_finished(proxy, "repeat-1")["status"] == "completed"


def test_a_clip_that_cannot_be_cut_fails_with_its_reason(
    proxy: httpx.Client, recording: Path, completions: CompletionLog
) -> None:
    body = clip_body(recording, start_seconds=25.0, end_seconds=30.0)
    request_id = proxy.post("/v1/clip/request", json=body).json()["request_id"]
    status = wait_until_finished(proxy, request_id)
    assert status["status"] == "failed"
    assert status["reason"].startswith("start 25.000s is at or past the end")
    announced = completions.wait_for(request_id)
    assert announced.status is ClipState.FAILED
    assert announced.reason == status["reason"]
    time.sleep(2.0)
    assert completions.count(request_id) == 1


def test_an_end_past_the_recording_is_clamped_and_reported(
    proxy: httpx.Client, recording: Path
) -> None:
    body = clip_body(recording, start_seconds=15.0, end_seconds=40.0)
    request_id = proxy.post("/v1/clip/request", json=body).json()["request_id"]
    status = wait_until_finished(proxy, request_id)
    assert status["status"] == "completed", status
    assert status["clamped"] is True
    assert status["reason"].startswith("the recording ends at 0:20.0"), status
    assert status["cut_end_seconds"] == pytest.approx(20.0, abs=0.1)


# An MPEG-TS null packet (PID 0x1FFF): a recorder's padding, growth without media.
TS_NULL_PACKET = bytes([0x47, 0x1F, 0xFF, 0x10]) + b"\xff" * 184
TS_PACKET_BYTES = 188


def test_a_hand_still_being_recorded_waits_for_its_end_then_arrives_exact(
    live_stack: Stack,
    proxy: httpx.Client,
    completions: CompletionLog,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The recording's first 40 % (about 4.8 s) is on disk and the recorder keeps it
    growing, until the status answers the wait for the hand's end; then the rest arrives."""
    finished = make_source(tmp_path_factory.mktemp("finished"), SourceSpec("ts", ts_offset=10))
    data = finished.read_bytes()
    written = round(len(data) * 0.4 / TS_PACKET_BYTES) * TS_PACKET_BYTES
    growing = live_stack.config.nas_root / "recordings" / f"live-{uuid.uuid4().hex}.ts"
    growing.parent.mkdir(parents=True, exist_ok=True)
    growing.write_bytes(data[:written])
    body = clip_body(growing, start_seconds=6.2, end_seconds=9.5, mode="accurate")
    request_id = proxy.post("/v1/clip/request", json=body).json()["request_id"]

    phase = _phase_while_growing(proxy, request_id, growing)
    assert phase.startswith("waiting for the recording to reach 0:09.500 (recorded up to 0:04")
    with growing.open("ab") as recorder:
        recorder.write(data[written:])

    status = wait_until_finished(proxy, request_id)
    assert status["status"] == "completed", status
    assert status["clamped"] is False
    clip_file = live_stack.config.dir / f"{request_id}.mp4"
    clip_file.write_bytes(httpx.get(status["download_url"], timeout=30.0).content)
    numbers = [frame.number for frame in clean_frames(clip_file)]
    assert numbers == expected_numbers(finished, 6.2, 9.5)
    assert completions.wait_for(request_id).status is ClipState.COMPLETED


def _phase_while_growing(proxy: httpx.Client, request_id: str, growing: Path) -> str:
    """Pad the recording (it stays "being written") until its run shows a waiting phase."""
    for _ in range(360):
        status = proxy.get(f"/v1/clip/{request_id}/status").json()
        assert status["status"] in {"queued", "processing"}, status
        if (status.get("phase") or "").startswith("waiting"):
            return status["phase"]
        with growing.open("ab") as recorder:
            recorder.write(TS_NULL_PACKET)
        time.sleep(0.5)
    raise AssertionError(f"{request_id} never showed a waiting phase: {status}")
