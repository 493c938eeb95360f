"""``copy`` mode: ffmpeg stream copy from the keyframe at or before the start (fastest).

The keyframe is found with PyAV (``cutting.probe``), which seeks MPEG-TS reliably, and
ffmpeg seeks the input to exactly that time, so the work does not grow with the start
position and the clip starts with a complete GOP. The end is not exact: with B-frames the
last reference picture after the end is kept. The ffmpeg binary is the one shipped by the
``imageio-ffmpeg`` wheel.
"""

from pathlib import Path

import ffmpeg
import imageio_ffmpeg

from clipping.nas import OpenRecording
from cutting.children import run_child
from cutting.errors import CutError


def stream_copy(
    source: OpenRecording, keyframe: float, end: float, output: Path, *, hevc: bool
) -> None:
    """Copy ``[keyframe, end)`` (seconds of the recording) of every stream into ``output``;
    HEVC is tagged ``hvc1`` (what Apple's players want)."""
    recording = ffmpeg.input(str(source.path), ss=f"{keyframe:.6f}", t=f"{end - keyframe:.6f}")
    tag = {"tag:v": "hvc1"} if hevc else {}
    command = (
        ffmpeg.output(
            recording["v:0"], recording["a?"], str(output), c="copy", movflags="+faststart", **tag
        )
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
        .overwrite_output()
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    # ffmpeg reads the opened recording, never its name: it inherits the descriptor under
    # the same number, so ``source.path`` (/proc/self/fd/N) is the same file in the child.
    finished = run_child(
        command.compile(cmd=imageio_ffmpeg.get_ffmpeg_exe()),
        capture_output=True,
        pass_fds=(source.fd,),
        check=False,
    )
    if finished.returncode != 0:
        output.unlink(missing_ok=True)
        detail = finished.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise CutError(f"ffmpeg failed to copy the clip: {(detail or ['no output'])[0]}")
