"""Video encoders for re-encoded parts of a clip.

A splice encoder produces pictures that slot into the source's bitstream: same codec,
profile, level, pixel format, resolution, aspect ratio and colour description, no B-frames
(so its decode order is its display order), and for H.264 its own parameter-set id so both
parameter-set pairs can live side by side in the MP4 sample description.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import av.stream
from av.codec.context import Flags
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType

from cutting.errors import CutError
from cutting.nal import Codec

# Quality and speed of re-encoded video: visually lossless at a sane size.
CRF = "18"
SPLICE_PRESET = "veryfast"
FULL_PRESET = "veryfast"

_ENCODERS = {Codec.H264: "libx264", Codec.HEVC: "libx265"}
_X264_PROFILES = {
    "Baseline": "baseline",
    "Constrained Baseline": "baseline",
    "Main": "main",
    "High": "high",
    "High 10": "high10",
    "High 4:2:2": "high422",
    "High 4:4:4 Predictive": "high444",
}
_X265_PROFILES = {"Main": "main", "Main 10": "main10", "Main Still Picture": "mainstillpicture"}


@dataclass(frozen=True)
class EncoderSettings:
    """Everything needed to open identical encoders more than once."""

    codec: Codec
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    frame_rate: Fraction
    color: dict[str, object]
    options: dict[str, str] = field(default_factory=dict)
    level: int = 0

    def open(self) -> VideoCodecContext:
        encoder = av.CodecContext.create(_ENCODERS[self.codec], "w")
        encoder.width, encoder.height, encoder.pix_fmt = self.width, self.height, self.pix_fmt
        encoder.time_base = self.time_base
        encoder.framerate = self.frame_rate
        encoder.flags |= Flags.global_header
        encoder.thread_count = 0
        if self.level:
            encoder.level = self.level
        for name, value in self.color.items():
            setattr(encoder, name, value)
        encoder.options = dict(self.options)
        try:
            encoder.open()
        except av.FFmpegError as exc:
            raise CutError(
                f"cannot open the {encoder.name} encoder for this source ({exc})"
            ) from exc
        return encoder


def splice_settings(
    codec: Codec, source: av.stream.Stream, parameter_set_id: int
) -> EncoderSettings:
    """An encoder whose pictures can be spliced into ``source``'s own bitstream."""
    context = source.codec_context
    if codec is Codec.H264:
        profile = _X264_PROFILES.get(context.profile or "")
        params = f"sps-id={parameter_set_id}:bframes=0:scenecut=0:keyint=infinite"
        options = {"crf": CRF, "preset": SPLICE_PRESET, "x264-params": params}
        level = context.level if context.level and context.level > 0 else 0
    else:
        profile = _X265_PROFILES.get(context.profile or "")
        params = "bframes=0:scenecut=0:open-gop=0:repeat-headers=0:info=0:log-level=error"
        if context.level and context.level > 0:
            params += f":level-idc={context.level / 30:g}"
        options = {"crf": CRF, "preset": SPLICE_PRESET, "x265-params": params}
        level = 0
    if profile is None:
        raise CutError(f"cannot re-encode {codec.value} profile {context.profile!r} to splice")
    options["profile"] = profile
    return _settings(codec, source, options, level)


def full_settings(codec: Codec, source: av.stream.Stream) -> EncoderSettings:
    """An ordinary encoder for a whole clip, in the source's codec."""
    if codec is Codec.H264:
        options = {"crf": CRF, "preset": FULL_PRESET}
    else:
        options = {"crf": CRF, "preset": FULL_PRESET, "x265-params": "log-level=error"}
    return _settings(codec, source, options, level=0)


def _settings(
    codec: Codec, source: av.stream.Stream, options: dict[str, str], level: int
) -> EncoderSettings:
    context = source.codec_context
    color = {
        "color_range": context.color_range,
        "color_primaries": context.color_primaries,
        "color_trc": context.color_trc,
        "colorspace": context.colorspace,
    }
    if context.sample_aspect_ratio:
        color["sample_aspect_ratio"] = context.sample_aspect_ratio
    return EncoderSettings(
        codec=codec,
        width=context.width,
        height=context.height,
        pix_fmt=context.pix_fmt,
        time_base=source.time_base,
        frame_rate=source.average_rate or source.guessed_rate or Fraction(30),
        color=color,
        options=options,
        level=level,
    )


def encode(encoder: VideoCodecContext, frame: av.VideoFrame | None) -> Iterator[av.Packet]:
    """Encode one decoded frame (``None`` flushes); the source's picture type is not forced."""
    if frame is not None:
        frame.pict_type = PictureType.NONE
    try:
        yield from encoder.encode(frame)
    except av.FFmpegError as exc:
        raise CutError(f"re-encoding the video failed ({exc})") from exc
