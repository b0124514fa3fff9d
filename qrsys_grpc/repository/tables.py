"""The tables of qrsys, as SQLAlchemy Core metadata.

Alembic revisions in ``migrations/`` create them; this module only describes
them for queries. Keep the two in step.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

TIMESTAMP = sa.DateTime(timezone=True)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text, nullable=False, server_default=""),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("create_time", TIMESTAMP, nullable=False, server_default=sa.func.now()),
    sa.Column("update_time", TIMESTAMP, nullable=False, server_default=sa.func.now()),
)
sa.Index("uq_users_email_lower", sa.func.lower(users.c.email), unique=True)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "user_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("refresh_token_hash", sa.LargeBinary, nullable=False, unique=True),
    sa.Column("previous_refresh_token_hash", sa.LargeBinary, nullable=True, index=True),
    sa.Column("rotate_time", TIMESTAMP, nullable=True),
    sa.Column("create_time", TIMESTAMP, nullable=False, server_default=sa.func.now()),
    sa.Column("expire_time", TIMESTAMP, nullable=False),
    sa.Column("revoke_time", TIMESTAMP, nullable=True),
)

qr_codes = sa.Table(
    "qr_codes",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "owner_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("content", pg.JSONB, nullable=False),
    sa.Column("style", pg.JSONB, nullable=False),
    sa.Column("encoded_text", sa.Text, nullable=False),
    sa.Column("symbol_version", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("create_time", TIMESTAMP, nullable=False, server_default=sa.func.now()),
    sa.Column("update_time", TIMESTAMP, nullable=False, server_default=sa.func.now()),
)
sa.Index(
    "ix_qr_codes_owner_create_time",
    qr_codes.c.owner_id,
    qr_codes.c.create_time.desc(),
    qr_codes.c.id.desc(),
)
sa.Index(
    "ix_qr_codes_owner_update_time",
    qr_codes.c.owner_id,
    qr_codes.c.update_time.desc(),
    qr_codes.c.id.desc(),
)
sa.Index(
    "ix_qr_codes_owner_title", qr_codes.c.owner_id, qr_codes.c.title, qr_codes.c.id
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column(
        "owner_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("operation", sa.Text, primary_key=True),
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("qr_code_ids", pg.ARRAY(pg.UUID(as_uuid=True)), nullable=False),
    sa.Column("create_time", TIMESTAMP, nullable=False, server_default=sa.func.now()),
)

login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_failure_time", TIMESTAMP, nullable=False),
    sa.Column("blocked_until", TIMESTAMP, nullable=False),
)

used_refresh_tokens = sa.Table(
    "used_refresh_tokens",
    metadata,
    sa.Column("refresh_token_hash", sa.LargeBinary, primary_key=True),
    sa.Column(
        "session_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
)
