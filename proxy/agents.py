"""The NAS agents as the admin endpoints show them: Prefect's workers of the pool, the
drain flags (``clipping.drain``), their sites (``clipping.agent_sites``) and the runs each
agent is executing."""

from collections import defaultdict
from datetime import datetime
from enum import StrEnum

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import StateType, WorkerStatus
from pydantic import BaseModel, Field

from clipping.agent_sites import agent_sites
from clipping.drain import drained_agents

# The label a worker gives each flow run it executes.
WORKER_LABEL = "prefect.worker.name"
_EXECUTING = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]


class AgentStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    DRAINED = "drained"


class AgentRun(BaseModel):
    flow_run_id: str
    request_id: str | None = Field(description="None for a run not started by the listener.")
    state: str


class AgentReport(BaseModel):
    agent_id: str
    status: AgentStatus = Field(
        description="drained: takes no new runs (failover), whether or not its worker is up."
    )
    online: bool = Field(description="Its worker is polling Prefect (heartbeats arrive).")
    site: str | None = Field(
        default=None, description="The NAS site it serves (CLIPPING_SITES); None: every one."
    )
    last_heartbeat: datetime | None
    runs: list[AgentRun] = Field(description="Flow runs it is executing now.")


class UnknownAgent(LookupError):
    pass


async def agent_reports(prefect: PrefectClient, work_pool: str) -> list[AgentReport]:
    workers = await prefect.read_workers_for_work_pool(work_pool)
    drained = await drained_agents(prefect)
    sites = await agent_sites(prefect)
    runs = await _runs_by_agent(prefect, work_pool)
    return [
        AgentReport(
            agent_id=worker.name,
            status=_status(worker.name in drained, worker.status),
            online=worker.status == WorkerStatus.ONLINE,
            site=sites.get(worker.name),
            last_heartbeat=worker.last_heartbeat_time,
            runs=runs.get(worker.name, []),
        )
        for worker in sorted(workers, key=lambda worker: worker.name)
    ]


async def agent_report(prefect: PrefectClient, work_pool: str, agent_id: str) -> AgentReport:
    for report in await agent_reports(prefect, work_pool):
        if report.agent_id == agent_id:
            return report
    raise UnknownAgent(agent_id)


def _status(drained: bool, worker_status: WorkerStatus | None) -> AgentStatus:
    if drained:
        return AgentStatus.DRAINED
    return AgentStatus.ONLINE if worker_status == WorkerStatus.ONLINE else AgentStatus.OFFLINE


async def _runs_by_agent(prefect: PrefectClient, work_pool: str) -> dict[str, list[AgentRun]]:
    runs = await prefect.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_EXECUTING))
        ),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[work_pool])),
    )
    by_agent: dict[str, list[AgentRun]] = defaultdict(list)
    for run in runs:
        agent = (run.labels or {}).get(WORKER_LABEL)
        if agent is not None:
            by_agent[str(agent)].append(
                AgentRun(
                    flow_run_id=str(run.id),
                    request_id=run.idempotency_key,
                    state=run.state_name or str(run.state_type),
                )
            )
    return by_agent
