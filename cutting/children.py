"""Child processes of a cut (ffmpeg) die with the flow process that started them.

A flow process is stopped with SIGTERM when its run is cancelled, and with SIGKILL when the
cancel's grace period runs out or a drained agent hands its runs over. SIGTERM unwinds
``subprocess.run``, which kills its child; SIGKILL unwinds nothing, and the child would
keep reading the NAS and writing a clip nobody collects. So every child asks Linux
(``PR_SET_PDEATHSIG``) to be killed when the thread that started it ends: ``run_child``
blocks that thread until the child exits, so the thread ends only with the process.
"""

import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _dying_with(parent: int) -> Callable[[], None]:
    def die_with_parent() -> None:
        """Runs in the child between fork and exec. A parent that died before the request
        took effect would never signal: then the child ends itself."""
        if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return die_with_parent


def run_child(args: Sequence[str], **options: Any) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run(args, **options)``, the child killed if this process dies."""
    return subprocess.run(args, preexec_fn=_dying_with(os.getpid()), **options)
