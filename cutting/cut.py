"""Cut a time range of a recording into an MP4 clip, check it, and describe what was cut.

Modes: ``accurate`` (smart cut: exact first and last frame, mostly stream copy, see
``cutting.smart``), ``copy`` (ffmpeg stream copy from the keyframe at or before the start:
fastest, starts early, see ``cutting.copy``) and ``reencode`` (everything re-encoded, for
sources that cannot be spliced).
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import av.container
import av.stream

from clipping.messages import ClipMode
from clipping.nas import OpenRecording, RecordingRefused, RecordingUnavailable, open_recording
from clipping.outputs import ClipOutput
from clipping.settings import get_settings
from cutting.audio import check_audio
from cutting.copy import stream_copy
from cutting.errors import CutError, SourceUnavailable
from cutting.mux import write_mp4
from cutting.nal import Codec
from cutting.probe import (
    MediaInfo,
    describe,
    frame_seconds,
    keyframes_around,
    open_media,
    time_base_of,
    to_ticks,
)
from cutting.recorded import LiveWait, wait_until_recorded
from cutting.smart import VideoMode, cut_video
from cutting.verify import PacketDigest, verify_clip

_VIDEO_MODES = {ClipMode.ACCURATE: VideoMode.SMART, ClipMode.REENCODE: VideoMode.FULL}
# Progress while cutting runs to this; verification takes it to 100.
_CUT_SHARE = 95.0
# ``copy`` keeps the reference pictures after the end that B-frames before it need.
_COPY_LATE_FRAMES = 8


@dataclass(frozen=True)
class CutClip:
    """The clip that was written and verified.

    ``start_seconds``/``end_seconds`` are recording times of its first frame and of its end
    (``copy`` starts at a keyframe at or before the requested start and may end a few
    frames late). ``clamp_reason`` (and ``clamped``) tells that the requested end was past
    the recording's end, and where it really ends.
    ``first_frame_seconds`` is the clip's first frame timestamp (0: plays from its start).
    """

    path: Path
    size_bytes: int
    duration_seconds: float
    start_seconds: float
    end_seconds: float
    mode: ClipMode
    clamp_reason: str | None
    first_frame_seconds: float
    reencoded_frames: int

    @property
    def clamped(self) -> bool:
        return self.clamp_reason is not None


@dataclass(frozen=True)
class _Written:
    """A clip as written, before verification: what to expect of it."""

    start_seconds: float
    shortest_seconds: float
    longest_seconds: float
    checkpoints: list[float]
    packet_digests: list[PacketDigest] | None
    reencoded_frames: int


def cut_clip(
    source: Path,
    start: float,
    end: float,
    mode: ClipMode,
    output: Path,
    *,
    on_progress: Callable[[float], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    max_clip_seconds: float | None = None,
    nas_roots: Iterable[Path] | None = None,
    live: LiveWait | None = None,
    output_for: ClipOutput = ClipOutput.SOURCE,
) -> CutClip:
    """Cut ``[start, end)`` seconds of ``source`` into ``output`` (MP4) and verify it.

    ``source`` is opened once, and the opened file must be a regular file inside
    ``nas_roots`` (default: the settings' roots); every reader reads that open file, never
    the name again (a name can be swapped for a symlink at any time). A range not yet
    recorded is waited for while the recording is being written (``cutting.recorded``,
    ``live``: default from the settings; ``on_phase`` is told what it waits for). An
    ``end`` past a finished recording is clamped to its last decodable frame
    (``CutClip.clamp_reason``). ``output_for`` ``web`` re-encodes an HEVC recording to
    H.264 in every mode (browsers cannot play HEVC). ``on_progress`` receives 0..100.
    Every failure raises ``CutError`` with a reason for the requester.
    """
    settings = get_settings()
    longest = settings.max_clip_seconds if max_clip_seconds is None else max_clip_seconds
    _check_range(start, end, longest)
    report = on_progress or (lambda _percent: None)
    report(0.0)
    roots = settings.nas_roots if nas_roots is None else nas_roots
    with _opened(source, roots) as recording:
        recorded = wait_until_recorded(
            recording, start, end, live or _live_wait(), on_phase or (lambda _phase: None)
        )
        end = recorded.end_seconds
        with open_media(recording.path, recording.name) as container:
            info = describe(container, recording.name)
            audio_tracks = len(container.streams.audio)
            video_mode = _video_mode(mode, output_for, info)
            if video_mode is None:
                written = _copy(container, info, recording, start, end, output)
            else:
                written = _exact(
                    container, info, recording.path, start, end, video_mode, output, report
                )
    try:
        verification = verify_clip(
            output,
            shortest_seconds=written.shortest_seconds,
            longest_seconds=written.longest_seconds,
            audio_tracks=audio_tracks,
            checkpoints=written.checkpoints,
            packet_digests=written.packet_digests,
        )
    except CutError as error:
        output.unlink(missing_ok=True)
        if mode is ClipMode.COPY:
            raise CutError(
                f"{error}; copy mode cannot cut this range of the source cleanly (it copies "
                "whole GOPs, and an open GOP refers to pictures outside them): use mode accurate"
            ) from error
        raise
    report(100.0)
    return CutClip(
        path=output,
        size_bytes=output.stat().st_size,
        duration_seconds=verification.duration_seconds,
        start_seconds=written.start_seconds,
        end_seconds=written.start_seconds + verification.duration_seconds,
        mode=mode,
        clamp_reason=recorded.clamp_reason,
        first_frame_seconds=verification.first_frame_seconds,
        reencoded_frames=written.reencoded_frames,
    )


def _video_mode(mode: ClipMode, output_for: ClipOutput, info: MediaInfo) -> VideoMode | None:
    """How the video is cut (``None``: ffmpeg stream copy)."""
    if output_for is ClipOutput.WEB and info.video_codec == Codec.HEVC.value:
        return VideoMode.WEB
    return _VIDEO_MODES.get(mode)


def _live_wait() -> LiveWait:
    settings = get_settings()
    return LiveWait(
        wait_seconds=settings.live_wait_seconds,
        idle_seconds=settings.live_idle_seconds,
        poll_seconds=settings.live_poll_seconds,
    )


def _opened(source: Path, roots: Iterable[Path]) -> OpenRecording:
    """``open_recording``, its errors as ``CutError`` (final) or ``SourceUnavailable``."""
    try:
        return open_recording(source, roots)
    except RecordingRefused as exc:
        raise CutError(str(exc)) from exc
    except RecordingUnavailable as exc:
        raise SourceUnavailable(exc.strerror) from exc


def _check_range(start: float, end: float, longest: float) -> None:
    if start < 0:
        raise CutError(f"start {start:.3f}s is negative")
    if end <= start:
        raise CutError(f"end {end:.3f}s is not after start {start:.3f}s")
    if end - start > longest:
        raise CutError(f"the range is {end - start:.0f}s long; the maximum is {longest:g}s")


def _copy(
    container: av.container.InputContainer,
    info: MediaInfo,
    source: OpenRecording,
    start: float,
    end: float,
    output: Path,
) -> _Written:
    keyframes = keyframes_around(container, start)
    keyframe = keyframes.at_or_before if keyframes.at_or_before is not None else keyframes.after
    if keyframe is None or keyframe >= end:
        raise CutError(
            f"the recording has no keyframe to copy from between {start:.3f}s and {end:.3f}s"
        )
    stream_copy(source, keyframe, end, output, hevc=info.video_codec == Codec.HEVC.value)
    frame = frame_seconds(container.streams.video[0])
    return _Written(
        start_seconds=keyframe,
        shortest_seconds=end - keyframe - frame,
        longest_seconds=end - keyframe + _COPY_LATE_FRAMES * frame,
        checkpoints=[],
        packet_digests=None,
        reencoded_frames=0,
    )


def _exact(
    container: av.container.InputContainer,
    info: MediaInfo,
    source: Path,
    start: float,
    end: float,
    video_mode: VideoMode,
    output: Path,
    report: Callable[[float], None],
) -> _Written:
    for track in container.streams.audio:
        check_audio(track)
    stream = container.streams.video[0]
    time_base = time_base_of(stream)
    video = cut_video(
        container,
        stream,
        to_ticks(start + info.origin_seconds, time_base),
        to_ticks(end + info.origin_seconds, time_base),
        mode=video_mode,
        on_progress=lambda percent: report(percent * _CUT_SHARE / 100),
    )
    digests = write_mp4(output, video, list(container.streams.audio), source, end)
    assert video.first_pts is not None and video.end_pts is not None
    first = float(video.first_pts * time_base)
    expected = float((video.end_pts - video.first_pts) * time_base)
    half_frame = frame_seconds(stream) / 2
    return _Written(
        start_seconds=video.first_seconds(),
        shortest_seconds=expected - half_frame,
        longest_seconds=expected + half_frame,
        checkpoints=[float(pts * time_base) - first for pts in video.joins],
        packet_digests=digests,
        reencoded_frames=video.head_frames + video.tail_frames,
    )
