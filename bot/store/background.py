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
* **A claim joins its group.** A claim to send a stop must be committed before the stop
  leaves: its caller hears back only after its group's commit, so it may share it
  (:func:`lane_batch`: the store lets a claim into a lane's batch, never into a caller's
  own, whose commit would come after the call leaves). A claim on its own took a commit
  of its own and split its turn's group in two: 2,500 stops through the loop's lane made
  1.22 commits a stop that way, 0.22 with claims in their groups.

Two lanes: ``work`` (a run's stops, their moves) and ``urgent`` (what must not queue behind
a run's writes: the heartbeat; an ack's recording on a backend that has no better way, see
:meth:`Store.receive_now`).

A backend whose calls wait for nothing (SQLite: no server, no round trip) gets no thread
for them: with one, the GIL's hand-offs between it and the loop held acks (p99 56 / 147 ms
became 188 / 327 ms during a 10,000 run). Its calls are grouped on the loop itself
(:class:`LoopLane`): the calls made during one turn of the event loop run at the start of
the next, in one transaction, with the same promises. A commit is most of what a write
costs there (SQLite writes each page a transaction touched, whole, to its log: a dozen
pages for a move with its audit), so a group of 16 moves costs half as much as 16 commits.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.store.errors import StoreUnavailableError

if TYPE_CHECKING:
    from bot.store.base import Store

__all__ = ["GROUP", "Lane", "LoopLane", "after_commit", "following", "lane_batch"]

log = logging.getLogger(__name__)

GROUP = 32
"""Calls in one transaction at most: enough to share a commit among a burst of moves, few
enough that one call does not wait long behind the others of its group."""


