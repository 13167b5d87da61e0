"""Store calls off the event loop: a thread of the store's own runs them, a few in one
transaction, and the caller awaits the outcome (:meth:`bot.store.base.Store.off_loop`).

Why: the store is synchronous (sqlite3, psycopg's blocking connections), and the bot calls
it on its event loop. On PostgreSQL each statement is a round trip and each commit an
fsync on the server, all while the loop waits: a night of 10,000 stops kept Slack's acks
waiting seconds. A call sent here waits in the thread instead, and the loop answers Slack
meanwhile.

What it promises:

* **Nothing is acknowledged before it is committed.** The calls that come in while the
  thread works are run together, up to :data:`GROUP` of them, in one :meth:`Store.batch`
  (one commit); each caller's future is settled only after that commit. A commit that
  fails fails every call of the group, since none of them holds.
* **A failing call fails alone.** Inside the batch each call is a savepoint, undone as a
  whole when it raises; its caller gets its exception, the others their results.
* **In order, for each caller.** A lane's threads (one, or a few on the work lane, so that
  on PostgreSQL one's round trips overlap another's) take the calls in the order they
  came; a task awaits each of its calls, so its calls run in the order it made them.
  Calls of different tasks may run side by side, as their tasks do on the loop.
* **Alone when it must be.** A call sent with ``alone=True`` (a claim to send a stop,
  which must be committed before the stop leaves, and which refuses to be part of a
  batch) runs on its own, in its turn.

Two lanes: ``work`` (a run's stops, their moves) and ``urgent`` (what an ack waits for:
recording a request before its answer), so an ack never queues behind a run's writes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.store.errors import StoreUnavailableError

if TYPE_CHECKING:
    from bot.store.base import Store

__all__ = ["GROUP", "Lane"]

log = logging.getLogger(__name__)

GROUP = 32
"""Calls in one transaction at most: enough to share a commit among a burst of moves, few
enough that one call does not wait long behind the others of its group."""


@dataclass
class _Call:
    call: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    alone: bool


_Outcome = tuple[Any, BaseException | None]


def _settle(settled: list[tuple[asyncio.Future[Any], _Outcome]]) -> None:
    """On the caller's loop: each call's result or exception, to its future."""
    for future, (result, error) in settled:
        if future.cancelled():  # its caller stopped waiting: the call ran all the same
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class Lane:
    """One thread running a store's calls in groups (see the module's docstring); started at
    its first call, stopped by :meth:`close`."""

    def __init__(self, store: Store, name: str, group: int = GROUP, threads: int = 1) -> None:
        self.store = store
        self.name = name
        self.group = group
        self.threads = threads
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._closed = False

    def submit(self, call: Callable[[], Any], *, alone: bool = False) -> asyncio.Future[Any]:
        """Queue ``call``; a future of the running loop, settled once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._closed:
                raise StoreUnavailableError(f"the database {self.store.location} is closed")
            if not self._workers:
                for number in range(self.threads):
                    worker = threading.Thread(
                        target=self._work, name=f"stopbot-store-{self.name}-{number}", daemon=True
                    )
                    worker.start()
                    self._workers.append(worker)
            self._queue.put(_Call(call, loop, future, alone))
        return future

    def close(self, timeout: float = 10.0) -> None:
        """Run what is queued, then stop the thread (waiting ``timeout`` seconds at most)."""
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
        for _ in workers:
            self._queue.put(None)
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(timeout)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = [first]
            stop = False
            while len(calls) < self.group:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                calls.append(more)
            self._run(calls)
            if stop:
                return

    def _run(self, calls: list[_Call]) -> None:
        """``calls`` in order: each alone call on its own, the others in batches."""
        grouped: list[_Call] = []
        for call in calls:
            if call.alone:
                self._deliver(grouped, self._batch(grouped))
                grouped = []
                self._deliver([call], [self._one(call)])
            else:
                grouped.append(call)
        self._deliver(grouped, self._batch(grouped))

    @staticmethod
    def _one(call: _Call) -> _Outcome:
        try:
            return call.call(), None
        except Exception as exc:
            return None, exc

    def _savepointed(self, call: _Call) -> _Outcome:
        """One call of a batch in a savepoint: undone as a whole if it raises, the rest of
        the batch untouched (on PostgreSQL, a statement that failed outside a savepoint
        would abort the whole transaction)."""
        try:
            with self.store.transaction():
                return call.call(), None
        except Exception as exc:
            return None, exc

    def _batch(self, calls: list[_Call]) -> list[_Outcome]:
        if not calls:
            return []
        if len(calls) == 1:  # a transaction of its own, as on the loop
            return [self._one(calls[0])]
        outcomes: list[_Outcome] = []
        try:
            with self.store.batch():
                outcomes = [self._savepointed(call) for call in calls]
        except Exception as exc:  # the transaction could not begin or commit: none holds
            return [(None, exc)] * len(calls)
        return outcomes

    @staticmethod
    def _deliver(calls: list[_Call], outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], _Outcome]]] = {}
        for call, outcome in zip(calls, outcomes, strict=True):
            by_loop.setdefault(call.loop, []).append((call.future, outcome))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # that loop is closed: nobody waits any more
                log.debug("a store call finished after its event loop closed")
