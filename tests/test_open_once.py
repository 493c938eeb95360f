"""The recording is opened once and the opened file is what is checked and read (issue 12).

A name inside a NAS root can be swapped for a symlink to a file outside it at any moment:
between the request's validation and the cut, and between the cut's own open and any later
reader (PyAV's demuxers, the ffmpeg child of ``copy`` mode). The outside recording here is
told apart by what it holds: two audio tracks (the inside one has one) and 4 s instead of
12 s, so a clip from it cannot pass for a clip of the inside one.
"""

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import av.container
import pytest

import cutting.cut
from clipping.messages import ClipMode, ClipRequest
from clipping.nas import OutsideNasRoots, RecordingRefused, open_recording
from cutting import CutClip, CutError, SourceUnavailable, cut_clip, probe
from tests.media import SourceSpec, make_source

pytestmark = pytest.mark.integration

INSIDE = SourceSpec(seconds=12, audio_tracks=1)
OUTSIDE = SourceSpec(seconds=4, audio_tracks=2)
# A range the outside recording does not even have: reading it can never yield this clip.
START, END = 5.0, 6.0
RACING_CUTS = 32


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("open-once-media")
    make_source(directory, INSIDE)
    make_source(directory, OUTSIDE)
    return directory


@pytest.fixture
def outside(media: Path, tmp_path: Path) -> Path:
    """A recording outside the NAS root (``tmp_path/nas``)."""
    path = tmp_path / "elsewhere" / "secret.mp4"
    path.parent.mkdir()
    os.link(make_source(media, OUTSIDE), path)
    return path


@pytest.fixture
def recording(media: Path, nas_root: Path) -> Path:
    """The name requests use: a real recording inside the NAS root."""
    path = nas_root / "table-1.mp4"
    os.link(make_source(media, INSIDE), path)
    return path


def swap_to_symlink(name: Path, target: Path) -> None:
    """Atomically replace ``name`` by a symlink to ``target`` (a reader sees one or the other)."""
    staged = name.with_name(name.name + ".link")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, name)


def swap_to_file(name: Path, real: Path) -> None:
    """Atomically replace ``name`` by a hard link to ``real``, a regular file entry."""
    staged = name.with_name(name.name + ".file")
    staged.unlink(missing_ok=True)
    os.link(real, staged)
    os.replace(staged, name)


def cut(source: Path, output: Path, mode: ClipMode = ClipMode.ACCURATE) -> CutClip:
    return cut_clip(source, START, END, mode, output)


def assert_inside_clip(clip: CutClip) -> None:
    """One audio track, and a range the outside recording does not reach."""
    assert probe(clip.path).audio_codecs == ("aac",)
    assert clip.end_seconds > START
    assert not clip.clamped


def test_a_name_swapped_after_validation_is_refused(
    recording: Path, outside: Path, tmp_path: Path
) -> None:
    request = ClipRequest(
        request_id="r1",
        hand_id="h1",
        nas_video_path=str(recording),
        start_seconds=START,
        end_seconds=END,
    )
    swap_to_symlink(recording, outside)
    with pytest.raises(CutError, match="resolves outside the NAS roots") as refused:
        cut(Path(request.nas_video_path), tmp_path / "clip.mp4")
    assert not refused.value.retryable
    assert not (tmp_path / "clip.mp4").exists()


@pytest.mark.parametrize("mode", [ClipMode.ACCURATE, ClipMode.COPY, ClipMode.REENCODE])
def test_a_name_swapped_after_the_open_does_not_change_what_is_read(
    recording: Path,
    outside: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: ClipMode,
) -> None:
    """Every reader (demuxers, audio, the ffmpeg child) comes after the swap."""
    original = cutting.cut.open_media
    swaps = []

    @contextlib.contextmanager
    def swap_then_open(
        path: Path, name: str | None = None
    ) -> Iterator[av.container.InputContainer]:
        swap_to_symlink(recording, outside)
        swaps.append(path)
        with original(path, name) as container:
            yield container

    monkeypatch.setattr(cutting.cut, "open_media", swap_then_open)
    clip = cut(recording, tmp_path / "clip.mp4", mode)
    assert swaps, "the swap did not run"
    assert recording.resolve() == outside
    assert_inside_clip(clip)


