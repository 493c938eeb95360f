"""The proxy's durable record of accepted requests (SQLite here, PostgreSQL in production)."""

from pathlib import Path

import pytest

from clipping.messages import ClipRequest
from proxy.accepted import AcceptedRequests, RequestIdConflict


@pytest.fixture
def request_body(nas_root: Path) -> dict[str, object]:
    return {
        "request_id": "r1",
        "hand_id": "h1",
        "nas_video_path": str(nas_root / "a.mp4"),
        "start_seconds": 1.0,
        "end_seconds": 2.0,
    }


def test_accepts_once_then_recognises_the_same_request(
    tmp_path: Path, request_body: dict[str, object]
) -> None:
    store = AcceptedRequests(f"sqlite:///{tmp_path / 'p.db'}")
    request = ClipRequest.model_validate(request_body)
    assert store.accept(request) is True
    assert store.accept(request) is False
    assert "r1" in store
    assert "r2" not in store


def test_a_different_body_under_the_same_id_conflicts(
    tmp_path: Path, request_body: dict[str, object]
) -> None:
    store = AcceptedRequests(f"sqlite:///{tmp_path / 'p.db'}")
    store.accept(ClipRequest.model_validate(request_body))
    with pytest.raises(RequestIdConflict):
        store.accept(ClipRequest.model_validate({**request_body, "end_seconds": 3.0}))


def test_survives_a_restart_and_forgets_on_request(
    tmp_path: Path, request_body: dict[str, object]
) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    first = AcceptedRequests(url)
    first.accept(ClipRequest.model_validate(request_body))
    first.close()
    second = AcceptedRequests(url)
    assert "r1" in second
    second.forget("r1")
    assert "r1" not in second
