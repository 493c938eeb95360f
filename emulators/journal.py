"""An append-only journal of JSON records, rewritten atomically when compacted.

``emulators.pubsub`` writes each change of its state here before it answers the call that made
it. A record is one line, written by one ``write()``: a process killed with SIGKILL loses no
record whose ``write()`` returned, since the data is already in the page cache, so no fsync is
needed (a crash of the machine itself is not a case the emulator covers). A kill in the middle of
a ``write()`` can leave a torn last line, which reading drops. Compaction writes the records that
rebuild the current state to a temporary file and renames it over the journal, so a kill at any
point leaves either the old journal or the new one.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Record = dict[str, Any]

_LOCK_WAIT_S = 10.0  # longest a start waits for a stopped emulator to release the data dir


class Journal:
    """The journal file ``journal.jsonl`` of a data directory, which it holds exclusively."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "journal.jsonl"
        self.appended = 0
        """Records appended since the journal was last rewritten."""
        self._lock = _lock(data_dir / "journal.lock")
        self._fd: int | None = None

    def read(self) -> list[Record]:
        """The records on file, oldest first, without a torn last line."""
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().splitlines(keepends=True)
        return [json.loads(line) for line in lines if line.endswith(b"\n")]

    def append(self, *records: Record) -> None:
        """Write the records through; call :meth:`rewrite` once before the first append."""
        assert self._fd is not None, "rewrite the journal before appending to it"
        data = b"".join(map(_line, records))
        while data:  # a regular file takes it all at once unless the disk is full
            data = data[os.write(self._fd, data) :]
        self.appended += len(records)

    def rewrite(self, records: Iterable[Record]) -> None:
        """Replace the journal with these records, atomically."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as file:
            file.writelines(map(_line, records))
        os.replace(temporary, self.path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.appended = 0

    def close(self) -> None:
        """Close the journal and release the data directory."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        os.close(self._lock)


def _lock(path: Path) -> int:
    """Hold the data dir: two emulators appending to one journal would mix their states.

    The kernel releases the lock when its holder dies, even by SIGKILL, but only once the process
    is gone, which may be just after the signal was sent, so a restart waits a little for it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    give_up = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > give_up:
                os.close(fd)
                raise OSError(f"{path.parent} is in use by another emulator") from None
            time.sleep(0.05)


def _line(record: Record) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"
