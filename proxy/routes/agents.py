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
    """Drain the agent: it takes no new runs and hands its runs to the other agents (of
    its site, with NAS sites).

    Refused (409) when no other agent (of its site) is online to take them. Idempotent.
    """
    reports = {
        report.agent_id: report for report in await agent_reports(prefect, settings.work_pool)
    }
    if agent_id not in reports:
        raise _unknown_agent(agent_id)
    site = reports[agent_id].site
    if not any(
        r.status is AgentStatus.ONLINE and r.agent_id != agent_id and r.site == site
        for r in reports.values()
    ):
        where = f" of site {site}" if site else ""
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"no other agent{where} is online to take over its runs"
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
