"""The garbage collector's full collections, made when the server is quiet.

CPython collects its oldest generation on its own once enough objects have survived the
younger ones; that collection walks every live object. While a nightly run of 10,000
stops is in flight, the live objects are millions and each full collection held the event
loop for 120-190 ms, 26 times in a run: a burst of Slack requests that met one waited
for it (ack p99 150-370 ms against 30-40 ms between them; ``GCPAUSE`` lines of a gc
callback in the benchmark's log). Young collections stay the interpreter's (each a few
milliseconds); the full one is :class:`QuietCollector`'s, every ``every`` seconds, at a
moment when no request has been answered for ``quiet`` seconds, or after ``at_most``
seconds of waiting for one under a load that never pauses, so cyclic garbage is still
freed within minutes.

Quiet also means no stop being followed (``busy``): a run of 10,000 keeps ~300,000 objects
alive while its stops are in flight, and a full collection then held the loop ~230 ms,
every 10 s, with the run's requests waiting on it (4 times in a 40 s run). Its garbage is
little (young collections free what has no cycle), so the collection waits for the run's
end, or ``at_most``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable

__all__ = ["NEVER", "QuietCollector"]

log = logging.getLogger(__name__)

NEVER = 1 << 30
"""The oldest generation's threshold while a QuietCollector runs: young collections never
add up to it, so the interpreter never starts a full collection itself."""


class QuietCollector:
    """Full collections every ``every`` seconds, each once the server has been idle for
    ``quiet`` seconds (``idle()`` says for how long it has) and follows no stop (``busy()``
    says whether it does), or after ``at_most`` seconds."""

    def __init__(
        self,
        idle: Callable[[], float],
        *,
        busy: Callable[[], bool] = lambda: False,
        every: float = 10.0,
        quiet: float = 1.0,
        at_most: float = 300.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle = idle
        self.busy = busy
        self.every = every
        self.quiet = quiet
        self.at_most = at_most
        self.sleep = sleep
        self.clock = clock
        self.collections = 0

    async def run(self) -> None:
        """Collect until cancelled; the interpreter's own thresholds are back after."""
        young, middle, oldest = gc.get_threshold()
        gc.set_threshold(young, middle, NEVER)
        try:
            while True:
                await self.sleep(self.every)
                await self._wait_for_quiet()
                started = self.clock()
                gc.collect()
                self.collections += 1
                took = self.clock() - started
                if took > 0.05:
                    log.debug("full garbage collection", extra={"ms": round(took * 1000)})
        finally:
            gc.set_threshold(young, middle, oldest)

    async def _wait_for_quiet(self) -> None:
        began = self.clock()
        while (self.idle() < self.quiet or self.busy()) and self.clock() - began < self.at_most:
            await self.sleep(self.quiet / 4)
