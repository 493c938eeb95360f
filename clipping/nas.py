"""NAS-root confinement: the only way a recording path becomes something we may open.

Two checks, for two moments. ``confine_to_nas_roots`` checks a *name* when a request
arrives. ``open_recording`` opens the recording once and checks the *opened file*: a name
can be swapped for a symlink between any check of it and any later open, so every reader
of a recording reads the descriptor opened here (through ``OpenRecording.path``), never
the name again.
"""

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self


class RecordingRefused(ValueError):
    """The recording cannot be used, and asking again will not change that."""


class OutsideNasRoots(RecordingRefused):
    """The path does not resolve inside any configured NAS root."""


class RecordingUnavailable(OSError):
    """The recording could not be opened for a reason that may pass (an I/O error)."""


# Errors of opening a path that depend only on the path and the file tree: final.
_REFUSAL_REASONS = {
    errno.ENOENT: "not found",
    errno.ENOTDIR: "not found (a parent is not a directory)",
    errno.EISDIR: "is not a regular file",
    errno.EACCES: "is not readable (permission denied)",
    errno.EPERM: "is not readable (permission denied)",
    errno.ENAMETOOLONG: "has a file name too long",
    errno.ELOOP: "has too many symlinks",
}
# Long enough to recognise a path, short enough for a one-line reason.
_SHOWN_PATH_CHARS = 160


def confine_to_nas_roots(path: str, roots: Iterable[Path]) -> Path:
    """Resolve ``path`` (following symlinks) and return it if it lies inside one of ``roots``.

    Symlinks are resolved as far as they exist on this host, so a link that escapes a root
    is refused on any host that can see it, and a purely lexical escape (``..``) is refused
    everywhere, including hosts that do not mount the NAS at all.
    """
    if "\x00" in path:
        raise OutsideNasRoots("nas_video_path contains a NUL byte")
    if not os.path.isabs(path):
        raise OutsideNasRoots("nas_video_path must be an absolute path")
    real = Path(os.path.realpath(path))
    if not _inside(real, roots):
        raise OutsideNasRoots("nas_video_path is outside the configured NAS roots")
    return real


class OpenRecording:
    """A recording opened once and checked: read it only through ``path`` (or ``fd``).

    ``path`` is ``/proc/self/fd/N``: opening it opens the inode behind descriptor N, not a
    name, with a file offset of its own (so several demuxers can read at once). A child
    process sees the same file at the same ``path`` when it inherits the descriptor under
    the same number (``subprocess`` ``pass_fds=(recording.fd,)``). Closed on exit.
    """

    def __init__(self, fd: int, name: str, real_path: Path) -> None:
        self.fd = fd
        self.name = name  # as requested, for messages
        self.real_path = real_path  # what the descriptor really is
        self.path = Path(f"/proc/self/fd/{fd}")

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_recording(path: str | os.PathLike[str], roots: Iterable[Path]) -> OpenRecording:
    """Open ``path`` read-only and return it if it is a regular file inside one of ``roots``.

    Symlinks are followed (a link to another file inside a root is fine): what is checked
    is the file that was opened. ``RecordingRefused`` says why a path can never be read
    (not found, not a regular file, permission denied, name too long, symlink loop, outside
    the roots); ``RecordingUnavailable`` reports any other ``OSError`` (an I/O error on
    the NAS), which may pass.
    """
    name = os.fspath(path)
    # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below);
    # it changes nothing for a regular file, and readers open ``path`` with flags of their own.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    try:
        fd = os.open(name, flags)
    except OSError as exc:
        if exc.errno in _REFUSAL_REASONS:
            raise RecordingRefused(_reason(name, _REFUSAL_REASONS[exc.errno])) from exc
        problem = f"cannot be opened now ({exc.strerror or exc})"
        raise RecordingUnavailable(exc.errno, _reason(name, problem)) from exc
    try:
        return OpenRecording(fd, name, _checked(fd, name, roots))
    except BaseException:
        os.close(fd)
        raise


def _checked(fd: int, name: str, roots: Iterable[Path]) -> Path:
    """The real path of the file open as ``fd``, if it is a regular file inside ``roots``."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise RecordingRefused(_reason(name, "is not a regular file"))
    # The kernel's own name of the open file: absolute, no symlinks, no '..'. It is not
    # resolved again: a symlink planted at that name after the open would make the check
    # about another file than the one read.
    real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    if not _inside(real, roots):
        raise OutsideNasRoots(_reason(name, "resolves outside the NAS roots"))
    return real


def _inside(real: Path, roots: Iterable[Path]) -> bool:
    return any(real.is_relative_to(os.path.realpath(root)) for root in roots)


def _reason(name: str, problem: str) -> str:
    if len(name) > _SHOWN_PATH_CHARS:
        half = _SHOWN_PATH_CHARS // 2
        name = f"{name[:half]}...{name[-half:]} ({len(name)} characters)"
    return f"source recording {problem}: {name}"
