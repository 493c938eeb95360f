"""The proxy's durable record of accepted requests, on SQLite (default) and PostgreSQL."""

import pytest
from sqlalchemy import create_engine, text

from clipping.messages import ClipRequest
from proxy.accepted import AcceptedRequests, RequestIdConflict

pytestmark = pytest.mark.integration


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


def test_keeps_the_owner_and_refuses_the_id_to_another_owner(
    database_url: str, request_body: dict[str, object]
) -> None:
    store = AcceptedRequests(database_url)
    request = ClipRequest.model_validate(request_body)
    assert store.accept(request, owner="sha256:aa") is True
    assert store.accept(request, owner="sha256:aa") is False
    assert store.owner("r1") == "sha256:aa"
    assert store.owner("r2") is None
    with pytest.raises(RequestIdConflict):
        store.accept(request, owner="sha256:bb")
    assert store.owner("r1") == "sha256:aa"


def test_a_table_made_before_owners_gains_the_column(
    database_url: str, request_body: dict[str, object]
) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE accepted_requests (request_id VARCHAR(64) PRIMARY KEY, "
                "body TEXT NOT NULL, accepted_at TIMESTAMP WITH TIME ZONE NOT NULL "
                "DEFAULT CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(
            text("INSERT INTO accepted_requests (request_id, body) VALUES ('old', '{}')")
        )
    engine.dispose()
    store = AcceptedRequests(database_url)
    assert "old" in store
    assert store.owner("old") is None
    assert store.accept(ClipRequest.model_validate(request_body), owner="sha256:aa") is True
    assert store.owner("r1") == "sha256:aa"
