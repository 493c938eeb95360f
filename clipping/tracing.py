"""W3C trace context: one trace id follows a clip request from the proxy to its flow run.

A ``traceparent`` (https://www.w3.org/TR/trace-context/#traceparent-header) is
``00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>``. Each hop continues the
trace it was given with a span of its own (``TraceContext.child``), or starts a new one
when it was given none or an invalid one:

- the proxy reads the ``traceparent`` header of an HTTP request, answers its own span in
  the response's ``traceparent`` header and publishes it as the request message's
  ``traceparent`` attribute (``proxy.tracing``); the accepted record keeps it for
  republication (``proxy.reconcile``);
- the listener reads that attribute, handles the message in its own span and tags the flow
  run it creates ``trace:<trace id>`` (``agent_pool.listener``); a tag, not a flow
  parameter: a flow run with a parameter its flow lacks fails, so an upgrade of the
  listener before the NAS hosts' flow code would fail every run;
- the flow logs under a span of the trace its run is tagged with (``flows.clip_hand``), or
  of a new trace for a run without the tag (made by an older listener).

Each process makes its span the current one (``in_span``) while it handles the request;
``clipping.logs`` writes the current span's ids on every line as Cloud Logging's
``logging.googleapis.com/trace`` and ``logging.googleapis.com/spanId``. With OpenTelemetry
configured (``OTEL_EXPORTER_OTLP_ENDPOINT``) each process also exports its span, with the
same ids, over OTLP (``clipping.spans``).
"""

import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from clipping.spans import exported

# Version 00 is exactly this; a later version may append fields after the flags.
_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<span_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>(-.*)?)"
)
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16
SAMPLED = "01"
TRACE_TAG_PREFIX = "trace:"


@dataclass(frozen=True)
class TraceContext:
    """A span of a trace: the ids as lowercase hex, and the trace flags."""

    trace_id: str
    span_id: str
    flags: str = SAMPLED
    # The span this one continues, when this process knows it (for span export).
    parent_id: str | None = None

    @classmethod
    def new(cls) -> "TraceContext":
        """A new trace (random 16-byte trace id, 8-byte span id), sampled."""
        return cls(_random_hex(16, _INVALID_TRACE_ID), _random_span_id())

    @classmethod
    def parse(cls, header: str | None) -> "TraceContext | None":
        """The context a ``traceparent`` value names; None if it is absent or invalid."""
        match = _TRACEPARENT.fullmatch(header.strip()) if header else None
        if match is None:
            return None
        version, trace_id, span_id = match["version"], match["trace_id"], match["span_id"]
        if version == "ff" or (version == "00" and match["rest"]):
            return None
        if trace_id == _INVALID_TRACE_ID or span_id == _INVALID_SPAN_ID:
            return None
        return cls(trace_id, span_id, match["flags"])

    @classmethod
    def continued(cls, header: str | None) -> "TraceContext":
        """A span of this process: a child of ``header``'s span, or the root of a new trace
        when ``header`` is absent or invalid."""
        parent = cls.parse(header)
        return parent.child() if parent else cls.new()

    @classmethod
    def of_run_tags(cls, tags: Iterable[str]) -> "TraceContext":
        """A new span of the trace a flow run is tagged with (``tag``); of a new trace if
        none is."""
        for tag in tags:
            trace_id = tag.removeprefix(TRACE_TAG_PREFIX)
            if trace_id != tag and _TRACE_ID.fullmatch(trace_id) and trace_id != _INVALID_TRACE_ID:
                return cls(trace_id, _random_span_id())
        return cls.new()

    def child(self) -> "TraceContext":
        """A new span of the same trace (this span its parent), with the same flags."""
        return TraceContext(self.trace_id, _random_span_id(), self.flags, self.span_id)

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` value (version 00) that makes this span the parent."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    @property
    def tag(self) -> str:
        """The Prefect tag of a flow run in this trace (the UI filters runs by tag)."""
        return f"{TRACE_TAG_PREFIX}{self.trace_id}"


_current: ContextVar[TraceContext | None] = ContextVar("clipping_span", default=None)


@contextmanager
def in_span(span: TraceContext, name: str | None = None) -> Iterator[TraceContext]:
    """Inside, ``span`` is the current one (of this thread or task, and of the tasks it
    starts): log lines carry its ids, and what is handed on continues it. With a ``name``
    it is also reported to a tracing backend, when one is configured (``clipping.spans``)."""
    token = _current.set(span)
    try:
        if name is None:
            yield span
        else:
            with exported(span, name):
                yield span
    finally:
        _current.reset(token)


def current_span() -> TraceContext | None:
    return _current.get()


def _random_span_id() -> str:
    return _random_hex(8, _INVALID_SPAN_ID)


def _random_hex(size: int, invalid: str) -> str:
    while (value := secrets.token_hex(size)) == invalid:
        pass  # all zeros is invalid; 1 in 2**64 at worst
    return value
