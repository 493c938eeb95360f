"""A flow-run failure that Prefect does not retry: for failures that are the same every time.

Prefect 3 retries a flow that *returns* a ``Failed`` state just as one that raises: the
server's ``RetryFailedFlows`` rule turns the proposed ``Failed`` into ``AwaitingRetry``
while the run's ``empirical_policy.retries`` is at least its run count, and the engine runs
the flow again. A bad range, a missing or refused recording, a corrupt source would fail
the same way again, a cut's worth of work later; so the run's remaining retries are set to
none first, and the ``Failed`` state is final (its ``on_failure`` hooks run at once).
"""

from uuid import UUID

from prefect import runtime
from prefect.client.orchestration import get_client
from prefect.states import Failed, State


def fail_for_good(message: str) -> State:
    """``Failed(message)`` after turning off the current flow run's remaining retries."""
    flow_run_id = runtime.flow_run.id
    if flow_run_id:  # None when called outside a flow run: nothing to retry then
        with get_client(sync_client=True) as client:
            run_id = UUID(flow_run_id)
            policy = client.read_flow_run(run_id).empirical_policy
            # retries=0: the rule lets the run fail once run_count > retries (always true).
            no_retries = policy.model_copy(update={"retries": 0})
            client.update_flow_run(run_id, empirical_policy=no_retries)
    return Failed(message=message)
