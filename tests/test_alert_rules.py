"""The alerting rules and the stack's Prometheus configuration, checked by Prometheus's
own ``promtool`` (Debian's ``prometheus`` package, installed by ``.ci/run``)."""

import subprocess
from pathlib import Path

import pytest

from stack.config import StackConfig
from stack.prometheus import RULES_FILE, write_prometheus_config
from stack.provision import write_api_keys

pytestmark = pytest.mark.integration


def promtool(*args: str, cwd: Path | None = None) -> str:
    checked = subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return checked.stdout


def test_the_rules_are_valid() -> None:
    assert "SUCCESS: 5 rules found" in promtool("check", "rules", str(RULES_FILE))


def test_the_rules_fire_when_they_should() -> None:
    """ops/prometheus/rules_test.yml: no agent online, and a high failure ratio."""
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml", cwd=RULES_FILE.parent)


def test_the_stacks_prometheus_configuration_is_valid(tmp_path: Path) -> None:
    config = StackConfig.on_free_ports(tmp_path)
    write_api_keys(
        config.api_keys_file, config.client_keys_file, config.clipctl_env, config.proxy_url
    )
    written = write_prometheus_config(config)
    assert "SUCCESS" in promtool("check", "config", str(written))
    text = written.read_text()
    assert config.api_key("admin") not in text
    assert config.prefect_auth_string().split(":", 1)[1] not in text
