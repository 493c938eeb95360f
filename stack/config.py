"""Where the local stack listens and keeps its state; every value from ``CLIPPING_STACK_*``."""

import contextlib
import json
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clipping.settings import get_settings

# Marks every process of one stack (children inherit it), so `down` finds them all.
STACK_MARKER = "CLIPPING_STACK_DIR"


class StackConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLIPPING_STACK_", frozen=True)

    dir: Path = Field(default=Path(".stack"), description="State, logs and the local NAS root.")
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    pubsub_port: int = 8085
    gcs_port: int = 4443
    auth_port: int = Field(
        default=8086, description="Token, metadata and signBlob stand-in (emulators.google_auth)."
    )
    proxy_port: int = 8080
    workers: tuple[str, ...] = ("nas-server-01", "nas-server-02")
    worker_health_ports: tuple[int, ...] = Field(
        default=(8005, 8006), description="GET /health of each worker, in the order of workers."
    )
    worker_sites: tuple[str, ...] = Field(
        default=(),
        description="The NAS site of each worker, in the order of workers (none: no sites); "
        "a site's root is nas/<site>.",
    )
    worker_metrics_ports: tuple[int, ...] = Field(
        default=(9465, 9466), description="Prometheus metrics of each worker, in that order."
    )
    listener_metrics_port: int = 9464
    prometheus: bool = Field(
        default=False,
        description="Also run Prometheus (Debian's prometheus package) scraping the stack.",
    )
    prometheus_port: int = 9090
    worker_limit: int = Field(default=4, gt=0, description="Flow runs per worker at once.")
    prefect_database_url: str | None = Field(
        default=None, description="Prefect server database (default: SQLite in the state dir)."
    )
    keyless: bool = Field(
        default=False,
        description="Sign URLs without a key file: the services run as the metadata server's "
        "account and sign through the IAM signBlob stand-in.",
    )

    @classmethod
    def on_free_ports(cls, state_dir: Path) -> "StackConfig":
        """A stack of its own (tests, benchmarks) beside any other one on this machine."""
        return cls(
            dir=state_dir,
            prefect_port=free_port(),
            pubsub_port=free_port(),
            gcs_port=free_port(),
            auth_port=free_port(),
            proxy_port=free_port(),
            worker_health_ports=(free_port(), free_port()),
            worker_metrics_ports=(free_port(), free_port()),
            listener_metrics_port=free_port(),
            prometheus_port=free_port(),
        )

    @field_validator("dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.resolve()

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def prefect_ui_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def auth_url(self) -> str:
        return f"http://{self.host}:{self.auth_port}"

    @property
    def token_uri(self) -> str:
        return f"{self.auth_url}/token"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.host}:{self.proxy_port}"

    @property
    def nas_root(self) -> Path:
        return self.dir / "nas"

    @property
    def service_account_file(self) -> Path:
        return self.dir / "service-account.json"

    @property
    def prefect_auth_file(self) -> Path:
        """The Prefect API's basic-auth secret (``user:password``), made once per state dir."""
        return self.dir / "prefect-auth"

    def prefect_auth_string(self) -> str:
        """The secret the server requires (``PREFECT_SERVER_API_AUTH_STRING``) and every
        client sends (``PREFECT_API_AUTH_STRING``); created on first use."""
        return _read_or_create_auth_string(self.prefect_auth_file)

    def prefect_http(self, timeout: float = 30.0) -> httpx.Client:
        """A raw client of the stack's Prefect REST API, authenticated as Prefect's own are."""
        user, _, password = self.prefect_auth_string().partition(":")
        return httpx.Client(
            base_url=self.prefect_api_url, auth=httpx.BasicAuth(user, password), timeout=timeout
        )

    @property
    def api_keys_file(self) -> Path:
        """The proxy's keys, as digests (``CLIPPING_PROXY_API_KEYS_FILE``)."""
        return self.dir / "api-keys"

    @property
    def client_keys_file(self) -> Path:
        """The same keys in clear, for the stack's clients: the demo, tests, ``clipctl``."""
        return self.dir / "client-keys.json"

    @property
    def clipctl_env(self) -> Path:
        """``set -a; . .stack/clipctl.env; set +a`` lets ``clipctl`` reach this stack."""
        return self.dir / "clipctl.env"

    def api_key(self, client: str) -> str:
        """The key of ``client``: ``m6`` (scope clip), ``admin`` or ``operator`` (both)."""
        return json.loads(self.client_keys_file.read_text())[client]

    def health_port_of(self, worker: str) -> int:
        return dict(zip(self.workers, self.worker_health_ports, strict=True))[worker]

    def site_of(self, worker: str) -> str | None:
        """The worker's site; None without sites, or for a worker joining the pool."""
        if not self.worker_sites:
            return None
        return dict(zip(self.workers, self.worker_sites, strict=True)).get(worker)

    def site_root(self, site: str) -> Path:
        return self.nas_root / site

    def metrics_port_of(self, worker: str) -> int:
        return dict(zip(self.workers, self.worker_metrics_ports, strict=True))[worker]

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.prometheus_port}"

    def home_of(self, host: str) -> Path:
        """PREFECT_HOME of one simulated host: hosts share nothing but the APIs."""
        home = self.dir / "hosts" / host
        home.mkdir(parents=True, exist_ok=True)
        return home

    @contextmanager
    def activated(self) -> Iterator[None]:
        """Inside, this process is one of the stack's: its clients reach the stack's servers.

        Prefect reads its settings when first imported, so they are overridden explicitly
        as well as through the environment (which threads started inside also see).
        """
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        saved = dict(os.environ)
        env = self.env()
        os.environ.update(env)
        get_settings.cache_clear()
        prefect = {
            PREFECT_API_URL: env["PREFECT_API_URL"],
            PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"],
        }
        try:
            with temporary_settings(updates=prefect):
                yield
        finally:
            os.environ.clear()
            os.environ.update(saved)
            get_settings.cache_clear()

    def env(self) -> dict[str, str]:
        """Environment of every stack process: the service settings pointed at loopback."""
        return {
            **os.environ,
            STACK_MARKER: str(self.dir),
            "PYTHONUNBUFFERED": "1",
            "DO_NOT_TRACK": "1",
            "PREFECT_API_URL": self.prefect_api_url,
            # Flow processes inherit it from their worker. The server's own setting,
            # PREFECT_SERVER_API_AUTH_STRING, is given to the server alone (stack.lifecycle).
            "PREFECT_API_AUTH_STRING": self.prefect_auth_string(),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # Fail loudly instead of silently starting a private server when misconfigured.
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
            "PUBSUB_EMULATOR_HOST": f"{self.host}:{self.pubsub_port}",
            "STORAGE_EMULATOR_HOST": f"http://{self.host}:{self.gcs_port}",
            "CLIPPING_NAS_ROOTS": str(self.nas_root),
            "CLIPPING_PROXY_DATABASE_URL": f"sqlite:///{self.dir / 'proxy.db'}",
            "CLIPPING_PROXY_API_KEYS_FILE": str(self.api_keys_file),
            "CLIPPING_PROXY_DOCS_ENABLED": "true",
            # Made once per state dir, like the Prefect secret; callbacks go to loopback here.
            "CLIPPING_PROXY_WEBHOOK_SECRET": _read_or_create_auth_string(
                self.dir / "webhook-secret"
            ),
            "CLIPPING_PROXY_WEBHOOK_ALLOW_LOOPBACK": "true",
            "CLIPPING_PROXY_URL": self.proxy_url,
            "CLIPPING_WORK_DIR": str(self.dir / "scratch"),
            "CLIPPING_SITES": ";".join(
                f"{site}={self.site_root(site)}" for site in dict.fromkeys(self.worker_sites)
            ),
            "CLIPPING_LISTENER_METRICS_PORT": str(self.listener_metrics_port),
            "CLIPPING_METRICS_HOST": self.host,
            "CLIPPING_IAM_CREDENTIALS_URL": self.auth_url,
            **self._credentials_env(),
        }

    def _credentials_env(self) -> dict[str, str]:
        """A key file, or (keyless) the metadata server's account as Cloud Run has it."""
        if not self.keyless:
            return {"CLIPPING_SERVICE_ACCOUNT_FILE": str(self.service_account_file)}
        metadata = f"{self.host}:{self.auth_port}"
        return {"GCE_METADATA_HOST": metadata, "GCE_METADATA_IP": metadata}


