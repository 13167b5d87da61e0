"""The leader among replicas on PostgreSQL (see bot/leadership.py): whoever holds a
session-level advisory lock on a connection of its own.

* The lock goes with the session: a killed leader's is released by the server as soon as
  its connection drops; a paused one's when ``idle_session_timeout`` (the ``timeout``, set
  on that session) ends its session, since a running leader pings more often than that.
  A leader whose own ping has not come back within the timeout steps down by itself.
* Followers try the lock every ``poll`` seconds (a fifth of the timeout by default).
* Every process LISTENs on that connection; :meth:`changed` NOTIFYs, on a connection of
  its own, so a schedule added through one replica reaches the leader at once.
* The key is the store's schema: deployments (and tests) sharing one database each have
  their leader, and the lock is of the two-key kind, apart from the writers' one-key locks.
* PgBouncer in transaction pooling mode cannot carry a session lock: this connection must
  reach the server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from typing import Any

import psycopg

from bot.leadership import Callback, Leadership
from bot.store.errors import StoreUnavailableError

__all__ = ["CHANNEL", "LEADER_CLASS", "AdvisoryLeadership"]

log = logging.getLogger(__name__)

CHANNEL = "stopbot_schedules"
LEADER_CLASS = 0x53746F70  # the first key of the lock: Stopbot's leader ("Stop")


class AdvisoryLeadership(Leadership):
    """The leader is whoever holds the schema's advisory lock."""

    def __init__(
        self,
        connection: dict[str, Any],
        schema: str,
        *,
        timeout: float = 5.0,
        poll: float | None = None,
    ) -> None:
        """``connection``: psycopg's connection arguments (the store's); ``timeout``: a
        leader silent that long (paused, cut off) loses the lead; ``poll``: how often
        followers try the lock and the leader pings."""
        super().__init__()
        self.connection = {
            **connection,
            "application_name": "stopbot-leader",
            "autocommit": True,
            "keepalives": 1,
            "keepalives_idle": max(1, round(timeout)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
        }
        self.schema = schema
        self.key = (LEADER_CLASS, zlib.crc32(schema.encode()) - 2**31)
        self.timeout = timeout
        self.poll = poll if poll is not None else timeout / 5
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
        """NOTIFY every process (the leader's connection is busy listening); when the
        server cannot be reached, the leader's periodic tick still sees the change."""
        try:
            async with await psycopg.AsyncConnection.connect(**self.connection) as conn:
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.schema))
        except (psycopg.Error, OSError) as exc:
            log.warning("could not tell the other processes that schedules changed: %s", exc)

    def _duty(self, callback: Callback) -> None:
        """Run a callback beside the pings: a long catch-up must not stop them."""

        async def run() -> None:
            try:
                await callback()
            except StoreUnavailableError as exc:
                log.warning("a leader's duty failed; the next tick tries again: %s", exc)
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
                async with await psycopg.AsyncConnection.connect(**self.connection) as conn:
                    backoff = self.poll
                    await self._session(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The session, and the lock with it, is gone or about to be.
                self._step_down(f"its connection to the database failed ({exc})")
                log.debug("leadership connection failed", exc_info=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.timeout)

    async def _session(self, conn: psycopg.AsyncConnection[Any]) -> None:
        ms = int(self.timeout * 1000)
        await conn.execute(f"SET idle_session_timeout = {ms}")
        await conn.execute(f"LISTEN {CHANNEL}")
        while True:
            async with asyncio.timeout(self.timeout):
                if self._leading:
                    await conn.execute("SELECT 1")
                else:
                    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key)
                    row = await cursor.fetchone()
                    if row is not None and row[0]:
                        self._leading = True
                        log.info("this process is now the leader (schedules, housekeeping)")
                        self._duty(self._on_lead)
            changed = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    async for notice in conn.notifies(timeout=self.poll):
                        changed = changed or notice.payload == self.schema
            if changed:
                self._duty(self._on_change)
