"""Probing media with PyAV: container headers only, the file is not read through."""

from dataclasses import dataclass
from pathlib import Path

import av

from cutting.errors import CutError


@dataclass(frozen=True)
class MediaInfo:
    duration_seconds: float
    video_codec: str | None
    audio_codecs: tuple[str, ...]
    width: int | None
    height: int | None


def probe(path: Path) -> MediaInfo:
    """Duration and streams of ``path``; ``CutError`` when it is missing or not a video."""
    if not path.is_file():
        raise CutError(f"source recording not found: {path}")
    try:
        with av.open(str(path)) as container:
            return _describe(container)
    except PermissionError as exc:
        raise CutError(f"source recording is not readable: {path}") from exc
    except av.FFmpegError as exc:
        raise CutError(f"source is not a readable video file: {path} ({exc})") from exc


def _describe(container: av.container.InputContainer) -> MediaInfo:
    if not container.streams.video:
        raise CutError(f"source has no video stream: {container.name}")
    video = container.streams.video[0]
    if container.duration is None:
        raise CutError(f"source has no known duration: {container.name}")
    return MediaInfo(
        duration_seconds=container.duration / av.time_base,
        video_codec=video.codec_context.name,
        audio_codecs=tuple(stream.codec_context.name for stream in container.streams.audio),
        width=video.codec_context.width,
        height=video.codec_context.height,
    )
