"""Cut a time range of a recording into an MP4 clip with ffmpeg (via ffmpeg-python).

The ffmpeg binary is the one shipped by the ``imageio-ffmpeg`` wheel, so no system ffmpeg
is needed. ``copy`` mode seeks on the input and copies streams: fast, keyframe-aligned.
"""

from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import imageio_ffmpeg

from clipping.messages import ClipMode
from cutting.errors import CutError
from cutting.probe import probe


@dataclass(frozen=True)
class CutClip:
    path: Path
    size_bytes: int
    duration_seconds: float
    start_seconds: float
    end_seconds: float
    mode: ClipMode


def cut_clip(source: Path, start: float, end: float, mode: ClipMode, output: Path) -> CutClip:
    """Cut ``[start, end)`` of ``source`` into ``output``; an ``end`` past the source is clamped."""
    if mode is not ClipMode.COPY:
        raise CutError(f"mode {mode.value!r} is not available yet; use 'copy'")
    duration = probe(source).duration_seconds
    if start >= duration:
        raise CutError(f"start {start:.3f}s is at or past the source's end ({duration:.3f}s)")
    end = min(end, duration)
    _stream_copy(source, start, end, output)
    produced = probe(output)
    return CutClip(
        path=output,
        size_bytes=output.stat().st_size,
        duration_seconds=produced.duration_seconds,
        start_seconds=start,
        end_seconds=end,
        mode=mode,
    )


def _stream_copy(source: Path, start: float, end: float, output: Path) -> None:
    recording = ffmpeg.input(str(source), ss=start, t=end - start)
    command = (
        ffmpeg.output(
            recording["v:0"],
            recording["a?"],
            str(output),
            c="copy",
            movflags="+faststart",
            avoid_negative_ts="make_zero",
        )
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
        .overwrite_output()
    )
    try:
        command.run(cmd=imageio_ffmpeg.get_ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        detail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise CutError(f"ffmpeg failed to cut the clip: {detail[0]}") from exc
