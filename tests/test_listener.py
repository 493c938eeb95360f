"""The listener's handling of single messages, in process: fake messages, a fake Prefect
client, the real outcome module over an in-memory bucket. No message makes ``handle``
raise, and no request gets a second outcome.
"""

import io
import json
import logging
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from agent_pool.listener import RequestListener
from clipping.logs import LISTENER, JsonFormatter
from clipping.messages import ClipCompletion, ClipState
from clipping.outcomes import RequestOutcomes
from clipping.settings import Settings
from tests.doubles import MemoryBucket

pytestmark = pytest.mark.unit

DEPLOYMENT_ID = UUID(int=1)
NESTED_5000 = b'{"request_id":"p1","hand_id":' + b"[" * 5000 + b"]" * 5000 + b"}"


@dataclass
class FakeMessage:
    data: bytes
    delivery_attempt: int | None = 1
    answers: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)

    def ack(self) -> None:
        self.answers.append("ack")

    def nack(self) -> None:
        self.answers.append("nack")


@dataclass
class FakeRun:
    id: UUID
    name: str
    parameters: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    work_queue_name: str | None = None


class FakePrefect:
    """The two calls the listener makes; ``down`` makes them fail as an outage does."""

    def __init__(self) -> None:
        self.runs: dict[str, FakeRun] = {}
        self.down = False

    def create_flow_run_from_deployment(
        self,
        deployment_id: UUID,
        *,
        parameters: dict[str, Any],
        idempotency_key: str,
        tags: list[str] | None = None,
        work_queue_name: str | None = None,
    ) -> FakeRun:
        self._answer()
        assert deployment_id == DEPLOYMENT_ID
        run = FakeRun(uuid4(), "run", parameters, list(tags or []), work_queue_name)
        return self.runs.setdefault(idempotency_key, run)

    def read_flow_runs(self, *, flow_run_filter: Any, limit: int) -> list[FakeRun]:
        self._answer()
        keys = flow_run_filter.idempotency_key.any_
        return [self.runs[key] for key in keys if key in self.runs][:limit]

    def _answer(self) -> None:
        if self.down:
            raise httpx.ConnectError("Prefect is down")


@dataclass
class Harness:
    listener: RequestListener
    prefect: FakePrefect
    outcomes: RequestOutcomes
    announced: list[ClipCompletion]
    parked: list[dict[str, Any]]
    recording: Path

    def body(self, **changes: object) -> bytes:
        body = {
            "request_id": "req-1",
            "hand_id": "hand-1",
            "nas_video_path": str(self.recording),
            "start_seconds": 1.0,
            "end_seconds": 3.0,
            **changes,
        }
        return json.dumps(body).encode()

    def handle(self, data: bytes, attempt: int = 1, **attributes: str) -> FakeMessage:
        message = FakeMessage(data, attempt, attributes=attributes)
        self.listener.handle(message)
        return message

    def announced_for(self, request_id: str | None) -> list[ClipCompletion]:
        return [c for c in self.announced if c.request_id == request_id]


@pytest.fixture
def harness(settings: Settings, nas_root: Path) -> Harness:
    announced: list[ClipCompletion] = []
    parked: list[dict[str, Any]] = []

    def publish(completion: ClipCompletion) -> str:
        announced.append(completion)
        return str(len(announced))

    def park(topic: str, data: bytes, **attributes: str) -> str:
        parked.append({"topic": topic, "data": data, **attributes})
        return str(len(parked))

    prefect = FakePrefect()
    outcomes = RequestOutcomes(MemoryBucket(), publish)  # type: ignore[arg-type]
    listener = RequestListener(
        settings,
        prefect,  # type: ignore[arg-type]
        DEPLOYMENT_ID,
        outcomes,
        park=park,
        sleep=lambda seconds: None,
    )
    return Harness(listener, prefect, outcomes, announced, parked, nas_root / "day1.mp4")


def test_a_valid_request_becomes_one_run_and_is_acked(harness: Harness) -> None:
    for _ in range(3):
        assert harness.handle(harness.body()).answers == ["ack"]
    assert list(harness.prefect.runs) == ["req-1"]
    assert harness.announced == [] and harness.parked == []


