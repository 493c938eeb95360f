"""The local stack's Prefect server behind its secret, and the blocks without the signing key.

Only the stack's Prefect server is started (free port, temporary state dir, SQLite), as
the stack starts it; it is stopped after the module and nothing it started outlives it.
"""

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
from prefect_gcp import GcpCredentials

from blocks.gcs import save_clip_blocks
from clipping.settings import get_settings
from deployments.apply import ensure_work_pool
from stack.config import StackConfig
from stack.lifecycle import Stack
from stack.processes import marked_processes
from stack.provision import write_service_account_key

pytestmark = pytest.mark.integration

# A deployment that would run a shell command of the caller's choosing on a NAS worker.
HOSTILE_DEPLOYMENT = {
    "name": "pwn",
    "work_pool_name": "nas-pool",
    "job_variables": {"command": "sh -c 'cat /etc/clipping/service-account.json'"},
}
BLOCK_FILTER = {"include_secrets": True}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    config = StackConfig.on_free_ports(tmp_path_factory.mktemp("prefect-auth"))
    stack = Stack(config)
    with config.activated():
        try:
            stack.start("prefect-server")
            ensure_work_pool(get_settings().work_pool)
            yield config
        finally:
            stack.down()
    assert marked_processes(str(config.dir)) == [], "the Prefect server outlived the test"


@pytest.fixture(scope="module")
def flow_id(config: StackConfig) -> str:
    with config.prefect_http() as api:
        created = api.post("/flows/", json={"name": "pwn"})
    assert created.status_code in (200, 201), created.text
    return created.json()["id"]


def _anonymous(config: StackConfig, **kwargs: object) -> httpx.Client:
    return httpx.Client(base_url=config.prefect_api_url, timeout=30.0, **kwargs)


def _hostile_deployment(flow_id: str) -> dict[str, object]:
    return {**HOSTILE_DEPLOYMENT, "flow_id": flow_id}


def test_the_secret_file_is_private_and_stable(config: StackConfig) -> None:
    assert config.prefect_auth_file.stat().st_mode & 0o777 == 0o600
    user, _, password = config.prefect_auth_string().partition(":")
    assert user and len(password) >= 32
    assert StackConfig(dir=config.dir).prefect_auth_string() == config.prefect_auth_string()


def test_the_health_check_needs_no_secret(config: StackConfig) -> None:
    with _anonymous(config) as api:
        assert api.get("/health").status_code == 200


@pytest.mark.parametrize(
    "client_kwargs",
    [
        {},
        {"auth": httpx.BasicAuth("clipping", "wrong-secret")},
        {"headers": {"Authorization": "Bearer not-basic"}},
    ],
    ids=["no-secret", "wrong-secret", "wrong-scheme"],
)
def test_without_the_secret_blocks_and_deployments_are_refused(
    config: StackConfig, flow_id: str, client_kwargs: dict[str, object]
) -> None:
    with _anonymous(config, **client_kwargs) as api:
        assert api.post("/block_documents/filter", json=BLOCK_FILTER).status_code == 401
        assert api.post("/deployments/", json=_hostile_deployment(flow_id)).status_code == 401
    with config.prefect_http() as api:
        named = {"deployments": {"name": {"any_": [HOSTILE_DEPLOYMENT["name"]]}}}
        assert api.post("/deployments/filter", json=named).json() == []


def test_with_the_secret_the_same_requests_succeed(config: StackConfig, flow_id: str) -> None:
    """The control: the refusals above are the secret's doing, not a malformed request."""
    token = base64.b64encode(config.prefect_auth_string().encode()).decode()
    with _anonymous(config, headers={"Authorization": f"Basic {token}"}) as api:
        assert api.post("/block_documents/filter", json=BLOCK_FILTER).status_code == 200
        created = api.post("/deployments/", json=_hostile_deployment(flow_id))
        assert created.status_code in (200, 201), created.text
        assert api.delete(f"/deployments/{created.json()['id']}").status_code == 204


def test_the_saved_blocks_hold_no_key_even_with_secrets_and_after_an_old_release(
    config: StackConfig,
) -> None:
    key_file = config.service_account_file
    write_service_account_key(key_file, "gg-poker", config.token_uri)
    key = json.loads(key_file.read_text())
    settings = get_settings()
    assert settings.service_account_file == key_file  # the stack's own setting
    # What an earlier release saved: the key itself in the credentials block.
    GcpCredentials(service_account_info=key, project="gg-poker").save(
        settings.gcp_credentials_block, overwrite=True
    )
    assert _private_key_pem(key) in _all_blocks(config)  # the check below can see a key

    save_clip_blocks(settings)

    saved = _all_blocks(config)
    assert "PRIVATE KEY" not in saved
    assert _private_key_pem(key) not in saved
    credentials = _block(config, settings.gcp_credentials_block)
    assert credentials["data"].get("service_account_info") is None
    assert credentials["data"]["service_account_file"] == str(key_file)
    assert _block(config, settings.gcs_block)["data"]["bucket"] == settings.bucket


def _all_blocks(config: StackConfig) -> str:
    """Every block document as the API gives it to a holder of the secret."""
    with config.prefect_http() as api:
        response = api.post("/block_documents/filter", json=BLOCK_FILTER)
    response.raise_for_status()
    return response.text


def _block(config: StackConfig, name: str) -> dict:
    return next(b for b in json.loads(_all_blocks(config)) if b["name"] == name)


def _private_key_pem(key: dict[str, str]) -> str:
    """The key as it appears in a JSON answer (newlines escaped)."""
    return json.dumps(key["private_key"])[1:-1]
