"""Clips of recordings still being written, and of recordings cut short (a writer that died).

In process, without waiting: the cut's clock is the test's, and each of its sleeps appends
the next bytes of a finished recording (a recorder writing as it goes, cut anywhere, even
mid-packet). With real recorders (ffmpeg at real time, flushing every packet) into TS, MKV
and fragmented MP4: a request whose end is seconds ahead of the recorder comes out exact;
a recorder killed mid-range gives a clip clamped to its last good frame. Truncated files
(TS, faststart MP4) never give a corrupt or silently short clip.
"""

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from clipping.messages import ClipMode
from cutting import CutClip, CutError, cut_clip
from cutting.recorded import LiveWait
from tests.clip_checks import AAC_FRAME, FRAME, assert_exact, clean_frames, source_frames
from tests.media import SourceSpec, ffmpeg, make_source, start_recorder, written_long_ago

GROWING_KINDS = [
    pytest.param(SourceSpec(container="ts", ts_offset=10), id="ts"),
    pytest.param(SourceSpec(container="mkv"), id="mkv"),
    pytest.param(SourceSpec(container="mp4"), id="fragmented-mp4"),
]
# Real time, and generous: the wait ends when the range is on disk, not when this runs out.
REAL_WAIT = LiveWait(wait_seconds=120, idle_seconds=3, poll_seconds=0.1)


pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nas_root_is_pytest_tmp")]


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live-sources")


def finished_recording(sources: Path, spec: SourceSpec) -> Path:
    """``spec`` recorded the way a live recorder writes it (MP4 as fragments)."""
    source = make_source(sources, spec)
    if spec.container != "mp4":
        return source
    fragmented = sources / f"fragmented-{source.name}"
    if not fragmented.exists():
        movflags = "+frag_keyframe+empty_moov+default_base_moof"
        ffmpeg("-i", str(source), "-map", "0", "-c", "copy", "-movflags", movflags, str(fragmented))
    return fragmented


class AppendingRecorder:
    """Writes a recording's bytes a chunk per sleep of the cut; the cut's clock is its own."""

    def __init__(self, path: Path, data: bytes, written: float, chunk: float) -> None:
        self.path, self._data = path, data
        self._written = round(len(data) * written)
        self._chunk = max(1, round(len(data) * chunk))
        self.now = 0.0
        path.write_bytes(data[: self._written])

    def live(self, *, wait_seconds: float = 600, idle_seconds: float = 5) -> LiveWait:
        return LiveWait(
            wait_seconds=wait_seconds,
            idle_seconds=idle_seconds,
            poll_seconds=1.0,
            monotonic=lambda: self.now,
            sleep=self.sleep,
        )

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self._written < len(self._data):
            with self.path.open("ab") as file:
                file.write(self._data[self._written : self._written + self._chunk])
            self._written += self._chunk

    def stop(self) -> None:
        """The recorder dies: nothing more is written."""
        self._data = self._data[: self._written]


@pytest.mark.parametrize("spec", GROWING_KINDS)
@pytest.mark.parametrize("mode", [ClipMode.ACCURATE, ClipMode.COPY])
def test_a_range_not_recorded_yet_is_cut_once_it_is_on_disk(
    sources: Path, tmp_path: Path, spec: SourceSpec, mode: ClipMode
) -> None:
    finished = finished_recording(sources, spec)
    recorder = AppendingRecorder(tmp_path / finished.name, finished.read_bytes(), 0.2, 0.04)
    phases: list[str] = []
    clip = cut_clip(
        recorder.path,
        6.2,
        9.5,
        mode,
        tmp_path / "clip.mp4",
        on_phase=phases.append,
        live=recorder.live(),
    )
    assert phases[0].startswith("waiting for the recording to reach 0:09.500 (recorded up to ")
    assert not clip.clamped
    if mode is ClipMode.ACCURATE:
        assert_exact(clip, finished, 6.2, 9.5)
    else:
        assert_covers(clip, finished, 6.2, 9.5)


def assert_covers(clip: CutClip, source: Path, start: float, end: float) -> None:
    """A copy-mode clip: clean, every frame from the keyframe at or before START through
    the last before END (after END, copy keeps reference pictures, not every frame)."""
    recorded = {frame.number: frame.seconds for frame in source_frames(source)}
    numbers = [frame.number for frame in clean_frames(clip.path)]
    before_end = [number for number in numbers if recorded[number] < end - 1e-3]
    assert before_end == list(range(numbers[0], numbers[0] + len(before_end)))
    assert recorded[numbers[0]] <= start + 1e-3
    assert recorded[before_end[-1]] >= end - 1 / 30 - 1e-3


def test_a_recording_that_grows_too_slowly_fails_saying_how_far_it_got(
    sources: Path, tmp_path: Path
) -> None:
    finished = finished_recording(sources, SourceSpec(container="ts", ts_offset=10))
    recorder = AppendingRecorder(tmp_path / "slow.ts", finished.read_bytes(), 0.2, 0.001)
    pattern = (
        r"still being written but reached only 0:0\d\.\d{3} after 30s of waiting for 0:09\.500 "
        r"\(CLIPPING_LIVE_WAIT_SECONDS=30\)"
    )
    with pytest.raises(CutError, match=pattern):
        cut_clip(
            recorder.path,
            6.2,
            9.5,
            ClipMode.ACCURATE,
            tmp_path / "clip.mp4",
            live=recorder.live(wait_seconds=30),
        )
    assert not (tmp_path / "clip.mp4").exists()


