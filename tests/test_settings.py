"""Configuration by environment variables: parsing and refusal of unsafe values."""

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from clipping.settings import Settings


def test_defaults_follow_the_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLIPPING_NAS_ROOTS", "CLIPPING_SIGNED_URL_TTL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (
        settings.topic_path(settings.requests_topic) == "projects/gg-poker/topics/clipping-requests"
    )
    assert settings.subscription_path(settings.requests_subscription).endswith("/clipping-worker")
    assert settings.completions_topic == "clipping-complete"
    assert settings.work_pool == "nas-pool"
    assert settings.signed_url_ttl == timedelta(days=7)


def test_nas_roots_are_colon_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPPING_NAS_ROOTS", "/mnt/nas1:/mnt/nas2")
    assert Settings().nas_roots == (Path("/mnt/nas1"), Path("/mnt/nas2"))


@pytest.mark.parametrize("roots", ["relative/nas", ""])
def test_nas_roots_must_be_absolute_and_present(
    monkeypatch: pytest.MonkeyPatch, roots: str
) -> None:
    monkeypatch.setenv("CLIPPING_NAS_ROOTS", roots)
    with pytest.raises(ValidationError, match="nas_roots"):
        Settings()


def test_signed_urls_cannot_outlive_the_v4_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIPPING_SIGNED_URL_TTL", "P8D")
    with pytest.raises(ValidationError, match="at most 7 days"):
        Settings()