def test_racing_swaps_never_ship_the_outside_file(
    recording: Path, outside: Path, media: Path, tmp_path: Path
) -> None:
    """The finding's reproduction: the name flips between the recording and a symlink out."""
    real = make_source(media, INSIDE)
    cuts_done = threading.Event()
    swaps = 0

    def keep_swapping() -> None:
        nonlocal swaps
        while not cuts_done.is_set():
            swap_to_symlink(recording, outside)
            swap_to_file(recording, real)
            swaps += 2

    swapper = threading.Thread(target=keep_swapping)
    swapper.start()
    clips: list[CutClip] = []
    refusals: list[str] = []
    try:
        for number in range(RACING_CUTS):
            mode = (ClipMode.ACCURATE, ClipMode.COPY)[number % 2]
            try:
                clips.append(cut(recording, tmp_path / f"clip-{number}.mp4", mode))
            except CutError as error:
                refusals.append(str(error))
    finally:
        cuts_done.set()
        swapper.join()
    assert swaps > 0
    assert len(clips) + len(refusals) == RACING_CUTS
    assert all("resolves outside the NAS roots" in reason for reason in refusals), refusals
    for clip in clips:
        assert_inside_clip(clip)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(lambda root: root, "is not a regular file", id="directory"),
        pytest.param(lambda root: root / ("x" * 4000 + ".mp4"), "file name too long", id="long"),
        pytest.param(lambda root: root / "missing.mp4", "not found", id="missing"),
        pytest.param(lambda root: root / "rec.mp4" / "x", "not found", id="file-as-directory"),
    ],
)
def test_file_system_refusals_are_final_and_readable(
    recording: Path, tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    source = make(recording.parent)
    (recording.parent / "rec.mp4").touch()
    with pytest.raises(CutError, match=reason) as refused:
        cut(source, tmp_path / "clip.mp4")
    assert not refused.value.retryable
    assert len(str(refused.value)) < 300


def test_symlink_loop_is_refused(nas_root: Path, tmp_path: Path) -> None:
    loop = nas_root / "loop.mp4"
    loop.symlink_to(loop)
    with pytest.raises(CutError, match="too many symlinks"):
        cut(loop, tmp_path / "clip.mp4")


def test_a_fifo_is_refused_without_waiting_for_a_writer(nas_root: Path, tmp_path: Path) -> None:
    fifo = nas_root / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(CutError, match="is not a regular file"):
        cut(fifo, tmp_path / "clip.mp4")


@pytest.mark.parametrize(
    ("code", "reason", "retryable"),
    [
        # Simulated: the tests may run as root, who reads files whatever their mode.
        pytest.param(errno.EACCES, "permission denied", False, id="permission-denied"),
        pytest.param(errno.EIO, "Input/output error", True, id="io-error"),
    ],
)
def test_open_errors_say_whether_to_retry(
    recording: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    reason: str,
    retryable: bool,
) -> None:
    def failing(*_args: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "open", failing)
    with pytest.raises(CutError, match=reason) as failed:
        cut(recording, tmp_path / "clip.mp4")
    assert failed.value.retryable is retryable
    assert isinstance(failed.value, SourceUnavailable) is retryable


def test_a_symlink_inside_the_roots_is_followed(recording: Path, nas_root: Path) -> None:
    alias = nas_root / "alias.mp4"
    alias.symlink_to(recording)
    with open_recording(alias, [nas_root]) as opened:
        assert opened.real_path == recording
        assert opened.name == str(alias)
        assert os.path.samefile(opened.path, recording)


def test_the_descriptor_is_closed_after_use_and_after_a_refusal(
    recording: Path, outside: Path, nas_root: Path
) -> None:
    with open_recording(recording, [nas_root]) as opened:
        fd = opened.fd
    with pytest.raises(OSError):
        os.fstat(fd)
    opened_before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OutsideNasRoots):
        open_recording(outside, [nas_root])
    with pytest.raises(RecordingRefused):
        open_recording(nas_root, [nas_root])
    assert set(os.listdir("/proc/self/fd")) == opened_before
