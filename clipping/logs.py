"""Log lines of every process: text, or JSON for Cloud Logging, with the request's context.

Each entry point calls ``configure_logging(component, settings)`` once (the proxy in
``create_app``, the listener's and the worker's ``main``, the flow at the start of each
run). It puts one handler on the root logger and routes the loggers that have their own
console handlers (uvicorn's, Prefect's console) through it, so every line of the process
has one format. ``CLIPPING_LOG_FORMAT`` picks it:

- ``text`` (the default): ``2026-05-01 12:00:00,123 clipping.listener INFO message``, in
  UTC, on stderr;
- ``json``: one object per line on stdout, with Cloud Logging's field names: ``severity``,
  ``message``, ``time`` (RFC 3339, UTC), ``logger``, ``component``, and, when known,
  ``logging.googleapis.com/trace`` (``projects/<CLIPPING_GCP_PROJECT>/traces/<trace id>``),
  ``logging.googleapis.com/spanId``, ``request_id``, ``hand_id``, ``flow_run_id``,
  ``agent_id``; ``stack_trace`` for an exception; ``httpRequest`` for uvicorn's access
  lines.

The context comes from ``contextvars``: ``log_context(request_id=...)`` around the
handling of one request (and ``bind_log_fields`` inside it, for what is learnt on the way),
the current span of ``clipping.tracing``, the fields given to ``configure_logging`` (the
process's own, such as its agent id), and the attributes Prefect's run loggers set
(``flow_run_id``). A line logged by another thread carries its own thread's context only.

Flow processes are started with their output discarded (the deployment's
``stream_output: false``, so a worker's death breaks no pipe of theirs): with
``CLIPPING_FLOW_LOG_FILE`` they append their lines to that file; either way, their run
loggers keep Prefect's API handler, so the Prefect UI shows the run's logs.

In both formats ``RedactingFilter`` removes secrets before a line is written (Prefect's API
handlers get it too): bearer and basic credentials, a signed URL's
``X-Goog-Signature=...`` value and ``whsec_...`` webhook secrets become ``REDACTED``.
"""

import json
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from clipping.settings import Settings
from clipping.tracing import current_span

PROXY, LISTENER, WORKER, FLOW = "proxy", "listener", "worker", "flow"
CONTEXT_FIELDS = ("request_id", "hand_id", "flow_run_id", "agent_id")
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SOURCE_FIELD = "logging.googleapis.com/sourceLocation"
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
REDACTED = "REDACTED"
HANDLER_NAME = "clipping"
# Loggers that come with console handlers of their own: routed through the root's.
ROUTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi")
# A line per HTTP call (Prefect polls every second): only their problems are logged.
QUIET_LOGGERS = ("httpx", "httpcore")
_UNKNOWN = (None, "", "<unknown>")

_SECRETS = (
    (re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/-]+=*", re.IGNORECASE), rf"\1 {REDACTED}"),
    (re.compile(r"\b(Basic)\s+[A-Za-z0-9+/]{8,}=*"), rf"\1 {REDACTED}"),
    (re.compile(r"(X-Goog-Signature=)[^&\s\"'<>]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]+"), f"whsec_{REDACTED}"),
)

_context: ContextVar[dict[str, str] | None] = ContextVar("clipping_log_context", default=None)


@contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Inside, lines logged in this thread or task (and in tasks started inside) carry
    ``fields`` (those not None) on top of the enclosing context's."""
    token = _context.set({**(_context.get() or {}), **_known(fields)})
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_fields(**fields: object) -> None:
    """Add ``fields`` to the innermost ``log_context`` for the rest of it, also seen by the
    code that entered it (the proxy's access line is logged after its endpoint returned).
    Outside any, they stay for the rest of the current thread's or task's context."""
    current = _context.get()
    if current is None:
        _context.set(_known(fields))
    else:
        current.update(_known(fields))


def current_log_fields() -> dict[str, str]:
    """The fields of the current ``log_context``."""
    return dict(_context.get() or {})


def _known(fields: Mapping[str, object]) -> dict[str, str]:
    return {name: str(value) for name, value in fields.items() if value not in _UNKNOWN}


