"""What is shipped: each role's modules import with only its own dependency set.

The product's packages (``[tool.setuptools] packages``) never import the local stack, the
emulators, the benchmarks or the tests; the proxy needs no PyAV or ffmpeg (its image
installs the ``proxy`` extra alone), and the NAS roles need no web framework.
"""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text())
TOOLING = ("stack", "emulators", "bench", "tests")
WORKER_ONLY = ("av", "imageio_ffmpeg", "ffmpeg", "prefect_gcp")
PROXY_ONLY = ("fastapi", "uvicorn", "sqlalchemy", "psycopg")


def imports_without(blocked: tuple[str, ...], modules: list[str]) -> subprocess.CompletedProcess:
    """Import ``modules`` in a fresh interpreter where importing any of ``blocked`` fails."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        f"for module in {modules!r}: __import__(module)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=False
    )


def test_the_proxy_imports_without_the_worker_extra_or_tooling() -> None:
    result = imports_without(WORKER_ONLY + TOOLING, ["proxy.app", "proxy.openapi", "clipctl.cli"])
    assert result.returncode == 0, result.stderr


def test_the_nas_roles_import_without_the_proxy_extra_or_tooling() -> None:
    modules = ["agent_pool.listener", "agent_pool.worker", "flows.clip_hand", "deployments"]
    result = imports_without(PROXY_ONLY + TOOLING, modules)
    assert result.returncode == 0, result.stderr


def test_the_check_can_fail() -> None:
    """A blocked dependency a module needs does fail the import."""
    assert imports_without(("av",), ["cutting.probe"]).returncode != 0


def test_tooling_is_not_shipped() -> None:
    shipped = PYPROJECT["tool"]["setuptools"]["packages"]
    assert not [name for name in shipped if name.split(".")[0] in TOOLING]


@pytest.mark.parametrize(("extra", "excluded"), [("proxy", WORKER_ONLY), ("worker", PROXY_ONLY)])
def test_a_roles_extra_holds_none_of_the_others_dependencies(
    extra: str, excluded: tuple[str, ...]
) -> None:
    names = PYPROJECT["project"]["optional-dependencies"][extra]
    core = PYPROJECT["project"]["dependencies"]
    distributions = {"av": "av", "imageio_ffmpeg": "imageio-ffmpeg", "ffmpeg": "ffmpeg-python"}
    distributions |= {"prefect_gcp": "prefect-gcp", "psycopg": "psycopg[binary]"}
    for module in excluded:
        wanted = distributions.get(module, module)
        assert not [spec for spec in names + core if spec.startswith(wanted)], module
