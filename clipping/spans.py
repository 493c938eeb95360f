"""Span export (OpenTelemetry, OTLP), when the process is configured for it.

The trace ids are made by ``clipping.tracing`` and travel as ``traceparent`` through the
proxy, Pub/Sub and the flow run's tag; this module only reports each process's span to a
tracing backend, with exactly those ids, so the spans and the log lines of one request
agree. It is on when OpenTelemetry's own variables name an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; also read:
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, ``OTEL_BSP_SCHEDULE_DELAY``, …),
and off otherwise (``OTEL_SDK_DISABLED=true`` turns it off too). Spans go over OTLP/HTTP
(protobuf) in batches; a process flushes what is left when it exits.

Span per process: the proxy's HTTP request, the listener's handling of the message (a
child of the proxy's span) and the flow run (of the same trace; its parent is not known
to the flow, which gets only the trace id from its run's tag).
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from clipping.tracing import TraceContext

_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The ids of the span being started: the SDK asks its id generator for them.
_starting: ContextVar[tuple[int, int] | None] = ContextVar("clipping_starting", default=None)
# The exported span of the block being run, while there is one.
_recording: ContextVar["Span | None"] = ContextVar("clipping_recording", default=None)
_tracer: "Tracer | None" = None


def export_configured() -> bool:
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
    return not disabled and any(os.environ.get(name) for name in _ENDPOINT_VARIABLES)


def configure_span_export(component: str) -> None:
    """Export this process's spans, as ``OTEL_SERVICE_NAME`` or ``clipping-<component>``,
    if an OTLP endpoint is configured. Once per process; later calls change nothing."""
    global _tracer
    if _tracer is not None or not export_configured():
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class GivenIds(IdGenerator):
        """The ids ``clipping.tracing`` chose for the span being started, not random ones."""

        def generate_span_id(self) -> int:
            return _given_ids()[1]

        def generate_trace_id(self) -> int:
            return _given_ids()[0]

    resource = Resource.create({"service.name": f"clipping-{component}"}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource, id_generator=GivenIds())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = provider.get_tracer("clipping")


@contextmanager
def exported(span: "TraceContext", name: str) -> Iterator[None]:
    """Report ``span`` (its ids as they are) as ``name``, lasting the ``with`` block."""
    if _tracer is None:
        yield
        return
    from opentelemetry.trace import (
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
        set_span_in_context,
    )

    parent = None
    if span.parent_id is not None:
        remote = SpanContext(
            int(span.trace_id, 16),
            int(span.parent_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(int(span.flags, 16)),
        )
        parent = set_span_in_context(NonRecordingSpan(remote))
    token = _starting.set((int(span.trace_id, 16), int(span.span_id, 16)))
    try:
        started = _tracer.start_span(name, context=parent)
    finally:
        _starting.reset(token)
    recording = _recording.set(started)
    try:
        yield
    finally:
        _recording.reset(recording)
        started.end()


def rename_current(name: str) -> None:
    """Name the span being exported (an HTTP request's, once its route is known)."""
    if (span := _recording.get()) is not None:
        span.update_name(name)


def _given_ids() -> tuple[int, int]:
    ids = _starting.get()
    if ids is None:
        raise RuntimeError("spans are started through clipping.spans.exported only")
    return ids
