"""Accepted requests that never became a run are published again, then failed with a
reason: never ``queued`` for good. In process, on the real store (SQLite) with the clock
given to each pass."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clipping.messages import ClipCompletion, ClipRequest, ClipState
from clipping.outcomes import RequestOutcomes
from clipping.tracing import TraceContext, current_span
from proxy.accepted import AcceptedRequests
from proxy.reconcile import Reconciler
from tests.doubles import MemoryBucket

pytestmark = [pytest.mark.unit, pytest.mark.anyio]

UNSTARTED_AFTER = timedelta(seconds=120)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class World:
    """The reconciler and what it acts on: runs that exist, messages it published."""

    def __init__(self, tmp_path: Path) -> None:
        self.accepted = AcceptedRequests(f"sqlite:///{tmp_path / 'proxy.db'}")
        self.announced: list[ClipCompletion] = []
        self.outcomes = RequestOutcomes(MemoryBucket(), self._announce)  # type: ignore[arg-type]
        self.runs: set[str] = set()
        self.published: list[tuple[str, bytes]] = []
        self.spans: list[TraceContext | None] = []  # current at each publication
        self.run_lookups = 0
        self.reconciler = Reconciler(
            self.accepted,
            self.outcomes,
            self._has_run,
            self._publish,
            unstarted_after=UNSTARTED_AFTER,
            max_publications=3,
        )
        self.start = datetime.now(UTC)

    def _announce(self, completion: ClipCompletion) -> str:
        self.announced.append(completion)
        return "1"

    async def _has_run(self, request_id: str) -> bool:
        self.run_lookups += 1
        return request_id in self.runs

    async def _publish(self, request_id: str, body: bytes) -> None:
        self.published.append((request_id, body))
        self.spans.append(current_span())

    async def at(self, seconds: float) -> None:
        """A pass ``seconds`` after the requests were accepted."""
        await self.reconciler.reconcile(self.start + timedelta(seconds=seconds))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


@pytest.fixture
def request_1(nas_root: Path) -> ClipRequest:
    return ClipRequest(
        request_id="req-1",
        hand_id="hand-1",
        nas_video_path=str(nas_root / "day1.mp4"),
        start_seconds=1.0,
        end_seconds=2.0,
    )


async def test_a_request_without_a_run_is_published_again_then_failed(
    world: World, request_1: ClipRequest
) -> None:
    world.accepted.accept(request_1)
    await world.at(60)
    assert world.published == []
    await world.at(125)
    await world.at(130)  # published again at 125: not due before 245
    assert world.published == [("req-1", request_1.model_dump_json().encode())]
    await world.at(250)
    assert len(world.published) == 2
    await world.at(375)
    assert len(world.published) == 2, "three publications in all, then it gives up"
    (failure,) = world.announced
    assert failure.status is ClipState.FAILED and failure.hand_id == "hand-1"
    assert "accepted but never started: no flow run after 3 publications" in (failure.reason or "")
    assert world.outcomes.read("req-1") == failure
    lookups = world.run_lookups
    await world.at(1000)
    assert world.run_lookups == lookups and len(world.announced) == 1, "closed: not looked at"


async def test_a_request_with_a_run_is_closed_and_never_published_again(
    world: World, request_1: ClipRequest
) -> None:
    world.accepted.accept(request_1)
    world.runs.add("req-1")
    await world.at(125)
    await world.at(500)
    assert world.published == [] and world.announced == []
    assert world.run_lookups == 1


async def test_a_request_that_has_its_outcome_is_closed(
    world: World, request_1: ClipRequest
) -> None:
    world.accepted.accept(request_1)
    rejected = ClipCompletion(request_id="req-1", status=ClipState.REJECTED, reason="bad")
    world.outcomes.settle(rejected)
    await world.at(125)
    await world.at(500)
    assert world.published == [] and world.announced == [rejected]
    assert world.run_lookups == 0


async def test_the_published_body_is_the_accepted_one(world: World, request_1: ClipRequest) -> None:
    world.accepted.accept(request_1)
    await world.at(125)
    ((_, body),) = world.published
    assert ClipRequest.model_validate(json.loads(body)) == request_1


async def test_a_request_is_published_again_in_the_trace_it_was_accepted_in(
    world: World, request_1: ClipRequest
) -> None:
    accepted_in = TraceContext.new()
    world.accepted.accept(request_1, traceparent=accepted_in.traceparent)
    await world.at(125)
    (span,) = world.spans
    assert span is not None and span.trace_id == accepted_in.trace_id
    assert span.span_id != accepted_in.span_id, "a span of its own"


async def test_a_request_accepted_before_traces_were_kept_is_published_in_a_new_one(
    world: World, request_1: ClipRequest
) -> None:
    world.accepted.accept(request_1)
    await world.at(125)
    (span,) = world.spans
    assert span is not None
