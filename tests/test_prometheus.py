"""A real Prometheus scrapes the local stack: every process's metrics arrive, with the
right counts after a few clips, and the alerting rules are loaded."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack.config import StackConfig
from stack.lifecycle import Stack
from stack.throwaway import on_database
from tests.live_stack import clip_body, wait_until_finished

pytestmark = pytest.mark.e2e

CLIPS = 3
# A bound on waiting for scrapes (every second), far above what they need.
PATIENCE_S = 120.0


@pytest.fixture(scope="module")
def stack_config(
    tmp_path_factory: pytest.TempPathFactory, stack_database: str
) -> Iterator[StackConfig]:
    config = StackConfig.on_free_ports(tmp_path_factory.mktemp("stack"))
    with on_database(config.model_copy(update={"prometheus": True}), stack_database) as scraped:
        yield scraped


@pytest.fixture(scope="module")
def prometheus(live_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{live_stack.config.prometheus_url}/api/v1", timeout=30) as client:
        yield client


def query(prometheus: httpx.Client, expression: str) -> dict[str, float]:
    """``instant vector`` answer as ``{job or '': value}``."""
    answer = prometheus.get("/query", params={"query": expression}).json()
    assert answer["status"] == "success", answer
    return {
        result["metric"].get("job", ""): float(result["value"][1])
        for result in answer["data"]["result"]
    }


def wait_for_value(prometheus: httpx.Client, expression: str, expected: float) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while (found := query(prometheus, expression)) != {"": expected}:
        assert time.monotonic() < deadline, f"{expression} is {found}, not {expected}"
        time.sleep(0.5)


def test_every_process_is_scraped(prometheus: httpx.Client) -> None:
    jobs = {
        "clipping-proxy": 1.0,
        "clipping-listener": 1.0,
        "clipping-workers": 2.0,
        "prefect-server": 1.0,
    }
    deadline = time.monotonic() + PATIENCE_S
    while (found := query(prometheus, "sum by (job) (up)")) != jobs:
        assert time.monotonic() < deadline, f"up by job: {found}"
        time.sleep(0.5)


def test_a_few_clips_are_counted_once_each(
    live_stack: Stack, proxy: httpx.Client, prometheus: httpx.Client, recording: Path
) -> None:
    request_ids = [
        proxy.post("/v1/clip/request", json=clip_body(recording, hand_id=f"hand-m{i}")).json()[
            "request_id"
        ]
        for i in range(CLIPS)
    ]
    for request_id in request_ids:
        assert wait_until_finished(proxy, request_id)["status"] == "completed"
    wait_for_value(prometheus, 'sum(clipping_request_latency_seconds_count{mode="copy"})', CLIPS)
    wait_for_value(prometheus, 'sum(clipping_completions_total{status="completed"})', CLIPS)
    wait_for_value(prometheus, 'sum(clipping_requests_total{result="accepted"})', CLIPS)
    wait_for_value(prometheus, 'sum(clipping_listener_messages_total{result="run_created"})', CLIPS)
    for step in ("cut", "upload", "sign", "notify"):
        wait_for_value(
            prometheus, f'sum(clipping_step_duration_seconds_count{{step="{step}"}})', CLIPS
        )
    latency = query(prometheus, "sum(clipping_request_latency_seconds_sum)")[""]
    assert 0 < latency < CLIPS * 180  # each clip within the suite's own clip timeout


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
