"""Log lines: the JSON formatter's Cloud Logging fields, the request context from
``contextvars``, redaction of secrets in both formats, the unchanged text line, and what
``configure_logging`` does to a process's loggers."""

import io
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clipping.logs import (
    FLOW,
    LISTENER,
    PROXY,
    QUIET_LOGGERS,
    ROUTED_LOGGERS,
    SPAN_FIELD,
    TRACE_FIELD,
    JsonFormatter,
    RedactingFilter,
    bind_log_fields,
    configure_logging,
    current_log_fields,
    log_context,
    text_formatter,
)
from clipping.settings import Settings
from clipping.tracing import TraceContext, in_span

pytestmark = pytest.mark.unit

SPAN = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
API_KEY = "Zm9vYmFyLWtleS0xMjM0NTY3ODkw_abc-DEF"
SIGNATURE = "4e2f" * 64
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw+/="
SIGNED_URL = (
    "https://storage.googleapis.com/gg-subclips/hand-7/r1.mp4?X-Goog-Algorithm=GOOG4-RSA-SHA256"
    f"&X-Goog-Expires=604800&X-Goog-SignedHeaders=host&X-Goog-Signature={SIGNATURE}"
)
SECRETS = {
    "a bearer key": (f"Authorization: Bearer {API_KEY}", API_KEY, "Bearer REDACTED"),
    "a signed URL": (f"download {SIGNED_URL} ready", SIGNATURE, "X-Goog-Signature=REDACTED"),
    "a webhook secret": (f"secret is {WEBHOOK_SECRET}.", WEBHOOK_SECRET, "whsec_REDACTED"),
    "basic credentials": (
        "Authorization: Basic Y2xpcHBpbmc6czNjcjN0LXMzY3IzdA==",
        "Y2xpcHBpbmc6",
        "Basic REDACTED",
    ),
}
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def record(
    message: str = "request %s queued",
    *args: object,
    level: int = logging.INFO,
    name: str = "clipping.proxy",
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 42, message, args or None, None)


def as_json(formatter: logging.Formatter, entry: logging.LogRecord) -> dict:
    line = formatter.format(entry)
    assert "\n" not in line
    return json.loads(line)


@pytest.fixture
def formatter() -> JsonFormatter:
    return JsonFormatter(LISTENER, "gg-poker", {"agent_id": "nas-server-01"})


def test_a_json_line_has_cloud_loggings_fields(formatter: JsonFormatter) -> None:
    entry = record("request %s queued", "r1", level=logging.WARNING)
    line = as_json(formatter, entry)
    assert line["severity"] == "WARNING"
    assert line["message"] == "request r1 queued"
    assert line["logger"] == "clipping.proxy"
    assert line["component"] == "listener"
    assert line["agent_id"] == "nas-server-01"
    assert RFC3339_UTC.fullmatch(line["time"])
    shown = datetime.fromisoformat(line["time"])
    assert shown.tzinfo == UTC and abs(shown.timestamp() - entry.created) < 1e-5
    assert line["logging.googleapis.com/sourceLocation"]["line"] == "42"
    assert TRACE_FIELD not in line and "request_id" not in line, "no context, no trace"


def test_the_context_and_the_span_go_on_every_line(formatter: JsonFormatter) -> None:
    with in_span(SPAN), log_context(request_id="r1", hand_id="h1", flow_run_id="run-1"):
        line = as_json(formatter, record())
    assert line[TRACE_FIELD] == f"projects/gg-poker/traces/{SPAN.trace_id}"
    assert line[SPAN_FIELD] == SPAN.span_id
    assert (line["request_id"], line["hand_id"], line["flow_run_id"]) == ("r1", "h1", "run-1")
    assert line["agent_id"] == "nas-server-01"


