"""The M6 API on the live stack: auth, limits, errors, admin agents, failover, the schema.

Everything runs against the stack's proxy with real Prefect and Pub/Sub behind it; the
keys are the stack's own (``m6``: clip, ``admin``: admin, ``operator``: both).
"""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from typer.testing import CliRunner

from clipctl.cli import app as clipctl
from proxy.openapi import openapi_yaml
from stack.lifecycle import Stack
from stack.provision import ensure_sample_recording
from tests.live_stack import CompletionLog, clip_body, proxy_client, wait_until_finished

pytestmark = pytest.mark.e2e

OPENAPI_FILE = Path(__file__).resolve().parents[1] / "openapi.yaml"
AGENTS = ("nas-server-01", "nas-server-02")


def test_openapi_yaml_is_what_the_app_serves(live_stack: Stack) -> None:
    served = httpx.get(f"{live_stack.config.proxy_url}/openapi.json").json()
    assert yaml.safe_load(OPENAPI_FILE.read_text()) == served
    assert OPENAPI_FILE.read_text() == openapi_yaml(), "regenerate: python -m proxy.openapi"


def test_a_request_is_queued_from_the_post_on_even_across_a_proxy_restart(
    live_stack: Stack, proxy: httpx.Client, recording: Path
) -> None:
    live_stack.stop("listener")
    try:
        body = clip_body(recording, request_id="restart-1", hand_id="hand-restart")
        assert proxy.post("/v1/clip/request", json=body).status_code == 202
        live_stack.stop("proxy")
        live_stack.start("proxy")
        assert proxy.get("/v1/clip/restart-1/status").json()["status"] == "queued"
    finally:
        live_stack.start("listener")
    assert wait_until_finished(proxy, "restart-1")["status"] == "completed"


def test_agents_lists_both_workers_online(admin_proxy: httpx.Client) -> None:
    agents = admin_proxy.get("/v1/admin/agents").json()
    assert [agent["agent_id"] for agent in agents] == list(AGENTS)
    for agent in agents:
        assert agent["status"] == "online"
        assert agent["online"] is True
        assert agent["last_heartbeat"] is not None


def test_failover_or_resume_of_an_unknown_agent_is_404(admin_proxy: httpx.Client) -> None:
    assert admin_proxy.post("/v1/admin/agents/nas-server-99/failover").status_code == 404
    assert admin_proxy.post("/v1/admin/agents/nas-server-99/resume").status_code == 404


def test_draining_the_last_online_agent_is_refused(admin_proxy: httpx.Client) -> None:
    with drained(admin_proxy, "nas-server-02"):
        refused = admin_proxy.post("/v1/admin/agents/nas-server-01/failover")
        assert refused.status_code == 409
        assert "no other agent" in refused.json()["detail"]


# A drain takes effect at the agent's next poll (up to 1 s later, plus its API calls): the
# clip's reencode must outlast that by far. 40 s of 640x360 (~3 s quiet) once finished
# first; 120 s takes ~10 s quiet.
FAILOVER_CLIP_S = 120


@pytest.fixture(scope="module")
def long_recording(live_stack: Stack) -> Path:
    return ensure_sample_recording(
        live_stack.config.nas_root / "recordings" / "table-long.mp4",
        seconds=FAILOVER_CLIP_S,
        size="640x360",
    )


def test_failover_moves_a_running_clip_to_the_other_agent(
    proxy: httpx.Client,
    admin_proxy: httpx.Client,
    long_recording: Path,
    completions: CompletionLog,
) -> None:
    body = clip_body(
        long_recording, hand_id="hand-failover", start_seconds=0.0, end_seconds=FAILOVER_CLIP_S
    )
    with drained(admin_proxy, "nas-server-02"):
        request_id = proxy.post("/v1/clip/request", json={**body, "mode": "reencode"}).json()[
            "request_id"
        ]
        _wait_for_run_on(admin_proxy, "nas-server-01", request_id)
    with drained(admin_proxy, "nas-server-01") as report:
        assert report["status"] == "drained"
        assert request_id in [run["request_id"] for run in report["runs"]], (
            "the clip finished before the failover; make it longer"
        )
        status = wait_until_finished(proxy, request_id)
    assert status["status"] == "completed", status
    assert status["agent_id"] == "nas-server-02"
    announced = completions.wait_for(request_id)
    assert announced.agent_id == "nas-server-02"
    time.sleep(2.0)
    assert completions.count(request_id) == 1


def test_a_third_worker_takes_work_without_other_changes(
    live_stack: Stack, proxy: httpx.Client, admin_proxy: httpx.Client, recording: Path
) -> None:
    health_port = live_stack.add_worker("nas-server-03")
    try:
        assert httpx.get(f"http://127.0.0.1:{health_port}/health").status_code == 200
        with drained(admin_proxy, "nas-server-01"), drained(admin_proxy, "nas-server-02"):
            body = clip_body(recording, hand_id="hand-scale-out")
            request_id = proxy.post("/v1/clip/request", json=body).json()["request_id"]
            status = wait_until_finished(proxy, request_id)
        assert status["status"] == "completed", status
        assert status["agent_id"] == "nas-server-03"
    finally:
        live_stack.stop("nas-server-03")


CASES_PER_OPERATION = 45
SCHEMA_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_generated_requests_get_no_5xx_and_answers_match_the_schema(live_stack: Stack) -> None:
    """schemathesis, from ``openapi.yaml``: a few hundred generated requests, operator key."""
    schema = schemathesis.openapi.from_path(OPENAPI_FILE)
    headers = {"Authorization": f"Bearer {live_stack.config.api_key('operator')}"}
    statuses: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=CASES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def answers_conform(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                base_url=live_stack.config.proxy_url, headers=headers, checks=SCHEMA_CHECKS
            )
            statuses.append(response.status_code)

        answers_conform()
    assert len(statuses) >= 200
    # A generated path never lies inside the NAS root, so requests end at 422, not 202.
    assert {200, 404, 422} <= set(statuses)


