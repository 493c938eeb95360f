"""Check a cut clip before it is shipped: duration, every packet, first and last frame.

The duration and frame count are the MP4 header's (the clip was just written by us).

Video is checked without decoding all of it (a full decode costs ~8x the cut at 1080p):
- every video packet in the file is compared, size and CRC-32, with the packet the cut
  produced (``packet_digests``): copied pictures are the source's own bytes, so what is
  left to prove is that each one arrived, in order, whole;
- pictures are decoded where a clip can break: its start, every point where re-encoded
  and copied video meet (``checkpoints``) and its last GOP, whose last frame must end
  where the plan says.
Audio is decoded whole (it is cheap). Decoder errors are collected from FFmpeg's log of
every thread, and frames it flags as corrupt count too.
"""

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import av.logging

from cutting.errors import CutError
from cutting.logs import LogEntry, ffmpeg_errors
from cutting.probe import frame_seconds, time_base_of

# Frames decoded after each checkpoint: more than any reorder delay, so references resolve.
_FRAMES_PER_CHECK = 12

PacketDigest = tuple[int, int]


def packet_digest(data: bytes) -> PacketDigest:
    """What identifies a packet in a clip: its size and CRC-32."""
    return len(data), zlib.crc32(data)


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
    packet_digests: Sequence[PacketDigest] | None = None,
) -> Verification:
    """Raise ``CutError`` unless ``path`` is a clip of the expected length, its video the
    ``packet_digests`` (when given) and decodable at 0, each of ``checkpoints`` (clip times)
    and its end, its last frame ending in the same bounds, and its audio decodable."""
    try:
        with av.open(str(path)) as container:
            expected = (shortest_seconds, longest_seconds)
            _check_packets(container, packet_digests)
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
    duration = float(stream.duration * time_base_of(stream))
    one_frame = duration / stream.frames
    shortest, longest = expected_seconds
    if not shortest <= duration <= longest:
        raise CutError(
            f"the cut clip failed verification: it lasts {duration:.3f}s, "
            f"{shortest:.3f}s to {longest:.3f}s expected"
        )
    first, last_end = _check_decodes(container, [0.0, *checkpoints], duration - one_frame)
    if abs(first) > one_frame / 2:
        raise CutError(
            f"the cut clip failed verification: its first frame is at {first:.3f}s, not 0"
        )
    if not shortest <= last_end <= longest:
        raise CutError(
            f"the cut clip failed verification: its last frame ends at {last_end:.3f}s, "
            f"{shortest:.3f}s to {longest:.3f}s expected"
        )
    return Verification(duration_seconds=duration, first_frame_seconds=first, frames=stream.frames)


def _check_packets(
    container: av.container.InputContainer, expected: Sequence[PacketDigest] | None
) -> None:
    if expected is None:
        return
    video = container.streams.video[0]
    stored = [packet_digest(bytes(packet)) for packet in container.demux(video) if packet.size]
    if stored != list(expected):
        pairs = enumerate(zip(stored, expected, strict=False))
        differs = next(
            (index for index, (got, cut) in pairs if got != cut), min(len(stored), len(expected))
        )
        raise CutError(
            f"the cut clip failed verification: video packet {differs} is not the one cut "
            f"({len(stored)} packets stored, {len(expected)} cut)"
        )


def _check_decodes(
    container: av.container.InputContainer, checkpoints: Sequence[float], last_gop: float
) -> tuple[float, float]:
    """Decode a few frames after each checkpoint, the GOP holding ``last_gop`` to the end,
    and all audio; return the first video frame's time and the end of the last one."""
    video = container.streams.video[0]
    video.thread_type = "AUTO"
    shown = frame_seconds(video)
    first: float | None = None
    last_end = 0.0
    with ffmpeg_errors() as errors:
        for checkpoint in checkpoints:
            frames = _decoded(container, errors, checkpoint, _FRAMES_PER_CHECK)
            first = frames[0].time if first is None and frames else first
        for frame in _decoded(container, errors, last_gop, None):
            last_end = max(last_end, frame.time + shown)
        _decode_audio(container, errors)
    if errors:
        detail = errors[0][2].strip()
        raise CutError(
            f"the cut clip failed verification: {len(errors)} decoding errors ({detail})"
        )
    if first is None:
        raise CutError("the cut clip failed verification: no frame decodes")
    return first, last_end


def _decoded(
    container: av.container.InputContainer,
    errors: list[LogEntry],
    checkpoint: float,
    frames_after: int | None,
) -> list[av.VideoFrame]:
    """Frames from the keyframe at or before ``checkpoint`` to ``frames_after`` frames after
    it (``None``: to the end); failures and corrupt frames go to ``errors``."""
    stream = container.streams.video[0]
    decoded: list[av.VideoFrame] = []
    after = 0
    try:
        ticks = round(checkpoint / time_base_of(stream))
        container.seek(ticks, stream=stream, backward=True)
        for frame in container.decode(stream):
            _note_corrupt(frame, errors)
            decoded.append(frame)
            after += frame.time >= checkpoint
            if frames_after is not None and after > frames_after:
                break
    except av.FFmpegError as exc:
        errors.append((av.logging.ERROR, "verify", str(exc)))
    return decoded


def _decode_audio(container: av.container.InputContainer, errors: list[LogEntry]) -> None:
    for stream in container.streams.audio:
        try:
            container.seek(0)
            for frame in container.decode(stream):
                _note_corrupt(frame, errors)
        except av.FFmpegError as exc:
            errors.append((av.logging.ERROR, "verify", str(exc)))


def _note_corrupt(frame: av.VideoFrame | av.AudioFrame, errors: list[LogEntry]) -> None:
    if frame.is_corrupt:
        errors.append((av.logging.ERROR, "verify", f"corrupt frame at {frame.time}"))
