"""Cutting a clip out of a recording: probe the source, cut a time range, check the result.

from cutting import cut_clip, write_poster
clip = cut_clip(Path("/mnt/nas/day1.mp4"), 600.0, 720.0, ClipMode.ACCURATE, Path("out.mp4"))
write_poster(clip.path, Path("poster.jpg"))
"""

from cutting.cut import CutClip, cut_clip
from cutting.errors import CutError, SourceUnavailable
from cutting.poster import write_poster
from cutting.probe import KeyframesNear, MediaInfo, keyframes_near, probe

__all__ = [
    "CutClip",
    "CutError",
    "KeyframesNear",
    "MediaInfo",
    "SourceUnavailable",
    "cut_clip",
    "keyframes_near",
    "probe",
    "write_poster",
]
