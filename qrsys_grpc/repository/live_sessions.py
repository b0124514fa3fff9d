"""The sessions this process has seen live, forgotten the moment one ends.

Every authenticated call must learn whether its session is still live. To
spare that query, a process remembers the sessions it found live, and
listens on a PostgreSQL channel to which the ``sessions`` triggers send
the id of every session that ends, when its transaction commits. So an
ending reaches every process sharing the database, not just the one that
ended it.

The memory is trusted only while notices are seen to arrive: on
connecting, and again every keep-alive interval, the process sends itself a
probe notice through the pool and waits for it on the listening connection.
Until the first probe arrives, and from any failure (a database restart, a
network fault, a lost probe) until the next connection's first probe,
nothing is remembered and every call asks PostgreSQL; the memory starts
empty each time, since notices sent meanwhile are lost.

A lookup and the notice of the same session's end can cross: a query that
found a session live may finish after the notice of its end arrived. The
caller therefore takes a ``mark()`` before querying and hands it to
``remember``, which refuses when a notice for that session (or a
reconnection) came after the mark.

An ending must be known everywhere before its caller hears it is done, or
a client could sign out on one process and still be let in by another that
has not yet read the notice. So every process, once it has forgotten an
ended session, confirms it with an ``ack:`` notice of its own, and the
process that ended the session answers its client only when every
listening process of the database has confirmed (or, should one not,
after ``ACK_WAIT_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from datetime import datetime

import asyncpg
import sqlalchemy as sa
from cachetools import LRUCache

from qrsys_grpc import errors
from qrsys_grpc.repository.database import Database

logger = logging.getLogger(__name__)

CHANNEL = "qrsys_session_ended"
"""The channel the ``sessions`` triggers notify (see migration 0003)."""

APPLICATION_NAME = "qrsys-session-listener"
"""How a listening connection shows in ``pg_stat_activity``: every listener
of the database, whose confirmations an ending waits for, has a name that
starts with this."""

PROBE_PREFIX = "probe:"
"""Notices of this form test the channel; they end no session."""

ACK_PREFIX = "ack:"
"""``ack:<session id>:<process>``: that process has forgotten the session."""

RECENT_NOTICES = 4096
"""Notices kept to judge ``remember`` calls; a lookup that saw more end
while it ran is not remembered."""

ACK_WAIT_SECONDS = 2.0
"""How long an ending waits for every listening process to confirm it."""

_LISTENERS = sa.text(
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND starts_with(application_name, :name)"
)


class LiveSessions:
    """A bounded memory of live sessions, kept true by PostgreSQL notices."""

    def __init__(
        self,
        database: Database,
        *,
        max_entries: int,
        keepalive_seconds: float = 2.0,
        retry_seconds: float = 0.5,
        application_name: str = APPLICATION_NAME,
    ) -> None:
        if not application_name.startswith(APPLICATION_NAME):
            raise ValueError(f"a listener's name must start with {APPLICATION_NAME}")
        self._db = database
        self._application_name = application_name
        self._max_entries = max_entries
        self._keepalive = keepalive_seconds
        self._retry = retry_seconds
        self._entries: LRUCache[uuid.UUID, tuple[uuid.UUID, float]] = LRUCache(
            maxsize=max(max_entries, 1)
        )
        self._seq = 0
        self._floor = 0
        self._recent: deque[tuple[int, str]] = deque(maxlen=RECENT_NOTICES)
        self._listening = False
        self._task: asyncio.Task[None] | None = None
        self._probes: dict[str, asyncio.Event] = {}
        self._process = uuid.uuid4().hex
        self._acks: LRUCache[str, set[str]] = LRUCache(maxsize=RECENT_NOTICES)
        self._acking: set[asyncio.Task[None]] = set()
        self._arrival = asyncio.Event()
        self.hits = 0
        self.misses = 0

    @property
    def listening(self) -> bool:
        """Whether notices are being received, so the memory is trusted."""
        return self._listening

    def __len__(self) -> int:
        return len(self._entries)

    def start(self) -> None:
        """Start listening, in the background, reconnecting as needed."""
        if self._max_entries > 0 and self._task is None:
            self._task = asyncio.create_task(self._follow(), name="live-sessions")

    async def close(self) -> None:
        """Stop listening and forget everything."""
        task, self._task = self._task, None
        if task is not None:
            # Asked again until it ends: a cancellation that lands as an
            # await completes can be lost, and the task must not outlive us.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for confirming in list(self._acking):
            confirming.cancel()
        await asyncio.gather(*self._acking, return_exceptions=True)
        self._reset(listening=False)

    def is_live(self, session_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """Whether the session is known live for this user, without a query."""
        entry = self._entries.get(session_id) if self._listening else None
        if entry is None or entry[0] != user_id or entry[1] <= time.time():
            self.misses += 1
            return False
        self.hits += 1
        return True

    def mark(self) -> int:
        """A point in the stream of notices, to take before a lookup."""
        return self._seq

    def remember(
        self,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        expire_time: datetime,
        mark: int,
    ) -> None:
        """Remember a session that a lookup begun at ``mark`` found live."""
        if not self._listening or mark < self._floor:
            return
        if mark != self._seq:
            oldest = self._recent[0][0] if self._recent else self._seq + 1
            if oldest > mark + 1:
                return  # more notices than kept came in meanwhile
            ended = str(session_id)
            for seq, notified in reversed(self._recent):
                if seq <= mark:
                    break
                if notified == ended:
                    return
        self._entries[session_id] = (user_id, expire_time.timestamp())

    def forget(self, session_ids: list[uuid.UUID]) -> None:
        """Drop sessions this process has just ended, before their notices
        arrive; a lookup that crosses the ending is refused as for a notice."""
        for session_id in session_ids:
            self._ended(str(session_id))

    async def ended_here(self, session_ids: list[uuid.UUID]) -> None:
        """This process has just committed the end of these sessions: forget
        them, and return once every listening process has confirmed it
        forgot them too (see ``await_notices``). Pass only sessions the
        commit really ended; no notice comes for one that had ended before."""
        self.forget(session_ids)
        await self.await_notices(session_ids)

    async def await_notices(
        self, session_ids: list[uuid.UUID], wait_seconds: float = ACK_WAIT_SECONDS
    ) -> None:
        """Wait until every listening process of the database, this one
        included, has confirmed that it forgot these just-ended sessions.

        Returns at once while not listening (this process remembers nothing
        then, and no other can be counted on to confirm), and after
        ``wait_seconds`` in any case, with a warning.
        """
        if not self._listening or not session_ids:
            return
        try:
            async with self._db.read() as conn:
                expected = int(
                    await conn.scalar(_LISTENERS, {"name": APPLICATION_NAME}) or 1
                )
        except errors.QrsysError:
            expected = 1  # at least this process's own confirmation
        wanted = [str(session_id) for session_id in session_ids]
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait_seconds
        while not all(len(self._acks.get(s, ())) >= expected for s in wanted):
            arrival = self._arrival
            remaining = give_up - loop.time()
            if remaining <= 0 or not self._listening:
                confirmed = min(len(self._acks.get(s, ())) for s in wanted)
                logger.warning(
                    "only %d of %d processes confirmed an ended session in time",
                    confirmed,
                    expected,
                )
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await arrival.wait()

    def _on_notice(
        self, _conn: object, _pid: int, _channel: str, payload: object
    ) -> None:
        notice = str(payload)
        if notice.startswith(PROBE_PREFIX):
            arrived = self._probes.get(notice)
            if arrived is not None:
                arrived.set()
            return
        if notice.startswith(ACK_PREFIX):
            session_id, _, process = notice.removeprefix(ACK_PREFIX).partition(":")
            confirmed = self._acks.get(session_id)
            if confirmed is None:
                confirmed = self._acks[session_id] = set()
            confirmed.add(process)
            self._arrival.set()
            self._arrival = asyncio.Event()
            return
        self._ended(notice)
        task = asyncio.get_running_loop().create_task(self._confirm(notice))
        self._acking.add(task)
        task.add_done_callback(self._acking.discard)

    async def _confirm(self, session_id: str) -> None:
        """Tell every process that this one has forgotten ``session_id``."""
        try:
            await self._db.notify(CHANNEL, f"{ACK_PREFIX}{session_id}:{self._process}")
        except errors.QrsysError as exc:
            # The process that ended it waits its bound for this, then goes on.
            logger.warning("could not confirm an ended session: %s", exc)

    def _ended(self, session_id: str) -> None:
        self._seq += 1
        self._recent.append((self._seq, session_id))
        with contextlib.suppress(ValueError):
            self._entries.pop(uuid.UUID(session_id), None)

    def _reset(self, *, listening: bool) -> None:
        self._entries.clear()
        self._recent.clear()
        self._seq += 1
        self._floor = self._seq
        self._listening = listening

    async def _follow(self) -> None:
        """Keep a listening connection, forever; trust the memory only
        while it is up."""
        failures = 0
        while True:
            try:
                async with self._db.dedicated_connection(
                    self._application_name
                ) as conn:
                    await self._listen(conn, recovered=failures > 0)
                    failures = 0
            except Exception as exc:  # any failure means: reconnect
                if failures == 0:
                    logger.warning(
                        "not listening for ended sessions (%s); every call "
                        "checks its session in the database meanwhile",
                        exc,
                    )
                failures += 1
            finally:
                self._reset(listening=False)
            await asyncio.sleep(min(self._retry * 2 ** min(failures, 4), 5.0))

    async def _listen(self, conn: asyncpg.Connection, *, recovered: bool) -> None:
        """Listen on ``conn`` until it fails, proving it every keep-alive.

        Raises:
            ConnectionError: the connection closed, or a probe was lost.
        """
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._on_notice)
        await self._probe()
        self._reset(listening=True)
        if recovered:
            logger.info("listening for ended sessions again")
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._keepalive):
                    await lost.wait()
                raise ConnectionError("the listening connection closed")
            await self._probe()

    async def _probe(self) -> None:
        """Send a notice through the pool and wait for it to arrive here.

        This proves the whole path an ended session's notice takes, which a
        query on the listening connection would not: behind a pooler in
        transaction mode, or on a standby, notices never arrive.

        Raises:
            ConnectionError: the probe did not arrive in time.
        """
        payload = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        arrived = asyncio.Event()
        self._probes[payload] = arrived
        try:
            await self._db.notify(CHANNEL, payload)
            async with asyncio.timeout(max(self._keepalive, 5.0)):
                await arrived.wait()
        except TimeoutError as exc:
            raise ConnectionError(
                "a notice sent through the pool did not arrive on the listening "
                "connection (a pooler in transaction mode, or a standby?)"
            ) from exc
        finally:
            self._probes.pop(payload, None)