def redact(text: str) -> str:
    """``text`` without the secrets this module knows the shape of."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message, exception and stack text without secrets.

    The record itself is changed, so the handlers it reaches after this one (of the same
    logger and its parents) get it redacted too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # the formatter reports the bad arguments
        if (redacted := redact(message)) != message:
            _redact_message(record, redacted)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _redact_message(record: logging.LogRecord, redacted: str) -> None:
    """Redact the arguments alone when that redacts the message (an access line keeps its
    fields), else replace the message by its redacted text."""
    if isinstance(record.args, tuple) and isinstance(record.msg, str):
        args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        try:
            if record.msg % args == redacted:
                record.args = args
                return
        except (TypeError, ValueError):
            pass
    record.msg, record.args = redacted, None


def text_formatter() -> logging.Formatter:
    """The classic line: time (UTC), logger, level, message."""
    formatter = logging.Formatter(TEXT_FORMAT)
    formatter.converter = time.gmtime
    return formatter


class JsonFormatter(logging.Formatter):
    """One JSON object (ASCII, one line) per record, with Cloud Logging's field names."""

    def __init__(
        self, component: str, project: str, fields: Mapping[str, str] | None = None
    ) -> None:
        super().__init__()
        self._component = component
        self._project = project
        self._fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": severity(record.levelno),
            "message": record.getMessage(),
            "time": rfc3339(record.created),
            "logger": record.name,
            "component": self._component,
        }
        entry.update(self._context_of(record))
        if (http := _http_request(record)) is not None:
            entry["httpRequest"] = http
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["stack_trace"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        entry[SOURCE_FIELD] = {
            "file": record.pathname,
            "line": str(record.lineno),
            "function": record.funcName,
        }
        return json.dumps(entry, default=str)

    def _context_of(self, record: logging.LogRecord) -> dict[str, str]:
        """The process's fields, then the context's, then the record's own (most specific)."""
        fields = {**self._fields, **(_context.get() or {})}
        if (span := current_span()) is not None:
            fields.setdefault("trace_id", span.trace_id)
            fields.setdefault("span_id", span.span_id)
        names = (*CONTEXT_FIELDS, "trace_id", "span_id", "route")
        fields |= _known({name: getattr(record, name, None) for name in names})
        context = {name: fields[name] for name in (*CONTEXT_FIELDS, "route") if name in fields}
        if "trace_id" in fields:
            context[TRACE_FIELD] = f"projects/{self._project}/traces/{fields['trace_id']}"
            if "span_id" in fields:
                context[SPAN_FIELD] = fields["span_id"]
        return context


def severity(level: int) -> str:
    """Cloud Logging's severity of a ``logging`` level (custom levels round down)."""
    for threshold, name in ((50, "CRITICAL"), (40, "ERROR"), (30, "WARNING"), (20, "INFO")):
        if level >= threshold:
            return name
    return "DEBUG"


def rfc3339(created: float) -> str:
    """``2026-05-01T12:00:00.123456Z``."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _http_request(record: logging.LogRecord) -> dict[str, object] | None:
    """Cloud Logging's ``httpRequest`` of a uvicorn access line (its arguments: client
    address, method, path with query, HTTP version, status)."""
    if record.name != "uvicorn.access" or not isinstance(record.args, tuple):
        return None
    if len(record.args) != 5:
        return None
    client, method, path, version, status = record.args
    return {
        "requestMethod": method,
        "requestUrl": redact(str(path)),
        "status": status,
        "protocol": f"HTTP/{version}",
        "remoteIp": str(client).rsplit(":", 1)[0],
    }


def configure_logging(component: str, settings: Settings, **fields: object) -> logging.Handler:
    """Send every line of this process through one handler in ``settings.log_format``.

    ``component`` (``PROXY``, ``LISTENER``, ``WORKER``, ``FLOW``) names the process in
    JSON lines; ``fields`` (such as ``agent_id``) go on every line of the process. Calling
    it again replaces the handler. Handlers this module did not make, but Prefect's and
    uvicorn's console handlers, are left in place (a test's log capture, say).
    """
    _ensure_prefect_logging()
    handler = _handler(component, settings)
    handler.set_name(HANDLER_NAME)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(component, settings.gcp_project, _known(fields)))
    else:
        handler.setFormatter(text_formatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for logger in (root, *map(logging.getLogger, ROUTED_LOGGERS)):
        _remove_console_handlers(logger)
    for name in ROUTED_LOGGERS:
        logging.getLogger(name).propagate = True
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    _redact_prefect_handlers()
    return handler


def _handler(component: str, settings: Settings) -> logging.Handler:
    if component == FLOW and settings.flow_log_file is not None:
        settings.flow_log_file.parent.mkdir(parents=True, exist_ok=True)
        return logging.FileHandler(settings.flow_log_file, encoding="utf-8")
    return logging.StreamHandler(sys.stdout if settings.log_format == "json" else sys.stderr)


def _ensure_prefect_logging() -> None:
    """Let Prefect configure logging first (else its first use would, later, over ours),
    keeping the levels uvicorn was given (``--log-level``): Prefect's config resets them."""
    from prefect.logging.configuration import ensure_logging_setup

    levels = {name: logging.getLogger(name).level for name in ROUTED_LOGGERS}
    ensure_logging_setup()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _remove_console_handlers(logger: logging.Logger) -> None:
    """Remove this module's handler, Prefect's console handler and plain stream handlers
    (``logging.basicConfig``'s, uvicorn's); subclasses (pytest's capture) stay."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in list(logger.handlers):
        if (
            handler.get_name() == HANDLER_NAME
            or isinstance(handler, PrefectConsoleHandler)
            or type(handler) is logging.StreamHandler
        ):
            logger.removeHandler(handler)
            if handler.get_name() == HANDLER_NAME:
                handler.close()


def _redact_prefect_handlers() -> None:
    """Give the redacting filter to the handlers of Prefect's loggers (its API handlers,
    which send run and worker logs to the Prefect UI)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not name.startswith("prefect") or not isinstance(logger, logging.Logger):
            continue
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
