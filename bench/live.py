"""Live benchmark: clips of a recording still being written, against the same clips cut later.

A real recorder (ffmpeg at real time, every packet flushed: TS, MKV or fragmented MP4 with
--container) writes the frame-numbered test picture of ``tests.media`` into the NAS root
of a stack of its own (``bench_stack``: free ports, temporary directory, Prefect on a
throwaway PostgreSQL database unless --stack sqlite). One request after another, each asks
the proxy (accurate mode) for a --clip-seconds range whose end is --ahead seconds past what
is on disk, and waits for ``completed`` (status polled every 50 ms). A watcher of its own
(plain PyAV, not the service's code) notes when the END frame is on disk: the first moment
the last frame before END, and one packet after it, can be read. The lag is the time from
then to ``completed`` (cut, verify, upload, sign, announce). When the recording has
finished, the same ranges are asked for again (the baseline: POST -> completed on the
finished file). --stack none measures the cut alone (``cutting.cut_clip`` in this process,
no stack): the same lag up to the verified clip.

Every shipped clip (downloaded from its signed URL) is checked against the finished
recording by the numbers its frames show: ``inexact`` (frames other than the source's in
the range), ``corrupt_shipped`` (a decoder error anywhere in the clip), ``short_unflagged``
(shorter than asked without ``clamped``).

    .venv/bin/python bench/live.py --requests 8 --json
    .venv/bin/python bench/live.py --stack none --container mkv   # the cut alone

With --json the last line is one JSON object: requests, live_lag_p50_s, live_lag_p95_s,
finished_p50_s, finished_p95_s, target_lag_p50_s (finished_p50_s + 1), ratio, inexact,
corrupt_shipped, short_unflagged.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipping.messages import ClipMode
from clipping.settings import get_settings
from cutting import cut_clip
from cutting.logs import ffmpeg_errors
from stack.throwaway import bench_stack
from tests.media import FPS, SourceSpec, decoded_frames, start_recorder

FRAME = 1 / FPS
# The wait adds at most this once the end is written (issue 13's target).
ALLOWED_EXTRA_LAG_S = 1.0
POLL_S = 0.05
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Shipped:
    """A clip as its requester gets it: the file and what the service said of it."""

    path: Path
    clamped: bool
    end_seconds: float
    duration_seconds: float


class Service(Protocol):
    def clip(self, recording: Path, start: float, end: float, name: str) -> Shipped:
        """Ask for ``[start, end)`` of ``recording``; return once it is shipped."""
        ...


class InProcess:
    """The cut alone: ``cut_clip`` here, its clip on local disk."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def clip(self, recording: Path, start: float, end: float, name: str) -> Shipped:
        clip = cut_clip(recording, start, end, ClipMode.ACCURATE, self._root / f"{name}.mp4")
        return Shipped(clip.path, clip.clamped, clip.end_seconds, clip.duration_seconds)


class ThroughStack:
    """The whole service: POST to the proxy, status until ``completed``, the signed URL."""

    def __init__(self, proxy: httpx.Client, downloads: Path) -> None:
        self._proxy, self._downloads = proxy, downloads

    def clip(self, recording: Path, start: float, end: float, name: str) -> Shipped:
        body = {
            "request_id": name,
            "hand_id": f"hand-{name}",
            "nas_video_path": str(recording),
            "start_seconds": start,
            "end_seconds": end,
            "mode": "accurate",
        }
        answer = self._proxy.post("/v1/clip/request", json=body)
        if answer.status_code != 202:
            raise SystemExit(f"request {name} refused: {answer.status_code} {answer.text}")
        status = self._finished(name)
        if status["status"] != "completed":
            raise SystemExit(f"request {name} {status['status']}: {status.get('reason')}")
        path = self._downloads / f"{name}.mp4"
        path.write_bytes(httpx.get(status["download_url"], timeout=60.0).content)
        return Shipped(
            path, status["clamped"], status["cut_end_seconds"], status["duration_seconds"]
        )

    def _finished(self, name: str) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            status = self._proxy.get(f"/v1/clip/{name}/status").json()
            if status["status"] in {"completed", "failed", "rejected"}:
                return status
            time.sleep(POLL_S)
        raise SystemExit(f"request {name} not finished after {TIMEOUT_S:g} s")


