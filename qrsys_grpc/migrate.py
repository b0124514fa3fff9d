"""Alembic, driven from qrsys: upgrade a database, or check it is current."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from qrsys_grpc.repository.database import async_url


class SchemaOutOfDate(RuntimeError):
    """The database's schema is not the newest revision."""


def alembic_config(database_url: str, migrations_dir: Path) -> Config:
    """An alembic config for ``database_url`` with no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option(
        "sqlalchemy.url",
        async_url(database_url)
        .render_as_string(hide_password=False)
        .replace("%", "%%"),
    )
    return config


def upgrade(database_url: str, migrations_dir: Path) -> None:
    """Upgrade the database to the newest revision. Blocks; run it off-loop."""
    command.upgrade(alembic_config(database_url, migrations_dir), "head")


def head_revision(migrations_dir: Path) -> str | None:
    """The newest revision in ``migrations_dir``."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    return ScriptDirectory.from_config(config).get_current_head()


async def ensure_current(engine: AsyncEngine, migrations_dir: Path) -> None:
    """Raise ``SchemaOutOfDate`` unless the database is at the newest revision."""
    head = head_revision(migrations_dir)
    async with engine.connect() as conn:
        exists = await conn.scalar(sa.text("SELECT to_regclass('alembic_version')"))
        current = (
            await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
            if exists
            else None
        )
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at {current or 'nothing'}, qrsys needs "
            f"{head}: run `make migrate` (or `qrsys-server --migrate-only`)"
        )
