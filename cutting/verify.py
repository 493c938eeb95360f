"""Check a cut clip before it is shipped: duration, first frame timestamp, decodability.

The duration and frame count are the MP4 header's (the clip was just written by us).

Decodability is checked where a clip can break: at its start and at every point where the
bitstream switches between re-encoded and copied video (a few frames after each). Decoder
errors are collected from FFmpeg's log, and frames it flags as corrupt count too.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import av.logging

from cutting.errors import CutError
from cutting.logs import ffmpeg_errors

# Frames decoded after each checkpoint: more than any reorder delay, so references resolve.
_FRAMES_PER_CHECK = 12


@dataclass(frozen=True)
class Verification:
    duration_seconds: float
    first_frame_seconds: float
    frames: int


def verify_clip(
    path: Path,
    *,
    shortest_seconds: float,
    longest_seconds: float,
    audio_tracks: int,
    checkpoints: Sequence[float] = (),
) -> Verification:
    """Raise ``CutError`` unless ``path`` is a decodable clip of the expected length.

    ``checkpoints`` are clip times where re-encoded and copied video meet.
    """
    try:
        with av.open(str(path)) as container:
            expected = (shortest_seconds, longest_seconds)
            return _verify(container, expected, audio_tracks, checkpoints)
    except av.FFmpegError as exc:
        raise CutError(f"the cut clip failed verification: it cannot be read ({exc})") from exc


def _verify(
    container: av.container.InputContainer,
    expected_seconds: tuple[float, float],
    audio_tracks: int,
    checkpoints: Sequence[float],
) -> Verification:
    if not container.streams.video:
        raise CutError("the cut clip failed verification: it has no video")
    if len(container.streams.audio) != audio_tracks:
        found = len(container.streams.audio)
        raise CutError(
            f"the cut clip failed verification: {found} audio tracks, {audio_tracks} expected"
        )
    stream = container.streams.video[0]
    if not stream.frames or not stream.duration:
        raise CutError("the cut clip failed verification: it has no video frames")
    duration = float(stream.duration * stream.time_base)
    frame_seconds = duration / stream.frames
    shortest, longest = expected_seconds
    if not shortest <= duration <= longest:
        raise CutError(
            f"the cut clip failed verification: it lasts {duration:.3f}s, "
            f"{shortest:.3f}s to {longest:.3f}s expected"
        )
    first = _check_decodes(container, [0.0, *checkpoints])
    if abs(first) > frame_seconds / 2:
        raise CutError(
            f"the cut clip failed verification: its first frame is at {first:.3f}s, not 0"
        )
    return Verification(duration_seconds=duration, first_frame_seconds=first, frames=stream.frames)


def _check_decodes(container: av.container.InputContainer, checkpoints: Sequence[float]) -> float:
    """Decode a few frames after each checkpoint; return the first frame's time."""
    first: float | None = None
    with ffmpeg_errors() as errors:
        for checkpoint in checkpoints:
            try:
                frames = _frames_after(container, checkpoint)
            except av.FFmpegError as exc:
                errors.append((av.logging.ERROR, "verify", str(exc)))
                continue
            first = frames[0].time if first is None and frames else first
            corrupt = [frame.time for frame in frames if frame.is_corrupt]
            errors.extend(
                (av.logging.ERROR, "verify", f"corrupt frame at {t:.3f}s") for t in corrupt
            )
    if errors:
        detail = errors[0][2].strip()
        raise CutError(
            f"the cut clip failed verification: {len(errors)} decoding errors ({detail})"
        )
    if first is None:
        raise CutError("the cut clip failed verification: no frame decodes")
    return first


def _frames_after(container: av.container.InputContainer, checkpoint: float) -> list[av.VideoFrame]:
    """Frames from the keyframe at or before ``checkpoint`` to a few frames after it."""
    stream = container.streams.video[0]
    container.seek(round(checkpoint / stream.time_base), stream=stream, backward=True)
    frames = []
    for frame in container.decode(stream):
        frames.append(frame)
        if frame.time >= checkpoint and len(frames) > _FRAMES_PER_CHECK:
            break
    return frames
