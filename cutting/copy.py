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

from cutting.errors import CutError


def stream_copy(source: Path, keyframe: float, end: float, output: Path) -> None:
    """Copy ``[keyframe, end)`` (seconds of the recording) of every stream into ``output``."""
    recording = ffmpeg.input(str(source), ss=f"{keyframe:.6f}", t=f"{end - keyframe:.6f}")
    command = (
        ffmpeg.output(
            recording["v:0"], recording["a?"], str(output), c="copy", movflags="+faststart"
        )
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
        .overwrite_output()
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        command.run(cmd=imageio_ffmpeg.get_ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        output.unlink(missing_ok=True)
        detail = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise CutError(f"ffmpeg failed to copy the clip: {detail[0]}") from exc
