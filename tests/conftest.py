"""Shared fixtures: service settings pointed at a temporary NAS root."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from clipping.settings import Settings, get_settings


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
def settings(nas_root: Path) -> Settings:
    return get_settings()


pytest_plugins = ["tests.live_stack", "tests.gcs_emulator"]