@pytest.mark.parametrize("spec", GROWING_KINDS)
def test_a_recording_that_stops_mid_range_is_clamped_to_its_last_good_frame(
    sources: Path, tmp_path: Path, spec: SourceSpec
) -> None:
    finished = finished_recording(sources, spec)
    recorder = AppendingRecorder(tmp_path / finished.name, finished.read_bytes(), 0.55, 0.01)
    recorder.stop()
    clip = cut_clip(
        recorder.path, 4.2, 9.5, ClipMode.ACCURATE, tmp_path / "clip.mp4", live=recorder.live()
    )
    assert_clamped_to_good_frames(clip, finished, 4.2)


def assert_clamped_to_good_frames(clip: CutClip, finished: Path, start: float) -> None:
    """Clamped with a reason, and exact from START to the clip's (clamped) end; where a
    recording stops, its sound may end up to a frame before its pictures."""
    assert clip.clamp_reason is not None
    said = re.match(r"the recording ends at [\d:.]+ \(([\d.]+)s\)", clip.clamp_reason)
    assert said is not None, clip.clamp_reason
    assert float(said[1]) == pytest.approx(clip.end_seconds, abs=FRAME)
    assert clip.end_seconds - start > 1.0  # most of what was recorded is there
    assert_exact(clip, finished, start, clip.end_seconds - FRAME / 2, audio_slack=AAC_FRAME + FRAME)


@pytest.mark.parametrize("mode", list(ClipMode))
@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(SourceSpec(container="ts", ts_offset=10, seconds=20), id="ts"),
        pytest.param(SourceSpec(seconds=20), id="faststart-mp4"),
    ],
)
def test_a_truncated_recording_gives_a_clamped_clip_without_a_corrupt_frame(
    sources: Path, tmp_path: Path, spec: SourceSpec, mode: ClipMode
) -> None:
    finished = make_source(sources, spec)
    if spec.container == "mp4":  # the index first, as a faststart file: it lists every frame
        faststart = tmp_path / "faststart.mp4"
        ffmpeg(
            "-i",
            str(finished),
            "-map",
            "0",
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            str(faststart),
        )
        finished = faststart
    data = finished.read_bytes()
    truncated = tmp_path / f"truncated.{spec.container}"
    truncated.write_bytes(data[: round(len(data) * 0.6)])
    written_long_ago(truncated)  # its writer died long ago
    clip = cut_clip(truncated, 9.0, 16.0, mode, tmp_path / "clip.mp4")
    assert clip.end_seconds < 13.0
    if mode is ClipMode.COPY:
        assert clip.clamp_reason is not None
        assert_covers(clip, finished, 9.0, clip.end_seconds)
    else:
        assert_clamped_to_good_frames(clip, finished, 9.0)


@pytest.mark.parametrize("spec", GROWING_KINDS)
def test_a_clip_ahead_of_a_real_recorder_is_exact(
    tmp_path: Path, sources: Path, spec: SourceSpec
) -> None:
    spec = SourceSpec(container=spec.container, ts_offset=spec.ts_offset, seconds=6)
    path = tmp_path / spec.name
    with recording(path, spec):
        clip = cut_clip(path, 1.1, 4.0, ClipMode.ACCURATE, tmp_path / "clip.mp4", live=REAL_WAIT)
    # The recorder has finished: the clip is compared with what it recorded.
    assert not clip.clamped
    assert_exact(clip, path, 1.1, 4.0)


def test_a_real_recorder_killed_mid_range_gives_a_clamped_clip(tmp_path: Path) -> None:
    spec = SourceSpec(container="ts", ts_offset=10, seconds=60)
    path = tmp_path / spec.name
    live = LiveWait(wait_seconds=120, idle_seconds=1, poll_seconds=0.1)
    with recording(path, spec) as recorder, ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            cut_clip, path, 0.5, 30.0, ClipMode.ACCURATE, tmp_path / "clip.mp4", live=live
        )
        wait_for_recorded_bytes(path, 60_000)
        recorder.send_signal(signal.SIGKILL)  # a crash: whatever was half written stays
        clip = future.result()
    assert_clamped_to_good_frames(clip, path, 0.5)


def wait_for_recorded_bytes(path: Path, size: int) -> None:
    while not path.exists() or path.stat().st_size < size:
        time.sleep(0.05)


@contextmanager
def recording(path: Path, spec: SourceSpec) -> Iterator[subprocess.Popen[bytes]]:
    """A real recorder writing ``spec`` into ``path`` (once it has begun); waits for it to
    finish on exit, or kills it if the block failed."""
    recorder = start_recorder(path, spec)
    try:
        wait_for_recorded_bytes(path, 1)
        yield recorder
    except BaseException:
        recorder.kill()
        raise
    finally:
        recorder.wait()
