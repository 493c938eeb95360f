"""The production systemd units and their installer (``agent_pool/systemd/``), checked offline.

``systemd-analyze verify`` parses each unit as systemd would and refuses an ``ExecStart``
binary that does not exist. ``/opt/clipping/venv/bin/python`` exists only on installed
hosts, so the units are verified from a copy in which that one path is replaced by this
interpreter; every other line is verified as shipped.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import prefect.settings
import pytest

from clipping.settings import Settings
from proxy.settings import ProxySettings

pytestmark = pytest.mark.unit

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "agent_pool" / "systemd"
INSTALL_SH = SYSTEMD_DIR / "install.sh"
ENV_EXAMPLE = SYSTEMD_DIR / "clipping.env.example"
VENV_PYTHON = "/opt/clipping/venv/bin/python"
SERVER_UNIT = SYSTEMD_DIR / "prefect-server.service"
WORKER_TEMPLATE = "clipping-worker@.service"
PLAIN_UNITS = ["prefect-server.service", "clipping-listener.service", "clipping-proxy.service"]
# Instances verified through the template; nas-server-03 is the scale-out case.
WORKER_INSTANCES = [
    "clipping-worker@nas-server-01.service",
    "clipping-worker@nas-server-03.service",
]
# Read by agent_pool/worker.py itself, not through a settings class.
EXTRA_CLIPPING_NAMES = {"CLIPPING_WORKER_HEALTH_PORT"}

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed: cannot verify units"
)


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Section -> (key, value) pairs in order; keys may repeat, as in systemd."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def service_values(path: Path, key: str) -> list[str]:
    return [value for k, value in unit_entries(path)["Service"] if k == key]


@pytest.fixture(scope="module")
def verifiable_units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped units with only the venv interpreter's path pointed at this one."""
    directory = tmp_path_factory.mktemp("units")
    for name in [*PLAIN_UNITS, WORKER_TEMPLATE]:
        text = (SYSTEMD_DIR / name).read_text()
        assert f"ExecStart={VENV_PYTHON} -m " in text, f"{name} must run the installed venv"
        (directory / name).write_text(text.replace(VENV_PYTHON, sys.executable))
    for instance in WORKER_INSTANCES:
        (directory / instance).symlink_to(WORKER_TEMPLATE)
    return directory


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [*PLAIN_UNITS, *WORKER_INSTANCES])
def test_systemd_analyze_verify_accepts_unit(verifiable_units: Path, unit: str) -> None:
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", f"./{unit}"],
        cwd=verifiable_units,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Parse problems ("Unknown key", "Failed to parse") are warnings with exit code 0,
    # so stderr is checked too. Lines about other units of this host are not ours.
    ours = [
        line
        for line in result.stderr.splitlines()
        if str(verifiable_units) in line or unit in line or WORKER_TEMPLATE in line
    ]
    assert result.returncode == 0, result.stderr
    assert ours == [], result.stderr


@pytest.mark.parametrize("unit", [*PLAIN_UNITS, WORKER_TEMPLATE])
def test_units_restart_run_as_clipping_and_read_the_env_file(unit: str) -> None:
    path = SYSTEMD_DIR / unit
    assert service_values(path, "Restart") == ["always"]
    assert service_values(path, "User") == ["clipping"]
    assert service_values(path, "EnvironmentFile") == ["/etc/clipping/clipping.env"]
    assert service_values(path, "WorkingDirectory") == ["/opt/clipping"]
    assert service_values(path, "NoNewPrivileges") == ["yes"]
    # "strict" would make the scratch directory and the state directories read-only.
    assert service_values(path, "ProtectSystem") == ["full"]
    assert ("WantedBy", "multi-user.target") in unit_entries(path)["Install"]


def test_worker_unit_is_named_after_its_agent_and_spares_flow_processes() -> None:
    path = SYSTEMD_DIR / WORKER_TEMPLATE
    assert service_values(path, "ExecStart") == [f"{VENV_PYTHON} -m agent_pool.worker --name %i"]
    # Stopping the worker must not take its in-flight flow processes with it ...
    assert service_values(path, "KillMode") == ["process"]
    # ... nor delete a private /tmp under them.
    assert service_values(path, "PrivateTmp") in ([], ["no"])
    assert "PREFECT_HOME=/var/lib/clipping/%i" in service_values(path, "Environment")


