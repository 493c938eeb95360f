"""Shared fixtures (service settings pointed at a temporary NAS root) and the test layers.

Every test is in exactly one layer, marked on its module: ``unit`` (in process, no server),
``integration`` (one real component) or ``e2e`` (the whole local stack).
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipping.settings import Settings, get_settings
from stack.postgres import create_database, drop_database

LAYERS = ("unit", "integration", "e2e")
# The modules that take longest, longest first; the rest follow in their usual order.
# Parallel runs (``--dist loadscope``) hand modules out in collection order, so starting
# these first keeps the slowest off the end of the run. Only an ordering: every test runs.
LONGEST_MODULES = (
    "test_pubsub_deadlines.py",
    "test_live_recordings.py",
    "test_cutting.py",
    "test_pubsub_emulators.py",
    "test_proxy_unit.py",
    "test_final_failure.py",
    "test_prefect_auth.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unplaced = [
        item.nodeid
        for item in items
        if sum(item.get_closest_marker(layer) is not None for layer in LAYERS) != 1
    ]
    if unplaced:
        raise pytest.UsageError(f"tests not in exactly one of {LAYERS}: {unplaced[:5]}")
    items.sort(key=_start_rank)


def _start_rank(item: pytest.Item) -> int:
    name = item.path.name
    return LONGEST_MODULES.index(name) if name in LONGEST_MODULES else len(LONGEST_MODULES)


@pytest.fixture
def nas_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A NAS root of its own, configured the way operators do it (environment variables)."""
    root = tmp_path / "nas"
    root.mkdir()
    monkeypatch.setenv("CLIPPING_NAS_ROOTS", str(root))
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


@pytest.fixture
def nas_root_is_pytest_tmp(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Recordings cut in process are pytest's temporary files: their base is the NAS root
    (use with ``pytestmark = pytest.mark.usefixtures("nas_root_is_pytest_tmp")``)."""
    monkeypatch.setenv("CLIPPING_NAS_ROOTS", str(tmp_path_factory.getbasetemp()))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings(nas_root: Path) -> Settings:
    return get_settings()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh proxy database: an SQLite file, and a throwaway PostgreSQL database on the
    local server (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'proxy.db'}"
        return
    name = f"clipping_proxy_test_{uuid.uuid4().hex[:12]}"
    url = create_database(name).replace("+asyncpg", "+psycopg")
    try:
        yield url
    finally:
        drop_database(name)


pytest_plugins = ["tests.live_stack", "tests.gcs_emulator", "tests.pubsub_clients"]


@pytest.fixture
def request_body(nas_root: Path) -> dict[str, object]:
    """A valid clip request as M6 sends it (the recording need not exist)."""
    return {
        "request_id": "r1",
        "hand_id": "h1",
        "nas_video_path": str(nas_root / "day1.mp4"),
        "start_seconds": 1.0,
        "end_seconds": 2.5,
    }
