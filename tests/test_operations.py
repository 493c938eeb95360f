"""Operations on the local stack: two NAS sites of two workers each, scraped by a real
Prometheus (Debian's ``prometheus``).

Sites (``clipping.sites``): every clip runs on a worker of the site holding its recording,
and a site's lost worker hands its run to the other worker of that site, never to the
other site's. Metrics: every process is scraped, clips are counted once each, and the
alerting rules are loaded."""

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack.config import StackConfig, free_port
from stack.lifecycle import Stack
from stack.processes import kill_flow_processes
from stack.provision import ensure_sample_recording
from stack.throwaway import on_database
from tests.live_stack import CompletionLog, clip_body, wait_until_finished
from tests.media import SourceSpec, start_recorder
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

SITES = {"vegas": ("vegas-01", "vegas-02"), "macau": ("macau-01", "macau-02")}
CLIPS = 3
# Bounds on waiting for the stack and its scrapes (every second), far above what they
# need: not speed requirements.
PATIENCE_S = 180.0


@pytest.fixture(scope="module")
def stack_config(
    tmp_path_factory: pytest.TempPathFactory, stack_database: str
) -> Iterator[StackConfig]:
    workers = tuple(worker for pair in SITES.values() for worker in pair)
    config = StackConfig.on_free_ports(tmp_path_factory.mktemp("stack")).model_copy(
        update={
            "workers": workers,
            "worker_sites": tuple(site for site, pair in SITES.items() for _ in pair),
            "worker_health_ports": tuple(free_port() for _ in workers),
            "worker_metrics_ports": tuple(free_port() for _ in workers),
            "prometheus": True,
        }
    )
    with on_database(config, stack_database) as two_sites:
        yield two_sites


