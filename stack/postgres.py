"""Throwaway PostgreSQL databases for stacks that run the Prefect server in production shape."""

import asyncio
import re

import asyncpg

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def create_database(name: str, admin_dsn: str = DEFAULT_ADMIN_DSN) -> str:
    """Create database ``name``; return the SQLAlchemy URL Prefect's server connects with."""
    _run(admin_dsn, f'CREATE DATABASE "{_checked(name)}"')
    host_part = admin_dsn.split("://", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{host_part}/{name}"


def drop_database(name: str, admin_dsn: str = DEFAULT_ADMIN_DSN) -> None:
    _run(admin_dsn, f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')


def _checked(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


def _run(dsn: str, statement: str) -> None:
    async def execute() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(execute())
