"""A flow's deterministic failure is final: Prefect does not run the flow again for it.

Against a throwaway Prefect server (``prefect_test_harness``): a flow with ``retries=1``
that returns a plain ``Failed`` runs twice, which is why ``fail_for_good`` exists; one that
returns ``fail_for_good(...)`` runs once, fails with the message and runs its
``on_failure`` hook.
"""

from collections.abc import Callable, Iterator

import pytest
from prefect import flow
from prefect.states import Failed, State
from prefect.testing.utilities import prefect_test_harness

from flows.final_failure import fail_for_good

pytestmark = pytest.mark.integration

REASON = "source recording not found: /mnt/nas/missing.mp4"


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    with prefect_test_harness():
        yield


def run_failing(failure: Callable[[str], State]) -> tuple[int, list[str], State]:
    """Run a ``retries=1`` flow ending in ``failure(REASON)``: (runs, hook messages, state)."""
    runs: list[int] = []
    hooked: list[str] = []

    def on_failure(_flow: object, _run: object, state: State) -> None:
        hooked.append(state.message or "")

    @flow(retries=1, retry_delay_seconds=0, on_failure=[on_failure])
    def failing() -> State:
        runs.append(1)
        return failure(REASON)

    state = failing(return_state=True)
    return len(runs), hooked, state


def test_a_returned_failed_state_is_retried(prefect_server: None) -> None:
    runs, hooked, state = run_failing(lambda reason: Failed(message=reason))
    assert runs == 2
    assert state.is_failed()
    assert hooked == [REASON]


def test_fail_for_good_is_not_retried(prefect_server: None) -> None:
    runs, hooked, state = run_failing(fail_for_good)
    assert runs == 1
    assert state.is_failed()
    assert state.message == REASON
    assert hooked == [REASON]


def test_fail_for_good_outside_a_flow_run_is_a_plain_failure() -> None:
    state = fail_for_good(REASON)
    assert state.is_failed()
    assert state.message == REASON
