"""Span export over OTLP/HTTP, received by an in-test collector (``tests.otlp_collector``):
each process's span arrives with the ids the
log lines carry (``clipping.tracing``), its parent, and its service name.

The exporting side runs in a subprocess: the SDK's provider is global to a process and
flushes when the process exits, as a flow process does.
"""

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.otlp_collector import ReceivedSpan, collecting

pytestmark = pytest.mark.integration

EXPORTER = """
from clipping.spans import configure_span_export
from clipping.tracing import TraceContext, in_span
configure_span_export("listener")
incoming = TraceContext.parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
span = incoming.child()
print(span.span_id, flush=True)
with in_span(span, "listener: handle request"):
    with in_span(TraceContext.new()):  # not named: not exported
        pass
"""


@pytest.fixture
def collector() -> Iterator[tuple[str, list[ReceivedSpan]]]:
    with collecting() as collected:
        yield collected


def run_exporter(env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", EXPORTER],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_span_is_exported_with_the_ids_the_logs_carry(
    collector: tuple[str, list[ReceivedSpan]],
) -> None:
    endpoint, received = collector
    span_id = run_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    assert received == [
        ReceivedSpan(
            "clipping-listener",
            "listener: handle request",
            "0af7651916cd43dd8448eb211c80319c",
            span_id,
            "b7ad6b7169203331",
        )
    ]


def test_the_service_name_is_the_operators_and_nothing_is_sent_when_off(
    collector: tuple[str, list[ReceivedSpan]],
) -> None:
    endpoint, received = collector
    run_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "clips-eu"})
    assert [span.service for span in received] == ["clips-eu"]
    run_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SDK_DISABLED": "true"})
    run_exporter({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert len(received) == 1
