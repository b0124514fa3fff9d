"""A real PostgreSQL for the tests: a fresh database per run, migrated, dropped.

``QRSYS_TEST_DATABASE_URL`` names a server to create the database on (any
database of it); without it, an embedded PostgreSQL is started in a
temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from qrsys_grpc import migrate
from qrsys_grpc.embedded import EmbeddedPostgres
from qrsys_grpc.repository.database import async_url

REPO = Path(__file__).resolve().parent.parent
MIGRATIONS = REPO / "migrations"


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL of a PostgreSQL server we may create databases on."""
    configured = os.environ.get("QRSYS_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    # Not under pytest's temporary directories: another pytest session on
    # the machine may prune those while this one's cluster still runs.
    with tempfile.TemporaryDirectory(prefix="qrsys-test-pg-") as directory:
        embedded = EmbeddedPostgres(Path(directory))
        try:
            yield embedded.start()
        finally:
            embedded.stop()


async def _admin(url: str, statement: str) -> None:
    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def create_database(server_url: str, prefix: str = "qrsys_test") -> str:
    """Create an empty database on ``server_url`` and return its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    return (
        sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    )


async def drop_database(server_url: str, url: str) -> None:
    """Drop the database ``url`` names, closing its connections."""
    name = sa.make_url(url).database
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A new, migrated database, dropped when the run ends."""
    url = await create_database(postgres_server_url)
    try:
        await asyncio.to_thread(migrate.upgrade, url, MIGRATIONS)
        yield url
    finally:
        await drop_database(postgres_server_url, url)
