"""Benchmark the three cut modes on 1080p30 H.264/AAC recordings (2 s and 10 s GOPs, B-frames).

For each source it cuts a 120 s clip starting mid-GOP with every mode and prints, next to
the target each is measured against: wall times (median of --runs), the time to read and
write the same byte range, ``copy`` at an early and a late start, the ratios, and the
accuracy of ``accurate`` (start and duration error, A/V offset, decoding errors).

Sources are generated once (several minutes) into --cache-dir and reused. With --json the
last line printed is one JSON object with the headline figures.

    .venv/bin/python bench/cut.py            # table
    .venv/bin/python bench/cut.py --json     # table, then a JSON line
"""

import argparse
import array
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import imageio_ffmpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipping.messages import ClipMode
from cutting import cut_clip
from cutting.logs import ffmpeg_errors
from cutting.probe import keyframes_near, open_media

FPS = 30
CLIP_SECONDS = 120.0
SOURCE_SECONDS = 600.0
EARLY_START = 60.0
LATE_START = SOURCE_SECONDS - CLIP_SECONDS - 30.0
AAC_FRAME_MS = 1024 / 48000 * 1000
# Targets from the issue ("Frame-accurate clips at stream-copy speed").
MAX_ERROR_FRAMES = 1
MAX_ACCURATE_OVER_REENCODE = {2: 0.03, 10: 0.1}
GOPS_SECONDS = (2, 10)
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipping-bench"


def source_path(cache: Path, gop: int) -> Path:
    return cache / f"poker-1080p30-gop{gop}s-bf3-{SOURCE_SECONDS:g}s.mp4"


def generate_source(path: Path, gop: int) -> None:
    """A moving 1080p test picture with noise at ~6 Mb/s, fixed GOP, 3 B-frames, AAC."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.mp4")
    keyint = gop * FPS
    params = f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=3:b-adapt=0"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=s=1920x1080:r={FPS},noise=alls=12:allf=t",
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:r=48000:beep_factor=4",
            "-t",
            f"{SOURCE_SECONDS}",
            "-c:v",
            "libx264",
            "-preset",
            "superfast",
            "-x264-params",
            params,
            "-b:v",
            "6M",
            "-maxrate",
            "6M",
            "-bufsize",
            "12M",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            str(partial),
        ],
        check=True,
    )
    partial.rename(path)


@dataclass(frozen=True)
class Accuracy:
    start_error_frames: int
    end_error_frames: int
    duration_error_frames: int
    av_offset_ms: float
    decode_errors: int


@dataclass(frozen=True)
class SourceResult:
    gop: int
    seconds: dict[str, float]
    accuracy: dict[str, Accuracy]


def median_seconds(action: Callable[[], object], runs: int) -> float:
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        timings.append(time.perf_counter() - began)
    return statistics.median(timings)


def clip_byte_range(source: Path, start: float, end: float) -> tuple[int, int]:
    """File offsets from the keyframe before ``start`` to the last packet before ``end``."""
    with open_media(source) as container:
        video = container.streams.video[0]
        keyframe = keyframes_near(source, start).at_or_before or 0.0
        container.seek(round(keyframe / video.time_base), stream=video)
        first = last = None
        for packet in container.demux():
            if packet.pts is None or packet.pos is None or packet.pos < 0:
                continue
            if float(packet.pts * packet.time_base) >= end:
                break
            first = packet.pos if first is None else min(first, packet.pos)
            last = max(last or 0, packet.pos + packet.size)
    assert first is not None and last is not None
    return first, last


def read_through(source: Path) -> None:
    with source.open("rb") as reader:
        while reader.read(8 << 20):
            pass


def read_and_write(source: Path, byte_range: tuple[int, int], output: Path) -> None:
    begin, end = byte_range
    with source.open("rb") as reader, output.open("wb") as writer:
        reader.seek(begin)
        remaining = end - begin
        while remaining > 0:
            chunk = reader.read(min(remaining, 8 << 20))
            writer.write(chunk)
            remaining -= len(chunk)


# Accuracy: compare decoded pictures (every frame of the test source differs by its noise).


def luma_signature(frame: av.VideoFrame) -> bytes:
    plane = frame.planes[0]
    data = bytes(plane)
    return b"".join(
        data[row * plane.line_size : row * plane.line_size + frame.width : 61]
        for row in range(0, frame.height, 17)
    )


def difference(first: bytes, second: bytes) -> float:
    return sum(abs(a - b) for a, b in zip(first, second, strict=True)) / len(first)


def source_frames_between(source: Path, start: float, end: float) -> list[tuple[float, bytes]]:
    """(recording time, signature) of the source's frames in ``[start, end]``."""
    with open_media(source) as container:
        video = container.streams.video[0]
        origin = (container.start_time or 0) / av.time_base
        keyframe = keyframes_near(source, start).at_or_before or 0.0
        container.seek(round((keyframe + origin) / video.time_base), stream=video)
        frames = []
        for frame in container.decode(video):
            seconds = frame.time - origin
            if seconds > end:
                break
            if seconds >= start:
                frames.append((seconds, luma_signature(frame)))
        return frames


