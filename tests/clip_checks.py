"""Checks of a cut clip against its source, by the frame numbers its pictures show.

A clip is exact when its first frame is the first source frame at or after START, its last
the last one before END, with nothing missing, timestamps from 0, audio starting with the
video, and no decoding error anywhere in the clip.
"""

import functools
from pathlib import Path

import av
import pytest

from cutting import CutClip
from cutting.logs import ffmpeg_errors
from tests.media import FPS, DecodedFrame, decoded_frames, first_audio_seconds

FRAME = 1 / FPS
AAC_FRAME = 1024 / 48000


@functools.cache
def source_frames(path: Path) -> list[DecodedFrame]:
    """The source's frames with recording times (0 = the container's first timestamp)."""
    with av.open(str(path)) as container:
        origin = (container.start_time or 0) / av.time_base
    return [DecodedFrame(frame.seconds - origin, frame.number) for frame in decoded_frames(path)]


def expected_numbers(path: Path, start: float, end: float) -> list[int]:
    return [frame.number for frame in source_frames(path) if start <= frame.seconds < end]


def clean_frames(clip: Path) -> list[DecodedFrame]:
    """Every frame of ``clip``; fails on any decoding error."""
    with ffmpeg_errors() as errors:
        frames = decoded_frames(clip)
    assert errors == []
    return frames


def assert_exact(
    clip: CutClip, source: Path, start: float, end: float, *, audio_slack: float = AAC_FRAME
) -> None:
    """``clip`` holds exactly the source frames in ``[start, end)``; its audio ends within
    ``audio_slack`` of its video."""
    expected = expected_numbers(source, start, end)
    frames = clean_frames(clip.path)
    assert [frame.number for frame in frames] == expected
    assert [frame.seconds for frame in frames] == pytest.approx(
        [index * FRAME for index in range(len(expected))], abs=1.5e-3
    )
    assert clip.first_frame_seconds == pytest.approx(0, abs=1e-3)
    assert clip.duration_seconds == pytest.approx(len(expected) * FRAME, abs=2e-3)
    first = next(frame for frame in source_frames(source) if frame.number == expected[0])
    assert clip.start_seconds == pytest.approx(first.seconds, abs=1e-3)
    assert_audio_follows_video(clip.path, len(expected) * FRAME, audio_slack)


def assert_audio_follows_video(clip: Path, video_seconds: float, slack: float = AAC_FRAME) -> None:
    """Every audio track starts with the first frame and ends within ``slack`` of the video."""
    with av.open(str(clip)) as container:
        tracks = len(container.streams.audio)
        durations = [
            float(stream.duration * stream.time_base) for stream in container.streams.audio
        ]
    assert first_audio_seconds(clip) == pytest.approx([0.0] * tracks, abs=1e-3)
    assert durations == pytest.approx([video_seconds] * tracks, abs=slack)
