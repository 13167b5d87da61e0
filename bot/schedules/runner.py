"""APScheduler wakes the schedules' clock (:meth:`ScheduleEngine.tick`): at each schedule's
cron fire, and every half minute for warnings, snoozes and drift."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.cron import cron_trigger
from bot.schedules.engine import ScheduleEngine

log = logging.getLogger(__name__)


class ScheduleRunner:
    """APScheduler wakes the engine: at each schedule's cron fire, and every 30 s for
    warnings, snoozes and drift."""

    def __init__(
        self,
        engine: ScheduleEngine,
        interval: float = 30.0,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        """``leading``: whether this process does the time-driven work now (one leader
        among replicas, bot/leadership.py); the others' jobs wake and do nothing."""
        self.engine = engine
        self.interval = interval
        self.leading = leading
        self.scheduler = AsyncIOScheduler(timezone=dt.UTC)
        # APScheduler logs each tick (every half minute) at INFO: keep only its problems.
        logging.getLogger("apscheduler").setLevel(logging.WARNING)

    def start(self) -> None:
        self.engine.sync_config()
        resumed = self.engine.resume()
        if resumed:
            log.info("resumed %d scheduled run(s)", resumed)
        self.scheduler.add_job(
            self.tick,
            IntervalTrigger(seconds=self.interval),
            id="tick",
            max_instances=1,
            coalesce=True,
        )
        self.rebuild()
        self.scheduler.start()
        asyncio.get_running_loop().create_task(self.tick())

    async def tick(self) -> None:
        """The engine's tick, if this process leads."""
        if self.leading():
            await self.engine.tick()

    def rebuild(self) -> None:
        """One cron job per schedule in the store (called at start and after changes)."""
        for job in self.scheduler.get_jobs():
            if job.id.startswith("cron:"):
                job.remove()
        for schedule in self.engine.schedules().values():
            self.scheduler.add_job(
                self.tick,
                cron_trigger(schedule.cron, schedule.timezone),
                id=f"cron:{schedule.name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.engine.cancel()