@pytest.fixture(scope="module")
def prometheus(live_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{live_stack.config.prometheus_url}/api/v1", timeout=30) as client:
        yield client


def site_recording(live_stack: Stack, site: str) -> Path:
    return ensure_sample_recording(
        live_stack.config.site_root(site) / "table.mp4", seconds=12, size="320x240"
    )


def agent_running(admin_proxy: httpx.Client, request_id: str) -> str | None:
    for agent in admin_proxy.get("/v1/admin/agents").json():
        if any(
            run["request_id"] == request_id and run["state"] == "Running" for run in agent["runs"]
        ):
            return str(agent["agent_id"])
    return None


def test_the_agents_know_their_sites(admin_proxy: httpx.Client) -> None:
    agents = {
        agent["agent_id"]: agent["site"] for agent in admin_proxy.get("/v1/admin/agents").json()
    }
    assert agents == {worker: site for site, pair in SITES.items() for worker in pair}


def test_every_clip_runs_on_a_worker_of_its_own_site(
    live_stack: Stack, proxy: httpx.Client
) -> None:
    requested = {
        proxy.post(
            "/v1/clip/request",
            json=clip_body(
                site_recording(live_stack, site), hand_id=f"hand-{site}-{i}", end_seconds=6.0
            ),
        ).json()["request_id"]: site
        for site in SITES
        for i in range(3)
    }
    for request_id, site in requested.items():
        status = wait_until_finished(proxy, request_id)
        assert status["status"] == "completed", status
        assert status["agent_id"] in SITES[site], (site, status["agent_id"])


def test_a_recording_no_site_serves_is_refused(live_stack: Stack, proxy: httpx.Client) -> None:
    outside = ensure_sample_recording(
        live_stack.config.nas_root / "lobby.mp4", seconds=4, size="320x240"
    )
    refused = proxy.post(
        "/v1/clip/request", json=clip_body(outside, start_seconds=1.0, end_seconds=2.0)
    )
    assert refused.status_code == 422
    assert "no NAS site serves this recording" in refused.json()["detail"]


def test_a_sites_lost_worker_hands_its_run_to_the_other_worker_of_that_site(
    live_stack: Stack, proxy: httpx.Client, admin_proxy: httpx.Client, completions: CompletionLog
) -> None:
    live = live_stack.config.site_root("macau") / "live.mp4"
    recorder = start_recorder(live, SourceSpec(seconds=600))
    try:
        wait_for(lambda: live.exists() and live.stat().st_size > 0, "the recorder", PATIENCE_S)
        body = clip_body(live, hand_id="hand-macau-lost", mode="accurate", end_seconds=30.0)
        request_id = proxy.post("/v1/clip/request", json=body).json()["request_id"]
        wait_for(lambda: agent_running(admin_proxy, request_id), "the run to start", PATIENCE_S)
        first = agent_running(admin_proxy, request_id)
        assert first in SITES["macau"]
        # The host is lost: its worker first (so it cannot report the crash), then the
        # run's flow process, found by its run id.
        run_id = proxy.get(f"/v1/clip/{request_id}/status").json()["flow_run_id"]
        os.kill(live_stack.supervisor.running()[first], signal.SIGKILL)
        assert kill_flow_processes(run_id), "the flow process was gone before the kill"
        try:
            status = wait_until_finished(proxy, request_id)
        finally:
            live_stack.stop(first, kill=True)
            live_stack.start(first)
    finally:
        recorder.kill()
        recorder.wait()
    (sibling,) = set(SITES["macau"]) - {first}
    assert status["status"] == "completed", status
    assert status["agent_id"] == sibling
    assert [c.status for c in completions.all_for(request_id)] == ["completed"]


def query(prometheus: httpx.Client, expression: str) -> dict[str, float]:
    """``instant vector`` answer as ``{job or '': value}``."""
    answer = prometheus.get("/query", params={"query": expression}).json()
    assert answer["status"] == "success", answer
    return {
        result["metric"].get("job", ""): float(result["value"][1])
        for result in answer["data"]["result"]
    }


def wait_for_value(prometheus: httpx.Client, expression: str, expected: float) -> None:
    """Until ``expression`` is ``expected``; a count past it fails at once (counted twice)."""

    def reached() -> bool:
        found = query(prometheus, expression).get("", 0.0)
        assert found <= expected, f"{expression} is {found}, more than {expected}"
        return found == expected

    wait_for(reached, f"{expression} to be {expected}", PATIENCE_S)


def test_every_process_is_scraped(prometheus: httpx.Client) -> None:
    """Each target answered a scrape within the last minute (a loaded Prefect server may
    miss one now and then; that is not what this checks)."""
    jobs = {
        "clipping-proxy": 1.0,
        "clipping-listener": 1.0,
        "clipping-workers": float(sum(len(pair) for pair in SITES.values())),
        "prefect-server": 1.0,
    }
    scraped = "sum by (job) (max_over_time(up[1m]))"
    wait_for(lambda: query(prometheus, scraped) == jobs, f"scrapes of {jobs}", PATIENCE_S)


def test_a_few_clips_are_counted_once_each(
    live_stack: Stack, proxy: httpx.Client, prometheus: httpx.Client
) -> None:
    """Re-encoded clips (no other test of the module asks for that mode): the latency
    histogram counts exactly them; the totals grow by as many."""
    totals = (
        'sum(clipping_requests_total{result="accepted"})',
        'sum(clipping_completions_total{status="completed"})',
        'sum(clipping_step_duration_seconds_count{step="notify"})',
    )
    before = {expression: query(prometheus, expression).get("", 0.0) for expression in totals}
    recording = site_recording(live_stack, "vegas")
    request_ids = [
        proxy.post(
            "/v1/clip/request",
            json=clip_body(recording, hand_id=f"hand-m{i}", mode="reencode", end_seconds=6.0),
        ).json()["request_id"]
        for i in range(CLIPS)
    ]
    for request_id in request_ids:
        assert wait_until_finished(proxy, request_id)["status"] == "completed"
    wait_for_value(
        prometheus, 'sum(clipping_request_latency_seconds_count{mode="reencode"})', CLIPS
    )
    for step in ("cut", "upload", "sign", "notify"):
        assert query(prometheus, f'sum(clipping_step_duration_seconds_count{{step="{step}"}})')
    wait_for(
        lambda: all(query(prometheus, e).get("", 0.0) >= before[e] + CLIPS for e in totals),
        "the totals to grow by the clips",
        PATIENCE_S,
    )
    assert query(prometheus, 'sum(clipping_request_latency_seconds_sum{mode="reencode"})')[""] > 0


def test_the_alerting_rules_are_loaded_and_quiet(prometheus: httpx.Client) -> None:
    groups = prometheus.get("/rules").json()["data"]["groups"]
    rules = {rule["name"]: rule["state"] for group in groups for rule in group["rules"]}
    assert set(rules) == {
        "ClippingNoAgentOnline",
        "ClippingListenerDown",
        "ClippingFailureRatioHigh",
        "ClippingLatencyP95High",
        "ClippingMessagesParked",
    }
    assert rules["ClippingNoAgentOnline"] == "inactive"