def test_an_invalid_request_is_rejected_once_with_its_reason(harness: Harness) -> None:
    first = harness.handle(harness.body(start_seconds=5.0, end_seconds=2.0))
    again = harness.handle(harness.body(start_seconds=5.0, end_seconds=2.0), attempt=2)
    assert first.answers == again.answers == ["ack"]
    (rejection,) = harness.announced_for("req-1")
    assert rejection.status is ClipState.REJECTED
    assert "start_seconds must be less than end_seconds" in (rejection.reason or "")
    assert harness.outcomes.read("req-1") == rejection
    assert harness.prefect.runs == {}


def test_a_body_nested_5000_deep_is_rejected_and_intake_goes_on(harness: Harness) -> None:
    assert harness.handle(NESTED_5000).answers == ["ack"]
    (rejection,) = harness.announced
    assert rejection.status is ClipState.REJECTED and rejection.reason
    assert harness.handle(harness.body()).answers == ["ack"]
    assert list(harness.prefect.runs) == ["req-1"]


def test_an_invalid_message_under_an_id_with_a_run_announces_nothing_under_it(
    harness: Harness,
) -> None:
    harness.handle(harness.body())
    assert harness.handle(b'{"request_id": "req-1", "start_seconds": "x"}').answers == ["ack"]
    assert harness.announced == []
    (parked,) = harness.parked
    assert "belongs to another request" in parked["reason"]


def test_a_forged_rejection_of_a_completed_request_is_parked_not_announced(
    harness: Harness,
) -> None:
    completed = ClipCompletion(request_id="done-1", status=ClipState.COMPLETED)
    harness.outcomes.settle(completed)
    assert harness.handle(b'{"request_id": "done-1"}').answers == ["ack"]
    assert harness.announced_for("done-1") == [completed]
    assert harness.outcomes.read("done-1") == completed
    assert len(harness.parked) == 1


def test_a_reused_id_with_another_body_is_parked_not_announced(harness: Harness) -> None:
    harness.handle(harness.body())
    assert harness.handle(harness.body(end_seconds=4.0)).answers == ["ack"]
    assert harness.announced == []
    (parked,) = harness.parked
    assert parked["request_id"] == "req-1"
    assert "already used for a different request" in parked["reason"]
    assert harness.prefect.runs["req-1"].parameters["request"]["end_seconds"] == 3.0


def test_a_reused_id_after_its_clip_ended_is_parked_not_dropped(harness: Harness) -> None:
    harness.handle(harness.body())
    harness.outcomes.settle(ClipCompletion(request_id="req-1", status=ClipState.COMPLETED))
    assert harness.handle(harness.body()).answers == ["ack"]
    assert harness.parked == []
    assert harness.handle(harness.body(end_seconds=4.0)).answers == ["ack"]
    (parked,) = harness.parked
    assert "already used for a different request" in parked["reason"]
    assert len(harness.announced) == 1


def test_a_redelivered_request_that_already_ended_is_dropped(harness: Harness) -> None:
    harness.outcomes.settle(ClipCompletion(request_id="req-1", status=ClipState.FAILED))
    assert harness.handle(harness.body()).answers == ["ack"]
    assert harness.prefect.runs == {} and len(harness.announced) == 1


def test_while_prefect_is_down_a_request_is_nacked_then_parked_and_failed_once(
    harness: Harness, settings: Settings
) -> None:
    harness.prefect.down = True
    last = settings.max_delivery_attempts
    answers = [harness.handle(harness.body(), attempt).answers for attempt in range(1, last + 1)]
    assert answers == [["nack"]] * (last - 1) + [["ack"]]
    (failure,) = harness.announced_for("req-1")
    assert failure.status is ClipState.FAILED
    assert "ConnectError: Prefect is down" in (failure.reason or "")
    assert f"gave up after {last} deliveries" in (failure.reason or "")
    assert harness.outcomes.read("req-1") == failure
    (parked,) = harness.parked
    assert parked["topic"].endswith(settings.dead_letter_topic)
    assert parked["data"] == harness.body()


def test_when_parking_fails_too_the_message_is_nacked(harness: Harness, settings: Settings) -> None:
    def broken_park(topic: str, data: bytes, **attributes: str) -> str:
        raise RuntimeError("Pub/Sub is down")

    listener = RequestListener(
        settings,
        harness.prefect,  # type: ignore[arg-type]
        DEPLOYMENT_ID,
        harness.outcomes,
        park=broken_park,
        sleep=lambda seconds: None,
    )
    harness.prefect.down = True
    message = FakeMessage(harness.body(), delivery_attempt=99)
    listener.handle(message)
    assert message.answers == ["nack"]
    assert harness.announced == []


