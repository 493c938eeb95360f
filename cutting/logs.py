"""FFmpeg's error log as a list, to notice decoding errors that FFmpeg only logs."""

from collections.abc import Iterator
from contextlib import contextmanager

import av.logging

LogEntry = tuple[int, str, str]


@contextmanager
def ffmpeg_errors() -> Iterator[list[LogEntry]]:
    """Collect FFmpeg messages of level ERROR and worse logged (by this thread) inside the block."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs:
            yield logs
    finally:
        av.logging.set_level(level)
