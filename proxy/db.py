"""Column types shared by the proxy's tables (``proxy.accepted``, ``proxy.webhooks``)."""

from datetime import UTC, datetime

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, stored and read back aware. Every time the proxy stores is UTC, but SQLite
    keeps no zone and gives back naive datetimes: read back, they are UTC again."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)
