"""login failures and used refresh tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 18:45:16.807098
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_failures")),
    )
    op.create_table(
        "used_refresh_tokens",
        sa.Column("refresh_token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("session_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_used_refresh_tokens_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "refresh_token_hash", name=op.f("pk_used_refresh_tokens")
        ),
    )
    op.create_index(
        op.f("ix_used_refresh_tokens_session_id"),
        "used_refresh_tokens",
        ["session_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_used_refresh_tokens_session_id"), table_name="used_refresh_tokens"
    )
    op.drop_table("used_refresh_tokens")
    op.drop_table("login_failures")
