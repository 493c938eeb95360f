"""Cutting a clip out of a recording: probe the source, cut a time range, check the result.

    from cutting import cut_clip
    clip = cut_clip(Path("/mnt/nas/day1.mp4"), 600.0, 720.0, ClipMode.COPY, Path("out.mp4"))
"""

from cutting.cut import CutClip, cut_clip
from cutting.errors import CutError
from cutting.probe import MediaInfo, probe

__all__ = ["CutClip", "CutError", "MediaInfo", "cut_clip", "probe"]
