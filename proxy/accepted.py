"""Durable record of accepted requests, so status answers ``queued`` before a run exists."""

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, create_engine, func, select
from sqlalchemy.exc import IntegrityError

from clipping.messages import ClipRequest

_metadata = MetaData()
_accepted = Table(
    "accepted_requests",
    _metadata,
    Column("request_id", String(64), primary_key=True),
    Column("body", Text, nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


class RequestIdConflict(Exception):
    """The request id was accepted before with a different body."""


class AcceptedRequests:
    def __init__(self, database_url: str) -> None:
        self._engine = create_engine(database_url)
        _metadata.create_all(self._engine)

    def accept(self, request: ClipRequest) -> bool:
        """Record ``request``; True if new, False if the identical request was accepted before.

        Raises ``RequestIdConflict`` when its id was accepted with a different body.
        """
        body = request.model_dump_json()
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    _accepted.insert().values(request_id=request.request_id, body=body)
                )
        except IntegrityError:
            if self._body(request.request_id) != body:
                raise RequestIdConflict(request.request_id) from None
            return False
        return True

    def forget(self, request_id: str) -> None:
        """Undo an acceptance whose publication failed, so the caller may retry it."""
        with self._engine.begin() as connection:
            connection.execute(_accepted.delete().where(_accepted.c.request_id == request_id))

    def __contains__(self, request_id: str) -> bool:
        return self._body(request_id) is not None

    def _body(self, request_id: str) -> str | None:
        with self._engine.connect() as connection:
            return connection.execute(
                select(_accepted.c.body).where(_accepted.c.request_id == request_id)
            ).scalar_one_or_none()

    def close(self) -> None:
        self._engine.dispose()
