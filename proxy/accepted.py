"""Durable record of accepted requests, so status answers ``queued`` before a run exists.

Each record keeps its owner, the digest of the key that made the request (``proxy.auth``):
a caller sees only its own requests, unless it is an admin. It also keeps what
``proxy.reconcile`` needs to publish again a request that never started.
"""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
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

_metadata = MetaData()
_accepted = Table(
    "accepted_requests",
    _metadata,
    Column("request_id", String(64), primary_key=True),
    Column("body", Text, nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # NULL for records made before owners were kept: only an admin sees those.
    Column("owner", String(80), nullable=True),
    # For reconciliation (proxy.reconcile): when it was published again and how often in
    # all (NULL: once, at accepted_at), and when it was seen started or settled (NULL: open).
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("publications", Integer, nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class Unstarted:
    """An open accepted request, as published (JSON), and how often it was published."""

    request_id: str
    body: str
    publications: int

    @property
    def hand_id(self) -> str | None:
        return json.loads(self.body).get("hand_id")


class RequestIdConflict(Exception):
    """The request id was accepted before with a different body, or for another caller."""


class AcceptedRequests:
    def __init__(self, database_url: str) -> None:
        self._engine = create_engine(database_url)
        _metadata.create_all(self._engine)
        _add_missing_columns(self._engine)

    def accept(self, request: ClipRequest, owner: str | None = None) -> bool:
        """Record ``request`` for ``owner``; True if new, False if that owner's identical
        request was accepted before.

        Raises ``RequestIdConflict`` when its id was accepted with a different body or owner.
        """
        body = request.model_dump_json()
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    _accepted.insert().values(request_id=request.request_id, body=body, owner=owner)
                )
        except IntegrityError:
            if self._record(request.request_id) != (body, owner):
                raise RequestIdConflict(request.request_id) from None
            return False
        return True

    def forget(self, request_id: str) -> None:
        """Undo an acceptance whose publication failed, so the caller may retry it."""
        with self._engine.begin() as connection:
            connection.execute(_accepted.delete().where(_accepted.c.request_id == request_id))

    def owner(self, request_id: str) -> str | None:
        """The key digest that made the request; None if unknown or made before owners."""
        record = self._record(request_id)
        return record[1] if record else None

    def __contains__(self, request_id: str) -> bool:
        return self._record(request_id) is not None

    def _record(self, request_id: str) -> tuple[str, str | None] | None:
        """``(body, owner)`` of the request, or None."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(_accepted.c.body, _accepted.c.owner).where(
                    _accepted.c.request_id == request_id
                )
            ).one_or_none()
        return (row.body, row.owner) if row else None

    def unstarted(self, published_before: datetime, limit: int = 500) -> list[Unstarted]:
        """Open requests last published before ``published_before``, oldest first."""
        published_at = func.coalesce(_accepted.c.published_at, _accepted.c.accepted_at)
        publications = func.coalesce(_accepted.c.publications, 1)
        query = (
            select(_accepted.c.request_id, _accepted.c.body, publications.label("publications"))
            .where(_accepted.c.closed_at.is_(None), published_at < published_before)
            .order_by(published_at)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [Unstarted(row.request_id, row.body, row.publications) for row in rows]

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
