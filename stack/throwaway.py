"""Stacks of their own for benchmarks and tests: free ports, a temporary directory and, for
the production shape, a throwaway PostgreSQL database."""

import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from stack.config import StackConfig
from stack.lifecycle import Stack
from stack.postgres import create_database, drop_database


@contextmanager
def on_database(config: StackConfig, database: str) -> Iterator[StackConfig]:
    """``config`` with its Prefect server on ``database``: ``sqlite`` (the default, in the
    state directory) or ``postgresql`` (a new database, dropped afterwards)."""
    if database == "sqlite":
        yield config
        return
    name = f"clipping_{uuid.uuid4().hex[:12]}"
    try:
        yield config.model_copy(update={"prefect_database_url": create_database(name)})
    finally:
        drop_database(name)


@contextmanager
def bench_stack(name: str, database: str) -> Iterator[Stack]:
    """A whole stack, up inside the block, always down (and its database dropped) after.

    SIGTERM (a timeout, an operator) still unwinds it. Pub/Sub is the default emulator
    (``CLIPPING_PUBSUB_EMULATOR``), so a bench measures what ``make up`` runs.
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as state,
        on_database(StackConfig.on_free_ports(Path(state)), database) as config,
        config.activated(),
    ):
        stack = Stack(config)
        try:
            stack.up()
            yield stack
        finally:
            stack.down()
