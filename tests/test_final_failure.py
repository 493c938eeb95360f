"""When a run is over for good, against a throwaway Prefect server (``prefect_test_harness``).

A flow's deterministic failure is final: a flow with ``retries=1`` that returns a plain
``Failed`` runs twice, which is why ``fail_for_good`` exists; one that returns
``fail_for_good(...)`` runs once, fails with the message and runs its ``on_failure`` hook.

And the crash sweep (``agent_pool.crash_sweep``) on runs a dead worker left Crashed:
rescheduled, or after ``max_attempts`` crashes failed for good and announced once (its
outcome in an in-memory bucket). That a rescheduled run then completes is the e2e layer's
(``tests/test_faults.py``).
"""

from collections.abc import Callable, Iterator
from datetime import timedelta
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.states import AwaitingRetry, Crashed, Failed, State
from prefect.testing.utilities import prefect_test_harness

from agent_pool.crash_sweep import sweep_crashed_runs
from clipping.messages import ClipCompletion, ClipState
from clipping.outcomes import RequestOutcomes
from flows.final_failure import fail_for_good
from tests.doubles import MemoryBucket

pytestmark = pytest.mark.integration

REASON = "source recording not found: /mnt/nas/missing.mp4"


# A bound for a server that never comes up, not a speed check: Prefect's default (30 s) is
# what its start took here with two CPU-bound processes beside the suite.
HARNESS_STARTUP_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=HARNESS_STARTUP_TIMEOUT_S):
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


MAX_ATTEMPTS = 4


@pytest.fixture
def prefect(prefect_server: None) -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as client:
        yield client


def crashed_run(prefect: SyncPrefectClient, request_id: str, crashes: int) -> tuple[UUID, UUID]:
    """A clip run left Crashed ``crashes`` times (as a dead worker leaves it); its deployment."""
    flow_id = prefect.create_flow_from_name("clip-hand")
    deployment_id = prefect.create_deployment(flow_id=flow_id, name=f"sweep-{request_id}")
    request = {"request_id": request_id, "hand_id": "hand-7"}
    run = prefect.create_flow_run_from_deployment(
        deployment_id, parameters={"request": request}, state=Crashed(message="host lost")
    )
    for _ in range(crashes - 1):
        prefect.set_flow_run_state(run.id, AwaitingRetry(), force=True)
        prefect.set_flow_run_state(run.id, Crashed(message="host lost"), force=True)
    return run.id, deployment_id


def sweep(prefect: SyncPrefectClient, deployment_id: UUID) -> list[ClipCompletion]:
    """Sweep twice (the second finds nothing left to do); what was announced."""
    announced: list[ClipCompletion] = []

    def announce(completion: ClipCompletion) -> str:
        announced.append(completion)
        return f"message-{len(announced)}"

    outcomes = RequestOutcomes(MemoryBucket(), announce)  # type: ignore[arg-type]
    for _ in range(2):
        sweep_crashed_runs(prefect, deployment_id, MAX_ATTEMPTS, outcomes, grace=timedelta(0))
    return announced


def test_the_sweep_reschedules_a_run_left_crashed(prefect: SyncPrefectClient) -> None:
    run_id, deployment_id = crashed_run(prefect, "swept-1", crashes=1)
    assert sweep(prefect, deployment_id) == []
    state = prefect.read_flow_run(run_id).state
    assert state is not None and state.type is StateType.SCHEDULED
    assert state.message == "rescheduled by the crash sweep"


def test_the_sweep_fails_a_run_that_keeps_crashing_and_announces_it_once(
    prefect: SyncPrefectClient,
) -> None:
    run_id, deployment_id = crashed_run(prefect, "crashy-1", crashes=MAX_ATTEMPTS)
    (announced,) = sweep(prefect, deployment_id)
    assert (announced.request_id, announced.status) == ("crashy-1", ClipState.FAILED)
    assert announced.reason == f"crashed {MAX_ATTEMPTS} times; giving up"
    state = prefect.read_flow_run(run_id).state
    assert state is not None and state.type is StateType.FAILED
    assert state.message == announced.reason
