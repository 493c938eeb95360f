"""Poster frame: a JPEG of a clip's first frame, shown before the clip plays."""

from fractions import Fraction
from pathlib import Path

import av

from cutting.errors import CutError

_JPEG_QUALITY = 3  # mjpeg qscale: 2 (best) .. 31


def write_poster(clip: Path, output: Path) -> Path:
    """Write the first frame of ``clip`` to ``output`` as a JPEG and return ``output``."""
    try:
        with av.open(str(clip)) as container:
            frame = next(container.decode(video=0), None)
            if frame is None:
                raise CutError(f"cannot make a poster: {clip} has no decodable frame")
            jpeg = _encode_jpeg(frame)
    except av.FFmpegError as exc:
        raise CutError(f"cannot make a poster from {clip} ({exc})") from exc
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(jpeg)
    return output


def _encode_jpeg(frame: av.VideoFrame) -> bytes:
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = frame.time_base or Fraction(1)
    encoder.qmin = encoder.qmax = _JPEG_QUALITY
    image = frame.reformat(format="yuvj420p")
    image.pts = 0
    packets = [*encoder.encode(image), *encoder.encode(None)]
    return b"".join(bytes(packet) for packet in packets)