def test_a_records_own_fields_win(formatter: JsonFormatter) -> None:
    """Prefect's run loggers set ``flow_run_id`` on their records ("<unknown>" outside a run)."""
    entry = record()
    entry.flow_run_id = "from-prefect"
    with log_context(flow_run_id="from-context", request_id=None):
        line = as_json(formatter, entry)
    assert line["flow_run_id"] == "from-prefect"
    assert "request_id" not in line
    entry.flow_run_id = "<unknown>"
    assert "flow_run_id" not in as_json(formatter, entry)


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (5, "DEBUG"),
        (10, "DEBUG"),
        (20, "INFO"),
        (25, "INFO"),
        (30, "WARNING"),
        (40, "ERROR"),
        (50, "CRITICAL"),
        (60, "CRITICAL"),
    ],
)
def test_severity_follows_the_level(formatter: JsonFormatter, level: int, severity: str) -> None:
    assert as_json(formatter, record(level=level))["severity"] == severity


def test_an_exception_is_a_stack_trace(formatter: JsonFormatter) -> None:
    try:
        raise ValueError("bad thing")
    except ValueError:
        entry = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = as_json(formatter, entry)
    assert line["message"] == "failed"
    assert line["stack_trace"].startswith("Traceback (most recent call last):")
    assert line["stack_trace"].endswith("ValueError: bad thing")


def test_a_uvicorn_access_line_has_its_http_request(formatter: JsonFormatter) -> None:
    entry = record(
        '%s - "%s %s HTTP/%s" %d',
        *("127.0.0.1:50000", "POST", "/v1/clip/request", "1.1", 202),
        name="uvicorn.access",
    )
    with log_context(route="/v1/clip/request", request_id="r1"):
        line = as_json(formatter, entry)
    assert line["httpRequest"] == {
        "requestMethod": "POST",
        "requestUrl": "/v1/clip/request",
        "status": 202,
        "protocol": "HTTP/1.1",
        "remoteIp": "127.0.0.1",
    }
    assert (line["route"], line["request_id"]) == ("/v1/clip/request", "r1")


def test_the_text_line_is_unchanged() -> None:
    """As the listener has always written it: UTC time, logger, level, message."""
    entry = record("request %s queued", "r1")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.created))
    expected = f"{stamp},{int(entry.msecs):03d} clipping.proxy INFO request r1 queued"
    with in_span(SPAN), log_context(request_id="r1"):
        assert text_formatter().format(entry) == expected


@pytest.mark.parametrize(("text", "secret", "shown"), SECRETS.values(), ids=SECRETS.keys())
@pytest.mark.parametrize("shape", ["text", "json"])
def test_secrets_are_redacted_in_both_formats(
    text: str, secret: str, shown: str, shape: str
) -> None:
    formatter = text_formatter() if shape == "text" else JsonFormatter(PROXY, "gg-poker")
    for entry in (record(text), record("%s", text), record("got %s", text.split(" ", 1)[1])):
        assert RedactingFilter().filter(entry)
        line = formatter.format(entry)
        assert secret not in line
        assert shown in line


def test_a_secret_in_an_exception_is_redacted() -> None:
    try:
        raise PermissionError(f"refused {SIGNED_URL}")
    except PermissionError:
        entry = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    RedactingFilter().filter(entry)
    line = JsonFormatter(PROXY, "gg-poker").format(entry)
    assert SIGNATURE not in line and "X-Goog-Signature=REDACTED" in line


def test_redacting_an_access_line_keeps_its_fields(formatter: JsonFormatter) -> None:
    entry = record(
        '%s - "%s %s HTTP/%s" %d',
        *("10.0.0.1:1", "GET", f"/v1/clip/r1/status?X-Goog-Signature={SIGNATURE}", "1.1", 404),
        name="uvicorn.access",
    )
    RedactingFilter().filter(entry)
    line = as_json(formatter, entry)
    assert SIGNATURE not in json.dumps(line)
    assert line["httpRequest"]["requestUrl"] == "/v1/clip/r1/status?X-Goog-Signature=REDACTED"
    assert line["httpRequest"]["status"] == 404