@dataclass
class LiveClip:
    start: float
    end: float
    clip: Shipped
    end_on_disk_at: float
    shipped_at: float

    @property
    def lag(self) -> float:
        return self.shipped_at - self.end_on_disk_at


def main() -> None:
    args = parse_args()
    with _service(args.stack) as (service, root):
        figures = run(service, root, args)
    print_table(figures)
    if args.json:
        print(json.dumps(figures))


@contextmanager
def _service(stack: str) -> Iterator[tuple[Service, Path]]:
    """The service measured and the NAS root its recordings go to."""
    if stack == "none":
        with tempfile.TemporaryDirectory(prefix="bench-live-") as root:
            os.environ["CLIPPING_NAS_ROOTS"] = root
            get_settings.cache_clear()
            yield InProcess(Path(root)), Path(root)
        return
    with bench_stack("live", stack) as running:
        config = running.config
        headers = {"Authorization": f"Bearer {config.api_key('operator')}"}
        with httpx.Client(base_url=config.proxy_url, headers=headers, timeout=30.0) as proxy:
            yield ThroughStack(proxy, config.dir), config.nas_root


def run(service: Service, root: Path, args: argparse.Namespace) -> dict[str, float | int | str]:
    spec = SourceSpec(
        container=args.container,
        ts_offset=10 if args.container == "ts" else 0,
        seconds=args.requests * (args.clip_seconds + args.ahead) + 2 * args.ahead + 5,
    )
    recording = root / "recordings" / spec.name
    recording.parent.mkdir(parents=True, exist_ok=True)
    recorder = start_recorder(recording, spec)
    try:
        live = [cut_live(service, recording, index, args) for index in range(args.requests)]
    finally:
        recorder.wait()
    baseline = [cut_finished(service, recording, index, item) for index, item in enumerate(live)]
    truth = source_truth(recording)
    problems = [check(item.clip, item.start, item.end, truth) for item in live]
    problems += [
        check(clip, item.start, item.end, truth)
        for item, (clip, _s) in zip(live, baseline, strict=True)
    ]
    lags = [item.lag for item in live]
    finished = [seconds for _clip, seconds in baseline]
    target = statistics.median(finished) + ALLOWED_EXTRA_LAG_S
    return {
        "stack": args.stack,
        "container": args.container,
        "requests": args.requests,
        "live_lag_p50_s": round(statistics.median(lags), 3),
        "live_lag_p95_s": round(percentile(lags, 95), 3),
        "finished_p50_s": round(statistics.median(finished), 3),
        "finished_p95_s": round(percentile(finished, 95), 3),
        "target_lag_p50_s": round(target, 3),
        "ratio": round(statistics.median(lags) / target, 3),
        "inexact": problems.count("inexact"),
        "corrupt_shipped": problems.count("corrupt"),
        "short_unflagged": problems.count("short"),
    }


def cut_live(service: Service, recording: Path, index: int, args: argparse.Namespace) -> LiveClip:
    """Ask for a range ending --ahead seconds past what is on disk; time it from END on disk."""
    deadline = time.monotonic() + 60
    while (recorded := recorded_seconds(recording)) < 1.0:
        if time.monotonic() > deadline:
            raise SystemExit(f"the recorder wrote nothing readable into {recording} in 60 s")
        time.sleep(0.05)
    # Mid-frame, so the frames in range do not depend on rounding at a frame's edge.
    end = round(recorded + args.ahead + FRAME / 2, 3)
    start = round(end - args.clip_seconds, 3)
    watcher = EndWatcher(recording, end)
    watcher.start()
    clip = service.clip(recording, start, end, f"live-{index}")
    shipped_at = time.monotonic()
    watcher.join()
    assert watcher.on_disk_at is not None
    return LiveClip(start, end, clip, watcher.on_disk_at, shipped_at)


def cut_finished(
    service: Service, recording: Path, index: int, live: LiveClip
) -> tuple[Shipped, float]:
    started = time.monotonic()
    clip = service.clip(recording, live.start, live.end, f"finished-{index}")
    return clip, time.monotonic() - started


