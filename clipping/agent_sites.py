"""Which site each NAS agent serves: one Prefect variable per agent, set by its worker.

A worker started with ``--site`` (``agent_pool.worker``) records ``clipping-site-<agent
id>`` when it starts; the proxy's agent list shows it and failover looks for another
online agent of the same site. Prefect's worker records do not say which queues a worker
polls, hence the variable.
"""

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import VariableCreate, VariableUpdate

PREFIX = "clipping-site-"


async def record_site(prefect: PrefectClient, agent_id: str, site: str) -> None:
    name = f"{PREFIX}{agent_id}"
    if await prefect.read_variable_by_name(name) is None:
        await prefect.create_variable(VariableCreate(name=name, value=site, tags=["clipping"]))
    else:
        await prefect.update_variable(VariableUpdate(name=name, value=site))


async def agent_sites(prefect: PrefectClient) -> dict[str, str]:
    """Agent id -> site, for the agents started with a site."""
    return {
        variable.name.removeprefix(PREFIX): str(variable.value)
        for variable in await prefect.read_variables()
        if variable.name.startswith(PREFIX)
    }