@contextmanager
def drained(admin_proxy: httpx.Client, agent_id: str) -> Iterator[dict]:
    answer = admin_proxy.post(f"/v1/admin/agents/{agent_id}/failover")
    assert answer.status_code == 200, answer.text
    try:
        yield answer.json()
    finally:
        resumed = _post_until_not_503(admin_proxy, f"/v1/admin/agents/{agent_id}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] == "online"


def _post_until_not_503(client: httpx.Client, path: str, attempts: int = 5) -> httpx.Response:
    """POST as a caller told "retry later" does: a loaded SQLite-backed Prefect server
    answers the proxy 503 ("database is locked") now and then."""
    for _ in range(attempts - 1):
        answer = client.post(path)
        if answer.status_code != 503:
            return answer
        time.sleep(1.0)
    return client.post(path)


def _wait_for_run_on(admin_proxy: httpx.Client, agent_id: str, request_id: str) -> None:
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        agents = {agent["agent_id"]: agent for agent in admin_proxy.get("/v1/admin/agents").json()}
        runs = agents[agent_id]["runs"]
        if any(run["request_id"] == request_id and run["state"] == "Running" for run in runs):
            return
        time.sleep(0.2)
    raise AssertionError(f"{request_id} never ran on {agent_id}")


def test_clipctl_requests_waits_deletes_and_manages_agents(
    live_stack: Stack, recording: Path
) -> None:
    env = {
        "CLIPPING_PROXY_URL": live_stack.config.proxy_url,
        "CLIPPING_API_KEY": live_stack.config.api_key("operator"),
    }
    runner = CliRunner()
    requested = runner.invoke(
        clipctl,
        ["request", str(recording), "2", "6", "--hand-id", "hand-cli", "--mode", "copy",
         "--request-id", "cli-1", "--wait"],
        env=env,
    )  # fmt: skip
    assert requested.exit_code == 0, requested.output
    assert '"status": "completed"' in requested.stdout
    status = runner.invoke(clipctl, ["status", "cli-1"], env=env)
    assert json.loads(status.stdout)["download_url"].startswith("http")
    too_late = runner.invoke(clipctl, ["cancel", "cli-1"], env=env)
    assert too_late.exit_code == 1
    assert "409: clip request 'cli-1' already ended as completed" in too_late.stderr
    deleted = runner.invoke(clipctl, ["delete", "cli-1"], env=env)
    assert (deleted.exit_code, deleted.stdout.strip()) == (0, "deleted cli-1")
    gone = runner.invoke(clipctl, ["status", "cli-1"], env=env)
    assert "404: clip request 'cli-1' was deleted" in gone.stderr

    listed = runner.invoke(clipctl, ["agents"], env=env)
    assert listed.exit_code == 0
    assert "nas-server-01" in listed.stdout
    assert "nas-server-02" in listed.stdout
    drained = runner.invoke(clipctl, ["failover", "nas-server-02"], env=env)
    assert json.loads(drained.stdout)["status"] == "drained"
    resumed = runner.invoke(clipctl, ["resume", "nas-server-02"], env=env)
    assert json.loads(resumed.stdout)["status"] == "online"


def test_clipctl_prints_the_reason_of_a_refusal(live_stack: Stack) -> None:
    runner = CliRunner()
    env = {"CLIPPING_PROXY_URL": live_stack.config.proxy_url}
    unknown = runner.invoke(
        clipctl,
        ["status", "never-asked"],
        env={**env, "CLIPPING_API_KEY": live_stack.config.api_key("m6")},
    )
    assert unknown.exit_code == 1
    assert "404: no clip request 'never-asked'" in unknown.stderr
    forbidden = runner.invoke(
        clipctl, ["agents"], env={**env, "CLIPPING_API_KEY": live_stack.config.api_key("m6")}
    )
    assert forbidden.exit_code == 1
    assert "403: the key lacks scope admin" in forbidden.stderr
    keyless = runner.invoke(clipctl, ["agents"], env={**env, "CLIPPING_API_KEY": ""})
    assert keyless.exit_code == 2
    assert "no API key" in keyless.stderr


def test_while_prefect_is_down_status_and_agents_are_503(
    live_stack: Stack, admin_proxy: httpx.Client
) -> None:
    live_stack.stop("prefect-server")
    try:
        # An admin's status reaches Prefect for any id (M6's key is 404 for ids not its own).
        with proxy_client(live_stack.config, "operator") as operator:
            status = operator.get("/v1/clip/any-id/status")
        for answer in (
            status,
            admin_proxy.get("/v1/admin/agents"),
            admin_proxy.post("/v1/admin/agents/nas-server-01/failover"),
        ):
            assert answer.status_code == 503, answer.text
            assert answer.json() == {"detail": "the orchestrator is unreachable; retry later"}
    finally:
        live_stack.start("prefect-server")


def test_while_pubsub_is_down_a_request_is_503_and_not_recorded(
    live_stack: Stack, proxy: httpx.Client, recording: Path
) -> None:
    """Last in the module: the fallback emulator forgets its topics when it stops."""
    live_stack.stop("pubsub-emulator")
    body = clip_body(recording, request_id="no-pubsub-1")
    try:
        refused = proxy.post("/v1/clip/request", json=body)
    finally:
        live_stack.start("pubsub-emulator")  # so the listener stops promptly at teardown
    assert refused.status_code == 503, refused.text
    assert "could not be queued" in refused.json()["detail"]
    assert proxy.get("/v1/clip/no-pubsub-1/status").status_code == 404
