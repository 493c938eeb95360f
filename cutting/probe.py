"""Probing media with PyAV: container headers and a few packets near a time, never the whole file.

Times given to and returned by this module are seconds from the recording's start as a
player shows it: a source's first timestamp (non-zero in MPEG-TS) is its origin.
"""

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.frame
import av.stream

from cutting.errors import CutError

# An MP4's top level has a handful of boxes; more is not an MP4 worth scanning further.
_MAX_TOP_LEVEL_BOXES = 64
# How far before a target to seek when the demuxer lands after it (MPEG-TS overshoots).
_SEEK_BACK_OFFS = (0.0, 2.0, 8.0, 32.0, 128.0)


@dataclass(frozen=True)
class MediaInfo:
    duration_seconds: float | None
    origin_seconds: float
    format_name: str
    video_codec: str | None
    audio_codecs: tuple[str, ...]
    width: int | None
    height: int | None
    frame_rate: Fraction | None


@dataclass(frozen=True)
class KeyframesNear:
    """The keyframes around a time: the last at or before it and the first after it."""

    at_or_before: float | None
    after: float | None


class NotFinalized(CutError):
    """An MP4 whose index (``moov``) is not written yet: it cannot be read while recording."""


@contextmanager
def open_media(path: Path, name: str | None = None) -> Iterator[av.container.InputContainer]:
    """``open_container`` as a context manager that closes it."""
    with open_container(path, name) as container:
        yield container


def open_container(path: Path, name: str | None = None) -> av.container.InputContainer:
    """Open ``path`` for demuxing; ``CutError`` when it is missing, unreadable or not media.

    ``name`` is the recording's name in messages (``path`` may be a ``/proc/self/fd`` link).
    """
    name = name or str(path)
    if path.is_dir():
        raise CutError(f"source recording is not a regular file: {name}")
    if not path.is_file():
        raise CutError(f"source recording not found: {name}")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except PermissionError as exc:
        raise CutError(f"source recording is not readable (permission denied): {name}") from exc
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        if _mp4_without_index(path):
            raise NotFinalized(
                f"source recording is not finalized (an MP4 without its moov index): {name}; "
                "record to TS, MKV or fragmented MP4 to clip while recording"
            ) from exc
        raise CutError(f"source is not a readable video file: {name} ({exc})") from exc


def _mp4_without_index(path: Path) -> bool:
    """An ISO media file (``ftyp`` first) whose top-level boxes hold no ``moov``."""
    with path.open("rb") as file:
        boxes: list[bytes] = []
        while len(boxes) < _MAX_TOP_LEVEL_BOXES:
            header = file.read(8)
            if len(header) < 8:
                break
            size, kind = int.from_bytes(header[:4]), header[4:]
            if size == 1:
                size = int.from_bytes(file.read(8))
                file.seek(size - 16, os.SEEK_CUR)
            elif size == 0:
                boxes.append(kind)
                break
            elif size < 8:
                break
            else:
                file.seek(size - 8, os.SEEK_CUR)
            boxes.append(kind)
    return bool(boxes) and boxes[0] == b"ftyp" and b"moov" not in boxes


def clock_time(seconds: float) -> str:
    """``seconds`` of a recording as a player shows it: ``12:31.400``, ``1:02:03.000``."""
    minutes, rest = divmod(max(seconds, 0.0), 60)
    hours, minutes = divmod(int(minutes), 60)
    shown = f"{minutes:02d}:{rest:06.3f}"
    return f"{hours}:{shown}" if hours else shown.removeprefix("0")


def probe(path: Path) -> MediaInfo:
    """Duration and streams of ``path``; ``CutError`` when it is missing or not a video."""
    with open_media(path) as container:
        info = describe(container)
    if info.duration_seconds is None:
        raise CutError(f"source has no known duration: {path}")
    return info


def describe(container: av.container.InputContainer, name: str | None = None) -> MediaInfo:
    """``probe`` on an open container; ``name`` as in ``open_media``.

    The duration is the container's (``None`` when it has none, as a Matroska recording
    still being written): how much is really recorded is ``cutting.recorded``'s question.
    """
    name = name or container.name
    if not container.streams.video:
        raise CutError(f"source has no video stream: {name}")
    video = container.streams.video[0]
    duration = container.duration
    return MediaInfo(
        duration_seconds=duration / av.time_base if duration is not None and duration > 0 else None,
        origin_seconds=origin_seconds(container),
        format_name=container.format.name,
        video_codec=video.codec_context.name,
        audio_codecs=tuple(stream.codec_context.name for stream in container.streams.audio),
        width=video.codec_context.width or None,
        height=video.codec_context.height or None,
        frame_rate=video.average_rate or video.guessed_rate,
    )


def origin_seconds(container: av.container.InputContainer) -> float:
    """The container timestamp a player shows as 0:00."""
    return (container.start_time or 0) / av.time_base


def keyframes_near(path: Path, seconds: float) -> KeyframesNear:
    """The video keyframes around ``seconds``, found by seeking and demuxing a single GOP."""
    with open_media(path) as container:
        describe(container)
        return keyframes_around(container, seconds)


