"""The demo: one clip requested through the proxy, followed to its signed URL and downloaded."""

import time
from pathlib import Path

import httpx

from clipping.messages import ClipCompletion, ClipState
from clipping.settings import get_settings
from cutting import probe
from stack.completions import CompletionLog
from stack.config import StackConfig
from stack.provision import COMPLETIONS_AUDIT_SUBSCRIPTION, ensure_sample_recording

SAMPLE_SECONDS = 60
FINISHED = {ClipState.COMPLETED.value, ClipState.FAILED.value, ClipState.REJECTED.value}


class DemoFailed(RuntimeError):
    pass


def run_demo(config: StackConfig, timeout_s: float = 180.0) -> str:
    """Request a clip, wait for it, download it; return its signed URL."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    sample = ensure_sample_recording(
        config.nas_root / "recordings" / "sample-table.mp4", SAMPLE_SECONDS
    )
    timings["sample recording ready"] = time.perf_counter() - started

    with httpx.Client(
        base_url=config.proxy_url,
        headers={"Authorization": f"Bearer {config.api_key('m6')}"},
        timeout=30.0,
    ) as proxy:
        posted_at = time.perf_counter()
        answer = proxy.post(
            "/v1/clip/request",
            json={
                "hand_id": "demo-hand-0001",
                "nas_video_path": str(sample),
                "start_seconds": 20.0,
                "end_seconds": 50.0,
            },
        )
        if answer.status_code != 202:
            raise DemoFailed(f"request refused: {answer.status_code} {answer.text}")
        request_id = answer.json()["request_id"]
        print(f"requested clip {request_id}: 20 s to 50 s of {sample.name} (accurate mode)")
        status = _wait_for_clip(proxy, request_id, timeout_s)
        timings["POST -> completed"] = time.perf_counter() - posted_at

    url = status["download_url"]
    download = config.dir / "downloads" / f"{request_id}.mp4"
    fetched_at = time.perf_counter()
    _download(url, download)
    timings["download"] = time.perf_counter() - fetched_at
    info = probe(download)
    completion = _completion_message(request_id)

    print(f"downloaded {download} ({download.stat().st_size:,} bytes)")
    print(
        f"probed: {info.duration_seconds:.2f} s {info.video_codec} {info.width}x{info.height},"
        f" audio {', '.join(info.audio_codecs) or 'none'}"
    )
    print(
        f"cut {status['cut_start_seconds']:.3f} s to {status['cut_end_seconds']:.3f} s"
        f" in {status['mode']} mode; poster {'signed' if status.get('poster_url') else 'missing'}"
    )
    print(f"completion on clipping-complete: {completion.status.value} by {completion.agent_id}")
    for step, seconds in timings.items():
        print(f"  {step:<24} {seconds:6.2f} s")
    print(f"Prefect UI: {config.prefect_ui_url}/runs/flow-run/{status['flow_run_id']}")
    return url


def _wait_for_clip(proxy: httpx.Client, request_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        status = proxy.get(f"/v1/clip/{request_id}/status").json()
        if status["status"] != last:
            last = status["status"]
            print(f"  status: {last}")
        if last in FINISHED:
            if last != ClipState.COMPLETED.value:
                raise DemoFailed(f"clip {last}: {status.get('reason')}")
            return status
        time.sleep(0.25)
    raise DemoFailed(f"clip not finished after {timeout_s:.0f} s (last status {last})")


def _download(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with httpx.stream("GET", url, timeout=60.0) as response, path.open("wb") as out:
        if response.status_code != 200:
            raise DemoFailed(f"signed URL answered {response.status_code}")
        for chunk in response.iter_bytes(1 << 20):
            out.write(chunk)


def _completion_message(request_id: str, timeout_s: float = 30.0) -> ClipCompletion:
    """The request's message on clipping-complete, read from the stack's audit subscription."""
    log = CompletionLog(get_settings(), COMPLETIONS_AUDIT_SUBSCRIPTION)
    try:
        return log.wait_for(request_id, timeout_s)
    finally:
        log.close()
