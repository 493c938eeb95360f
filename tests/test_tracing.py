"""W3C trace context: ``traceparent`` parsing and generation, the span current while a
request is handled, and its propagation on every Pub/Sub message published meanwhile."""

import re
from typing import Any

import pytest

from clipping import pubsub
from clipping.tracing import TRACE_TAG_PREFIX, TraceContext, current_span, in_span

pytestmark = pytest.mark.unit

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{SPAN_ID}-01"
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
INVALID = {
    "absent": None,
    "empty": "",
    "garbage": "not a traceparent",
    "uppercase hex": VALID.upper(),
    "zero trace id": f"00-{'0' * 32}-{SPAN_ID}-01",
    "zero span id": f"00-{TRACE_ID}-{'0' * 16}-01",
    "short trace id": f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",
    "version ff": f"ff-{TRACE_ID}-{SPAN_ID}-01",
    "version 00 with more fields": f"{VALID}-extra",
    "no flags": f"00-{TRACE_ID}-{SPAN_ID}",
    "other separators": f"00_{TRACE_ID}_{SPAN_ID}_01",
}


def test_a_valid_traceparent_is_kept() -> None:
    parsed = TraceContext.parse(VALID)
    assert parsed == TraceContext(TRACE_ID, SPAN_ID, "01")
    assert parsed.traceparent == VALID
    assert TraceContext.parse(f"00-{TRACE_ID}-{SPAN_ID}-00") == TraceContext(
        TRACE_ID, SPAN_ID, "00"
    )


def test_a_later_version_may_carry_more_fields() -> None:
    parsed = TraceContext.parse(f"01-{TRACE_ID}-{SPAN_ID}-01-what-comes-next")
    assert parsed == TraceContext(TRACE_ID, SPAN_ID, "01")
    assert parsed.traceparent == VALID  # handed on as the version this code knows


@pytest.mark.parametrize("header", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_traceparent_is_refused_and_replaced_by_a_new_trace(header: str | None) -> None:
    assert TraceContext.parse(header) is None
    replaced = TraceContext.continued(header)
    assert TRACEPARENT.fullmatch(replaced.traceparent)
    assert replaced.trace_id != TRACE_ID
    assert replaced.flags == "01"


def test_a_continued_trace_gets_a_span_of_its_own() -> None:
    continued = TraceContext.continued(VALID)
    assert (continued.trace_id, continued.flags) == (TRACE_ID, "01")
    assert continued.span_id != SPAN_ID
    unsampled = TraceContext.continued(f"00-{TRACE_ID}-{SPAN_ID}-00")
    assert unsampled.flags == "00", "the caller's sampling decision is kept"


def test_new_traces_are_random_16_byte_ids_with_8_byte_spans_sampled() -> None:
    first, second = TraceContext.new(), TraceContext.new()
    for span in (first, second):
        assert TRACEPARENT.fullmatch(span.traceparent)
        assert span.flags == "01"
        assert TraceContext.parse(span.traceparent) == span
    assert first.trace_id != second.trace_id and first.span_id != second.span_id


def test_a_flow_run_continues_the_trace_it_is_tagged_with() -> None:
    tagged = TraceContext.of_run_tags(["clipping", f"{TRACE_TAG_PREFIX}{TRACE_ID}"])
    assert tagged.trace_id == TRACE_ID
    assert TraceContext(TRACE_ID, SPAN_ID).tag == f"trace:{TRACE_ID}"
    for tags in ([], ["clipping"], ["trace:nothex"], [f"trace:{'0' * 32}"], [TRACE_ID]):
        untagged = TraceContext.of_run_tags(tags)
        assert untagged.trace_id != TRACE_ID and TRACEPARENT.fullmatch(untagged.traceparent)


def test_the_current_span_is_the_innermost() -> None:
    outer, inner = TraceContext.new(), TraceContext.new()
    assert current_span() is None
    with in_span(outer):
        with in_span(inner):
            assert current_span() is inner
        assert current_span() is outer
    assert current_span() is None


class _Future:
    def result(self, timeout: float) -> str:
        return "message-1"


class _Client:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def publish(self, topic: str, data: bytes, **attributes: str) -> _Future:
        self.sent.append(attributes)
        return _Future()


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> _Client:
    fake = _Client()
    monkeypatch.setattr(pubsub, "publisher", lambda: fake)
    return fake


def test_a_message_published_in_a_span_carries_its_traceparent(client: _Client) -> None:
    span = TraceContext.new()
    with in_span(span):
        pubsub.publish_data("projects/p/topics/t", b"{}", request_id="r1")
    assert client.sent == [{"traceparent": span.traceparent, "request_id": "r1"}]


def test_a_message_published_outside_a_span_carries_no_traceparent(client: _Client) -> None:
    pubsub.publish_data("projects/p/topics/t", b"{}", request_id="r1")
    assert client.sent == [{"request_id": "r1"}]


def test_a_traceparent_given_explicitly_wins(client: _Client) -> None:
    with in_span(TraceContext.new()):
        pubsub.publish_data("projects/p/topics/t", b"{}", traceparent=VALID)
    assert client.sent == [{"traceparent": VALID}]
