"""How far a recording is on disk, and waiting while one still being written reaches a clip.

A recording is *still being written* while its size or mtime keeps changing: one that has
not changed for ``CLIPPING_LIVE_IDLE_SECONDS`` (judged from its mtime when first seen, then
by watching it) is finished. Recorders that append and flush as they go (MPEG-TS,
Matroska, fragmented MP4) can be clipped while they record: a clip whose range is not on
disk yet waits, looking again every ``CLIPPING_LIVE_POLL_SECONDS``, until the video is
recorded a few frames past its end (what the cut reads after the end) and every audio
track past it too, for at most ``CLIPPING_LIVE_WAIT_SECONDS``.

What counts as recorded is what decodes: when the video stops before the clip's end (a
recording that is finished, growing or cut short by a dead writer), the last GOP on disk is
decoded and the recording ends before the first picture that fails, so a partly written
packet at the end of a file is never part of a clip.
"""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import av.container
import av.stream
from av.video.stream import VideoStream

from clipping.nas import OpenRecording
from cutting.errors import CutError
from cutting.logs import ffmpeg_errors
from cutting.probe import (
    NotFinalized,
    clock_time,
    frame_ticks,
    open_container,
    origin_seconds,
    packets_from,
    pts_of,
    time_base_of,
    to_ticks,
)

# Video packets after the first one at or past the clip's end that must be complete on disk:
# more than the reorder depth of the sources we cut, so every picture the cut reads is there.
_PACKETS_PAST_END = 8


@dataclass(frozen=True)
class RecordedRange:
    """The part of a requested range that is recorded: its end, and why it was cut short."""

    end_seconds: float
    clamp_reason: str | None = None


@dataclass(frozen=True)
class LiveWait:
    """How long to wait for a recording being written, how often to look, and the clocks."""

    wait_seconds: float
    idle_seconds: float
    poll_seconds: float
    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


def recorded_end(container: av.container.InputContainer, wanted_end: float) -> float | None:
    """``None`` when the video is complete past ``wanted_end`` (seconds); else the time of
    the end of its last decodable picture, which may be before or a little after it."""
    video = container.streams.video[0]
    origin = origin_seconds(container)
    time_base = time_base_of(video)
    target = to_ticks(wanted_end + origin, time_base)
    gop: list[av.Packet] = []
    past_end = 0
    for packet in packets_from(container, video, target, keyframe=True):
        if packet.is_keyframe:
            gop = []
        gop.append(packet)
        if past_end or pts_of(packet) >= target:
            past_end += 1
        if past_end > _PACKETS_PAST_END:
            return None
    if not gop:
        return 0.0
    return float(_decodable_end(video, gop) * time_base) - origin


def audio_recorded(container: av.container.InputContainer, wanted_end: float) -> bool:
    """Whether every audio track has a complete packet at or past ``wanted_end``: one more
    packet follows it (a fragmented MP4 writes a fragment's video before its sound)."""
    origin = origin_seconds(container)
    for stream in container.streams.audio:
        target = to_ticks(wanted_end + origin, time_base_of(stream))
        at_end = False
        for packet in packets_from(container, stream, target, keyframe=False):
            if at_end:
                break
            at_end = pts_of(packet) >= target
        else:
            return False
    return True


def audio_decodable_end(container: av.container.InputContainer, near: float) -> float:
    """Where the audio tracks' last cleanly decoding packet ends, looking from a second
    before ``near`` (seconds); ``near`` when no track ends before it."""
    origin = origin_seconds(container)
    end = near
    for stream in container.streams.audio:
        time_base = time_base_of(stream)
        target = to_ticks(near - 1.0 + origin, time_base)
        context = stream.codec_context
        good: int | None = None
        with ffmpeg_errors() as errors:
            for packet in packets_from(container, stream, target, keyframe=False):
                try:
                    context.decode(packet)
                except av.FFmpegError:
                    break
                if errors:
                    break
                good = pts_of(packet) + (packet.duration or 0)
        if good is not None:
            end = min(end, float(good * time_base) - origin)
    return end


