"""One outcome per request (``clipping.outcomes``), on the in-memory bucket and on the real
GCS emulator alike: the same tests prove the double keeps the semantics that matter."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from google.cloud import storage

from clipping.messages import ClipCompletion, ClipState
from clipping.outcomes import RequestOutcomes, run_outcome
from tests.doubles import MemoryBucket

pytestmark = pytest.mark.integration


class Announcements:
    """A publish function that records what it was given, and can be made to fail."""

    def __init__(self) -> None:
        self.published: list[ClipCompletion] = []
        self.failing = False

    def __call__(self, completion: ClipCompletion) -> str:
        if self.failing:
            raise TimeoutError("Pub/Sub did not answer")
        self.published.append(completion)
        return str(len(self.published))


@pytest.fixture(params=["memory", "emulator"])
def bucket(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryBucket()
    client: storage.Client = request.getfixturevalue("gcs_client")
    return client.create_bucket(f"outcomes-{request.node.name.split('[')[0][-40:]}".lower()[:60])


def _claim_as_another_writer(bucket: Any, request_id: str) -> None:
    """What a writer leaves between its claim and its record (or when it dies there)."""
    bucket.blob(f"_records/{request_id}/announcing").upload_from_string(b"")


def _completed(request_id: str = "req-1") -> ClipCompletion:
    return ClipCompletion(request_id=request_id, status=ClipState.COMPLETED, download_url="u")


def _failed(request_id: str = "req-1") -> ClipCompletion:
    return ClipCompletion(request_id=request_id, status=ClipState.FAILED, reason="no")


def test_the_first_outcome_stands_and_is_announced_once(bucket: Any) -> None:
    announcements = Announcements()
    outcomes = RequestOutcomes(bucket, announcements)
    first = outcomes.settle(_completed())
    assert outcomes.settle(_failed()) == first
    assert announcements.published == [first]
    assert outcomes.read("req-1") == first
    assert outcomes.read("req-2") is None


def test_a_failed_publish_leaves_the_request_open_for_the_next_attempt(bucket: Any) -> None:
    announcements = Announcements()
    naps: list[float] = []
    outcomes = RequestOutcomes(bucket, announcements, sleep=naps.append)
    announcements.failing = True
    with pytest.raises(TimeoutError):
        outcomes.settle(_failed())
    assert outcomes.read("req-1") is None
    announcements.failing = False
    second = outcomes.settle(_failed())
    assert announcements.published == [second]
    assert naps == [], "the failed writer released its claim"


def test_a_writer_waits_for_the_one_holding_the_claim_and_takes_its_outcome(
    bucket: Any,
) -> None:
    announcements = Announcements()
    _claim_as_another_writer(bucket, "req-1")

    def other_writer_records(seconds: float) -> None:
        bucket.blob("_records/req-1/announced.json").upload_from_string(
            _completed().model_dump_json()
        )

    waiting = RequestOutcomes(bucket, announcements, sleep=other_writer_records)
    assert waiting.settle(_failed()).status is ClipState.COMPLETED
    assert announcements.published == []


def test_a_claim_left_by_a_dead_writer_is_taken_over_after_the_timeout(bucket: Any) -> None:
    announcements = Announcements()
    _claim_as_another_writer(bucket, "req-1")
    outcomes = RequestOutcomes(bucket, announcements, claim_timeout=timedelta(0))
    assert outcomes.settle(_failed()).status is ClipState.FAILED
    assert len(announcements.published) == 1


def test_a_rejection_without_a_request_id_is_announced_but_not_recorded(bucket: Any) -> None:
    announcements = Announcements()
    rejection = ClipCompletion(request_id=None, status=ClipState.REJECTED, reason="not JSON")
    assert RequestOutcomes(bucket, announcements).settle(rejection) == rejection
    assert announcements.published == [rejection]


def test_of_writers_settling_at_once_exactly_one_announces(bucket: Any) -> None:
    announcements = Announcements()
    outcomes = RequestOutcomes(bucket, announcements, sleep=lambda seconds: None)
    candidates = [_completed() if n % 2 else _failed() for n in range(8)]
    with ThreadPoolExecutor(8) as pool:
        settled = list(pool.map(outcomes.settle, candidates))
    assert len(announcements.published) == 1
    assert all(outcome == announcements.published[0] for outcome in settled)


def test_a_run_failure_names_the_request_of_the_run() -> None:
    parameters = {"request": {"request_id": "req-9", "hand_id": "hand-9"}}
    failure = run_outcome(parameters, "run-1", "crashed 4 times", agent_id="nas-1")
    assert (failure.request_id, failure.hand_id, failure.status) == (
        "req-9",
        "hand-9",
        ClipState.FAILED,
    )
    assert (failure.reason, failure.flow_run_id, failure.agent_id) == (
        "crashed 4 times",
        "run-1",
        "nas-1",
    )
