"""Video encoders for re-encoded parts of a clip.

A splice encoder produces pictures that slot into the source's bitstream: same codec,
profile, level, pixel format, resolution, aspect ratio and colour description, no B-frames
(so its decode order is its display order), and for H.264 its own parameter-set id so both
parameter-set pairs can live side by side in the MP4 sample description.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction

import av
import av.stream
from av.codec.context import Flags
from av.container import InputContainer
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType
from av.video.stream import VideoStream

from cutting.errors import CutError
from cutting.nal import Codec
from cutting.probe import time_base_of

# Quality and speed of re-encoded video: CRF 18 is visually lossless; the bit rate is capped
# at 1.5x the source's so a noisy picture neither bloats the clip nor breaks the source's
# level. The spliced head is short and on the critical path: a faster preset.
CRF = "18"
SPLICE_PRESET = "superfast"
FULL_PRESET = "veryfast"
_MAX_RATE_OVER_SOURCE = 1.5
# H.264 for browsers from HEVC: the fastest preset, at the CRF that keeps PSNR >= 40 dB
# against the source on a noise-heavy 1080p picture (ultrafast: CRF 18 gave 39.6 dB, CRF 16
# 41.5 dB, min 41.0; the slower presets gave less at CRF 18). H.264 needs about twice
# HEVC's rate for the same picture: the cap is 3x the source's.
WEB_PRESET = "ultrafast"
WEB_CRF = "16"
_WEB_MAX_RATE_OVER_SOURCE = 3.0
# What every browser decodes: 8-bit 4:2:0 High profile.
WEB_PIX_FMT = "yuv420p"

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
    vui: dict[str, object]  # colour description and aspect ratio, as the source signals them
    options: dict[str, str] = field(default_factory=dict)
    level: int = 0

    @property
    def encoder_name(self) -> str:
        return _ENCODERS[self.codec]

    def open(self) -> VideoCodecContext:
        encoder = av.CodecContext.create(self.encoder_name, "w")
        assert isinstance(encoder, VideoCodecContext), f"{self.encoder_name} is a video encoder"
        return self.open_as(encoder)

    def open_as(self, encoder: VideoCodecContext) -> VideoCodecContext:
        """Configure and open ``encoder`` (one created here or an output stream's)."""
        encoder.width, encoder.height, encoder.pix_fmt = self.width, self.height, self.pix_fmt
        encoder.time_base = self.time_base
        encoder.framerate = self.frame_rate
        encoder.flags |= Flags.global_header
        encoder.thread_count = 0
        if self.level:
            encoder.level = self.level
        for name, value in self.vui.items():
            setattr(encoder, name, value)
        encoder.options = dict(self.options)
        try:
            encoder.open()
        except av.FFmpegError as exc:
            raise CutError(
                f"cannot open the {encoder.name} encoder for this source ({exc})"
            ) from exc
        return encoder


def splice_settings(codec: Codec, source: VideoStream, parameter_set_id: int) -> EncoderSettings:
    """An encoder whose pictures can be spliced into ``source``'s own bitstream."""
    context = source.codec_context
    level = context.level if context.level and context.level > 0 else 0
    if codec is Codec.H264:
        profile = _X264_PROFILES.get(context.profile or "")
        params = [f"sps-id={parameter_set_id}", "keyint=infinite"]
    else:
        profile = _X265_PROFILES.get(context.profile or "")
        params = ["open-gop=0", "repeat-headers=0", "info=0"]
        params += [f"level-idc={level / 30:g}"] if level else []
    if profile is None:
        raise CutError(f"cannot re-encode {codec.value} profile {context.profile!r} to splice")
    params += ["bframes=0", "scenecut=0", *_rate_cap(source)]
    options = _options(codec, SPLICE_PRESET, params) | {"profile": profile}
    return _settings(codec, source, options, level if codec is Codec.H264 else 0)


def full_settings(codec: Codec, source: VideoStream) -> EncoderSettings:
    """An ordinary encoder for a whole clip, in the source's codec."""
    return _settings(codec, source, _options(codec, FULL_PRESET, _rate_cap(source)), level=0)


def web_settings(source: VideoStream) -> EncoderSettings:
    """An H.264 encoder for a whole clip that every browser plays, whatever the source."""
    options = _options(Codec.H264, WEB_PRESET, _rate_cap(source, _WEB_MAX_RATE_OVER_SOURCE))
    options |= {"profile": "high", "crf": WEB_CRF}
    settings = _settings(Codec.H264, source, options, level=0)
    return replace(settings, pix_fmt=WEB_PIX_FMT)


def _options(codec: Codec, preset: str, params: list[str]) -> dict[str, str]:
    if codec is Codec.HEVC:
        params = [*params, "log-level=error"]
    name = "x264-params" if codec is Codec.H264 else "x265-params"
    return {"crf": CRF, "preset": preset, name: ":".join(params)}


def _rate_cap(source: VideoStream, over_source: float = _MAX_RATE_OVER_SOURCE) -> list[str]:
    """x264/x265 VBV parameters (kbit/s) capping the rate relative to the source's."""
    container = source.container
    container_rate = container.bit_rate if isinstance(container, InputContainer) else None
    bit_rate = source.bit_rate or container_rate
    if not bit_rate:
        return []
    max_rate = round(bit_rate * over_source / 1000)
    return [f"vbv-maxrate={max_rate}", f"vbv-bufsize={2 * max_rate}"]


def _settings(
    codec: Codec, source: VideoStream, options: dict[str, str], level: int
) -> EncoderSettings:
    context = source.codec_context
    if context.pix_fmt is None:
        raise CutError("the source's video has no known pixel format")
    vui: dict[str, object] = {
        "color_range": context.color_range,
        "color_primaries": context.color_primaries,
        "color_trc": context.color_trc,
        "colorspace": context.colorspace,
    }
    if context.sample_aspect_ratio:
        vui["sample_aspect_ratio"] = context.sample_aspect_ratio
    return EncoderSettings(
        codec=codec,
        width=context.width,
        height=context.height,
        pix_fmt=context.pix_fmt,
        time_base=time_base_of(source),
        frame_rate=source.average_rate or source.guessed_rate or Fraction(30),
        vui=vui,
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
