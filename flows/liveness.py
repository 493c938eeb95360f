"""A flow run's own liveness signal, faster than Prefect's 30 s minimum heartbeat.

While the flow function runs, a daemon thread emits ``clipping.flow-run.alive`` for the
run every ``ALIVE_EVERY``. The automation "clip-hand: crash runs that stopped beating"
(``deployments/automations.py``) marks a run Crashed when neither another beat nor a
final state follows within ``ALIVE_WITHIN``, so a run whose host died is rerun elsewhere
in well under 30 s. The beats stop *before* the flow returns: a last beat after the
final state would open an expectation no later event meets, and flip a finished run to
Crashed (the false positives of Prefect's own heartbeat, PrefectHQ/prefect#18653).
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from prefect import runtime
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.events.worker import EventsWorker

ALIVE_EVENT = "clipping.flow-run.alive"
ALIVE_EVERY = timedelta(seconds=4)
# Five beats: a loaded host or a slow event pipeline may delay a few, not all of them.
ALIVE_WITHIN = timedelta(seconds=20)
# Enough to send the last beat; a server that takes longer fails the run's next call anyway.
FLUSH_TIMEOUT_S = 5.0


@contextmanager
def beating() -> Iterator[None]:
    """Emit liveness beats for the current flow run while the block runs."""
    stop = threading.Event()
    thread = threading.Thread(
        target=_beat, args=(stop, _resource(), _related()), name="liveness", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        _flush_events()


def _beat(stop: threading.Event, resource: dict[str, str], related: list[dict[str, str]]) -> None:
    while True:
        emit_event(event=ALIVE_EVENT, resource=resource, related=related)
        if stop.wait(ALIVE_EVERY.total_seconds()):
            return


def _flush_events() -> None:
    """Wait until the beats are sent, so none reaches the server after the final state."""
    flushing = threading.Thread(target=EventsWorker.instance().wait_until_empty, daemon=True)
    flushing.start()
    flushing.join(FLUSH_TIMEOUT_S)


def _resource() -> dict[str, str]:
    return {
        "prefect.resource.id": f"prefect.flow-run.{runtime.flow_run.id}",
        "prefect.resource.name": runtime.flow_run.name,
    }


def _related() -> list[dict[str, str]]:
    # Not runtime.deployment.id: Prefect 3.9 looks the id up on the flow run context
    # object rather than its flow run, misses, and reads the run back from the API.
    context = FlowRunContext.get()
    deployment_id = context.flow_run.deployment_id if context and context.flow_run else None
    if deployment_id is None:
        return []
    return [
        {"prefect.resource.id": f"prefect.deployment.{deployment_id}",
         "prefect.resource.role": "deployment"}
    ]  # fmt: skip
