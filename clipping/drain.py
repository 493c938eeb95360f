"""Which NAS agents are drained: one Prefect variable per agent, visible in the Prefect UI.

The proxy's failover endpoint creates ``clipping-drained-<agent id>``; the agent's worker
(``agent_pool.worker``) looks for it on every poll, takes no new runs while it exists, and
hands the runs it is executing over to the other agents. Resuming deletes the variable.
"""

import contextlib

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import VariableCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

PREFIX = "clipping-drained-"


def _variable_name(agent_id: str) -> str:
    return f"{PREFIX}{agent_id}"


async def is_drained(prefect: PrefectClient, agent_id: str) -> bool:
    return await prefect.read_variable_by_name(_variable_name(agent_id)) is not None


async def drained_agents(prefect: PrefectClient) -> set[str]:
    return {
        variable.name.removeprefix(PREFIX)
        for variable in await prefect.read_variables()
        if variable.name.startswith(PREFIX)
    }


async def drain(prefect: PrefectClient, agent_id: str) -> None:
    """Idempotent: draining a drained agent changes nothing."""
    with contextlib.suppress(ObjectAlreadyExists):
        await prefect.create_variable(
            VariableCreate(name=_variable_name(agent_id), value=True, tags=["clipping"])
        )


async def resume(prefect: PrefectClient, agent_id: str) -> None:
    """Idempotent: resuming an agent that is not drained changes nothing."""
    with contextlib.suppress(ObjectNotFound):
        await prefect.delete_variable_by_name(_variable_name(agent_id))