@dataclass
class _Call:
    call: Callable[[], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


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


_LANE_BATCH: ContextVar[bool] = ContextVar("stopbot_lane_batch", default=False)


def lane_batch() -> bool:
    """Whether the batch open now is a lane's: each of its callers hears back only once it
    is committed, so a claim to send may be part of it."""
    return _LANE_BATCH.get()


_AFTER_COMMIT: ContextVar[list[Callable[[], None]] | None] = ContextVar(
    "stopbot_after_commit", default=None
)


def after_commit(action: Callable[[], None]) -> None:
    """``action`` once the lane's calls running now are committed (or have failed); at
    once outside a lane. What a call tells others (the outbox: something is owed) must
    not reach them before its commit: a thread's lane commits after the call returns,
    and another thread reading meanwhile would not see it."""
    pending = _AFTER_COMMIT.get()
    if pending is None:
        action()
    else:
        pending.append(action)


def _run_calls(
    store: Store,
    calls: list[_Call],
    deliver: Callable[[list[_Call], list[_Outcome]], None],
) -> None:
    """``calls`` in order, in one batch; their outcomes delivered once it is committed,
    and what they asked to do after the commit done then."""
    pending: list[Callable[[], None]] = []
    token = _AFTER_COMMIT.set(pending)
    try:
        outcomes = _batch(store, calls)
    finally:
        _AFTER_COMMIT.reset(token)
    for action in pending:
        try:
            action()
        except Exception:  # (a kick: nothing of the calls' depends on it)
            log.exception("an action after a commit failed")
    deliver(calls, outcomes)


def _one(call: _Call) -> _Outcome:
    try:
        return call.call(), None
    except Exception as exc:
        return None, exc


def _savepointed(store: Store, call: _Call) -> _Outcome:
    """One call of a batch in a savepoint: undone as a whole if it raises, the rest of
    the batch untouched (on PostgreSQL, a statement that failed outside a savepoint
    would abort the whole transaction)."""
    try:
        with store.transaction():
            return call.call(), None
    except Exception as exc:
        return None, exc


def _batch(store: Store, calls: list[_Call]) -> list[_Outcome]:
    if not calls:
        return []
    if len(calls) == 1:  # a transaction of its own, as on the loop
        return [_one(calls[0])]
    outcomes: list[_Outcome] = []
    token = _LANE_BATCH.set(True)
    try:
        with store.batch():
            outcomes = [_savepointed(store, call) for call in calls]
    except Exception as exc:  # the transaction could not begin or commit: none holds
        return [(None, exc)] * len(calls)
    finally:
        _LANE_BATCH.reset(token)
    return outcomes


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

    def submit(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
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
            self._queue.put(_Call(call, loop, future))
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
        _run_calls(self.store, calls, self._deliver)

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


_FOLLOWING: ContextVar[bool] = ContextVar("stopbot_following", default=False)


@contextmanager
def following() -> Iterator[None]:
    """The store calls made inside (by this task) wait in a loop's lane behind the calls of
    tasks that are not following (:class:`LoopLane`)."""
    token = _FOLLOWING.set(True)
    try:
        yield
    finally:
        _FOLLOWING.reset(token)


class LoopLane:
    """The calls of a backend that waits for nothing, grouped on the event loop (see the
    module's docstring): those submitted during one turn of the loop run at the start of
    the next, :data:`GROUP` at a time in one transaction, each group in a turn of its own
    (the loop answers requests between two). A caller's future is settled once its
    group is committed.

    The calls of stops being followed (made inside :func:`following`) take the room the
    others leave in a group (one at least). A polling round wakes thousands of followed
    stops at once, a few store calls each: in a night of 10,000 stops, queued in turn with
    the stops being sent, they held those back for a second or more each round (a
    provider's slots idle meanwhile, about one second in eight). The sends are what the
    providers' limits pace; a followed stop's end waits a few turns for nobody."""

    def __init__(self, store: Store, group: int = GROUP) -> None:
        self.store = store
        self.group = group
        # Each loop's calls: those of tasks sending, then those of tasks following.
        self._queues: dict[asyncio.AbstractEventLoop, tuple[deque[_Call], deque[_Call]]] = {}
        self._turns: set[asyncio.AbstractEventLoop] = set()  # loops a turn is asked of
        self._closed = False

    def submit(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        """Queue ``call``; a future of the running loop, settled once it is committed."""
        if self._closed:
            raise StoreUnavailableError(f"the database {self.store.location} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        queues = self._queues.get(loop)
        if queues is None:
            queues = self._queues[loop] = (deque(), deque())
        queues[_FOLLOWING.get()].append(_Call(call, loop, future))
        self._ask_turn(loop)
        return future

    def _ask_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop not in self._turns:
            self._turns.add(loop)
            loop.call_soon(self._turn, loop)

    def _turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """One group of ``loop``'s calls; another turn for the rest. (Calls of a loop
        closed before its turn are dropped: nobody waits for them.)"""
        self._turns.discard(loop)
        for closed in [other for other in self._queues if other.is_closed()]:
            del self._queues[closed]
        queues = self._queues.get(loop)
        if queues is None:
            return
        mine: list[_Call] = []
        sending, followed = queues
        while sending and len(mine) < self.group:
            mine.append(sending.popleft())
        room = max(self.group, len(mine) + 1)  # (one at least: sends never starve them)
        while followed and len(mine) < room:
            mine.append(followed.popleft())
        if any(queues):
            self._ask_turn(loop)
        else:
            del self._queues[loop]
        _run_calls(self.store, mine, _settle_here)

    def close(self, timeout: float = 10.0) -> None:  # (timeout: as Lane.close)
        """Run what is queued (its callers get their outcomes through their loops)."""
        self._closed = True
        queued, self._queues = self._queues, {}
        waiting = [call for queues in queued.values() for queue in queues for call in queue]
        if waiting:
            _run_calls(self.store, waiting, Lane._deliver)


def _settle_here(calls: list[_Call], outcomes: list[_Outcome]) -> None:
    """Settle on the loop running now (a LoopLane's turn)."""
    _settle([(call.future, outcome) for call, outcome in zip(calls, outcomes, strict=True)])
