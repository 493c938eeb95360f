"""Live benchmark: clips of a recording still being written, against the same clips cut later.

A real recorder (ffmpeg at real time, every packet flushed: TS, MKV or fragmented MP4 with
--container) writes the frame-numbered test picture of ``tests.media`` into a temporary NAS
root. One request after another, each asks for a --clip-seconds range whose end is
--ahead seconds past what is on disk, and is cut with ``cutting.cut_clip`` (which waits for
it). A watcher of its own (plain PyAV, not the service's code) notes when the END frame is
on disk: the first moment the last frame before END, and one packet after it, can be read.
The lag is the time from then to the clip being cut and verified. When the recording has
finished, the same ranges are cut again from the finished file (the baseline).

Every clip is checked against the finished recording by the numbers its frames show:
``inexact`` (frames other than the source's in the range), ``corrupt_shipped`` (a decoder
error anywhere in the clip), ``short_unflagged`` (shorter than asked without ``clamped``).
The measured span is the cut (wait, cut, verify); upload, signing and the announcement
come after it and are the same for a live and a finished recording.

    .venv/bin/python bench/live.py --requests 8 --json

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
from dataclasses import dataclass
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipping.messages import ClipMode
from clipping.settings import get_settings
from cutting import CutClip, cut_clip
from cutting.logs import ffmpeg_errors
from tests.media import FPS, SourceSpec, decoded_frames, start_recorder

FRAME = 1 / FPS
# The wait adds at most this once the end is written (issue 13's target).
ALLOWED_EXTRA_LAG_S = 1.0


@dataclass
class LiveClip:
    start: float
    end: float
    clip: CutClip
    end_on_disk_at: float
    cut_at: float

    @property
    def lag(self) -> float:
        return self.cut_at - self.end_on_disk_at


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as root:
        os.environ["CLIPPING_NAS_ROOTS"] = root
        get_settings.cache_clear()
        figures = run(Path(root), args)
    print_table(figures)
    if args.json:
        print(json.dumps(figures))


def run(root: Path, args: argparse.Namespace) -> dict[str, float | int | str]:
    spec = SourceSpec(
        container=args.container,
        ts_offset=10 if args.container == "ts" else 0,
        seconds=args.requests * (args.clip_seconds + args.ahead) + 2 * args.ahead + 5,
    )
    recording = root / spec.name
    recorder = start_recorder(recording, spec)
    try:
        live = [cut_live(recording, index, args, root) for index in range(args.requests)]
    finally:
        recorder.wait()
    baseline = [cut_finished(recording, index, item, root) for index, item in enumerate(live)]
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


def cut_live(recording: Path, index: int, args: argparse.Namespace, root: Path) -> LiveClip:
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
    clip = cut_clip(recording, start, end, ClipMode.ACCURATE, root / f"live-{index}.mp4")
    cut_at = time.monotonic()
    watcher.join()
    assert watcher.on_disk_at is not None
    return LiveClip(start, end, clip, watcher.on_disk_at, cut_at)


def cut_finished(recording: Path, index: int, live: LiveClip, root: Path) -> tuple[CutClip, float]:
    started = time.monotonic()
    output = root / f"finished-{index}.mp4"
    clip = cut_clip(recording, live.start, live.end, ClipMode.ACCURATE, output)
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


def check(clip: CutClip, start: float, end: float, truth: dict[int, float]) -> str | None:
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
    print(f"live recording ({figures['container']}), {figures['requests']} requests")
    print(
        f"  lag END on disk -> cut: p50 {figures['live_lag_p50_s']:.3f} s, "
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
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    return parser.parse_args()


if __name__ == "__main__":
    main()
