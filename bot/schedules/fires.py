"""The clock of schedules: :meth:`Fires.tick` does whatever is due at the clock's ``now``
(each regular fire run, skipped for a holiday or a person's Skip, or recorded as missed past
the grace time; snoozed runs whose time came; the warning before the next run; the drift
watch) and is safe to call at any time and any number of times: every fire is recorded once
in the store, so a restart, a second process or an early tick never runs one twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from functools import partial

from bot.config import ScheduleConfig
from bot.models import Owed, ScheduleRun
from bot.schedules.announcements import Announcements
from bot.schedules.definitions import Definitions, is_start_fire
from bot.schedules.drift import DriftWatch
from bot.schedules.facts import WARNING, ScheduleNotifier
from bot.schedules.runs import Runs
from bot.text import Person, Text, say

log = logging.getLogger(__name__)


class Fires:
    def __init__(
        self,
        definitions: Definitions,
        announcements: Announcements,
        runs: Runs,
        drift: DriftWatch,
        notifier: Callable[[], ScheduleNotifier],
    ) -> None:
        self.definitions = definitions
        self.announcements = announcements
        self.runs = runs
        self.drift = drift
        self.settings = definitions.settings
        self.store = definitions.store
        self.clock = definitions.clock
        self.registry = runs.registry
        self.outbox = runs.outbox
        self.notifier = notifier
        self._tick_lock = asyncio.Lock()

    async def tick(self) -> None:
        """Do everything that is due now. Idempotent."""
        async with self._tick_lock:
            now = self.clock()
            # The store's reads off the loop (on PostgreSQL, a round trip each).
            schedules = await self.store.off_loop(self.definitions.schedules)
            for schedule in schedules.values():
                try:
                    await self._tick_one(schedule, now)
                except Exception:
                    log.exception("schedule %s: tick failed", schedule.name)

    async def _tick_one(self, schedule: ScheduleConfig, now: dt.datetime) -> None:
        state = await self.store.off_loop(partial(self.store.schedule_state, schedule.name))
        if state.checked_through is None:
            # A new schedule starts from now: fires before it existed are not "missed".
            await self._checked_through(schedule, now)
            state.checked_through = now
        missed: list[ScheduleRun] = []
        fire = self.definitions.next_any_fire(schedule, state.checked_through)
        while fire <= now:
            await self._due(schedule, fire, now, missed)
            fire = self.definitions.next_any_fire(schedule, fire)
        await self.announcements.report_missed(schedule, missed, now)
        await self._snoozes_due(schedule, now)
        await self._warn_if_due(schedule, now)
        await self._checked_through(schedule, now)
        await self.drift.watch(schedule, now)

    async def _checked_through(self, schedule: ScheduleConfig, now: dt.datetime) -> None:
        await self.store.off_loop(
            partial(self.store.update_schedule_state, schedule.name, checked_through=now)
        )

    async def _due(
        self,
        schedule: ScheduleConfig,
        fire: dt.datetime,
        now: dt.datetime,
        missed: list[ScheduleRun],
    ) -> None:
        """Handle one regular fire (a stop's, or a morning start's: holidays and Skip skip
        both, nobody is working). Missed ones are added to ``missed``, announced together
        with their neighbours (after a long downtime they are hundreds), and before
        anything else is said, so the channel reads in order."""
        kind = "start" if is_start_fire(schedule, fire) else "cron"
        holiday = self.definitions.holiday(schedule, fire)
        skipped_by = self.store.skips(schedule.name).get(fire)
        if holiday or skipped_by:
            await self.announcements.report_missed(schedule, missed, now)
            await self._skip(
                schedule,
                fire,
                say("{} holiday", holiday)
                if holiday
                else say("skipped by {}", Person(str(skipped_by))),
                kind,
            )
        elif fire in self.store.snoozes(schedule.name):
            return  # it runs at its snooze time
        elif now - fire > self.settings.grace_time:
            run = self.announcements.record_missed(schedule, fire, kind)
            if run is not None:
                missed.append(run)
        else:
            await self.announcements.report_missed(schedule, missed, now)
            await self.runs.start(schedule, fire, kind, now)

    async def _snoozes_due(self, schedule: ScheduleConfig, now: dt.datetime) -> None:
        """Start the snoozed runs whose time has come, within the grace time."""
        snoozes = self.store.snoozes(schedule.name)
        for fire, (until, started) in sorted(snoozes.items(), key=lambda s: s[1][0]):
            if started or until > now:
                continue
            # The run is recorded before the snooze is marked started: a crash between the
            # two finds the run recorded, and does not start it twice.
            kind = "start-snooze" if is_start_fire(schedule, fire) else "snooze"
            if now - until > self.settings.grace_time:
                run = self.announcements.record_missed(schedule, until, kind)
                self.store.start_snooze(schedule.name, fire)
                if run is not None:
                    await self.announcements.report_missed(schedule, [run], now)
            else:
                await self.runs.start(schedule, until, kind, now)
                self.store.start_snooze(schedule.name, fire)

    async def _skip(
        self, schedule: ScheduleConfig, fire: dt.datetime, why: Text, kind: str = "cron"
    ) -> None:
        run = self.store.create_run(
            schedule.name,
            fire,
            kind=kind,
            status="skipped",
            reason=why,
            owner=self.registry.id,
        )
        if run is not None:
            self.announcements.announce(
                schedule, fire, self.announcements.skipped_text(schedule, fire, why), [run.id]
            )

    async def _warn_if_due(self, schedule: ScheduleConfig, now: dt.datetime) -> None:
        fire, at = self.definitions.next_run(schedule)
        if not at - schedule.warn_before <= now < at:
            return
        owed = self.outbox.message(
            WARNING,
            f"{schedule.name}:{at.isoformat()}",
            {
                "schedule": schedule.model_dump(mode="json"),
                "at": at.isoformat(),
                "fire": fire.isoformat(),
            },
        )
        if self.store.claim(owed.key, owe=owed):
            self.outbox.kick()

    async def deliver_warning(self, owed: Owed) -> bool:
        schedule = ScheduleConfig.model_validate(owed.payload["schedule"])
        at = dt.datetime.fromisoformat(owed.payload["at"])
        if self.clock() >= at:
            log.warning(
                "schedule warning not shown before its run", extra={"schedule": schedule.name}
            )
            return True
        fire = dt.datetime.fromisoformat(owed.payload["fire"])
        plan = self.definitions.plan_for(schedule, fire, at)
        if not is_start_fire(schedule, fire):
            plan = await self.runs.in_use.ask(schedule, at, plan)
        return await self.notifier().warn(schedule, at, plan, fire=fire)

    async def sweep(self) -> None:
        """What dead processes left: their runs, and skipped or missed runs they recorded
        but did not live to announce."""
        self.runs.resume()
        async with self._tick_lock:  # this process's own tick announces its own
            live = self.registry.live()
            now = self.clock()
            missed: dict[str, list[ScheduleRun]] = {}
            for run in self.store.unannounced_runs():
                schedule = self.definitions.schedules().get(run.schedule)
                if not self.registry.orphaned(run.owner, live):
                    continue
                if schedule is None:
                    self.store.announce_runs([run.id], None)
                elif run.status == "missed":
                    missed.setdefault(run.schedule, []).append(run)
                else:
                    why = run.reason or Text("skipped")
                    text = self.announcements.skipped_text(schedule, run.fire_time, why)
                    self.announcements.announce(schedule, run.fire_time, text, [run.id])
            for name, runs in missed.items():
                await self.announcements.report_missed(self.definitions.schedule(name), runs, now)
