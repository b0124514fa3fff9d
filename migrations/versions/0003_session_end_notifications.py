"""notify when a session ends

Every server process keeps the sessions it has seen live in memory and
drops one as soon as PostgreSQL says it ended. The triggers make that
notice part of the ending itself: whatever ends a session (sign-out, a
password change, refresh-token reuse, account deletion, an operator's own
UPDATE or DELETE) sends its id on the channel ``qrsys_session_ended`` when
its transaction commits.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 21:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION notify_session_ended() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('qrsys_session_ended', OLD.id::text);
            RETURN NULL;
        END;
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER sessions_revoked
        AFTER UPDATE OF revoke_time ON sessions
        FOR EACH ROW
        WHEN (OLD.revoke_time IS NULL AND NEW.revoke_time IS NOT NULL)
        EXECUTE FUNCTION notify_session_ended()
        """
    )
    op.execute(
        """
        CREATE TRIGGER sessions_deleted
        AFTER DELETE ON sessions
        FOR EACH ROW
        EXECUTE FUNCTION notify_session_ended()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER sessions_deleted ON sessions")
    op.execute("DROP TRIGGER sessions_revoked ON sessions")
    op.execute("DROP FUNCTION notify_session_ended()")
