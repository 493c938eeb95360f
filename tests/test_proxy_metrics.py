"""The proxy's metrics in process: answers counted by route template, requests by result,
completions by status, latency from the accepted record, steps, sizes, failure classes."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prefect.settings import PREFECT_API_URL, temporary_settings
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from clipping.messages import ClipCompletion, ClipMode, ClipState
from clipping.settings import Settings
from proxy.accepted import AcceptedRecord
from proxy.app import create_app
from proxy.deps import get_publisher
from proxy.metrics import CompletionCounter, ProxyMetrics, failure_class
from proxy.settings import ProxySettings

pytestmark = pytest.mark.unit

ACCEPTED_AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class _Publisher:
    async def publish(self, clip: object) -> str:
        return "message"


@pytest.fixture
def client(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    proxy_settings = ProxySettings(
        api_keys=SecretStr("clip:m6-key,admin:admin-key"),
        database_url=f"sqlite:///{tmp_path / 'proxy.db'}",
        count_completions=False,
    )
    app = create_app(settings, proxy_settings)
    app.dependency_overrides[get_publisher] = lambda: _Publisher()
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}), TestClient(app) as client:
        yield client


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``(sample name, sorted labels) -> value`` of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics", headers={"Authorization": "Bearer admin-key"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(answer.text)


def test_answers_are_counted_by_route_template_never_by_path(
    client: TestClient, request_body: dict
) -> None:
    m6 = {"Authorization": "Bearer m6-key"}
    assert client.post("/v1/clip/request", json=request_body, headers=m6).status_code == 202
    assert client.post("/v1/clip/request", json={"hand_id": "h"}, headers=m6).status_code == 422
    assert client.post("/v1/clip/request", json=request_body).status_code == 401
    assert client.get("/v1/clip/secret-id-1/status", headers=m6).status_code == 404
    assert client.get("/no/such/path").status_code == 404
    found = scrape(client)
    status_route = (("method", "GET"), ("route", "/v1/clip/{request_id}/status"), ("status", "404"))
    assert found[("clipping_http_requests_total", status_route)] == 1
    assert (
        found[
            (
                "clipping_http_requests_total",
                (("method", "GET"), ("route", "unmatched"), ("status", "404")),
            )
        ]
        == 1
    )
    for result in ("accepted", "invalid", "unauthorized"):
        assert found[("clipping_requests_total", (("result", result),))] == 1
    labels = " ".join(str(key) for key in found)
    assert "secret-id-1" not in labels and "m6-key" not in labels and "/no/such" not in labels


def test_metrics_need_the_admin_scope(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer m6-key"}).status_code == 403


@dataclass
class _Message:
    data: bytes
    publish_time: datetime
    acked: list[bool] = field(default_factory=list)

    def ack(self) -> None:
        self.acked.append(True)

    def nack(self) -> None:
        self.acked.append(False)


def _record(request_id: str) -> AcceptedRecord:
    return AcceptedRecord(request_id, "{}", "owner", None, ACCEPTED_AT)


def test_a_completion_counts_its_latency_steps_notify_and_size() -> None:
    metrics = ProxyMetrics()
    finished = ACCEPTED_AT + timedelta(seconds=7)
    completion = ClipCompletion(
        request_id="r1",
        status=ClipState.COMPLETED,
        mode=ClipMode.ACCURATE,
        size_bytes=3_000_000,
        finished_at=finished,
        step_seconds={"cut": 2.5, "upload": 1.5, "sign": 0.01},
    )
    message = _Message(completion.model_dump_json().encode(), finished + timedelta(seconds=0.2))
    CompletionCounter(metrics, _record).handle(message)
    assert message.acked == [True]
    found = samples(metrics.exposition().decode())
    assert found[("clipping_completions_total", (("status", "completed"),))] == 1
    assert found[("clipping_request_latency_seconds_count", (("mode", "accurate"),))] == 1
    assert found[
        ("clipping_request_latency_seconds_sum", (("mode", "accurate"),))
    ] == pytest.approx(7.2)
    for step, seconds in {"cut": 2.5, "upload": 1.5, "sign": 0.01, "notify": 0.2}.items():
        assert found[("clipping_step_duration_seconds_sum", (("step", step),))] == pytest.approx(
            seconds
        )
    assert found[("clipping_clip_bytes_sum", ())] == 3_000_000


def test_a_failure_is_counted_by_its_reason_class_and_junk_is_acked() -> None:
    metrics = ProxyMetrics()
    failed = ClipCompletion(
        request_id="r2", status=ClipState.FAILED, reason="source recording not found: x.mp4"
    )
    counter = CompletionCounter(metrics, _record)
    counter.handle(_Message(failed.model_dump_json().encode(), ACCEPTED_AT))
    junk = _Message(b"not json", ACCEPTED_AT)
    counter.handle(junk)
    assert junk.acked == [True]
    found = samples(metrics.exposition().decode())
    assert (
        found[("clipping_failures_total", (("reason_class", "source"), ("status", "failed")))] == 1
    )
    assert ("clipping_request_latency_seconds_count", (("mode", "accurate"),)) not in found


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("cancelled by its owner", "cancelled"),
        (
            "waiting for the recording to reach 1:00.000 (recorded up to 0:30.000): gave up",
            "live_wait",
        ),
        ("gave up after 4 attempts (crashes or failures)", "crash"),
        ("the range is 2000s long; the maximum is 1800s", "range"),
        ("the cut clip failed verification: it has no video", "cut"),
        ("source recording not found: day1.mp4", "source"),
        ("could not handle the request (ConnectError); gave up after 5 deliveries", "delivery"),
        ("something new", "other"),
        (None, "other"),
    ],
)
def test_failure_classes_are_few_and_fixed(reason: str | None, expected: str) -> None:
    assert failure_class(reason) == expected
