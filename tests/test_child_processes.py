"""A cut's child processes do not outlive a flow process killed outright (SIGKILL)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.waiting import wait_for

pytestmark = pytest.mark.integration

# Bounds on waiting for the kernel, far above what it needs: not a speed requirement.
PATIENCE_S = 30.0
CHILD = """
from cutting.children import run_child
run_child(["sleep", "600"])
"""


def children_of(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    found: list[int] = []
    for task in tasks.iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_child_dies_with_the_process_that_ran_it() -> None:
    parent = subprocess.Popen([sys.executable, "-c", CHILD])
    try:
        # Killed at any moment, from the fork on: the child may be between fork and exec.
        wait_for(lambda: children_of(parent.pid), "the child to start", PATIENCE_S)
        (child,) = children_of(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for(lambda: not is_alive(child), f"child {child} to die", PATIENCE_S)
    finally:
        parent.kill()
        parent.wait()
