"""Messages owed to the faces, delivered from the store: the latest state of each, at least
once, whatever process dies when.

A change a face must show (a stop's progress, an approval's request and outcome, a run's
warning, summary and announcements) is owed in the same transaction as the change itself
(the ``owe`` of the store's writes): it cannot be lost between the change and the message.
The outbox delivers what is owed, each key's latest version through the handler its face
registered for its kind, then records the delivery. A key owed again while it is being
delivered is delivered again after; updates of one key come at most every ``interval``
(its kind's) unless urgent (a final state). A delivery that fails is tried again later,
with back-off; one that a dead process owned is taken over (:class:`ProcessRegistry`).

Delivery is at least once: a process killed between a delivery and its record delivers it
again after the restart. For an update of a message that is harmless; for a new message, the
handler knows (:func:`current_delivery`) which delivery it makes and whether it may have been
made already (taken over from a dead process, or tried before): a face tags the message with
it and, in that case, looks for it before posting again.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any

from bot.models import Owed
from bot.processes import ProcessRegistry
from bot.store import Store, StoreUnavailableError
from bot.store.background import after_commit

__all__ = ["Delivery", "Handler", "Outbox", "current_delivery"]

log = logging.getLogger(__name__)

Handler = Callable[[Owed], Awaitable[bool]]
"""Delivers one owed message; True when done with it (delivered, or never deliverable:
say so in the log), False to try again later. An exception counts as False."""


@dataclass(frozen=True)
class Delivery:
    """The delivery a handler is making: ``tag`` names this version of this message (its
    key and version, unique over time); ``resumed``: it may have been made already, by a
    process that died during it or by a try whose answer was lost."""

    tag: str
    resumed: bool


_delivering: ContextVar[Delivery | None] = ContextVar("outbox_delivery", default=None)


def current_delivery() -> Delivery | None:
    """The delivery under way in this task, if a handler of the outbox is making one."""
    return _delivering.get()


MAX_BACKOFF = 60.0
MAX_ATTEMPTS = 60  # about an hour of Slack being unreachable, at most MAX_BACKOFF apart
CONCURRENCY = 16
STORE_RETRY = 1.0  # seconds between tries of a database that stopped answering


class Outbox:
    def __init__(self, store: Store, registry: ProcessRegistry) -> None:
        self.store = store
        self.registry = registry
        self._handlers: dict[str, tuple[Handler, float]] = {}
        self._last: dict[str, float] = {}
        self._busy: dict[str, asyncio.Task[bool]] = {}
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        registry.sweeps.append(self.drain)

    def message(
        self, kind: str, about: str, payload: dict[str, Any], *, urgent: bool = True
    ) -> Owed:
        """A message of ``kind`` about ``about`` (its key: a second one owed about the same
        thing replaces it, or is the same one when it is a claim's), owned by this process."""
        return Owed(
            key=f"{kind}:{about}",
            kind=kind,
            payload=payload,
            urgent=urgent,
            owner=self.registry.id,
        )

    def handle(self, kind: str, handler: Handler, *, interval: float = 0.0) -> None:
        """Deliver ``kind`` with ``handler``, one key at most every ``interval`` seconds."""
        self._handlers[kind] = (handler, interval)

    def kick(self) -> None:
        """Something new is owed: deliver it soon, once it is committed (a kick from a
        call in the store's lane waits for its commit, see :func:`after_commit`)."""
        after_commit(self._kick_now)

    def _kick_now(self) -> None:
        """The outbox works in the event loop that first kicked it (the serving loop); a
        kick from another thread is passed there."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        home = self._loop.get_loop() if self._loop is not None and not self._loop.done() else None
        if home is None:
            if running is None:
                return  # nothing runs yet: the first sweep delivers it
            self._wake = asyncio.Event()
            # In a context of its own: not the kicking task's (a followed stop's calls
            # wait behind others', bot/store/background.py; the outbox's must not).
            self._loop = running.create_task(
                self._run(), name="outbox", context=contextvars.Context()
            )
            home = running
        assert self._wake is not None
        if home is running:
            self._wake.set()
        else:
            home.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.drain()
            except StoreUnavailableError as exc:
                log.warning("the outbox waits for the database: %s", exc)
                self._kick_later(STORE_RETRY)
            except Exception:
                log.exception("outbox drain failed; next kick retries")

    def _kick_later(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        when = loop.time() + max(seconds, 0.0)
        if self._timer is not None and self._timer.when() <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._timed_kick)

    def _timed_kick(self) -> None:
        self._timer = None
        self.kick()

    async def drain(self) -> int:
        """Start delivering everything owed that may go now; how many deliveries started.

        Its reads and takes are off the loop (each a round trip on PostgreSQL)."""
        started = 0
        live: set[str] | None = None
        now = self.store.clock()
        for owed in await self.store.off_loop(self.store.owed):
            if owed.key in self._busy or owed.kind not in self._handlers:
                continue
            if owed.owner != self.registry.id:
                if live is None:
                    live = await self.store.off_loop(self.registry.live)
                if not self.registry.orphaned(owed.owner, live):
                    continue
            if owed.not_before is not None and owed.not_before > now:
                self._kick_later((owed.not_before - now).total_seconds())
                continue
            _, interval = self._handlers[owed.kind]
            wait = self._last.get(owed.key, float("-inf")) + interval - time.monotonic()
            if wait > 0 and not owed.urgent:
                self._kick_later(wait)
                continue
            if not await self._take(owed) or owed.key in self._busy:
                continue  # (busy: started meanwhile, by a drain beside this one)
            self._busy[owed.key] = asyncio.create_task(
                self._deliver(owed), name=f"deliver-{owed.key}"
            )
            started += 1
        return started

    async def _take(self, owed: Owed) -> bool:
        """Whether ``owed`` is this process's to deliver (taken, if its owner is dead)."""
        if owed.owner == self.registry.id:
            return True
        return await self.store.off_loop(
            partial(self.registry.take, "outbox", owed.key, owed.owner)
        )

    async def _deliver(self, owed: Owed) -> bool:
        """Deliver one owed message; a database that stops answering meanwhile leaves it
        owed, to be delivered once it answers (not counted as a failed attempt)."""
        try:
            return await self._deliver_one(owed)
        except StoreUnavailableError as exc:
            log.warning("delivering %s waits for the database: %s", owed.key, exc)
            self._kick_later(STORE_RETRY)
            return False
        finally:
            self._busy.pop(owed.key, None)
            # Owed again while it was delivered: go again (a kick each time, with
            # hundreds delivered at once, read the whole outbox hundreds of times).
            try:
                again = bool(await self.store.off_loop(partial(self.store.owed, key=owed.key)))
            except StoreUnavailableError:
                again = False  # kicked later, above
            if again:
                self.kick()

    async def _deliver_one(self, owed: Owed) -> bool:
        handler, _ = self._handlers[owed.kind]
        async with self._slots:
            # The handler shows the latest state: what is owed by the time it starts
            # (read again now) is what it delivers.
            fresh = await self.store.off_loop(partial(self.store.owed, key=owed.key))
            if not fresh:
                return True
            resumed = owed.owner != self.registry.id or fresh[0].attempts > 0
            owed = fresh[0]
            token = _delivering.set(Delivery(f"{owed.key}#{owed.version}", resumed))
            try:
                done = await handler(owed)
                error = "not delivered"
            except StoreUnavailableError:
                raise
            except Exception as exc:
                log.exception("delivering %s failed", owed.key)
                done, error = False, f"{type(exc).__name__}: {exc}"
            finally:
                _delivering.reset(token)
        self._last[owed.key] = time.monotonic()
        if not done and owed.attempts + 1 >= MAX_ATTEMPTS:
            log.error(
                "gave up delivering a message after %d attempts",
                MAX_ATTEMPTS,
                extra={"key": owed.key, "error": error},
            )
            done = True
        if done:
            await self.store.off_loop(partial(self.store.delivered, owed.key, owed.version))
        else:
            backoff = min(2.0**owed.attempts, MAX_BACKOFF)
            until = self.store.clock() + dt.timedelta(seconds=backoff)
            await self.store.off_loop(
                partial(self.store.postpone, owed.key, owed.version, until, error)
            )
        return done

    async def flush(self, rounds: int = 100) -> None:
        """Deliver what is owed now and what that makes owed, until nothing more may go
        now (tests; a shutdown that wants its messages out)."""
        for _ in range(rounds):
            started = await self.drain()
            busy = list(self._busy.values())
            if not started and not busy:
                return
            await asyncio.gather(*busy, return_exceptions=True)

    async def deliver_now(self, key: str) -> bool:
        """Deliver ``key`` at once if it is owed and this process may (a face that must know
        before answering); whether it is delivered."""
        running = self._busy.get(key)
        if running is None:
            found = await self.store.off_loop(partial(self.store.owed, key=key))
            if not found:
                return True
            owed = found[0]
            if owed.attempts:  # it just failed: tried again after its back-off
                return False
            if owed.kind not in self._handlers or not await self._take(owed):
                return False
            running = self._busy.get(key)  # started meanwhile, by a drain
            if running is None:
                running = asyncio.create_task(self._deliver(owed), name=f"deliver-{key}")
                self._busy[key] = running
        return await asyncio.shield(running)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = [t for t in (self._loop, *self._busy.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None
        self._busy.clear()
