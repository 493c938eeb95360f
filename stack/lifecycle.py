"""Bringing the whole local stack up and down."""

import logging
import subprocess
import sys
from collections.abc import Callable

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import WorkerStatus

from clipping.settings import get_settings
from deployments.apply import PROJECT_DIR, apply
from emulators import gcs_command, pubsub_command
from stack.config import StackConfig
from stack.processes import Supervisor, http_ok, port_open, wait_until
from stack.provision import create_bucket, create_pubsub_resources, write_service_account_key

logger = logging.getLogger("clipping.stack")

SERVER_START_TIMEOUT_S = 120.0


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
        write_service_account_key(
            config.service_account_file, settings.gcp_project, config.token_uri
        )

        self._start_servers()
        create_pubsub_resources(settings)
        create_bucket(settings)
        logger.info("applying work pool, blocks and deployment")
        apply(settings)
        self._start_agents()
        logger.info("stack up: proxy %s, Prefect UI %s", config.proxy_url, config.prefect_ui_url)

    def down(self) -> list[str]:
        return self.supervisor.stop_all()

    def _start_servers(self) -> None:
        config = self.config
        server_env = {**config.env(), "PREFECT_HOME": str(config.home_of("prefect-server"))}
        if config.prefect_database_url:
            server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = config.prefect_database_url
        servers = {
            "prefect-server": (
                [sys.executable, "-m", "prefect", "server", "start",
                 "--host", config.host, "--port", str(config.prefect_port)],
                server_env,
                http_ok(f"{config.prefect_api_url}/health"),
            ),
            "pubsub-emulator": (
                pubsub_command(config.host, config.pubsub_port),
                config.env(),
                port_open(config.host, config.pubsub_port),
            ),
            "token-endpoint": (
                [sys.executable, "-m", "emulators.token_endpoint",
                 "--host", config.host, "--port", str(config.token_port)],
                config.env(),
                port_open(config.host, config.token_port),
            ),
            "gcs-emulator": (
                gcs_command(config.host, config.gcs_port),
                config.env(),
                port_open(config.host, config.gcs_port),
            ),
        }  # fmt: skip
        started = {
            name: self.supervisor.start(name, command, env, PROJECT_DIR)
            for name, (command, env, _) in servers.items()
        }
        for name, (_, _, ready) in servers.items():
            self._wait(name, started[name], ready)
            logger.info("%s ready", name)

    def _start_agents(self) -> None:
        config = self.config
        for name in config.workers:
            worker = self._start_on_host(
                name,
                [sys.executable, "-m", "prefect", "worker", "start", "--pool",
                 get_settings().work_pool, "--name", name, "--type", "process",
                 "--limit", str(config.worker_limit)],
                PREFECT_WORKER_QUERY_SECONDS="1",
            )  # fmt: skip
            self._wait(name, worker, lambda name=name: _worker_online(name))
        listener = self._start_on_host("listener", [sys.executable, "-m", "agent_pool.listener"])
        log = self.supervisor.log_path("listener")
        self._wait("listener", listener, lambda: "listening on" in log.read_text(errors="replace"))
        proxy = self._start_on_host(
            "proxy",
            [sys.executable, "-m", "uvicorn", "proxy.app:create_app", "--factory",
             "--host", config.host, "--port", str(config.proxy_port)],
        )  # fmt: skip
        self._wait("proxy", proxy, http_ok(f"{config.proxy_url}/health"))

    def _start_on_host(self, name: str, command: list[str], **extra_env: str) -> subprocess.Popen:
        env = {**self.config.env(), "PREFECT_HOME": str(self.config.home_of(name)), **extra_env}
        return self.supervisor.start(name, command, env, PROJECT_DIR)

    def _wait(self, name: str, process: subprocess.Popen, ready: Callable[[], bool]) -> None:
        wait_until(ready, name, process, self.supervisor.log_path(name), SERVER_START_TIMEOUT_S)


def _worker_online(name: str) -> bool:
    with get_client(sync_client=True) as client:
        workers = client.read_workers_for_work_pool(get_settings().work_pool)
    return any(w.name == name and w.status == WorkerStatus.ONLINE for w in workers)