def matched_frame_time(signature: bytes, candidates: list[tuple[float, bytes]]) -> float:
    return min(candidates, key=lambda candidate: difference(signature, candidate[1]))[0]


def measure_accuracy(source: Path, clip: Path, start: float, end: float, gop: int) -> Accuracy:
    frame = 1 / FPS
    with av.open(str(clip)) as container:
        video = container.streams.video[0]
        decoded, first_time = 0, 0.0
        first_signature = b""
        last: av.VideoFrame | None = None
        with ffmpeg_errors() as errors:
            for picture in container.decode(video):
                if decoded == 0:
                    first_signature, first_time = luma_signature(picture), picture.time
                decoded += 1
                last = picture
                errors.extend([(0, "bench", "corrupt frame")] if picture.is_corrupt else [])
        assert last is not None
        last_signature = luma_signature(last)
        error_count = len(errors)
    around_start = source_frames_between(source, start - gop - frame, start + 3 * frame)
    around_end = source_frames_between(source, end - 3 * frame, end + 6 * frame)
    wanted_first = min(t for t, _ in around_start if t >= start - 1e-6)
    wanted_last = max(t for t, _ in around_end if t < end - 1e-6)
    got_first = matched_frame_time(first_signature, around_start)
    got_last = matched_frame_time(last_signature, around_end)
    expected_frames = round((wanted_last - wanted_first) / frame) + 1
    return Accuracy(
        start_error_frames=round((got_first - wanted_first) / frame),
        end_error_frames=round((got_last - wanted_last) / frame),
        duration_error_frames=decoded - expected_frames,
        av_offset_ms=1000 * av_offset(clip, got_first, first_time),
        decode_errors=error_count,
    )


def av_offset(clip: Path, first_frame_recording_time: float, first_frame_clip_time: float) -> float:
    """Audio lateness: the source beeps at every whole second of the recording."""
    expected = (
        math.ceil(first_frame_recording_time) - first_frame_recording_time + first_frame_clip_time
    )
    return beep_onset(clip, after=expected - 0.4) - expected


def beep_onset(clip: Path, after: float) -> float:
    """Time of the first beep (4x the carrier frequency) after ``after`` seconds."""
    with av.open(str(clip)) as container:
        audio = container.streams.audio[0]
        window = 48  # 1 ms at 48 kHz
        for frame in container.decode(audio):
            if frame.time + frame.samples / frame.sample_rate < after:
                continue
            samples = array.array("f", bytes(frame.planes[0]))[: frame.samples]
            for begin in range(0, len(samples) - window, window):
                crossings = sum(
                    (samples[i] < 0) != (samples[i + 1] < 0) for i in range(begin, begin + window)
                )
                # 440 Hz crosses zero ~0.9 times per ms, the 1760 Hz beep ~3.5 times
                at = frame.time + begin / frame.sample_rate
                if crossings >= 3 and at >= after:
                    return at
    raise RuntimeError(f"no beep found in {clip} after {after:.2f}s")


def bench_source(source: Path, gop: int, work: Path, runs: int) -> SourceResult:
    start = SOURCE_SECONDS / 2 + gop / 2 + 0.5 / FPS  # mid-GOP, between two frames
    end = start + CLIP_SECONDS
    clips = {mode: work / f"gop{gop}-{mode.value}.mp4" for mode in ClipMode}

    def cut(mode: ClipMode, at: float = start) -> Callable[[], object]:
        return lambda: cut_clip(
            source, at, at + CLIP_SECONDS, mode, clips[mode], nas_roots=[source.parent]
        )

    read_through(source)  # every figure is measured with the source in the page cache
    seconds = {
        "readwrite": median_seconds(
            lambda: read_and_write(source, clip_byte_range(source, start, end), work / "range.bin"),
            runs,
        ),
        "copy": median_seconds(cut(ClipMode.COPY), runs),
        "copy_early": median_seconds(cut(ClipMode.COPY, at=EARLY_START), runs),
        "copy_late": median_seconds(cut(ClipMode.COPY, at=LATE_START), runs),
        "accurate": median_seconds(cut(ClipMode.ACCURATE), runs),
        "reencode": median_seconds(cut(ClipMode.REENCODE), runs),
    }
    for mode in ClipMode:
        cut(mode)()
    accuracy = {
        mode.value: measure_accuracy(source, clips[mode], start, end, gop) for mode in ClipMode
    }
    return SourceResult(gop=gop, seconds=seconds, accuracy=accuracy)


