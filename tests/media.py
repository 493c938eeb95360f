"""Small generated recordings whose every frame shows its own number, and ways to read them back.

The top half of each picture is a 14-bit binary code of the frame number (one block per
bit, black or white), so a decoded clip tells which source frames it holds, whatever its
timestamps say. The bottom half moves, so encoders produce real P- and B-frames.
"""

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import av
import imageio_ffmpeg

WIDTH, HEIGHT, FPS = 192, 108, 30
CODE_BITS = 14
_BIT = f"mod(floor(N/pow(2,floor(X*{CODE_BITS}/W))),2)"  # bit number X*CODE_BITS/W of N
_CODE = f"if(lt(Y,{HEIGHT // 2}),16+200*{_BIT},mod(X+Y+N*7,200)+28)"


@dataclass(frozen=True)
class SourceSpec:
    """What to generate: container, codec and GOP structure, audio tracks, length."""

    container: str = "mp4"
    codec: str = "h264"
    gop_seconds: float = 2.0
    bframes: int = 3
    open_gop: bool = False
    audio_tracks: int = 1
    seconds: float = 12.0
    ts_offset: float = 0.0

    @property
    def name(self) -> str:
        gop = "open" if self.open_gop else "closed"
        return (
            f"{self.codec}-gop{self.gop_seconds:g}-b{self.bframes}-{gop}-a{self.audio_tracks}"
            f"-{self.seconds:g}s-off{self.ts_offset:g}.{self.container}"
        )


def ffmpeg(*args: str) -> None:
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    subprocess.run([*command, "-y", *args], check=True)


def make_source(directory: Path, spec: SourceSpec) -> Path:
    """Generate ``spec`` in ``directory`` (once) and return its path: a finished recording
    (``written_long_ago``)."""
    path = directory / spec.name
    if not path.exists():
        ffmpeg(*recording_args(spec), str(path))
        written_long_ago(path)
    return path


def written_long_ago(path: Path) -> Path:
    """``path`` with its mtime an hour back: a finished file, not one still being written
    (a fresh file counts as growing for ``CLIPPING_LIVE_IDLE_SECONDS``)."""
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    return path


# A recorder that writes as it goes: every packet flushed, MP4 as fragments (one per GOP).
LIVE_ARGS = ["-flush_packets", "1"]
LIVE_MP4_ARGS = ["-movflags", "+frag_keyframe+empty_moov+default_base_moof"]


def start_recorder(path: Path, spec: SourceSpec) -> subprocess.Popen[bytes]:
    """Record ``spec`` into ``path`` at real time, as a live recorder does; returns the process."""
    container_args = LIVE_MP4_ARGS if spec.container == "mp4" else []
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    args = recording_args(spec, realtime=True)
    return subprocess.Popen([*command, "-y", *args, *LIVE_ARGS, *container_args, str(path)])


def recording_args(spec: SourceSpec, *, realtime: bool = False) -> list[str]:
    """ffmpeg arguments generating ``spec`` (inputs, maps and codecs; no output name)."""
    video = f"color=c=black:s={WIDTH}x{HEIGHT}:r={FPS},format=gray,geq=lum='{_CODE}',format=yuv420p"
    pace = ["-re"] if realtime else []
    inputs = [*pace, "-f", "lavfi", "-i", video]
    for track in range(spec.audio_tracks):
        inputs += [*pace, "-f", "lavfi", "-i", f"sine=f={440 * (track + 1)}:r=48000"]
    maps = [arg for track in range(spec.audio_tracks + 1) for arg in ("-map", f"{track}:0")]
    gop = round(spec.gop_seconds * FPS)
    if spec.codec == "h264":
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={spec.bframes}:b-adapt=0"
        params += ":open-gop=1" if spec.open_gop else ""
        video_codec = ["-c:v", "libx264", "-preset", "veryfast", "-x264-params", params]
    else:
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={spec.bframes}:b-adapt=0"
        params += f":open-gop={int(spec.open_gop)}:log-level=error"
        video_codec = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", params]
    offset = ["-output_ts_offset", f"{spec.ts_offset}"] if spec.ts_offset else []
    return [
        *inputs,
        *maps,
        "-t",
        f"{spec.seconds}",
        *video_codec,
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        *offset,
    ]


@dataclass(frozen=True)
class DecodedFrame:
    seconds: float
    number: int


def decoded_frames(path: Path) -> list[DecodedFrame]:
    """Every video frame of ``path`` in display order: its timestamp and the number it shows."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [
            DecodedFrame(float(frame.pts * stream.time_base), frame_number(frame))
            for frame in container.decode(stream)
        ]


def frame_number(frame: av.VideoFrame) -> int:
    plane = frame.planes[0]
    row = bytes(plane)[(frame.height // 4) * plane.line_size :][: frame.width]
    bits = [row[int((bit + 0.5) * frame.width / CODE_BITS)] > 128 for bit in range(CODE_BITS)]
    return sum(1 << bit for bit, on in enumerate(bits) if on)


def first_audio_seconds(path: Path) -> list[float]:
    """Per audio track, the time of its first decoded sample (edit lists applied)."""
    with av.open(str(path)) as container:
        starts = []
        for stream in container.streams.audio:
            frame = next(container.decode(stream))
            starts.append(float(frame.pts * stream.time_base))
            container.seek(0)
        return starts
