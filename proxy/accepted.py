"""Durable record of accepted requests, so status answers ``queued`` before a run exists.

Each record keeps its owner, the digest of the key that made the request (``proxy.auth``):
a caller sees only its own requests, unless it is an admin. It also keeps what
``proxy.reconcile`` needs to publish again a request that never started.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from clipping.messages import ClipRequest
from proxy.db import UtcDateTime

_metadata = MetaData()
_accepted = Table(
    "accepted_requests",
    _metadata,
    Column("request_id", String(64), primary_key=True),
    Column("body", Text, nullable=False),
    Column("accepted_at", UtcDateTime(), nullable=False, server_default=func.now()),
    # NULL for records made before owners were kept: only an admin sees those.
    Column("owner", String(80), nullable=True),
    # For reconciliation (proxy.reconcile): when it was published again and how often in
    # all (NULL: once, at accepted_at), and when it was seen started or settled (NULL: open).
    Column("published_at", UtcDateTime(), nullable=True),
    Column("publications", Integer, nullable=True),
    Column("closed_at", UtcDateTime(), nullable=True),
    # Set when its owner deleted the clip (DELETE /v1/clip/{id}): the record stays, as a
    # tombstone, so the id is not taken again and its status says it was deleted.
    Column("deleted_at", UtcDateTime(), nullable=True),
    # The request's trace as accepted (a W3C traceparent, clipping.tracing), so publishing
    # it again continues that trace. NULL for records made before traces were kept.
    Column("traceparent", String(64), nullable=True),
)


@dataclass(frozen=True)
class AcceptedRecord:
    """An accepted request as recorded: its body (JSON), owner and whether it was deleted."""

    request_id: str
    body: str
    owner: str | None
    deleted_at: datetime | None
    accepted_at: datetime | None = None

    @property
    def fields(self) -> dict[str, Any]:
        """The body's fields, as accepted (not validated again: the settings may differ now)."""
        fields: dict[str, Any] = json.loads(self.body)
        return fields


@dataclass(frozen=True)
class Unstarted:
    """An open accepted request, as published (JSON), and how often it was published."""

    request_id: str
    body: str
    publications: int
    traceparent: str | None = None

    @property
    def hand_id(self) -> str | None:
        return json.loads(self.body).get("hand_id")


class RequestIdConflict(Exception):
    """The request id was accepted before with a different body, or for another caller, or
    its clip was deleted."""


class AcceptedRequests:
    def __init__(self, database_url: str) -> None:
        self._engine = create_engine(database_url)
        _metadata.create_all(self._engine)
        _add_missing_columns(self._engine)

    def accept(
        self, request: ClipRequest, owner: str | None = None, traceparent: str | None = None
    ) -> bool:
        """Record ``request`` for ``owner`` (accepted in the trace ``traceparent``); True if
        new, False if that owner's identical request was accepted before (in any trace).

        Raises ``RequestIdConflict`` when its id was accepted with a different body or owner.
        """
        body = request.model_dump_json()
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    # The time in full (SQLite's default has whole seconds): the metrics'
                    # latency is measured from it.
                    _accepted.insert().values(
                        request_id=request.request_id,
                        body=body,
                        owner=owner,
                        accepted_at=datetime.now(UTC),
                        traceparent=traceparent,
                    )
                )
        except IntegrityError:
            earlier = self.record(request.request_id)
            if earlier is not None and earlier.deleted_at is not None:
                raise RequestIdConflict("request_id names a clip that was deleted") from None
            if earlier is None or (earlier.body, earlier.owner) != (body, owner):
                raise RequestIdConflict(
                    "request_id was already used for a different request"
                ) from None
            return False
        return True

    def forget(self, request_id: str) -> None:
        """Undo an acceptance whose publication failed, so the caller may retry it."""
        with self._engine.begin() as connection:
            connection.execute(_accepted.delete().where(_accepted.c.request_id == request_id))

    def owner(self, request_id: str) -> str | None:
        """The key digest that made the request; None if unknown or made before owners."""
        record = self.record(request_id)
        return record.owner if record else None

    def __contains__(self, request_id: str) -> bool:
        return self.record(request_id) is not None

    def record(self, request_id: str) -> AcceptedRecord | None:
        with self._engine.connect() as connection:
            row = connection.execute(
                select(
                    _accepted.c.request_id,
                    _accepted.c.body,
                    _accepted.c.owner,
                    _accepted.c.deleted_at,
                    _accepted.c.accepted_at,
                ).where(_accepted.c.request_id == request_id)
            ).one_or_none()
        if row is None:
            return None
        return AcceptedRecord(row.request_id, row.body, row.owner, row.deleted_at, row.accepted_at)

    def mark_deleted(self, request_id: str, at: datetime) -> None:
        """Its clip and records are gone; the record stays as the tombstone."""
        self._update(request_id, deleted_at=at, closed_at=func.coalesce(_accepted.c.closed_at, at))

    def unstarted(self, published_before: datetime, limit: int = 500) -> list[Unstarted]:
        """Open requests last published before ``published_before``, oldest first."""
        published_at = func.coalesce(_accepted.c.published_at, _accepted.c.accepted_at)
        publications = func.coalesce(_accepted.c.publications, 1)
        query = (
            select(
                _accepted.c.request_id,
                _accepted.c.body,
                publications.label("publications"),
                _accepted.c.traceparent,
            )
            .where(_accepted.c.closed_at.is_(None), published_at < published_before)
            .order_by(published_at)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            Unstarted(row.request_id, row.body, row.publications, row.traceparent) for row in rows
        ]

    def published_again(self, request_id: str, at: datetime) -> None:
        self._update(
            request_id,
            published_at=at,
            publications=func.coalesce(_accepted.c.publications, 1) + 1,
        )

    def close_request(self, request_id: str, at: datetime) -> None:
        """Seen started or settled: reconciliation need not look at it again."""
        self._update(request_id, closed_at=at)

    def _update(self, request_id: str, **values: Any) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                _accepted.update().where(_accepted.c.request_id == request_id).values(**values)
            )

    def close(self) -> None:
        self._engine.dispose()


def _add_missing_columns(engine: Engine) -> None:
    """Upgrade a table made by an earlier release (create_all leaves existing tables); the
    columns added since are all nullable, so adding them is all it takes."""
    present = {column["name"] for column in inspect(engine).get_columns(_accepted.name)}
    with engine.begin() as connection:
        for column in _accepted.columns:
            if column.name not in present:
                kind = column.type.compile(engine.dialect)
                connection.execute(
                    text(f"ALTER TABLE {_accepted.name} ADD COLUMN {column.name} {kind}")
                )