def test_when_the_outcome_store_fails_the_message_is_nacked_for_later(
    harness: Harness,
) -> None:
    def unreachable(request_id: str) -> None:
        raise ConnectionError("GCS is down")

    harness.outcomes.read = unreachable  # type: ignore[method-assign]
    assert harness.handle(harness.body()).answers == ["nack"]
    assert harness.handle(b"not json").answers == ["ack"]  # no id: nothing to look up


def test_control_characters_in_a_claimed_id_are_never_logged_or_announced_under(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    forged = "x\r\n2026-12-02 INFO clipping.listener request evil completed"
    with caplog.at_level(logging.INFO):
        harness.handle(json.dumps({"request_id": forged}).encode())
    (rejection,) = harness.announced
    assert rejection.request_id is None
    assert all("\n" not in record.getMessage() for record in caplog.records)
    assert all("evil" not in record.getMessage() for record in caplog.records)


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_request_like = st.fixed_dictionaries(
    {},
    optional={
        "request_id": st.sampled_from(["req-1", "req-2", "", "a\nb"]) | _json_values,
        "hand_id": st.sampled_from(["hand-1"]) | _json_values,
        "nas_video_path": _json_values,
        "start_seconds": st.floats() | _json_values,
        "end_seconds": st.floats() | _json_values,
        "mode": st.sampled_from(["copy", "accurate", "bogus"]),
        "extra": _json_values,
    },
).map(lambda body: json.dumps(body).encode())


@hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=300) | _request_like, attempt=st.integers(1, 6))
def test_no_message_makes_the_listener_raise_or_announce_twice(
    harness: Harness, data: bytes, attempt: int
) -> None:
    message = harness.handle(data, attempt)
    assert message.answers in (["ack"], ["nack"])
    ids = [c.request_id for c in harness.announced if c.request_id is not None]
    assert len(ids) == len(set(ids)), "a request id was announced twice"


def test_the_listener_imports_neither_the_flow_nor_pyav() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, agent_pool.listener; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'av'" not in loaded and "'flows.clip_hand'" not in loaded and "'cutting'" not in loaded


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_the_run_is_tagged_with_the_messages_trace(harness: Harness) -> None:
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    assert harness.handle(harness.body(), traceparent=traceparent).answers == ["ack"]
    assert harness.prefect.runs["req-1"].tags == [f"trace:{TRACE_ID}"]


@pytest.mark.parametrize("attributes", [{}, {"traceparent": "not one"}], ids=["none", "invalid"])
def test_a_message_without_a_valid_trace_starts_one(
    harness: Harness, attributes: dict[str, str]
) -> None:
    """Messages published before traces were kept, or by other publishers."""
    assert harness.handle(harness.body(), **attributes).answers == ["ack"]
    (tag,) = harness.prefect.runs["req-1"].tags
    assert re.fullmatch(r"trace:[0-9a-f]{32}", tag)


def test_lines_logged_for_a_message_carry_its_request_and_trace(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clipping.listener")
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter(LISTENER, "gg-poker"))
    listener_logger = logging.getLogger("clipping.listener")
    listener_logger.addHandler(handler)
    try:
        traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
        harness.handle(harness.body(), traceparent=traceparent)
        harness.handle(harness.body(request_id="req-2", start_seconds=5.0, end_seconds=2.0))
    finally:
        listener_logger.removeHandler(handler)
    created, rejected = (json.loads(line) for line in buffer.getvalue().splitlines())
    run_id = str(harness.prefect.runs["req-1"].id)
    assert created["message"].startswith(f"request req-1: flow run {run_id}")
    assert (created["request_id"], created["hand_id"]) == ("req-1", "hand-1")
    assert created["flow_run_id"] == run_id
    assert created["logging.googleapis.com/trace"] == f"projects/gg-poker/traces/{TRACE_ID}"
    assert "rejected" in rejected["message"] and rejected["request_id"] == "req-2"
    assert TRACE_ID not in rejected["logging.googleapis.com/trace"], "a trace of its own"
