"""Following one request through the JSON logs of a live stack, by its id and by its trace.

The stack runs with ``CLIPPING_LOG_FORMAT=json``: every process writes one JSON object per
line into its log (``logs/<name>.log``; flow processes append to their worker's). A clip
is requested with a ``traceparent`` of the test's; once it is completed, the lines of the
proxy, the listener and the flow are found by its ``request_id`` and, apart, by the trace
id in ``logging.googleapis.com/trace``. No log holds the API key, the webhook secret or a
signed URL's signature, not even after a status call that carries the signature in its
query (the access line shows it ``REDACTED``). With OpenTelemetry configured (the stack
exports to the test's OTLP collector), the proxy's, the listener's and the flow's spans
are one trace.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from clipping.logs import SPAN_FIELD, TRACE_FIELD
from clipping.tracing import TraceContext
from stack.lifecycle import Stack
from tests.live_stack import clip_body, wait_until_finished
from tests.otlp_collector import ReceivedSpan, collecting
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
# Bounds on waiting for the stack, far above what it needs: not speed requirements.
PATIENCE_S = 120.0
UNREDACTED_SIGNATURE = re.compile(r"X-Goog-Signature=(?!REDACTED)", re.IGNORECASE)


@pytest.fixture(scope="module", autouse=True)
def spans() -> Iterator[list[ReceivedSpan]]:
    """Every process of this module's stack logs JSON and exports its spans over OTLP to
    the test's collector (set before the stack starts)."""
    with collecting() as (endpoint, received), pytest.MonkeyPatch.context() as env:
        env.setenv("CLIPPING_LOG_FORMAT", "json")
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
        yield received


def log_files(stack: Stack) -> dict[str, Path]:
    names = ("proxy", "listener", *stack.config.workers)
    return {name: stack.supervisor.log_path(name) for name in names}


def json_lines(stack: Stack) -> list[dict]:
    """Every JSON line of the proxy's, the listener's and the workers' logs."""
    lines = []
    for path in log_files(stack).values():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
    return lines


def components(lines: list[dict]) -> set[str]:
    return {line["component"] for line in lines}


@pytest.fixture(scope="module")
def completed(live_stack: Stack, proxy: httpx.Client, recording: Path) -> dict:
    """The status of one clip requested in the test's trace, once completed."""
    answer = proxy.post(
        "/v1/clip/request", json=clip_body(recording), headers={"traceparent": TRACEPARENT}
    )
    assert answer.status_code == 202, answer.text
    answered = TraceContext.parse(answer.headers["traceparent"])
    assert answered is not None and answered.trace_id == TRACE_ID
    status = wait_until_finished(proxy, answer.json()["request_id"])
    assert status["status"] == "completed", status
    return status


def test_a_requests_lines_are_found_by_its_id_and_by_its_trace_in_every_process(
    live_stack: Stack, completed: dict
) -> None:
    request_id = completed["request_id"]

    def by_request() -> list[dict]:
        return [line for line in json_lines(live_stack) if line.get("request_id") == request_id]

    def by_trace() -> list[dict]:
        trace = f"/traces/{TRACE_ID}"
        lines = json_lines(live_stack)
        return [line for line in lines if line.get(TRACE_FIELD, "").endswith(trace)]

    every = {"proxy", "listener", "flow"}
    wait_for(
        lambda: components(by_request()) >= every, f"lines of {request_id} from {every}", PATIENCE_S
    )
    wait_for(
        lambda: components(by_trace()) >= every,
        f"lines of trace {TRACE_ID} from {every}",
        PATIENCE_S,
    )
    traced = by_trace()
    assert {line.get("request_id") for line in traced} == {request_id}
    # Its status calls are traces of their own (sent without a traceparent); the rest of
    # its lines are in the trace it was requested in.
    untraced = [line for line in by_request() if line not in traced]
    assert {line["logger"] for line in untraced} <= {"uvicorn.access", "clipping.proxy"}
    flow = [line for line in traced if line["component"] == "flow"]
    assert {line["agent_id"] for line in flow} == {completed["agent_id"]}
    assert {line["flow_run_id"] for line in flow} == {completed["flow_run_id"]}
    assert {line["hand_id"] for line in flow} == {"hand-7"}
    assert {"prefect.task_runs", "clipping.outcomes"} <= {line["logger"] for line in flow}
    (accepted,) = [line for line in traced if line["logger"] == "uvicorn.access"]
    assert accepted["httpRequest"]["requestMethod"] == "POST"
    assert accepted["httpRequest"]["status"] == 202
    assert accepted["route"] == "/v1/clip/request"
    spans = {(line["component"], line[SPAN_FIELD]) for line in traced}
    assert len(spans) == 3, f"one span per process: {spans}"
    assert len({span for _, span in spans}) == 3


def test_the_request_is_one_trace_of_spans_the_processes_exported(
    completed: dict, spans: list[ReceivedSpan]
) -> None:
    def of_trace() -> dict[str, ReceivedSpan]:
        return {span.service: span for span in spans if span.trace_id == TRACE_ID}

    services = {"clipping-proxy", "clipping-listener", "clipping-flow"}
    wait_for(lambda: services <= set(of_trace()), f"spans of {sorted(services)}", PATIENCE_S)
    found = of_trace()
    assert found["clipping-proxy"].name == "POST /v1/clip/request"
    assert found["clipping-proxy"].parent_id == TRACEPARENT.split("-")[2]
    assert found["clipping-listener"].parent_id == found["clipping-proxy"].span_id
    assert found["clipping-flow"].name == "clip-hand"


def test_the_prefect_ui_still_shows_the_runs_logs(
    prefect_api: httpx.Client, completed: dict
) -> None:
    """Prefect's API handler is kept beside the JSON lines (it sends in batches)."""

    def messages() -> list[str]:
        logs = prefect_api.post(
            "/logs/filter", json={"logs": {"flow_run_id": {"any_": [completed["flow_run_id"]]}}}
        ).json()
        return [log["message"] for log in logs]

    wait_for(
        lambda: any(m.startswith("cutting ") for m in messages()), "the run's logs", PATIENCE_S
    )
    assert any(m.startswith("announced completed") for m in messages())


def test_no_log_holds_a_secret(live_stack: Stack, proxy: httpx.Client, completed: dict) -> None:
    """Not the API key, the webhook secret nor a signature: a status call that carries its
    clip's signature in the query is logged with the value ``REDACTED``."""
    signature = parse_qs(urlsplit(completed["download_url"]).query)["X-Goog-Signature"][0]
    request_id = completed["request_id"]
    pasted = proxy.get(f"/v1/clip/{request_id}/status", params={"X-Goog-Signature": signature})
    assert pasted.status_code == 200
    secret = proxy.get("/v1/webhooks/secret").json()["secret"]
    proxy_log = log_files(live_stack)["proxy"]
    wait_for(
        lambda: "X-Goog-Signature=REDACTED" in proxy_log.read_text(errors="replace"),
        "the status call's access line",
        PATIENCE_S,
    )
    for name, path in log_files(live_stack).items():
        text = path.read_text(errors="replace")
        assert live_stack.config.api_key("m6") not in text, name
        assert secret not in text and signature not in text, name
        assert not UNREDACTED_SIGNATURE.search(text), name