def keyframes_around(container: av.container.InputContainer, seconds: float) -> KeyframesNear:
    """``keyframes_near`` on an open container."""
    video = container.streams.video[0]
    origin = origin_seconds(container)
    time_base = time_base_of(video)
    target = to_ticks(seconds + origin, time_base)
    packets = packets_from(container, video, target, keyframe=True)
    keyframes: Iterator[av.Packet] = (packet for packet in packets if packet.is_keyframe)
    first = next(keyframes, None)
    if first is not None and pts_of(first) > target:
        keyframes, first = itertools.chain([first], keyframes), None
    after = next(keyframes, None)
    return KeyframesNear(
        at_or_before=_seconds_or_none(first, time_base, origin),
        after=_seconds_or_none(after, time_base, origin),
    )


def _seconds_or_none(packet: av.Packet | None, time_base: Fraction, origin: float) -> float | None:
    return None if packet is None else float(pts_of(packet) * time_base) - origin


def time_base_of(stream: av.stream.Stream) -> Fraction:
    """``stream``'s time base: PyAV types it optional, a demuxed stream always has one."""
    if stream.time_base is None:
        raise CutError(f"the source's {stream.type} stream has no time base")
    return stream.time_base


def pts_of(item: av.Packet | av.frame.Frame) -> int:
    """A packet's or frame's timestamp; ``demuxed`` yields only packets that have one."""
    if item.pts is None:
        raise CutError("the source has a packet or frame without a timestamp")
    return item.pts


def frame_seconds(stream: av.stream.Stream) -> float:
    """How long one frame of a video stream is shown (30 fps when it tells no rate)."""
    return float(1 / _frame_rate(stream))


def frame_ticks(stream: av.stream.Stream) -> Fraction:
    """``frame_seconds`` in the stream's time base, exactly."""
    return 1 / (_frame_rate(stream) * time_base_of(stream))


def _frame_rate(stream: av.stream.Stream) -> Fraction:
    return stream.average_rate or stream.guessed_rate or Fraction(30)


def to_ticks(seconds: float, time_base: Fraction) -> int:
    return round(Fraction(seconds) / time_base)


def packets_from(
    container: av.container.InputContainer,
    stream: av.stream.Stream,
    target: int,
    *,
    keyframe: bool,
) -> Iterator[av.Packet]:
    """``stream``'s packets in decode order from the last (key)frame at or before ``target``.

    Seeks back further (seconds in ``_SEEK_BACK_OFFS``) while the demuxer lands after
    ``target``; starts at the stream's beginning when nothing is at or before ``target``.
    """
    for back_off in _SEEK_BACK_OFFS:
        seek_to = target - to_ticks(back_off, time_base_of(stream))
        packets = _packets_after_seek(container, stream, seek_to, keyframe, target)
        first = next(packets, None)
        if first is not None and pts_of(first) <= target:
            return itertools.chain([first], packets)
    return _packets_after_seek(container, stream, None, keyframe, target)


def _packets_after_seek(
    container: av.container.InputContainer,
    stream: av.stream.Stream,
    seek_to: int | None,
    keyframe: bool,
    target: int,
) -> Iterator[av.Packet]:
    """Packets after seeking to ``seek_to`` (``None``: the start), from the last keyframe
    at or before ``target`` when ``keyframe``."""
    try:
        if seek_to is None or seek_to <= (stream.start_time or 0):
            container.seek(0, backward=True, any_frame=False)
        else:
            container.seek(seek_to, backward=True, any_frame=False, stream=stream)
    except av.FFmpegError as exc:
        raise CutError(f"cannot seek in the source ({exc}); is it a complete recording?") from exc
    packets = demuxed(container, stream)
    return from_last_keyframe(packets, target) if keyframe else packets


def demuxed(
    container: av.container.InputContainer, stream: av.stream.Stream
) -> Iterator[av.Packet]:
    """``stream``'s packets with a timestamp; demuxer failures become ``CutError``."""
    try:
        for packet in container.demux(stream):
            if packet.pts is not None and packet.size:
                yield packet
    except av.FFmpegError as exc:
        raise CutError(f"the source is corrupt: demuxing failed ({exc})") from exc


def from_last_keyframe(packets: Iterator[av.Packet], target: int) -> Iterator[av.Packet]:
    """Skip to the last keyframe at or before ``target`` and drop its leading pictures.

    Packets are held back until one shows after ``target``: no keyframe at or before
    ``target`` can follow it in decode order. Leading pictures (after the keyframe in decode
    order, before it in display order) reference the previous GOP and cannot be decoded.
    """
    held: list[av.Packet] = []
    for packet in packets:
        if packet.is_keyframe and (pts_of(packet) <= target or not held):
            held = [packet]
        elif held and pts_of(packet) >= pts_of(held[0]):
            held.append(packet)
        if held and pts_of(packet) > target:
            break
    yield from held
    if held:
        first = pts_of(held[0])
        yield from (packet for packet in packets if pts_of(packet) >= first)
