"""Configuration by environment variables: parsing and refusal of unsafe values."""

import re
from datetime import timedelta
from enum import Enum
from pathlib import Path

import pytest
import yaml
from prefect.utilities.templating import apply_values
from pydantic import TypeAdapter, ValidationError
from pydantic_settings import BaseSettings

from clipping.settings import CLIP_FLOW, Settings
from deployments.apply import deployment_variables
from proxy.settings import ProxySettings

pytestmark = pytest.mark.unit


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


README = Path(__file__).resolve().parents[1] / "README.md"
PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"
# Read by the local stack's tooling, not by the service: documented in the same table.
TOOLING_VARIABLES = {"CLIPPING_PUBSUB_EMULATOR"}
MODELS = (Settings, ProxySettings)


def documented_defaults() -> dict[str, str]:
    """``CLIPPING_*`` variable -> the default the README's configuration table shows.

    A row may name several variables (``A`` / ``B``) with a default each, or one for all.
    """
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    defaults: dict[str, str] = {}
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`CLIPPING_"):
            continue
        names = re.findall(r"`(CLIPPING_[A-Z0-9_]+)`", cells[0])
        shown = [value.strip().strip("`") for value in cells[1].split(" / ")]
        for index, name in enumerate(names):
            defaults[name] = shown[index] if len(shown) == len(names) else shown[0]
    return defaults


def variable(model: type[BaseSettings], field: str) -> str:
    return f"{model.model_config['env_prefix']}{field}".upper()


def shown_default(value: object) -> str:
    """A default as the README writes it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, timedelta):
        return str(TypeAdapter(timedelta).dump_python(value, mode="json"))
    if isinstance(value, tuple):
        return ":".join(str(part) for part in value)
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def test_the_readme_documents_every_setting_with_its_default() -> None:
    documented = documented_defaults()
    fields = {
        variable(model, name): info.default
        for model in MODELS
        for name, info in model.model_fields.items()
    }
    assert sorted(set(fields) - set(documented)) == [], "settings missing from README"
    assert sorted(set(documented) - set(fields) - TOOLING_VARIABLES) == [], "unknown variables"
    for name, default in fields.items():
        shown = documented[name]
        assert shown.startswith(shown_default(default)), (name, shown, default)


def test_every_setting_explains_itself() -> None:
    for model in MODELS:
        for name, info in model.model_fields.items():
            assert info.description, f"{variable(model, name)} has no description"


def test_prefect_yaml_takes_the_pool_and_deployment_names_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rendered as ``prefect deploy`` renders it (its own templating, the environment)."""
    monkeypatch.setenv("CLIPPING_WORK_POOL", "site-b-pool")
    monkeypatch.setenv("CLIPPING_DEPLOYMENT", "clip-hand/site-b")
    settings = Settings()
    deployment = yaml.safe_load(PREFECT_YAML.read_text())["deployments"][0]
    for name, value in deployment_variables(settings).items():  # as deploy_all passes them
        monkeypatch.setenv(name, value)
    rendered = apply_values(deployment, {}, remove_notset=False)
    assert rendered["name"] == "site-b"
    assert rendered["work_pool"]["name"] == "site-b-pool"
    assert settings.deployment == f"{CLIP_FLOW}/{rendered['name']}"


@pytest.mark.parametrize("deployment", ["other-flow/clip-hand", "clip-hand", "clip-hand/a/b"])
def test_the_deployment_must_be_one_of_the_clip_flow(
    monkeypatch: pytest.MonkeyPatch, deployment: str
) -> None:
    monkeypatch.setenv("CLIPPING_DEPLOYMENT", deployment)
    with pytest.raises(ValidationError, match="deployment must be 'clip-hand/<deployment name>'"):
        Settings()
