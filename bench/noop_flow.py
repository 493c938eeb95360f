"""The orchestration floor: a flow that does nothing, deployed by ``bench/e2e.py``.

It runs on ``nas-pool`` with the job variables of ``clip-hand``, so the time from creating
one of its runs to ``Completed`` is what Prefect itself costs: the worker's pickup, the
flow process's start and the engine's state changes.
"""

from prefect import flow


@flow(name="noop")
def noop() -> None:
    return None
