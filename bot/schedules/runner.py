"""What wakes the schedules' clock (:meth:`ScheduleEngine.tick`): the bot's own clock.

The runner sleeps until the next thing due on the engine's clock (a fire, a warning, a
snoozed run) or ``interval`` at most (drift, a schedule changed by another process), and
wakes at once when told the clock moved (:meth:`ScheduleRunner.wake`: the playground's
"skip ahead"). One clock for the bot and its schedules: a fire the movable clock reaches
runs then, warned first, and one it jumps past beyond the grace time is announced missed,
never lost. APScheduler reads the crontab (:mod:`bot.cron`); it no longer keeps the time,
since its wall clock is not the bot's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

from bot.schedules.engine import ScheduleEngine
from bot.store import StoreError

log = logging.getLogger(__name__)

MIN_WAIT = 0.05
"""Seconds: a wait is never shorter (a wake-up a hair early finds nothing due yet)."""


class ScheduleRunner:
    """Ticks the engine when something is due on its clock, every ``interval`` seconds at
    most, and at once on :meth:`wake`."""

    def __init__(
        self,
        engine: ScheduleEngine,
        interval: float = 30.0,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        """``leading``: whether this process does the time-driven work now (one leader
        among replicas, bot/leadership.py); the others wake and do nothing."""
        self.engine = engine
        self.interval = interval
        self.leading = leading
        self._task: asyncio.Task[None] | None = None
        self._woken: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.engine.sync_config()
        resumed = self.engine.resume()
        if resumed:
            log.info("resumed %d scheduled run(s)", resumed)
        self._loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="schedules")

    async def tick(self) -> None:
        """The engine's tick, if this process leads."""
        if self.leading():
            await self.engine.tick()

    def wake(self) -> None:
        """Tick now and reckon the next wait again: the clock moved, or a schedule
        changed. Safe from any thread."""
        if self._loop is None or self._woken is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._woken.set)

    def rebuild(self) -> None:
        """The schedules changed: the next wait is reckoned from them again."""
        self.wake()

    def next_due(self) -> dt.datetime | None:
        """The earliest time on the engine's clock when a tick has something to do: a
        regular fire (run, skipped or snoozed, it is recorded), a snoozed run, the start of
        a warning. None without schedules."""
        now = self.engine.clock()
        due: list[dt.datetime] = []
        for schedule in self.engine.schedules().values():
            fire = self.engine.definitions.next_fire(schedule)
            _, at = self.engine.definitions.next_run(schedule)
            warn = at - schedule.warn_before
            due += [fire, at] + ([warn] if warn > now else [])
        return min(due, default=None)

    async def _wait(self) -> float:
        """Seconds until the next thing due, at most ``interval`` (a follower, or a store
        that does not answer, waits the interval: the leader, or the store back, reckons)."""
        wait = self.interval
        due = None
        if self.leading():
            try:
                due = await self.engine.store.off_loop(self.next_due)
            except StoreError as exc:
                log.warning("schedules: the store does not answer (%s); trying again", exc)
            except Exception:
                log.exception("schedules: cannot tell what is due next; waiting the interval")
        if due is not None:
            wait = min(wait, (due - self.engine.clock()).total_seconds())
        return max(wait, MIN_WAIT)

    async def _run(self) -> None:
        assert self._woken is not None
        while True:
            self._woken.clear()
            try:
                await self.tick()
            except StoreError as exc:
                log.warning("schedules: the store does not answer (%s); trying again", exc)
            except Exception:
                log.exception("schedules: tick failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), await self._wait())

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.engine.cancel()