class EndWatcher(threading.Thread):
    """Notes when the last frame before ``end`` is readable with one more packet after it."""

    def __init__(self, recording: Path, end: float) -> None:
        super().__init__(daemon=True)
        self._recording, self._end = recording, end
        self.on_disk_at: float | None = None

    def run(self) -> None:
        while self.on_disk_at is None:
            if recorded_seconds(self._recording) >= self._end:
                self.on_disk_at = time.monotonic()
            else:
                time.sleep(0.02)


def recorded_seconds(recording: Path) -> float:
    """Where the frames on disk end (seconds from the first timestamp), the last packet
    read not counted (it may be partly written)."""
    try:
        with av.open(str(recording)) as container:
            video = container.streams.video[0]
            origin = (container.start_time or 0) / av.time_base
            if container.duration:  # a few GOPs before the end; else all of it
                back_from_end = max(0, container.duration - 6 * av.time_base)
                container.seek(back_from_end + (container.start_time or 0))
            times = [
                float(packet.pts * video.time_base) - origin
                for packet in container.demux(video)
                if packet.pts is not None and packet.size
            ]
    except (av.FFmpegError, IndexError):
        return 0.0
    return max(times[:-1], default=0.0) + FRAME


def source_truth(recording: Path) -> dict[int, float]:
    """Recording time of every frame number of the finished recording."""
    with av.open(str(recording)) as container:
        origin = (container.start_time or 0) / av.time_base
    return {frame.number: frame.seconds - origin for frame in decoded_frames(recording)}


def check(clip: Shipped, start: float, end: float, truth: dict[int, float]) -> str | None:
    """``corrupt``, ``inexact``, ``short`` (without ``clamped``) or ``None`` for a good clip."""
    with ffmpeg_errors() as errors:
        numbers = [frame.number for frame in decoded_frames(clip.path)]
    if errors:
        return "corrupt"
    expected = sorted(number for number, seconds in truth.items() if start <= seconds < end)
    if clip.clamped:
        expected = [number for number in expected if truth[number] < clip.end_seconds - FRAME / 2]
    if numbers != expected:
        return "inexact"
    if clip.duration_seconds < end - start - FRAME and not clip.clamped:
        return "short"
    return None


def percentile(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))]


def print_table(figures: dict[str, float | int | str]) -> None:
    shipped = "cut (no stack)" if figures["stack"] == "none" else "completed"
    print(
        f"live recording ({figures['container']}), {figures['requests']} requests, "
        f"stack: {figures['stack']}"
    )
    print(
        f"  lag END on disk -> {shipped}: p50 {figures['live_lag_p50_s']:.3f} s, "
        f"p95 {figures['live_lag_p95_s']:.3f} s"
    )
    print(
        f"  same clip, finished file: p50 {figures['finished_p50_s']:.3f} s, "
        f"p95 {figures['finished_p95_s']:.3f} s"
    )
    print(
        f"  live p50 {figures['live_lag_p50_s']:.3f} s vs limit "
        f"{figures['target_lag_p50_s']:.3f} s (finished p50 + {ALLOWED_EXTRA_LAG_S:g} s): "
        f"ratio {figures['ratio']:.2f} (<= 1 passes)"
    )
    print(
        f"  inexact {figures['inexact']}, corrupt shipped {figures['corrupt_shipped']}, "
        f"short unflagged {figures['short_unflagged']} (target 0 each)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The recorder runs at real time: a run lasts about requests x (clip + ahead) s.",
    )
    parser.add_argument("--requests", type=int, default=8, help="clips asked for (default: 8)")
    parser.add_argument(
        "--container", choices=["ts", "mkv", "mp4"], default="ts", help="recording container"
    )
    parser.add_argument(
        "--clip-seconds", type=float, default=4.0, help="length of each clip (default: 4)"
    )
    parser.add_argument(
        "--ahead",
        type=float,
        default=3.0,
        help="how far past what is on disk each clip ends when asked for (default: 3 s)",
    )
    parser.add_argument(
        "--stack",
        choices=["postgresql", "sqlite", "none"],
        default="postgresql",
        help="the Prefect server's database of the stack measured, or none: the cut alone "
        "in this process (default: postgresql)",
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    return parser.parse_args()


if __name__ == "__main__":
    main()
