"""A NAS agent: a Prefect process worker on ``nas-pool`` that can be drained.

    python -m agent_pool.worker --name nas-server-01    # health :8005/health, metrics :9465

It is Prefect's own ``ProcessWorker`` (same pool type, same job template) with two
additions. It serves Prefect's worker health endpoint (the spec's ``:8005/health``: 200
while the worker polls, 503 once it stops). And on every poll it checks whether its agent
is drained (``clipping.drain``, set by ``POST /v1/admin/agents/{agent_id}/failover``):
while drained it takes no new runs and hands the runs it is executing over to the other
agents. Handing over kills the run's process; the worker then reports the run Crashed as
for any dead process, the recovery automation reschedules it, and only an agent that is
not drained picks it up. The flow's records make the rerun skip finished steps and
announce the clip once.

Its lines (``clipping.logs``, ``CLIPPING_LOG_FORMAT``) carry its agent id; its flow
processes, whose output it discards, configure their own (``flows.clip_hand``).
"""

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import warnings
from typing import Any
from uuid import UUID

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_WORKER_WEBSERVER_PORT, temporary_settings
from prefect.workers.process import (
    ProcessJobConfiguration,
    ProcessWorker,
    ProcessWorkerResult,
)

from agent_pool import metrics
from clipping.agent_sites import record_site
from clipping.drain import is_drained
from clipping.logs import WORKER, configure_logging
from clipping.settings import get_settings
from clipping.sites import Site

logger = logging.getLogger("clipping.worker")

# In this process ClipWorker stands in for Prefect's "process" type on purpose.
warnings.filterwarnings("ignore", message="Type 'ClipWorker'", category=UserWarning)


class ClipWorker(ProcessWorker):
    """A ``ProcessWorker`` that honours its agent's drain flag; with a ``site``, it polls
    only that site's work queue (``clipping.sites``) and records its site for the proxy."""

    def __init__(self, *args: Any, site: Site | None = None, **kwargs: Any) -> None:
        if site is not None:
            kwargs["work_queues"] = [site.work_queue]
        super().__init__(*args, **kwargs)
        self._site = site
        self._site_recorded = False
        self._pids: dict[UUID, int] = {}
        self._drained = False

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        if self._site is not None and not self._site_recorded:
            await record_site(self.client, self.name, self._site.name)
            self._site_recorded = True
        drained = await is_drained(self.client, self.name)
        metrics.AGENT_DRAINED.labels(self.name).set(int(drained))
        metrics.AGENT_LAST_POLL.labels(self.name).set_to_current_time()
        if drained != self._drained:
            logger.warning(
                "agent %s %s", self.name, "drained: taking no new runs" if drained else "resumed"
            )
            self._drained = drained
        if drained:
            self._hand_over_runs()
            return []
        return await super().get_and_submit_flow_runs()

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        status = _RecordingStatus(task_status or anyio.TASK_STATUS_IGNORED, self._pids, flow_run.id)
        running = metrics.AGENT_RUNS.labels(self.name)
        running.inc()
        try:
            return await super().run(flow_run, configuration, status)
        finally:
            self._pids.pop(flow_run.id, None)
            running.dec()

    def _hand_over_runs(self) -> None:
        for flow_run_id, pid in list(self._pids.items()):
            logger.warning(
                "agent %s drained: stopping flow run %s (pid %d) so another agent reruns it",
                self.name,
                flow_run_id,
                pid,
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._pids.pop(flow_run_id, None)


class _RecordingStatus:
    """Passes a run's process id on, and remembers it so the run can be handed over."""

    def __init__(
        self, status: anyio.abc.TaskStatus[int], pids: dict[UUID, int], flow_run_id: UUID
    ) -> None:
        self._status, self._pids, self._flow_run_id = status, pids, flow_run_id

    def started(self, value: int | None = None) -> None:
        if value is None:  # anyio's TaskStatus allows it; ProcessWorker always passes the pid
            raise RuntimeError(f"flow run {self._flow_run_id} started without a process id")
        self._pids[self._flow_run_id] = value
        self._status.started(value)


def main() -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m agent_pool.worker",
        description="Run one NAS agent: a Prefect process worker that can be drained.",
    )
    parser.add_argument("--name", required=True, help="agent id, e.g. nas-server-01")
    parser.add_argument("--pool", default=settings.work_pool, help="work pool (%(default)s)")
    parser.add_argument(
        "--limit",
        type=int,
        default=settings.worker_limit,
        help="flow runs at once on this agent (CLIPPING_WORKER_LIMIT, default %(default)s)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=settings.worker_health_port,
        help="port of GET /health (CLIPPING_WORKER_HEALTH_PORT, default %(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=settings.worker_metrics_port,
        help="port of the Prometheus metrics (CLIPPING_WORKER_METRICS_PORT, default %(default)s)",
    )
    parser.add_argument(
        "--site",
        choices=[site.name for site in settings.sites] or None,
        default=settings.worker_site,
        help="the NAS site whose recordings this host reads (CLIPPING_SITES; "
        "CLIPPING_WORKER_SITE); unset: every site's",
    )
    args = parser.parse_args()
    configure_logging(WORKER, settings, agent_id=args.name)
    metrics.serve_metrics(settings.metrics_host, args.metrics_port)
    site = next((site for site in settings.sites if site.name == args.site), None)
    if args.site and site is None:
        parser.error(f"--site {args.site}: not one of CLIPPING_SITES")
    worker = ClipWorker(work_pool_name=args.pool, name=args.name, limit=args.limit, site=site)
    with temporary_settings(updates={PREFECT_WORKER_WEBSERVER_PORT: args.health_port}):
        asyncio.run(worker.start(with_healthcheck=True))


if __name__ == "__main__":
    main()