def _decodable_end(video: VideoStream, gop: list[av.Packet]) -> int:
    """The pts where the pictures of ``gop`` (from its keyframe) stop decoding cleanly."""
    context = video.codec_context
    # Slice threads report an error inside the call that decodes the broken packet.
    context.thread_type = "SLICE"
    keyframe_pts = pts_of(gop[0])
    decoded: list[int] = []
    broken_pts: int | None = None
    with ffmpeg_errors() as errors:
        for packet in [*gop, None]:
            try:
                frames = context.decode(packet)
                broken = bool(errors) or any(frame.is_corrupt for frame in frames)
            except av.FFmpegError:
                frames, broken = [], True
            if broken:
                broken_pts = keyframe_pts if packet is None else pts_of(packet)
                break
            decoded += [frame.pts for frame in frames if frame.pts is not None]
    one_frame = float(frame_ticks(video))
    end = keyframe_pts
    for pts in sorted(pts for pts in decoded if pts >= keyframe_pts):
        if pts > end + one_frame / 2 or (broken_pts is not None and pts >= broken_pts):
            break
        end = pts + round(one_frame)
    return end


class Growth:
    """Whether a recording is still being written: its size or mtime changed lately."""

    def __init__(self, fd: int, live: LiveWait) -> None:
        self._fd = fd
        self._live = live
        status = os.fstat(fd)
        self._seen = (status.st_size, status.st_mtime_ns)
        age = max(0.0, live.wall() - status.st_mtime)
        self._changed_at = live.monotonic() - age

    def still_written(self) -> bool:
        status = os.fstat(self._fd)
        seen = (status.st_size, status.st_mtime_ns)
        if seen != self._seen:
            self._seen, self._changed_at = seen, self._live.monotonic()
        return self._live.monotonic() - self._changed_at < self._live.idle_seconds


def wait_until_recorded(
    recording: OpenRecording,
    start: float,
    end: float,
    live: LiveWait,
    on_wait: Callable[[str], None],
) -> RecordedRange:
    """Wait while ``recording`` is being written and ``[start, end)`` is not all on disk.

    Returns the recorded part of the range (clamped when the finished recording ends
    before ``end``); ``CutError`` when the range starts past a finished recording's end, or
    when the wait reaches ``live.wait_seconds``. ``on_wait`` receives the phase to show.
    """
    growth = Growth(recording.fd, live)
    waited_from = live.monotonic()
    while True:
        reached = _recorded(recording, end, growth)
        if reached is None:
            return RecordedRange(end)
        if not growth.still_written():
            return _finished(start, end, reached)
        waited = live.monotonic() - waited_from
        if waited >= live.wait_seconds:
            raise CutError(
                f"the recording is still being written but reached only {clock_time(reached)} "
                f"after {waited:.0f}s of waiting for {clock_time(end)} "
                f"(CLIPPING_LIVE_WAIT_SECONDS={live.wait_seconds:g})"
            )
        on_wait(
            f"waiting for the recording to reach {clock_time(end)} "
            f"(recorded up to {clock_time(reached)})"
        )
        live.sleep(live.poll_seconds)


def _recorded(recording: OpenRecording, end: float, growth: Growth) -> float | None:
    """``recorded_end`` of a fresh look at the file (0 while a growing file has no header)."""
    try:
        return _look(recording, end)
    except NotFinalized:
        raise
    except CutError:
        # A recorder that has just begun: no header yet, or nothing to seek to.
        if growth.still_written():
            return 0.0
        raise


def _look(recording: OpenRecording, end: float) -> float | None:
    with open_container(recording.path, recording.name) as container:
        if not container.streams.video:
            raise CutError(f"source has no video stream: {recording.name}")
        video_end = recorded_end(container, end)
        audio_through = audio_recorded(container, end)
        if video_end is None and audio_through:
            return None
        reached = end if video_end is None else video_end
        # A track may end before the video: a partly written packet of sound is no better.
        return reached if audio_through else audio_decodable_end(container, reached)


def _finished(start: float, end: float, reached: float) -> RecordedRange:
    if start >= reached:
        raise CutError(
            f"start {start:.3f}s is at or past the end of the recording ({reached:.3f}s)"
        )
    if end <= reached:
        return RecordedRange(end)
    return RecordedRange(
        reached,
        clamp_reason=f"the recording ends at {clock_time(reached)} ({reached:.3f}s), before "
        f"the requested end {clock_time(end)}: the clip ends with its last decodable frame",
    )
