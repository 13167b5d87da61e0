"""Status reads, coalesced: every stop being followed on one provider account shares one
list call per polling round, so a night of 1,000 stops costs rounds times accounts calls,
not rounds times resources (Qovery's organisation status list, Nova's servers/detail, …).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from providers.base import Provider, Resource, ResourceStatus

__all__ = ["WAKE_AT_ONCE", "StatusBatcher"]

log = logging.getLogger(__name__)

WAKE_AT_ONCE = 32
"""Followers a round wakes in one turn of the event loop."""


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
        self._flush: asyncio.Task[None] | None = None
        self._last_round = float("-inf")

    async def status(self, resource: Resource) -> ResourceStatus:
        future: asyncio.Future[ResourceStatus] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(resource.id, (resource, []))[1].append(future)
        if self._flush is None:
            self._flush = asyncio.create_task(self._flush_soon())
        return await future

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.window)
        early = self._last_round + self.every - self.clock()
        if early > 0:
            await self.sleep(early)
        self._last_round = self.clock()
        batch, self._waiting, self._flush = self._waiting, {}, None
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
        for count, (rid, (_, futures)) in enumerate(batch.items(), start=1):
            outcome = outcomes[rid]
            for future in futures:
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            if count % WAKE_AT_ONCE == 0:
                # Each answer wakes a follower that writes to the store: thousands at once
                # would hold the event loop, and every ack behind it, for a second.
                await asyncio.sleep(0)
