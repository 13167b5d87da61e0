"""Which process does the time-driven duties: schedule fires and warnings, missed runs,
drift watch, approval expiry, lock-expiry warnings.

One leader at a time does them, so that N replicas on one PostgreSQL do not all fire,
warn and expire the same things at the same instant. Leadership is a convenience, never
the guarantee: exactly-once still comes from the store (one run row per fire, claims,
compare-and-sets), so two processes that both believe they lead for a moment (a paused
leader waking up) double nothing; the one that lost its claim does nothing.

* :class:`Sole`: every process leads (SQLite, one host: the store's locks decide, as
  they always have).
* :class:`AdvisoryLeadership` (PostgreSQL): the leader holds a session-level advisory lock
  on a connection of its own. The lock goes with the session, so a killed leader's lock is
  released by the server as soon as its connection drops, and a paused one's after
  ``idle_session_timeout`` (set on that session: the leader pings more often than that
  while it runs). Followers try the lock every ``poll`` seconds. Every process LISTENs on
  that connection for schedules changed elsewhere (:meth:`Leadership.changed` NOTIFYs),
  so a schedule added through one replica reaches the leader at once. PgBouncer in
  transaction pooling mode cannot carry a session lock: point this connection at the
  server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["AdvisoryLeadership", "Leadership", "Sole", "leadership_for"]

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]

CHANNEL = "stopbot_schedules"
# The first half of the advisory lock's key: Stopbot's leader. The second half is the
# deployment's schema, so deployments (and tests) sharing one database do not compete.
LEADER_CLASS = 0x53746F70  # "Stop"


async def _nothing() -> None:
    return None


class Leadership:
    """Whether this process does the time-driven duties now."""

    def __init__(self) -> None:
        self._on_lead: Callback = _nothing
        self._on_change: Callback = _nothing

    @property
    def leading(self) -> bool:
        raise NotImplementedError

    @property
    def role(self) -> str:
        """For /healthz: ``leader``, ``follower`` or ``sole`` (every process leads)."""
        raise NotImplementedError

    def follow(self, *, on_lead: Callback, on_change: Callback) -> None:
        """``on_lead`` runs when this process becomes the leader (catch up on what is due);
        ``on_change`` when some process changed the schedules."""
        self._on_lead = on_lead
        self._on_change = on_change

    async def start(self) -> None:
        """Take part (the first ``on_lead`` may run before this returns)."""

    async def stop(self) -> None:
        """Step down and leave (the next leader takes over at once)."""

    async def changed(self) -> None:
        """The schedules changed here (and this process has rebuilt its own jobs): the
        other processes, the leader among them, hear of it."""


class Sole(Leadership):
    """Every process leads: the store alone keeps what is done once (SQLite)."""

    @property
    def leading(self) -> bool:
        return True

    @property
    def role(self) -> str:
        return "sole"


class AdvisoryLeadership(Leadership):
    """The leader is whoever holds a PostgreSQL session-level advisory lock."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        poll: float | None = None,
        connect: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        """``timeout``: a leader silent that long (paused, cut off) loses the lead, and
        steps down itself when its own ping has not come back in that time; ``poll``:
        how often followers try the lock and the leader pings (default: a fifth of it)."""
        super().__init__()
        self.url = url
        self.timeout = timeout
        self.poll = poll if poll is not None else timeout / 5
        self._connect = connect
        self._leading = False
        self._task: asyncio.Task[None] | None = None
        self._duties: set[asyncio.Task[None]] = set()

    @property
    def leading(self) -> bool:
        return self._leading

    @property
    def role(self) -> str:
        return "leader" if self._leading else "follower"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._step_down("this process is stopping")
        for duty in list(self._duties):
            duty.cancel()
        await asyncio.gather(*self._duties, return_exceptions=True)

    async def changed(self) -> None:
        """NOTIFY on a connection of its own (the leader's is busy listening); when the
        server cannot be reached, the leader's periodic tick still sees the change."""
        try:
            async with await self._open() as conn:
                tag = await _deployment(conn)
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, tag))
        except Exception as exc:
            log.warning("could not tell the other processes that schedules changed: %s", exc)

    async def _open(self) -> Any:
        if self._connect is not None:
            return await self._connect(self.url)
        import psycopg

        return await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            application_name="stopbot-leader",
            connect_timeout=max(1, round(self.timeout)),
            keepalives=1,
            keepalives_idle=max(1, round(self.timeout)),
            keepalives_interval=1,
            keepalives_count=3,
        )

    def _duty(self, callback: Callback) -> None:
        """Run a callback beside the heartbeat: a long catch-up must not stop the pings."""

        async def run() -> None:
            try:
                await callback()
            except Exception:
                log.exception("a leader's duty failed; the next tick tries again")

        task = asyncio.create_task(run())
        self._duties.add(task)
        task.add_done_callback(self._duties.discard)

    def _step_down(self, why: str) -> None:
        if self._leading:
            self._leading = False
            log.warning("no longer the leader: %s", why)

    async def _run(self) -> None:
        backoff = self.poll
        while True:
            try:
                async with await self._open() as conn:
                    backoff = self.poll
                    await self._session(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The session, and the lock with it, is gone or about to be.
                self._step_down(f"its connection to the store failed ({exc})")
                log.debug("leadership connection failed", exc_info=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.timeout)

    async def _session(self, conn: Any) -> None:
        ms = int(self.timeout * 1000)
        await conn.execute(f"SET idle_session_timeout = {ms}")
        await conn.execute(f"SET idle_in_transaction_session_timeout = {ms}")
        await conn.execute(f"LISTEN {CHANNEL}")
        tag = await _deployment(conn)
        key = (LEADER_CLASS, zlib.crc32(tag.encode()) - 2**31)
        while True:
            async with asyncio.timeout(self.timeout):
                if self._leading:
                    await conn.execute("SELECT 1")
                else:
                    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
                    row = await cursor.fetchone()
                    if row is not None and row[0]:
                        self._leading = True
                        log.info("this process is now the leader (schedules, housekeeping)")
                        self._duty(self._on_lead)
            changed = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    async for notice in conn.notifies(timeout=self.poll):
                        changed = changed or notice.payload == tag
            if changed:
                self._duty(self._on_change)


def leadership_for(location: str, *, timeout: float = 5.0) -> Leadership:
    """The leadership a store at ``location`` supports: an advisory lock on PostgreSQL,
    every process on SQLite (processes on one host share its file's locks)."""
    if location.startswith(("postgresql://", "postgres://")):
        return AdvisoryLeadership(location, timeout=timeout)
    return Sole()


async def _deployment(conn: Any) -> str:
    """What tells one deployment from another in the server, as the server sees it (two
    replicas may reach it by different host names): its database and schema."""
    cursor = await conn.execute("SELECT current_database() || '.' || current_schema()")
    row = await cursor.fetchone()
    return str(row[0])