def test_env_example_uses_only_names_the_service_reads() -> None:
    known = {f"CLIPPING_{name.upper()}" for name in Settings.model_fields}
    known |= {f"CLIPPING_PROXY_{name.upper()}" for name in ProxySettings.model_fields}
    known |= EXTRA_CLIPPING_NAMES
    # Active and commented-out assignments alike.
    names = set(re.findall(r"^#?(CLIPPING_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert names, "no CLIPPING_* variable in the example"
    assert names <= known, f"unknown variables: {sorted(names - known)}"
    assert not re.search(r"^PREFECT_HOME=", ENV_EXAMPLE.read_text(), re.MULTILINE)


def test_the_prefect_server_binds_a_private_address_by_default() -> None:
    (start,) = service_values(SERVER_UNIT, "ExecStart")
    # Host and port come from the environment alone, so the env file can choose them.
    assert start == f"{VENV_PYTHON} -m prefect server start"
    assert "0.0.0.0" not in SERVER_UNIT.read_text()
    environment = service_values(SERVER_UNIT, "Environment")
    assert "PREFECT_SERVER_API_HOST=127.0.0.1" in environment
    assert "PREFECT_SERVER_API_PORT=4200" in environment


def _server_precheck(auth_string: str | None) -> int:
    """The server unit's ExecStartPre run as systemd runs it, with this secret or none."""
    (precheck,) = service_values(SERVER_UNIT, "ExecStartPre")
    # systemd splits the line like a shell and turns "$$" into a literal "$".
    command = [word.replace("$$", "$") for word in shlex.split(precheck)]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_API_AUTH_STRING"}
    if auth_string is not None:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize(
    ("auth_string", "starts"),
    [(None, False), ("", False), ("clipping:CHANGE-ME", False), ("clipping:s3cr3t-xyz", True)],
    ids=["unset", "empty", "placeholder", "a-secret"],
)
def test_the_prefect_server_refuses_to_start_without_a_secret(
    auth_string: str | None, starts: bool
) -> None:
    assert (_server_precheck(auth_string) == 0) is starts


def test_env_example_documents_the_prefect_auth_strings() -> None:
    text = ENV_EXAMPLE.read_text()
    # Every client sends the secret; the server line is for the Prefect host to uncomment.
    assert re.search(r"^PREFECT_API_AUTH_STRING=\S+:\S+$", text, re.MULTILINE)
    assert re.search(r"^#PREFECT_SERVER_API_AUTH_STRING=\S+:\S+$", text, re.MULTILINE)
    # Clients reach the server through TLS, never a plain-http Prefect URL.
    assert re.search(r"^PREFECT_API_URL=https://", text, re.MULTILINE)
    assert re.search(r"^#?PREFECT_SERVER_API_HOST=127\.0\.0\.1$", text, re.MULTILINE)


def test_env_example_uses_only_prefect_settings_prefect_knows() -> None:
    names = set(re.findall(r"^#?(PREFECT_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert "PREFECT_API_AUTH_STRING" in names
    unknown = {name for name in names if not hasattr(prefect.settings, name)}
    assert unknown == set(), f"not Prefect settings: {sorted(unknown)}"


def run_install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL_SH), *args], capture_output=True, text=True, timeout=60
    )


def test_install_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(INSTALL_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_install_help() -> None:
    result = run_install("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: install.sh")
    for role in ("server", "worker AGENT_ID", "listener", "proxy", "--dry-run"):
        assert role in result.stdout


def test_install_dry_run_adds_a_third_worker_by_its_id_alone() -> None:
    result = run_install("--dry-run", "worker", "nas-server-03")
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert commands, result.stdout
    assert "+ systemctl daemon-reload" in commands
    # --now unless this host has no /etc/clipping/clipping.env yet (then it is created
    # from the example and the unit is started once the file is edited).
    enable = [c for c in commands if re.match(r"\+ systemctl enable( --now)? ", c)]
    assert len(enable) == 1, commands
    assert enable[0].endswith(" clipping-worker@nas-server-03.service")
    assert any(
        c.endswith(f"{WORKER_TEMPLATE} /etc/systemd/system/{WORKER_TEMPLATE}") for c in commands
    )
    # Nothing else names the agent: no per-agent configuration elsewhere.
    mentions = [c for c in commands if "nas-server-03" in c]
    assert mentions == enable, mentions


@pytest.mark.parametrize(
    "args",
    [[], ["worker"], ["worker", "nas/server"], ["worker", "-x"], ["frobnicate"]],
    ids=["no-role", "worker-without-id", "id-with-slash", "id-like-option", "unknown-role"],
)
def test_install_refuses_bad_arguments(args: list[str]) -> None:
    result = run_install("--dry-run", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("install.sh: ")
