"""The NAS side's Prometheus metrics, each process on a port of its own (``GET /metrics``).

- The listener (``CLIPPING_LISTENER_METRICS_PORT``, 9464): requests handled by result,
  redeliveries, parked messages, and the clip runs waiting for an agent (counted at each
  crash sweep, every 30 s).
- Each worker (``python -m agent_pool.worker --metrics-port``, ``CLIPPING_WORKER_METRICS_PORT``,
  9465): the runs it executes, whether it is drained, and when it last polled its pool (an
  agent is online while Prometheus scrapes it and that time keeps moving).

Flow processes are not scraped (they live for one clip): their figures travel in the
completion message, which the proxy counts (``proxy.metrics``). Labels are fixed sets
(results) or the agent's own name: a handful of series per process.
"""

from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prometheus_client import Counter, Gauge, start_http_server

LISTENER_MESSAGES = Counter(
    "clipping_listener_messages",
    "Requests the listener handled, by result: run_created, ended_already, rejected, "
    "parked, retried.",
    ["result"],
)
LISTENER_REDELIVERIES = Counter(
    "clipping_listener_redeliveries", "Messages delivered to the listener more than once."
)
RUNS_QUEUED = Gauge(
    "clipping_runs_queued", "clip-hand runs waiting for an agent (Scheduled or Pending)."
)
AGENT_RUNS = Gauge("clipping_agent_runs_running", "Flow runs this agent executes.", ["agent"])
AGENT_DRAINED = Gauge("clipping_agent_drained", "1 while this agent is drained.", ["agent"])
AGENT_LAST_POLL = Gauge(
    "clipping_agent_last_poll_timestamp_seconds",
    "Unix time of this agent's last poll of the work pool.",
    ["agent"],
)


def serve_metrics(host: str, port: int) -> None:
    """Serve this process's metrics (and Python's own: memory, CPU, threads) in a thread."""
    start_http_server(port, addr=host)


def record_queued_runs(prefect: SyncPrefectClient, deployment_id: UUID) -> None:
    waiting = FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
    RUNS_QUEUED.set(
        prefect.count_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=waiting)),
        )
    )
