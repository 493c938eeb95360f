"""Waiting in tests for something to happen, bounded far above what it needs: a bound
that fails a hung component, never a slow one (no test asserts a speed)."""

import time
from collections.abc import Callable

POLL_S = 0.05


def wait_for(condition: Callable[[], object], what: str, patience_s: float) -> float:
    """Seconds until ``condition()`` held; fails, naming ``what``, after ``patience_s``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > patience_s:
            raise AssertionError(f"still waiting for {what} after {patience_s:g} s")
        time.sleep(POLL_S)
    return time.monotonic() - started
