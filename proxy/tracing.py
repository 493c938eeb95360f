"""The trace and log context of every HTTP request (W3C ``traceparent``, ``clipping.tracing``).

``TraceRequests``, an ASGI middleware, gives each request a span of its own: a child of
the span its ``traceparent`` header names, or the root of a new trace when the header is
absent, repeated or invalid. While the request is handled the span is the current one, so
every line logged for it (uvicorn's access line included) carries its trace and span ids;
the response carries it in its ``traceparent`` header. ``POST /v1/clip/request`` publishes
it with the request (``request_span``), so the listener and the flow continue the trace.

The request has a log context of its own: an endpoint adds what it learns to it
(``clipping.logs.bind_log_fields``: the request id), and the middleware the route template
(``route``), which the access line then shows.
"""

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipping.logs import bind_log_fields, log_context
from clipping.spans import rename_current
from clipping.tracing import TraceContext, current_span, in_span

TRACEPARENT = "traceparent"


class TraceRequests:
    """ASGI middleware: a span and a log context per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span = TraceContext.continued(_incoming_traceparent(scope))

        async def answer_in_span(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[TRACEPARENT] = span.traceparent
                route = getattr(scope.get("route"), "path", None)
                bind_log_fields(route=route)
                rename_current(f"{scope['method']} {route or 'unmatched'}")
            await send(message)

        with in_span(span, f"{scope['method']} request"), log_context():
            await self.app(scope, receive, answer_in_span)


def request_span() -> TraceContext:
    """The span of the request being handled (a new trace outside ``TraceRequests``)."""
    return current_span() or TraceContext.new()


def _incoming_traceparent(scope: Scope) -> str | None:
    """The one ``traceparent`` header; None if there is none or several (invalid)."""
    values = Headers(scope=scope).getlist(TRACEPARENT)
    return values[0] if len(values) == 1 else None
