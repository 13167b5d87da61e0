"""Status reads, coalesced: every stop being followed on one provider account shares one
list call per polling round, so a night of 1,000 stops costs rounds times accounts calls,
not rounds times resources (Qovery's organisation status list, Nova's servers/detail, …).

The batcher of an account is also its one follower: a stop waits in
:meth:`StatusBatcher.change` until its provider state changes (or it is time for it to look
up), and a round in which nothing changed for it costs it nothing: no task woken, no timer,
no store read. Most rounds of a night of 10,000 stops find most states unchanged.

Sending comes first: while the account's requests queue for its slots (a run's stops being
sent), a round of followed stops waits, :data:`CROWDED_WAIT` seconds at most. A round takes
slots the stops need (Nova's list is a page per thousand servers), and the loop's time to
read thousands of statuses; and a stop looked at later is more often looked at once, at its
end, than at every state it passes through. A status asked for (a preview) never waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from providers.base import Provider, Resource, ResourceStatus

__all__ = ["CROWDED_WAIT", "WAKE_AT_ONCE", "StatusBatcher"]

log = logging.getLogger(__name__)

WAKE_AT_ONCE = 32
"""Followers a round wakes in one turn of the event loop."""

CROWDED_WAIT = 6.0
"""Seconds a round of followed stops waits at most while its account is crowded."""


class StatusBatcher:
    """Collects status requests for ``window`` seconds, then asks the provider once.

    Rounds start at least ``every`` seconds apart (the stops' poll interval): stops
    accepted at different moments would otherwise poll out of step, a round every
    ``window``, and a run of thousands would cost ten list calls a second per account.
    Kept in step, each stop is in every round and the calls grow with the run's duration,
    not with its size. ``clock`` and ``sleep`` are the follower's (tests move them).

    A resource missing from the bulk answer is read on its own, so the caller gets the
    same answer (or exception) as ``provider.status`` would give.
    """

    def __init__(
        self,
        provider: Provider,
        window: float = 0.1,
        *,
        every: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.provider = provider
        self.window = window
        self.every = every
        self.clock = clock
        self.sleep = sleep
        self._waiting: dict[str, tuple[Resource, list[asyncio.Future[ResourceStatus]]]] = {}
        self._watching: dict[str, list[_Watch]] = {}
        self._resources: dict[str, Resource] = {}
        self._flush: asyncio.Task[None] | None = None
        self._last_round = float("-inf")

    async def status(self, resource: Resource) -> ResourceStatus:
        """The resource's status, from the next round."""
        future: asyncio.Future[ResourceStatus] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(resource.id, (resource, []))[1].append(future)
        self._round_soon()
        return await future

    async def change(self, resource: Resource, known: str | None, until: float) -> ResourceStatus:
        """The resource's status from the first round that finds its state other than
        ``known``, or from the first round at or past ``until`` (``clock`` time: the
        caller's time to look up, its state unchanged); its read's error, if a round's
        read of it fails."""
        future: asyncio.Future[ResourceStatus] = asyncio.get_running_loop().create_future()
        self._watching.setdefault(resource.id, []).append(_Watch(known, until, future))
        self._resources[resource.id] = resource
        self._round_soon()
        try:
            return await future
        finally:
            if not future.done():  # cancelled: watch no more
                future.cancel()

    def _round_soon(self) -> None:
        if self._flush is None:
            self._flush = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.window)
        early = self._last_round + self.every - self.clock()
        if early > 0:
            await self.sleep(early)
        await self._while_crowded()
        self._last_round = self.clock()
        batch, self._waiting, self._flush = self._waiting, {}, None
        watched = {rid: self._resources[rid] for rid in self._watching}
        for rid, resource in watched.items():
            batch.setdefault(rid, (resource, []))
        resources = [resource for resource, _ in batch.values()]
        found: dict[str, ResourceStatus] = {}
        if len(resources) > 1:
            try:
                found = await self.provider.statuses(resources)
            except Exception as exc:  # fall back to one read each, which reports its own error
                log.warning(
                    "bulk status read failed",
                    extra={"provider": self.provider.name, "error": str(exc)},
                )
        missing = [r for r in resources if r.id not in found]
        singles = await asyncio.gather(
            *(self.provider.status(r) for r in missing), return_exceptions=True
        )
        outcomes: dict[str, ResourceStatus | BaseException] = dict(found)
        outcomes.update({r.id: s for r, s in zip(missing, singles, strict=True)})
        now = self.clock()
        woken = 0
        for rid, (_, futures) in batch.items():
            outcome = outcomes[rid]
            for future in futures:
                if not future.done():
                    _settle(future, outcome)
                    woken += 1
            watches = self._watching.get(rid)
            if watches:
                kept = []
                for watch in watches:
                    if watch.future.done():
                        continue
                    if (
                        isinstance(outcome, BaseException)
                        or outcome.state != watch.known
                        or now >= watch.until
                    ):
                        _settle(watch.future, outcome)
                        woken += 1
                    else:
                        kept.append(watch)
                if kept:
                    self._watching[rid] = kept
                else:
                    del self._watching[rid]
                    self._resources.pop(rid, None)
            if woken >= WAKE_AT_ONCE:
                # Each answer wakes a follower that writes to the store: thousands at once
                # would hold the event loop, and every ack behind it, for a second.
                woken = 0
                await asyncio.sleep(0)
        if self._watching:
            self._round_soon()

    async def _while_crowded(self) -> None:
        """Wait while the account is crowded, a round's interval at a time (at least a
        second), :data:`CROWDED_WAIT` in all at most; never while a status is asked for."""
        step = max(self.every, 1.0)
        for _ in range(int(CROWDED_WAIT / step)):
            if self._waiting or not self.provider.crowded(step):
                return
            await self.sleep(step)


@dataclasses.dataclass(frozen=True, slots=True)
class _Watch:
    known: str | None
    until: float
    future: asyncio.Future[ResourceStatus]


def _settle(
    future: asyncio.Future[ResourceStatus], outcome: ResourceStatus | BaseException
) -> None:
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
