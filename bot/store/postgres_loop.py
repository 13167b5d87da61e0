"""A PostgreSQL connection of the event loop's own, for what an ack waits for.

The inbox records each request before its answer leaves (bot/slack/inbox.py). Recorded
from a thread of the store's, each wait for the server hands the GIL back, and the thread
then waits to take it again, up to a switch interval (5 ms) each time, from the loop
parsing the rest of a burst and the threads writing a run: a burst's recording took 5 to
25 ms there (timed in the thread, during a 10,000 run), where its one statement takes the
server 2 to 3 ms. On the loop's own connection (psycopg's ``AsyncConnection``) the loop
sends it and reads its answer at its next turn: no hand-off.

One connection a loop (the last loop that asked), one call at a time on it, opened on first
use and again after a call on it failed. A call that does not finish within ``timeout``
seconds drops it: the store is unavailable for that call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

__all__ = ["LoopConnection"]

T = TypeVar("T")


class LoopConnection:
    def __init__(self, connection_kwargs: dict[str, Any], *, timeout: float) -> None:
        self._kwargs = connection_kwargs
        self.timeout = timeout
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn: asyncio.Lock | None = None

    async def run(self, call: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """``call`` on this loop's connection (psycopg's errors as they are; a call past
        the timeout is psycopg's OperationalError)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._turn is None:
            self.close()  # another loop's (a test's, a command's before): not usable here
            self._loop, self._turn = loop, asyncio.Lock()
        async with self._turn:
            try:
                async with asyncio.timeout(self.timeout):
                    if self._conn is None or self._conn.closed:
                        self._conn = await psycopg.AsyncConnection.connect(**self._kwargs)
                    return await call(self._conn)
            except TimeoutError:
                self.close()  # whatever it was doing, it is not known: start afresh
                raise psycopg.OperationalError(f"no answer within {self.timeout:g} s") from None
            except BaseException:
                if self._conn is not None and not _reusable(self._conn):
                    self.close()
                raise

    def close(self) -> None:
        """Let the connection go (from any thread, the loop running or not): its socket is
        closed at once, without waiting for the server."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.pgconn.finish()


def _reusable(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether ``conn`` may take another call after one raised: open and idle (a statement
    the server refused leaves it so; one cancelled while waiting for the server does not)."""
    if conn.closed or conn.broken:
        return False
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
