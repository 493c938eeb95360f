"""FFmpeg's error log as a list, to notice decoding errors that FFmpeg only logs."""

from collections.abc import Iterator
from contextlib import contextmanager

import av.logging

LogEntry = tuple[int, str, str]


@contextmanager
def ffmpeg_errors() -> Iterator[list[LogEntry]]:
    """Collect FFmpeg messages of level ERROR and worse logged inside the block, by any thread.

    Every thread: frame-threaded decoders report errors from their worker threads.
    """
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=False) as logs:
            yield logs
    finally:
        av.logging.set_level(level)
