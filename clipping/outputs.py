"""What a clip's video is made for: the request's ``output`` and its default setting."""

from enum import StrEnum


class ClipOutput(StrEnum):
    """``source``: the recording's own codec (HEVC stays HEVC, tagged ``hvc1``).
    ``web``: H.264/AAC that every browser plays; an HEVC recording is re-encoded."""

    SOURCE = "source"
    WEB = "web"
