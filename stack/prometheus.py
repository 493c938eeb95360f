"""The local stack's Prometheus: Debian's ``prometheus``, scraping every process that has
metrics, with the service's alerting rules (``ops/prometheus/rules.yml``).

Optional (``CLIPPING_STACK_PROMETHEUS=true``; ``apt-get install prometheus``). Jobs, one
per kind of process, each target labelled with the ``instance`` it is:

- ``clipping-proxy``: ``/metrics`` with the stack's ``admin`` key;
- ``clipping-listener`` and ``clipping-workers`` (label ``agent``): their metrics ports;
- ``prefect-server``: Prefect's ``/api/metrics`` (``PREFECT_API_ENABLE_METRICS``), with
  the stack's Prefect secret.

Secrets go into files of mode 0600 beside the configuration, never into it.
"""

from pathlib import Path
from typing import Any

import yaml

from deployments.apply import PROJECT_DIR
from stack.config import StackConfig

RULES_FILE = PROJECT_DIR / "ops" / "prometheus" / "rules.yml"
SCRAPE_INTERVAL = "1s"


def write_prometheus_config(config: StackConfig) -> Path:
    """Write ``prometheus/prometheus.yml`` (and its secret files) into the state dir."""
    directory = config.dir / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    admin_key = _secret_file(directory / "admin-key", config.api_key("admin"))
    user, password = config.prefect_auth_string().split(":", 1)
    prefect_password = _secret_file(directory / "prefect-password", password)
    workers = [
        {
            "targets": [f"{config.host}:{config.metrics_port_of(worker)}"],
            "labels": {"agent": worker},
        }
        for worker in config.workers
    ]
    document: dict[str, Any] = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {
                "job_name": "clipping-proxy",
                "authorization": {"type": "Bearer", "credentials_file": str(admin_key)},
                "static_configs": [{"targets": [f"{config.host}:{config.proxy_port}"]}],
            },
            {
                "job_name": "clipping-listener",
                "static_configs": [{"targets": [f"{config.host}:{config.listener_metrics_port}"]}],
            },
            {"job_name": "clipping-workers", "static_configs": workers},
            {
                "job_name": "prefect-server",
                "metrics_path": "/api/metrics",
                "basic_auth": {"username": user, "password_file": str(prefect_password)},
                "static_configs": [{"targets": [f"{config.host}:{config.prefect_port}"]}],
            },
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def prometheus_command(config: StackConfig, config_file: Path) -> list[str]:
    return [
        "prometheus",
        f"--config.file={config_file}",
        f"--storage.tsdb.path={config.dir / 'prometheus' / 'data'}",
        f"--web.listen-address={config.host}:{config.prometheus_port}",
    ]


def _secret_file(path: Path, secret: str) -> Path:
    path.touch(mode=0o600)
    path.write_text(secret)
    return path
