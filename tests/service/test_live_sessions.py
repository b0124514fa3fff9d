"""The in-memory record of live sessions against a real PostgreSQL: what
it remembers, and how every way a session ends reaches it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import sqlalchemy as sa

from qrsys_grpc.repository.database import Database
from qrsys_grpc.repository.live_sessions import (
    APPLICATION_NAME,
    CHANNEL,
    LiveSessions,
)
from qrsys_grpc.repository.sessions import SessionRepository
from qrsys_grpc.repository.tables import sessions, users

WAIT_SECONDS = 10.0


async def eventually(condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` becomes true within ``WAIT_SECONDS``."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + WAIT_SECONDS
    while not condition():
        if loop.time() > give_up:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, pool_size=2)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def listener_name() -> str:
    """This test's own listener, told apart from other servers' in the run."""
    return f"{APPLICATION_NAME}-test-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def listening(database: Database, name: str) -> AsyncIterator[LiveSessions]:
    """A memory of live sessions on ``database``, once it hears notices."""
    watch = LiveSessions(
        database, max_entries=100, keepalive_seconds=0.2, application_name=name
    )
    watch.start()
    try:
        assert await eventually(lambda: watch.listening)
        yield watch
    finally:
        await watch.close()


@pytest.fixture
async def live(database: Database, listener_name: str) -> AsyncIterator[LiveSessions]:
    async with listening(database, listener_name) as watch:
        yield watch


async def new_session(database: Database) -> tuple[uuid.UUID, uuid.UUID]:
    """Store a user with one live session; return (user id, session id)."""
    user_id = uuid.uuid4()
    async with database.transaction() as conn:
        await conn.execute(
            sa.insert(users).values(
                id=user_id,
                email=f"live-{user_id.hex[:10]}@example.com",
                display_name="Live",
                password_hash="not-a-real-hash",
            )
        )
        session = await SessionRepository(conn).create(
            user_id=user_id,
            refresh_token_hash=uuid.uuid4().bytes,
            expire_time=datetime.now(UTC) + timedelta(hours=1),
        )
    return user_id, session.id


async def look_up(
    database: Database, live: LiveSessions, user_id: uuid.UUID, session_id: uuid.UUID
) -> None:
    """Do what a call does on a miss: mark, query, remember."""
    mark = live.mark()
    async with database.read() as conn:
        expire_time = await SessionRepository(conn).live_until(session_id, user_id)
    assert expire_time is not None
    live.remember(session_id, user_id, expire_time, mark)


async def test_a_session_found_live_is_remembered_for_its_user_only(
    database: Database, live: LiveSessions
) -> None:
    user_id, session_id = await new_session(database)
    assert not live.is_live(session_id, user_id)

    await look_up(database, live, user_id, session_id)

    assert live.is_live(session_id, user_id)
    assert not live.is_live(session_id, uuid.uuid4())


@pytest.mark.parametrize(
    "end",
    [
        "revoke",
        "delete the session",
        "delete the user",
    ],
)
async def test_every_way_a_session_ends_reaches_the_memory(
    database: Database, live: LiveSessions, end: str
) -> None:
    user_id, session_id = await new_session(database)
    await look_up(database, live, user_id, session_id)
    assert live.is_live(session_id, user_id)

    # Ended through the database alone, as another server process or an
    # operator would: only the notice can tell this process.
    async with database.transaction() as conn:
        if end == "revoke":
            await SessionRepository(conn).revoke(session_id)
        elif end == "delete the session":
            await conn.execute(sa.delete(sessions).where(sessions.c.id == session_id))
        else:
            await conn.execute(sa.delete(users).where(users.c.id == user_id))

    assert await eventually(lambda: not live.is_live(session_id, user_id))
    assert len(live) == 0


async def test_a_notice_that_crosses_a_lookup_wins(
    database: Database, live: LiveSessions
) -> None:
    user_id, session_id = await new_session(database)
    mark = live.mark()
    async with database.read() as conn:
        expire_time = await SessionRepository(conn).live_until(session_id, user_id)
    assert expire_time is not None
    # The session ends, and its notice arrives, before the lookup's answer
    # is stored.
    async with database.transaction() as conn:
        await SessionRepository(conn).revoke(session_id)
    assert await eventually(lambda: live.mark() != mark)

    live.remember(session_id, user_id, expire_time, mark)

    assert not live.is_live(session_id, user_id)


async def test_other_sessions_notices_do_not_stop_a_lookup(
    database: Database, live: LiveSessions
) -> None:
    user_id, session_id = await new_session(database)
    other_user, other_session = await new_session(database)
    mark = live.mark()
    async with database.transaction() as conn:
        await SessionRepository(conn).revoke(other_session)
    assert await eventually(lambda: live.mark() != mark)

    await look_up(database, live, user_id, session_id)
    live.remember(session_id, user_id, datetime.now(UTC) + timedelta(hours=1), mark)

    assert live.is_live(session_id, user_id)
    assert not live.is_live(other_session, other_user)


async def test_an_expired_session_is_not_live_from_memory(
    database: Database, live: LiveSessions
) -> None:
    user_id, session_id = await new_session(database)
    live.remember(
        session_id, user_id, datetime.now(UTC) - timedelta(seconds=1), live.mark()
    )
    assert not live.is_live(session_id, user_id)


async def test_a_lost_listener_empties_the_memory_until_it_listens_again(
    database: Database, live: LiveSessions, listener_name: str
) -> None:
    user_id, session_id = await new_session(database)
    await look_up(database, live, user_id, session_id)
    assert live.is_live(session_id, user_id)
    before_the_loss = live.mark()

    async with database.transaction() as conn:
        ended = await conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": listener_name},
        )
        assert ended.scalars().all() == [True]

    assert await eventually(lambda: not live.listening)
    assert not live.is_live(session_id, user_id)
    assert len(live) == 0
    assert await eventually(lambda: live.listening)
    assert not live.is_live(session_id, user_id)
    # A lookup begun before the loss may have missed a notice: refused.
    live.remember(
        session_id, user_id, datetime.now(UTC) + timedelta(hours=1), before_the_loss
    )
    assert not live.is_live(session_id, user_id)

    await look_up(database, live, user_id, session_id)
    assert live.is_live(session_id, user_id)


async def test_a_memory_of_no_entries_never_remembers(database: Database) -> None:
    watch = LiveSessions(database, max_entries=0)
    watch.start()
    try:
        user_id, session_id = await new_session(database)
        await look_up(database, watch, user_id, session_id)
        assert not watch.listening
        assert not watch.is_live(session_id, user_id)
    finally:
        await watch.close()


async def test_an_ending_here_returns_once_its_notice_came_back(
    database: Database, live: LiveSessions
) -> None:
    user_id, session_id = await new_session(database)
    await look_up(database, live, user_id, session_id)
    before = live.mark()
    async with database.transaction() as conn:
        assert await SessionRepository(conn).revoke(session_id)

    await live.ended_here([session_id])

    assert not live.is_live(session_id, user_id)
    # forget() counted once; the notice that came back counted again.
    assert live.mark() == before + 2


async def test_an_ending_whose_notice_never_comes_waits_no_longer_than_its_bound(
    live: LiveSessions,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await live.await_notices([uuid.uuid4()], wait_seconds=0.2)
    assert 0.2 <= loop.time() - started < 2.0


@pytest.fixture
async def peer(database_url: str, listener_name: str) -> AsyncIterator[LiveSessions]:
    """Another process's memory, on a pool of its own, as a second server
    process sharing the database would have."""
    db = Database(database_url, pool_size=2)
    try:
        async with listening(db, listener_name) as watch:
            yield watch
    finally:
        await db.close()


async def test_an_ending_returns_only_once_every_process_has_forgotten_it(
    database: Database, live: LiveSessions, peer: LiveSessions
) -> None:
    user_id, session_id = await new_session(database)
    await look_up(database, peer, user_id, session_id)
    assert peer.is_live(session_id, user_id)
    async with database.transaction() as conn:
        assert await SessionRepository(conn).revoke(session_id)

    await live.ended_here([session_id])

    # No waiting here: the peer confirmed before ended_here returned.
    assert not peer.is_live(session_id, user_id)


async def test_a_process_that_never_confirms_delays_an_ending_by_the_bound_only(
    database: Database,
    live: LiveSessions,
    listener_name: str,
    database_url: str,
) -> None:
    _, session_id = await new_session(database)
    async with database.transaction() as conn:
        assert await SessionRepository(conn).revoke(session_id)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await live.await_notices([session_id], wait_seconds=5.0)
    alone = loop.time() - started

    # A listener under the same name that hears notices but never confirms.
    silent = await asyncpg.connect(
        sa.make_url(database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False),
        server_settings={"application_name": listener_name},
    )
    try:
        await silent.add_listener(CHANNEL, lambda *_: None)
        _, other_session = await new_session(database)
        async with database.transaction() as conn:
            assert await SessionRepository(conn).revoke(other_session)
        started = loop.time()
        await live.await_notices([other_session], wait_seconds=0.5)
        with_silent = loop.time() - started
    finally:
        await silent.close()

    assert alone < 0.5
    assert 0.5 <= with_silent < 3.0
