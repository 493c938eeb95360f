"""Starting and stopping the stack's processes; pid files make ``down`` work from any shell."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from stack.config import STACK_MARKER

STOP_GRACE_S = 10.0


class StartupError(RuntimeError):
    """A stack process died or did not become ready; the message points at its log."""


class Supervisor:
    """Processes of one stack, each in its own process group, logged to ``logs/NAME.log``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.run_dir = state_dir / "run"
        self.log_dir = state_dir / "logs"

    def start(
        self, name: str, command: list[str], env: dict[str, str], cwd: Path
    ) -> subprocess.Popen:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        order = len(list(self.run_dir.glob("*.pid")))
        (self.run_dir / f"{order:02d}-{name}.pid").write_text(str(process.pid))
        return process

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def running(self) -> dict[str, int]:
        """Name -> pid of the started processes that are still alive."""
        alive = {}
        for pid_file in sorted(self.run_dir.glob("*.pid")):
            pid = int(pid_file.read_text())
            if _is_alive(pid):
                alive[pid_file.stem.split("-", 1)[1]] = pid
        return alive

    def stop(self, name: str, *, kill: bool = False) -> None:
        """Stop one started process and its group by name; ``kill``: SIGKILL, no grace."""
        for pid_file in self.run_dir.glob(f"*-{name}.pid"):
            pid = int(pid_file.read_text())
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            else:
                _stop_group(pid)
            pid_file.unlink()

    def stop_all(self) -> list[str]:
        """Stop every process of this stack, newest first, then any descendant left over.

        Descendants are found by the marker variable they inherit, so a flow process whose
        worker was killed alone (it keeps running, as it would on a NAS host) is stopped too.
        """
        stopped = []
        for pid_file in sorted(self.run_dir.glob("*.pid"), reverse=True):
            pid = int(pid_file.read_text())
            if _is_alive(pid):
                _stop_group(pid)
                stopped.append(pid_file.stem.split("-", 1)[1])
            pid_file.unlink()
        for pid in marked_processes(str(self.state_dir)):
            _stop_group(pid)
            stopped.append(f"pid {pid}")
        return stopped


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return False


def _stop_group(pid: int) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it if it outlives the grace period."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and _is_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def marked_processes(state_dir: str) -> list[int]:
    """Live processes (other than this one) carrying the marker of the stack in ``state_dir``."""
    return processes_with_env(f"{STACK_MARKER}={state_dir}")


def flow_processes(flow_run_id: str) -> list[int]:
    """A flow run's process and its children (ffmpeg), by the variable the worker sets."""
    return processes_with_env(f"PREFECT__FLOW_RUN_ID={flow_run_id}")


def kill_flow_processes(flow_run_id: str) -> list[int]:
    """SIGKILL a flow run's processes until none is left (a child may be starting meanwhile)."""
    killed: set[int] = set()
    deadline = time.monotonic() + 5.0
    while (pids := flow_processes(flow_run_id)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.05)
    return sorted(killed)


def flow_run_id_of(pid: int) -> str | None:
    """The flow run a process works for (``PREFECT__FLOW_RUN_ID``), if any and if alive."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(b"PREFECT__FLOW_RUN_ID="):
            return entry.split(b"=", 1)[1].decode()
    return None


def processes_with_env(entry: str) -> list[int]:
    """Live processes (other than this one) whose environment holds ``NAME=value``."""
    wanted = entry.encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0") and _is_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def wait_until(
    ready: Callable[[], bool],
    what: str,
    process: subprocess.Popen,
    log: Path,
    timeout: float = 60.0,
) -> None:
    """Poll ``ready`` until true; fail early, showing the log's tail, if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartupError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        if ready():
            return
        time.sleep(0.2)
    raise StartupError(f"{what} not ready after {timeout:.0f} s:\n{_tail(log)}")


def http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def port_open(host: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            return sock.connect_ex((host, port)) == 0

    return check


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
