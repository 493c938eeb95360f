"""The proxy's durable record of accepted requests, on SQLite (default) and PostgreSQL."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipping.messages import ClipRequest
from proxy.accepted import AcceptedRequests, RequestIdConflict
from stack.postgres import create_database, drop_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'p.db'}"
        return
    name = f"clipping_proxy_test_{uuid.uuid4().hex[:12]}"
    url = create_database(name).replace("+asyncpg", "+psycopg")
    try:
        yield url
    finally:
        drop_database(name)


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
    database_url: str, request_body: dict[str, object]
) -> None:
    store = AcceptedRequests(database_url)
    request = ClipRequest.model_validate(request_body)
    assert store.accept(request) is True
    assert store.accept(request) is False
    assert "r1" in store
    assert "r2" not in store


def test_a_different_body_under_the_same_id_conflicts(
    database_url: str, request_body: dict[str, object]
) -> None:
    store = AcceptedRequests(database_url)
    store.accept(ClipRequest.model_validate(request_body))
    with pytest.raises(RequestIdConflict):
        store.accept(ClipRequest.model_validate({**request_body, "end_seconds": 3.0}))


def test_survives_a_restart_and_forgets_on_request(
    database_url: str, request_body: dict[str, object]
) -> None:
    first = AcceptedRequests(database_url)
    first.accept(ClipRequest.model_validate(request_body))
    first.close()
    second = AcceptedRequests(database_url)
    assert "r1" in second
    second.forget("r1")
    assert "r1" not in second