def _read_or_create_auth_string(path: Path) -> str:
    """The ``user:password`` in ``path``, a fresh one written there first if it is absent.

    Written to a file of mode 0600 and linked into place (atomic, and refused if the file
    exists), so the secret is never world-readable nor read half-written, and of two
    processes starting on a new state dir both end with the same one.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f".{path.name}.{os.getpid()}")
        candidate.touch(mode=0o600)
        candidate.write_text(f"clipping:{secrets.token_urlsafe(32)}\n")
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass  # the other process's secret stands
        finally:
            candidate.unlink()
    return path.read_text().strip()


# Ports handed out on this machine, one empty file each, so stacks started at once by
# several processes (parallel tests, a benchmark beside the suite) never get the same port:
# a port is free between its probe and its server's bind, and the kernel may offer it to
# the next prober. Reservations older than RESERVATION_S are forgotten.
PORT_RESERVATIONS = Path(tempfile.gettempdir()) / "clipping-stack-ports"
RESERVATION_S = 6 * 3600


def free_port() -> int:
    """A port nothing listens on now, and that no stack on this machine was given lately."""
    PORT_RESERVATIONS.mkdir(exist_ok=True)
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if _reserve(port):
            return port


def _reserve(port: int) -> bool:
    reservation = PORT_RESERVATIONS / str(port)
    with contextlib.suppress(FileNotFoundError):
        if time.time() - reservation.stat().st_mtime > RESERVATION_S:
            reservation.unlink(missing_ok=True)
    try:
        reservation.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True
