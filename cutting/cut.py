"""Cut a time range of a recording into an MP4 clip, check it, and describe what was cut.

Modes: ``accurate`` (smart cut: exact first and last frame, mostly stream copy),
``copy`` (stream copy from the keyframe at or before the start: fastest, starts early) and
``reencode`` (everything re-encoded, for sources that cannot be spliced). Video is cut with
PyAV in-process; see ``cutting.smart``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av.container

from clipping.messages import ClipMode
from clipping.settings import get_settings
from cutting.audio import check_audio
from cutting.errors import CutError
from cutting.mux import write_mp4
from cutting.probe import MediaInfo, describe, open_media, to_ticks
from cutting.smart import VideoCut, VideoMode, cut_video
from cutting.verify import verify_clip

_VIDEO_MODES = {
    ClipMode.ACCURATE: VideoMode.SMART,
    ClipMode.COPY: VideoMode.COPY,
    ClipMode.REENCODE: VideoMode.FULL,
}
# Progress while cutting runs to this; verification takes it to 100.
_CUT_SHARE = 95.0


@dataclass(frozen=True)
class CutClip:
    """The clip that was written and verified.

    ``start_seconds``/``end_seconds`` are recording times of its first frame and of its end
    (``copy`` starts at a keyframe at or before the requested start). ``clamped`` tells that
    the requested end was past the recording's end. ``first_frame_seconds`` is the clip's
    first frame timestamp (0 for a clip that plays from its first frame).
    """

    path: Path
    size_bytes: int
    duration_seconds: float
    start_seconds: float
    end_seconds: float
    mode: ClipMode
    clamped: bool
    first_frame_seconds: float
    reencoded_frames: int


def cut_clip(
    source: Path,
    start: float,
    end: float,
    mode: ClipMode,
    output: Path,
    *,
    on_progress: Callable[[float], None] | None = None,
    max_clip_seconds: float | None = None,
) -> CutClip:
    """Cut ``[start, end)`` seconds of ``source`` into ``output`` (MP4) and verify it.

    An ``end`` past the source is clamped (``CutClip.clamped``). ``on_progress`` receives
    0..100. Every failure raises ``CutError`` with a reason for the requester.
    """
    longest = get_settings().max_clip_seconds if max_clip_seconds is None else max_clip_seconds
    _check_range(start, end, longest)
    report = on_progress or (lambda _percent: None)
    report(0.0)
    with open_media(source) as container:
        info = describe(container)
        if start >= info.duration_seconds:
            raise CutError(
                f"start {start:.3f}s is at or past the end of the recording ({info.duration_seconds:.3f}s)"
            )
        clamped = end > info.duration_seconds
        end = min(end, info.duration_seconds)
        audio_tracks = len(container.streams.audio)
        video = _cut(container, info, source, start, end, mode, output, report)
    clip = _verified(output, video, info, mode, clamped, audio_tracks)
    report(100.0)
    return clip


def _check_range(start: float, end: float, longest: float) -> None:
    if start < 0:
        raise CutError(f"start {start:.3f}s is negative")
    if end <= start:
        raise CutError(f"end {end:.3f}s is not after start {start:.3f}s")
    if end - start > longest:
        raise CutError(f"the range is {end - start:.0f}s long; the maximum is {longest:g}s")


def _cut(
    container: av.container.InputContainer,
    info: MediaInfo,
    source: Path,
    start: float,
    end: float,
    mode: ClipMode,
    output: Path,
    report: Callable[[float], None],
) -> VideoCut:
    for stream in container.streams.audio:
        check_audio(stream)
    stream = container.streams.video[0]
    video = cut_video(
        container,
        stream,
        to_ticks(start + info.origin_seconds, stream.time_base),
        to_ticks(end + info.origin_seconds, stream.time_base),
        mode=_VIDEO_MODES[mode],
        on_progress=lambda percent: report(percent * _CUT_SHARE / 100),
    )
    write_mp4(output, source, video, list(range(len(container.streams.audio))), end)
    return video


def _verified(
    output: Path, video: VideoCut, info: MediaInfo, mode: ClipMode, clamped: bool, audio_tracks: int
) -> CutClip:
    assert video.first_pts is not None and video.end_pts is not None
    time_base: Fraction = video.stream.time_base
    first = float(video.first_pts * time_base)
    expected = float((video.end_pts - video.first_pts) * time_base)
    frame = 1 / float(video.stream.average_rate or video.stream.guessed_rate)
    try:
        verification = verify_clip(
            output,
            expected_seconds=expected,
            tolerance_seconds=frame / 2,
            audio_tracks=audio_tracks,
            checkpoints=[float(pts * time_base) - first for pts in video.joins],
        )
    except CutError:
        output.unlink(missing_ok=True)
        raise
    return CutClip(
        path=output,
        size_bytes=output.stat().st_size,
        duration_seconds=verification.duration_seconds,
        start_seconds=first - info.origin_seconds,
        end_seconds=float(video.end_pts * time_base) - info.origin_seconds,
        mode=mode,
        clamped=clamped,
        first_frame_seconds=verification.first_frame_seconds,
        reencoded_frames=video.head_frames + video.tail_frames,
    )
