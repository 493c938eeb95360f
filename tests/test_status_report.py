"""The status answer of a request whose run is not settled: state, progress, phase."""

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.client.schemas.objects import StateType

from clipping.messages import ClipState
from proxy.status import report_for_run

pytestmark = pytest.mark.unit


class ArtifactsOnly:
    """The one Prefect client call the report makes: the run's progress artifact."""

    def __init__(self, *artifacts: SimpleNamespace) -> None:
        self._artifacts = list(artifacts)

    async def read_artifacts(self, **_filters: Any) -> list[SimpleNamespace]:
        return self._artifacts


def report(prefect: ArtifactsOnly, state_type: StateType) -> Any:
    run = SimpleNamespace(id=uuid.uuid4(), state_type=state_type, state=None)
    return asyncio.run(report_for_run(prefect, "r1", run))  # type: ignore[arg-type]


def test_a_run_waiting_for_its_recording_answers_processing_with_the_phase() -> None:
    phase = "waiting for the recording to reach 12:31.400 (recorded up to 12:02.133)"
    answer = report(ArtifactsOnly(SimpleNamespace(data=0.0, description=phase)), StateType.RUNNING)
    assert answer.status is ClipState.PROCESSING
    assert answer.phase == phase
    assert answer.progress == 0.0


def test_a_run_without_a_progress_artifact_has_neither_progress_nor_phase() -> None:
    answer = report(ArtifactsOnly(), StateType.RUNNING)
    assert (answer.status, answer.progress, answer.phase) == (ClipState.PROCESSING, None, None)


def test_a_queued_run_reads_no_artifact() -> None:
    answer = report(ArtifactsOnly(SimpleNamespace(data=50.0, description="x")), StateType.PENDING)
    assert (answer.status, answer.progress, answer.phase) == (ClipState.QUEUED, None, None)
