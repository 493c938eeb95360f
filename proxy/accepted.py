"""Durable record of accepted requests, so status answers ``queued`` before a run exists.

Each record keeps its owner, the digest of the key that made the request (``proxy.auth``):
a caller sees only its own requests, unless it is an admin.
"""

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
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
)


class RequestIdConflict(Exception):
    """The request id was accepted before with a different body, or for another caller."""


class AcceptedRequests:
    def __init__(self, database_url: str) -> None:
        self._engine = create_engine(database_url)
        _metadata.create_all(self._engine)
        _add_owner_column(self._engine)

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

    def close(self) -> None:
        self._engine.dispose()


def _add_owner_column(engine: Engine) -> None:
    """Upgrade a table made before owners were kept (create_all leaves existing tables)."""
    columns = {column["name"] for column in inspect(engine).get_columns(_accepted.name)}
    if "owner" not in columns:
        with engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE {_accepted.name} ADD COLUMN owner VARCHAR(80)"))
