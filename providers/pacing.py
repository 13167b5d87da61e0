"""What a provider account allows: so many requests in flight, so many a second.

Providers limit accounts, not stops: a stop is one request, answered at once (202), and
the resource stops by itself afterwards. So every request to one account, whatever it is
for (a stop, a status list, a preview's read), goes through that account's
:class:`RequestGate`, and nothing else holds a slot.

A 429 (Nova's 413 ``overLimit`` too) says the account asks too much: the gate then stops
every request of that account until ``Retry-After`` has passed (a second without one),
and halves its requests in flight and a second; answers that are not 429s win them back
little by little, up to the configured limits (additive increase, multiplicative
decrease, as TCP does). Other accounts are not touched.

The waits use the gate's own ``clock`` and ``sleep``; with stamina's testing mode on
(``stamina.set_testing(True)``) the default sleep returns at once, so no test waits for
a pause, and tests that measure one give the gate a clock they move.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import stamina
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DEFAULT_PAUSE", "RequestGate", "RequestLimits"]

DEFAULT_PAUSE = 1.0
"""Seconds an account is paused after a 429 that says nothing of when to come back."""

_MIN_RATE = 0.5  # requests a second a 429 can bring an account down to, at the least


class RequestLimits(BaseModel):
    """A provider account's request limits (``providers[].requests`` in stopbot.yaml)."""

    model_config = ConfigDict(extra="forbid")

    max_in_flight: int = Field(
        default=10, ge=1, le=1000, description="Requests sent and not yet answered, at most."
    )
    max_per_second: float | None = Field(
        default=50.0,
        gt=0,
        description="Requests started a second, at most; null for no cap but max_in_flight.",
    )


async def _sleep(seconds: float) -> None:
    if not stamina.is_testing():
        await asyncio.sleep(seconds)


class RequestGate:
    """The requests of one provider account: ``async with gate.slot():`` around each."""

    def __init__(
        self,
        limits: RequestLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = _sleep,
    ) -> None:
        self.limits = limits or RequestLimits()
        self.clock = clock
        self.sleep = sleep
        self.in_flight = 0
        self.peak_in_flight = 0
        self.concurrency = self.limits.max_in_flight
        self.rate = self.limits.max_per_second
        self.paused_until = float("-inf")
        self._answers = 0  # answers since the concurrency last grew
        self._next_start = float("-inf")
        self._room = asyncio.Condition()
        self._queued_at = float("-inf")  # when a request last found every slot taken

    def crowded(self, within: float) -> bool:
        """Whether a request found every slot of the account taken in the last ``within``
        seconds: more is asked of the account than it allows (a run's stops being sent)."""
        return self.clock() - self._queued_at < within

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the account's slots for one request, sent at its turn."""
        async with self._room:
            if self.in_flight >= self.concurrency:
                self._queued_at = self.clock()
            await self._room.wait_for(lambda: self.in_flight < self.concurrency)
            self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await self._turn()
            yield
        finally:
            async with self._room:
                self.in_flight -= 1
                self._room.notify(max(self.concurrency - self.in_flight, 0))

    async def _turn(self) -> None:
        """Wait out a pause, then for this request's place in the account's rate."""
        while True:
            now = self.clock()
            until = self.paused_until
            if now < until:
                await self.sleep(until - now)
                if self.clock() < until:
                    return  # a sleep that did not wait (stamina's testing mode)
                continue  # a 429 meanwhile may have paused the account again
            if self.rate is None:
                return
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.rate
            if start > now:
                await self.sleep(start - now)
            return

    def slow_down(self, retry_after: float | None) -> None:
        """The account answered 429: pause it, and halve what it is allowed."""
        pause = DEFAULT_PAUSE if retry_after is None else retry_after
        self.paused_until = max(self.paused_until, self.clock() + pause)
        self.concurrency = max(1, self.concurrency // 2)
        if self.rate is not None:
            self.rate = max(_MIN_RATE, self.rate / 2)
        self._answers = 0

    def answered(self) -> None:
        """An answer that was not a 429: win back a little of what 429s took, about one
        request a second more every second, and one more in flight every window of
        answers."""
        ceiling = self.limits.max_per_second
        if self.rate is not None and ceiling is not None and self.rate < ceiling:
            self.rate = min(ceiling, self.rate + 1.0 / self.rate)
        if self.concurrency < self.limits.max_in_flight:
            self._answers += 1
            if self._answers >= self.concurrency:
                self._answers = 0
                self.concurrency += 1