def summary(results: list[SourceResult]) -> dict[str, float | int]:
    accurate = [result.accuracy[ClipMode.ACCURATE.value] for result in results]
    figures: dict[str, float | int] = {
        "accurate_start_err_frames_max": max(abs(a.start_error_frames) for a in accurate),
        "accurate_dur_err_frames_max": max(
            max(abs(a.end_error_frames), abs(a.duration_error_frames)) for a in accurate
        ),
        "av_offset_ms_max": round(max(abs(a.av_offset_ms) for a in accurate), 2),
        "decode_errors": sum(a.decode_errors for a in accurate),
        "copy_over_readwrite": round(max(ratio(r, "copy", "readwrite") for r in results), 3),
        "copy_late_over_early": round(max(ratio(r, "copy_late", "copy_early") for r in results), 3),
    }
    for result in results:
        figures[f"accurate_over_reencode_gop{result.gop}"] = round(
            ratio(result, "accurate", "reencode"), 4
        )
        for name, value in result.seconds.items():
            figures[f"{name}_seconds_gop{result.gop}"] = round(value, 3)
    return figures


def ratio(result: SourceResult, numerator: str, denominator: str) -> float:
    return result.seconds[numerator] / result.seconds[denominator]


Row = tuple[str, str, str, str]


def limit(value: float, most: float, text: str) -> str:
    """The limit column: the bound and whether ``value`` (absolute) is within it."""
    return f"{text}  {'ok' if abs(value) <= most else 'MISSED'}"


def timing_rows(r: SourceResult) -> list[Row]:
    gop, s = f"GOP {r.gop}s", r.seconds
    copy_ratio = ratio(r, "copy", "readwrite")
    growth = ratio(r, "copy_late", "copy_early")
    speedup = ratio(r, "accurate", "reencode")
    most = MAX_ACCURATE_OVER_REENCODE[r.gop]
    return [
        (gop, "read+write clip byte range (s)", f"{s['readwrite']:.3f}", ""),
        (gop, "copy (s)", f"{s['copy']:.3f}", ""),
        (gop, "copy / read+write", f"{copy_ratio:.2f}", limit(copy_ratio, 3, "<= 3")),
        (gop, f"copy at {EARLY_START:g} s (s)", f"{s['copy_early']:.3f}", ""),
        (gop, f"copy at {LATE_START:g} s (s)", f"{s['copy_late']:.3f}", ""),
        (gop, "copy late / early", f"{growth:.2f}", limit(growth, 1.5, "<= 1.5 (no growth)")),
        (gop, "accurate (s)", f"{s['accurate']:.3f}", ""),
        (gop, "reencode (s)", f"{s['reencode']:.3f}", ""),
        (gop, "accurate / reencode", f"{speedup:.4f}", limit(speedup, most, f"<= {most:g}")),
    ]


def accuracy_rows(gop: int, mode: str, a: Accuracy) -> list[Row]:
    """Limits apply to ``accurate``; the other modes are shown for comparison."""
    frame_ms = 1000 / FPS
    exact = mode == ClipMode.ACCURATE.value

    def frames(name: str, error: int) -> Row:
        bound = limit(error, MAX_ERROR_FRAMES, f"<= {MAX_ERROR_FRAMES} frame") if exact else ""
        return (
            f"GOP {gop}s",
            f"{mode}: {name} (frames, ms)",
            f"{error:+d}, {error * frame_ms:+.0f}",
            bound,
        )

    av_bound = limit(a.av_offset_ms, AAC_FRAME_MS, f"<= {AAC_FRAME_MS:.1f} ms (1 AAC frame)")
    return [
        frames("start error", a.start_error_frames),
        frames("end error", a.end_error_frames),
        frames("duration error", a.duration_error_frames),
        (
            f"GOP {gop}s",
            f"{mode}: A/V offset (ms)",
            f"{a.av_offset_ms:+.1f}",
            av_bound if exact else "",
        ),
        (
            f"GOP {gop}s",
            f"{mode}: decode errors",
            f"{a.decode_errors}",
            limit(a.decode_errors, 0, "0") if exact else "",
        ),
    ]


def print_table(results: list[SourceResult], runs: int) -> None:
    rows = [("source", "figure", "value", "limit"), ("", "", "", "")]
    for result in results:
        rows += timing_rows(result)
        for mode, accuracy in result.accuracy.items():
            rows += accuracy_rows(result.gop, mode, accuracy)
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    rows[1] = tuple("-" * width for width in widths)
    print(
        f"{CLIP_SECONDS:g} s clips of 1080p{FPS} H.264/AAC, warm page cache, medians of {runs} runs"
    )
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Generating the two 10-minute 1080p sources takes several minutes the first time.",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where generated sources are kept (default: {DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        help="timed runs per figure; the median is shown (default: 5)",
    )
    parser.add_argument(
        "--gop",
        type=int,
        nargs="+",
        choices=GOPS_SECONDS,
        default=list(GOPS_SECONDS),
        help="GOP lengths in seconds to benchmark (default: 2 10)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="clipping-bench-") as scratch:
        for gop in args.gop:
            source = source_path(args.cache_dir, gop)
            if not source.exists():
                print(f"generating {source} ...", file=sys.stderr, flush=True)
                generate_source(source, gop)
            results.append(bench_source(source, gop, Path(scratch), args.runs))
    print_table(results, args.runs)
    if args.json:
        print(json.dumps(summary(results)))


if __name__ == "__main__":
    main()
