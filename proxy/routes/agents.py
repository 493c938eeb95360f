"""The NAS agents (scope ``admin``): list them, drain one (``failover``), take it back."""

import logging

from fastapi import APIRouter, HTTPException, status

from clipping import drain
from proxy.agents import AgentReport, AgentStatus, UnknownAgent, agent_report, agent_reports
from proxy.deps import AdminCaller, PrefectDep, SettingsDep
from proxy.problems import not_found, problems

logger = logging.getLogger("clipping.proxy")
router = APIRouter(prefix="/v1/admin/agents", tags=["agents"])


@router.get("", responses=problems(401, 403, 408, 413, 503))
async def list_agents(
    _: AdminCaller, prefect: PrefectDep, settings: SettingsDep
) -> list[AgentReport]:
    """Every worker of the pool: status, last heartbeat, the runs it is executing."""
    return await agent_reports(prefect, settings.work_pool)


@router.post("/{agent_id}/failover", responses=problems(401, 403, 404, 408, 409, 413, 503))
async def failover_agent(
    agent_id: str, _: AdminCaller, prefect: PrefectDep, settings: SettingsDep
) -> AgentReport:
    """Drain the agent: it takes no new runs and hands its runs to the other agents.

    Refused (409) when no other agent is online to take them. Idempotent.
    """
    reports = await agent_reports(prefect, settings.work_pool)
    if agent_id not in {report.agent_id for report in reports}:
        raise _unknown_agent(agent_id)
    if not any(r.status is AgentStatus.ONLINE and r.agent_id != agent_id for r in reports):
        raise HTTPException(
            status.HTTP_409_CONFLICT, "no other agent is online to take over its runs"
        )
    await drain.drain(prefect, agent_id)
    logger.warning("agent %s drained through the admin API", agent_id)
    return await agent_report(prefect, settings.work_pool, agent_id)


@router.post("/{agent_id}/resume", responses=problems(401, 403, 404, 408, 413, 503))
async def resume_agent(
    agent_id: str, _: AdminCaller, prefect: PrefectDep, settings: SettingsDep
) -> AgentReport:
    """Let a drained agent take runs again. Idempotent."""
    try:
        await agent_report(prefect, settings.work_pool, agent_id)
    except UnknownAgent:
        raise _unknown_agent(agent_id) from None
    await drain.resume(prefect, agent_id)
    logger.warning("agent %s resumed through the admin API", agent_id)
    return await agent_report(prefect, settings.work_pool, agent_id)


def _unknown_agent(agent_id: str) -> HTTPException:
    return not_found(f"no agent {agent_id!r} in the pool")
