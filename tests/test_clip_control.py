"""Cancel and delete in process: the proxy's endpoints over an in-memory bucket and a
Prefect that keeps the runs and states it is given (``proxy.control``).

The real Prefect, worker and flow process of a cancel are exercised on the local stack
(``tests/test_cancel.py``).
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Completed, Running, Scheduled, State
from pydantic import SecretStr

from clipping.messages import ClipCompletion, ClipState
from clipping.outcomes import RequestOutcomes
from clipping.settings import Settings
from proxy.app import create_app
from proxy.deps import get_bucket, get_outcomes, get_prefect, get_publisher
from proxy.settings import ProxySettings
from tests.doubles import MemoryBucket

pytestmark = pytest.mark.unit

KEYS = {"m6": "clip", "partner": "clip", "operator": "admin+clip", "admin": "admin"}
CLIP, POSTER = "h1/r1.mp4", "h1/r1.jpg"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}-key"}


class RecordingPrefect:
    """The two Prefect calls cancelling makes: runs by idempotency key, and state changes."""

    def __init__(self) -> None:
        self.runs: dict[str, FlowRun] = {}
        self.set_states: list[StateType] = []

    def add_run(self, request_id: str, state: State) -> None:
        self.runs[request_id] = FlowRun(
            flow_id=uuid4(), idempotency_key=request_id, state=state, state_type=state.type
        )

    async def read_flow_runs(self, flow_run_filter: Any, limit: int) -> list[FlowRun]:
        (request_id,) = flow_run_filter.idempotency_key.any_
        return [self.runs[request_id]] if request_id in self.runs else []

    async def set_flow_run_state(self, flow_run_id: Any, state: State, force: bool) -> None:
        assert force
        self.set_states.append(state.type)


@pytest.fixture
def bucket() -> MemoryBucket:
    return MemoryBucket()


@pytest.fixture
def announced() -> list[ClipCompletion]:
    return []


@pytest.fixture
def prefect() -> RecordingPrefect:
    return RecordingPrefect()


@pytest.fixture
def client(
    settings: Settings,
    tmp_path: Path,
    bucket: MemoryBucket,
    announced: list[ClipCompletion],
    prefect: RecordingPrefect,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    # The app's own clients are built but never called: storage and Prefect are overridden.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    proxy_settings = ProxySettings(
        api_keys=SecretStr(",".join(f"{scopes}:{name}-key" for name, scopes in KEYS.items())),
        database_url=f"sqlite:///{tmp_path / 'proxy.db'}",
        count_completions=False,
    )
    app = create_app(settings, proxy_settings)

    def publish(completion: ClipCompletion) -> str:
        announced.append(completion)
        return f"message-{len(announced)}"

    outcomes = RequestOutcomes(bucket, publish)  # type: ignore[arg-type]
    app.dependency_overrides[get_outcomes] = lambda: outcomes
    app.dependency_overrides[get_bucket] = lambda: bucket
    app.dependency_overrides[get_prefect] = lambda: prefect
    app.dependency_overrides[get_publisher] = lambda: _Publisher()
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}), TestClient(app) as client:
        yield client


class _Publisher:
    async def publish(self, clip: Any) -> str:
        return "message"


@pytest.fixture
def requested(client: TestClient, request_body: dict) -> dict:
    assert client.post("/v1/clip/request", json=request_body, headers=auth("m6")).status_code == 202
    return request_body


def complete(bucket: MemoryBucket, announced: list[ClipCompletion]) -> None:
    """What the flow leaves for request r1: clip, poster, upload record, outcome."""
    for name in (CLIP, POSTER, "_records/r1/uploaded.json"):
        bucket.blob(name).upload_from_string(b"stored")
    RequestOutcomes(bucket, lambda c: announced.append(c) or "m").settle(  # type: ignore[arg-type, func-returns-value]
        ClipCompletion(request_id="r1", hand_id="h1", status=ClipState.COMPLETED, object_name=CLIP)
    )


def test_a_queued_request_is_cancelled_once_and_never_runs(
    client: TestClient, requested: dict, announced: list[ClipCompletion], prefect: RecordingPrefect
) -> None:
    for _ in range(2):
        answer = client.post("/v1/clip/r1/cancel", headers=auth("m6"))
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "cancelled"
    assert [(c.request_id, c.status) for c in announced] == [("r1", ClipState.CANCELLED)]
    assert announced[0].reason == "cancelled by its owner"
    assert prefect.set_states == []  # no run: the listener acknowledges a settled request
    status = client.get("/v1/clip/r1/status", headers=auth("m6")).json()
    assert (status["status"], status["reason"]) == ("cancelled", "cancelled by its owner")


@pytest.mark.parametrize(
    ("run_state", "set_to"),
    [
        (Scheduled(), StateType.CANCELLED),
        (State(type=StateType.PENDING), StateType.CANCELLING),
        (Running(), StateType.CANCELLING),
    ],
)
def test_a_run_is_cancelled_in_prefect_and_a_started_one_killed_by_its_worker(
    client: TestClient,
    requested: dict,
    prefect: RecordingPrefect,
    run_state: State,
    set_to: StateType,
) -> None:
    prefect.add_run("r1", run_state)
    assert client.post("/v1/clip/r1/cancel", headers=auth("m6")).status_code == 202
    assert prefect.set_states == [set_to]


def test_a_finished_run_is_left_as_it_is(
    client: TestClient, requested: dict, prefect: RecordingPrefect
) -> None:
    prefect.add_run("r1", Completed())
    assert client.post("/v1/clip/r1/cancel", headers=auth("m6")).status_code == 202
    assert prefect.set_states == []


def test_cancelling_a_finished_clip_is_409_and_keeps_it(
    client: TestClient, requested: dict, bucket: MemoryBucket, announced: list[ClipCompletion]
) -> None:
    complete(bucket, announced)
    answer = client.post("/v1/clip/r1/cancel", headers=auth("m6"))
    assert answer.status_code == 409
    assert answer.json() == {"detail": "clip request 'r1' already ended as completed"}
    assert [c.status for c in announced] == [ClipState.COMPLETED]
    assert CLIP in bucket.names()


def test_a_clip_uploaded_by_a_run_killed_before_it_settled_is_deleted_on_cancel(
    client: TestClient, requested: dict, bucket: MemoryBucket
) -> None:
    for name in (CLIP, POSTER):
        bucket.blob(name).upload_from_string(b"stored")
    assert client.post("/v1/clip/r1/cancel", headers=auth("m6")).status_code == 202
    assert CLIP not in bucket.names() and POSTER not in bucket.names()


def test_a_deleted_clip_is_gone_with_its_records_and_its_status_is_404(
    client: TestClient, requested: dict, bucket: MemoryBucket, announced: list[ClipCompletion]
) -> None:
    complete(bucket, announced)
    deleted = client.delete("/v1/clip/r1", headers=auth("m6"))
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert bucket.names() == []
    status = client.get("/v1/clip/r1/status", headers=auth("m6"))
    assert status.status_code == 404
    assert status.json() == {"detail": "clip request 'r1' was deleted"}
    assert client.delete("/v1/clip/r1", headers=auth("m6")).status_code == 404
    assert client.post("/v1/clip/r1/cancel", headers=auth("m6")).status_code == 404


def test_a_deleted_clips_id_cannot_be_requested_again(
    client: TestClient, requested: dict, bucket: MemoryBucket, announced: list[ClipCompletion]
) -> None:
    complete(bucket, announced)
    assert client.delete("/v1/clip/r1", headers=auth("m6")).status_code == 204
    again = client.post("/v1/clip/request", json=requested, headers=auth("m6"))
    assert again.status_code == 409
    assert again.json() == {"detail": "request_id names a clip that was deleted"}


def test_a_request_not_ended_cannot_be_deleted(
    client: TestClient, requested: dict, bucket: MemoryBucket
) -> None:
    answer = client.delete("/v1/clip/r1", headers=auth("m6"))
    assert answer.status_code == 409
    assert answer.json() == {"detail": "clip request 'r1' has not ended; cancel it first"}
    assert client.post("/v1/clip/r1/cancel", headers=auth("m6")).status_code == 202
    assert client.delete("/v1/clip/r1", headers=auth("m6")).status_code == 204


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/clip/r1/cancel"), ("DELETE", "/v1/clip/r1")]
)
def test_only_the_owner_or_an_admin_controls_a_clip(
    client: TestClient,
    requested: dict,
    bucket: MemoryBucket,
    announced: list[ClipCompletion],
    method: str,
    path: str,
) -> None:
    if method == "DELETE":
        complete(bucket, announced)
    assert client.request(method, path).status_code == 401
    assert client.request(method, path, headers=auth("admin")).status_code == 403
    other = client.request(method, path, headers=auth("partner"))
    assert (other.status_code, other.json()) == (404, {"detail": "no clip request 'r1'"})
    unknown = client.request(method, path.replace("r1", "r2"), headers=auth("m6"))
    assert unknown.status_code == 404
    assert client.request(method, path, headers=auth("operator")).status_code in (202, 204)