def test_bound_fields_stay_for_the_rest_of_the_context() -> None:
    def endpoint() -> None:
        bind_log_fields(request_id="r1", hand_id=None)

    with log_context(route="/x"):
        endpoint()
        assert current_log_fields() == {"route": "/x", "request_id": "r1"}
    assert current_log_fields() == {}


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """``configure_logging`` changes the process's loggers: put them back afterwards."""
    names = ("", *ROUTED_LOGGERS, *QUIET_LOGGERS)
    saved = [(logging.getLogger(name), name) for name in names]
    state = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger, _ in saved]
    yield
    for logger, handlers, level, propagate in state:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def configured(component: str, settings: Settings) -> io.StringIO:
    """``configure_logging``'s handler, writing into the returned buffer."""
    handler = configure_logging(component, settings, agent_id="nas-server-01")
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    return buffer


@pytest.mark.usefixtures("restored_logging")
def test_configured_json_routes_uvicorn_and_redacts(settings: Settings) -> None:
    foreign = logging.NullHandler()  # a test's capture, say: left alone
    logging.getLogger().addHandler(foreign)
    access = logging.getLogger("uvicorn.access")
    access.addHandler(logging.StreamHandler(io.StringIO()))  # as uvicorn configures it
    access.propagate = False
    access.setLevel(logging.INFO)
    buffer = configured(PROXY, settings.model_copy(update={"log_format": "json"}))
    with in_span(SPAN), log_context(request_id="r1"):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/health", "1.1", 200)
        logging.getLogger("clipping.proxy").info("key Bearer %s refused", API_KEY)
        logging.getLogger("httpx").info("HTTP Request: GET /api/health")  # quiet
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == ["uvicorn.access", "clipping.proxy"]
    assert all(line["request_id"] == "r1" and TRACE_FIELD in line for line in lines)
    assert lines[0]["httpRequest"]["status"] == 200
    assert lines[1]["message"] == "key Bearer REDACTED refused"
    assert foreign in logging.getLogger().handlers
    assert access.handlers == [] and access.propagate


@pytest.mark.usefixtures("restored_logging")
def test_configuring_again_replaces_the_handler(settings: Settings) -> None:
    configured(LISTENER, settings)
    buffer = configured(LISTENER, settings)
    logging.getLogger("clipping.listener").warning("once")
    assert buffer.getvalue().count("once") == 1
    assert buffer.getvalue().endswith(" clipping.listener WARNING once\n")  # text: the default


@pytest.mark.usefixtures("restored_logging")
def test_prefects_api_handlers_redact_too(settings: Settings) -> None:
    configured(FLOW, settings)
    handlers = logging.getLogger("prefect.flow_runs").handlers
    assert handlers, "Prefect's API handler is kept"
    assert all(any(isinstance(f, RedactingFilter) for f in h.filters) for h in handlers)


@pytest.mark.usefixtures("restored_logging")
def test_a_flow_appends_to_its_log_file(settings: Settings, tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "nas-server-01.log"
    log_file.parent.mkdir()
    log_file.write_text("the worker's line\n")
    flow_settings = settings.model_copy(update={"log_format": "json", "flow_log_file": log_file})
    handler = configure_logging(FLOW, flow_settings, flow_run_id="run-1")
    assert isinstance(handler, logging.FileHandler)
    with log_context(request_id="r1"):
        logging.getLogger("clipping.flow").info("cut %s", f"?X-Goog-Signature={SIGNATURE}")
    handler.flush()
    worker_line, flow_line = log_file.read_text().splitlines()
    assert worker_line == "the worker's line"
    entry = json.loads(flow_line)
    assert (entry["component"], entry["flow_run_id"], entry["request_id"]) == (FLOW, "run-1", "r1")
    assert entry["message"] == "cut ?X-Goog-Signature=REDACTED"
