"""Check a cut clip before it is shipped: duration, first and last frame, decodability.

The duration and frame count are the MP4 header's (the clip was just written by us). Every
packet of every stream is decoded (video with frame threads); decoder errors are collected
from FFmpeg's log of every thread, and frames it flags as corrupt count too. The first
video frame must be at 0 and the last must end within the expected bounds too.
"""

from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import av.logging

from cutting.errors import CutError
from cutting.logs import ffmpeg_errors


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
) -> Verification:
    """Raise ``CutError`` unless ``path`` is a clip of the expected length whose every
    packet decodes, its video frames from 0 to an end in the same bounds."""
    try:
        with av.open(str(path)) as container:
            expected = (shortest_seconds, longest_seconds)
            return _verify(container, expected, audio_tracks)
    except av.FFmpegError as exc:
        raise CutError(f"the cut clip failed verification: it cannot be read ({exc})") from exc


def _verify(
    container: av.container.InputContainer,
    expected_seconds: tuple[float, float],
    audio_tracks: int,
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
    first, last_end = _check_decodes(container)
    if abs(first) > frame_seconds / 2:
        raise CutError(
            f"the cut clip failed verification: its first frame is at {first:.3f}s, not 0"
        )
    if not shortest <= last_end <= longest:
        raise CutError(
            f"the cut clip failed verification: its last frame ends at {last_end:.3f}s, "
            f"{shortest:.3f}s to {longest:.3f}s expected"
        )
    return Verification(duration_seconds=duration, first_frame_seconds=first, frames=stream.frames)


def _check_decodes(container: av.container.InputContainer) -> tuple[float, float]:
    """Decode every packet of every stream; return the first video frame's time and the end
    of the last one (its time plus its duration)."""
    video = container.streams.video[0]
    video.thread_type = "AUTO"
    times: list[float] = []
    with ffmpeg_errors() as errors:
        try:
            for packet in container.demux():
                for frame in packet.decode():
                    if frame.is_corrupt:
                        errors.append(
                            (av.logging.ERROR, "verify", f"corrupt frame at {frame.time}")
                        )
                    if packet.stream is video and frame.time is not None:
                        times.append(frame.time)
        except av.FFmpegError as exc:
            errors.append((av.logging.ERROR, "verify", str(exc)))
    if errors:
        detail = errors[0][2].strip()
        raise CutError(
            f"the cut clip failed verification: {len(errors)} decoding errors ({detail})"
        )
    if not times:
        raise CutError("the cut clip failed verification: no frame decodes")
    frame_seconds = float(1 / (video.average_rate or video.guessed_rate))
    return min(times), max(times) + frame_seconds
