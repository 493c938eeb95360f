"""Bringing the whole local stack up and down."""

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import WorkerStatus

from clipping.settings import get_settings
from deployments.apply import PROJECT_DIR, apply
from deployments.pubsub import ensure_subscription, ensure_topology
from emulators import gcs_command, pubsub_command
from stack.config import StackConfig, free_port
from stack.processes import Supervisor, http_ok, port_open, wait_until
from stack.prometheus import prometheus_command, write_prometheus_config
from stack.provision import (
    COMPLETIONS_AUDIT_SUBSCRIPTION,
    create_bucket,
    write_api_keys,
    write_service_account_key,
)

logger = logging.getLogger("clipping.stack")

SERVER_START_TIMEOUT_S = 120.0


SERVERS = ("prefect-server", "pubsub-emulator", "google-auth", "gcs-emulator")


@dataclass(frozen=True)
class Component:
    """One process of the stack: how to start it and how to tell it is ready."""

    command: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.supervisor = Supervisor(config.dir)

    def up(self) -> None:
        """Start everything, provision it, and return once the proxy answers.

        Call it inside ``config.activated()``.
        """
        if self.supervisor.running():
            raise RuntimeError(f"a stack is already running from {self.config.dir}; stop it first")
        config = self.config
        settings = get_settings()
        config.nas_root.mkdir(parents=True, exist_ok=True)
        for site in config.worker_sites:
            config.site_root(site).mkdir(exist_ok=True)
        write_service_account_key(
            config.service_account_file, settings.gcp_project, config.token_uri
        )
        write_api_keys(
            config.api_keys_file, config.client_keys_file, config.clipctl_env, config.proxy_url
        )
        self.start(*SERVERS)
        create_bucket(settings)
        logger.info("applying topics, work pool, blocks, deployment and automation")
        apply(settings)
        for worker in config.workers:
            self.start(worker)
        self.start("listener", "proxy")
        if config.prometheus:
            self.start("prometheus")
        logger.info("stack up: proxy %s, Prefect UI %s", config.proxy_url, config.prefect_ui_url)

    def down(self) -> list[str]:
        return self.supervisor.stop_all()

    def start(self, *names: str) -> None:
        """Start the named components together, then wait until each is ready.

        A (re)started Pub/Sub emulator gets the topics and subscriptions again, idempotently:
        the official emulator keeps nothing, and the fallback's data dir may have been lost.
        """
        components = self.components()
        self._launch({name: components[name] for name in names})
        if "pubsub-emulator" in names:
            settings = get_settings()
            ensure_topology(settings)
            ensure_subscription(
                settings, COMPLETIONS_AUDIT_SUBSCRIPTION, settings.completions_topic
            )

    def add_worker(self, name: str) -> int:
        """Start one more NAS agent: it joins the pool as is. Returns its health port."""
        health_port = free_port()
        self._launch({name: self.worker_component(name, health_port, free_port())})
        return health_port

    def _launch(self, components: dict[str, Component]) -> None:
        started = {
            name: self.supervisor.start(name, component.command, component.env, PROJECT_DIR)
            for name, component in components.items()
        }
        for name, process in started.items():
            wait_until(
                components[name].ready,
                name,
                process,
                self.supervisor.log_path(name),
                SERVER_START_TIMEOUT_S,
            )
            logger.info("%s ready", name)

    def stop(self, name: str, *, kill: bool = False) -> None:
        self.supervisor.stop(name, kill=kill)

    def components(self) -> dict[str, Component]:
        config, python = self.config, sys.executable
        # The server refuses every API request without this secret but GET /api/health
        # (and /api/ready); the UI asks for it. Every client has it through config.env().
        server_env = {
            **self._host_env("prefect-server"),
            "PREFECT_SERVER_API_AUTH_STRING": config.prefect_auth_string(),
            # Prefect's own metrics on /api/metrics, scraped with the stack's Prometheus.
            "PREFECT_API_ENABLE_METRICS": "true",
        }
        if config.prefect_database_url:
            server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = config.prefect_database_url
        listener_log = self.supervisor.log_path("listener")
        components = {
            "prefect-server": Component(
                [python, "-m", "prefect", "server", "start",
                 "--host", config.host, "--port", str(config.prefect_port)],
                server_env,
                http_ok(f"{config.prefect_api_url}/health"),
            ),
            "pubsub-emulator": Component(
                pubsub_command(config.host, config.pubsub_port, config.dir / "pubsub"),
                config.env(),
                port_open(config.host, config.pubsub_port),
            ),
            "google-auth": Component(
                [python, "-m", "emulators.google_auth",
                 "--host", config.host, "--port", str(config.auth_port),
                 "--key-file", str(config.service_account_file)],
                config.env(),
                port_open(config.host, config.auth_port),
            ),
            "gcs-emulator": Component(
                gcs_command(config.host, config.gcs_port),
                config.env(),
                port_open(config.host, config.gcs_port),
            ),
            "listener": Component(
                [python, "-m", "agent_pool.listener"],
                self._host_env("listener"),
                lambda: "listening on" in listener_log.read_text(errors="replace"),
            ),
            "proxy": Component(
                [python, "-m", "uvicorn", "proxy.app:create_app", "--factory",
                 "--host", config.host, "--port", str(config.proxy_port)],
                self._host_env("proxy"),
                http_ok(f"{config.proxy_url}/health"),
            ),
        }  # fmt: skip
        for worker in config.workers:
            components[worker] = self.worker_component(
                worker, config.health_port_of(worker), config.metrics_port_of(worker)
            )
        if config.prometheus:
            components["prometheus"] = Component(
                prometheus_command(config, write_prometheus_config(config)),
                config.env(),
                http_ok(f"{config.prometheus_url}/-/ready"),
            )
        return components

    def worker_component(self, name: str, health_port: int, metrics_port: int) -> Component:
        """One NAS agent; a name outside ``config.workers`` is a worker joining the pool."""
        return Component(
            [sys.executable, "-m", "agent_pool.worker", "--name", name,
             "--limit", str(self.config.worker_limit), "--health-port", str(health_port),
             "--metrics-port", str(metrics_port),
             *(["--site", site] if (site := self.config.site_of(name)) else [])],
            {**self._host_env(name),
             "PREFECT_WORKER_QUERY_SECONDS": "1",
             # Its flow processes (output discarded) append their lines to its log.
             "CLIPPING_FLOW_LOG_FILE": str(self.supervisor.log_path(name)),
             # A dead worker shows offline after ~3 heartbeats: 30 s instead of 90 s.
             "PREFECT_WORKER_HEARTBEAT_SECONDS": "10"},
            lambda: _worker_online(name) and http_ok(
                f"http://{self.config.host}:{health_port}/health"
            )(),
        )  # fmt: skip

    def _host_env(self, host: str) -> dict[str, str]:
        return {**self.config.env(), "PREFECT_HOME": str(self.config.home_of(host))}


def _worker_online(name: str) -> bool:
    with get_client(sync_client=True) as client:
        workers = client.read_workers_for_work_pool(get_settings().work_pool)
    return any(w.name == name and w.status == WorkerStatus.ONLINE for w in workers)
