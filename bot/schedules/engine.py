"""Scheduled stops, assembled: one :class:`ScheduleEngine` per process, built from one part
per job, and the face's way in.

- :mod:`bot.schedules.definitions`: the schedules, their fires, what a run would do;
- :mod:`bot.schedules.fires`: the clock (:meth:`ScheduleEngine.tick`), warnings;
- :mod:`bot.schedules.changes`: Skip, Snooze and Keep;
- :mod:`bot.schedules.runs`: a run's stops and its summary;
- :mod:`bot.schedules.in_use`: "is anyone using it?", asked at the warning, decided at the run;
- :mod:`bot.schedules.announcements`: skipped and missed runs, told in the channel;
- :mod:`bot.schedules.drift`: what was stopped and runs again.

The engine is driven by :meth:`ScheduleEngine.tick`, which does whatever is due at the
clock's ``now`` and is safe to call at any time and any number of times: every fire is
recorded once in the store (``schedule_runs`` is unique per schedule and fire time), so a
restart, a second process or an early tick never runs a schedule twice. The runner wakes
the engine when something is due on the bot's own clock, every half minute at most, and at
once when that clock is moved (:mod:`bot.schedules.runner`); tests call ``tick`` with a
moved clock instead of waiting.

Nothing here knows about Slack: a :class:`ScheduleNotifier` shows what happens. Who may ask
for what is :mod:`bot.schedules.rights`.
"""

from __future__ import annotations

import datetime as dt

from bot.config import ScheduleConfig, StopbotConfig
from bot.models import ScheduleRun
from bot.savings import Savings
from bot.schedules.announcements import Announcements
from bot.schedules.changes import Changes
from bot.schedules.definitions import Definitions
from bot.schedules.drift import DriftWatch
from bot.schedules.facts import (
    ANNOUNCEMENT,
    DRIFT,
    SUMMARY,
    WARNING,
    Change,
    Clock,
    PlanItem,
    RunReport,
    ScheduleNotifier,
    Sleep,
)
from bot.schedules.fires import Fires
from bot.schedules.in_use import mark
from bot.schedules.runs import Runs
from bot.store import Store
from bot.workflow import StopService
from providers.base import Resource

__all__ = ["ScheduleEngine"]


class ScheduleEngine:
    def __init__(
        self,
        config: StopbotConfig,
        store: Store,
        service: StopService,
        notifier: ScheduleNotifier | None = None,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.service = service
        self.clock = clock or service.clock
        self.outbox = service.outbox
        self._notifier = notifier
        self.definitions = Definitions(config, store, service, self.clock)
        self.announcements = Announcements(
            self.definitions, self.outbox, service.registry, self._notify
        )
        self.runs = Runs(self.definitions, self.announcements, sleep or service.sleep, self._notify)
        self.drift = DriftWatch(self.definitions, self.outbox, self._notify)
        self.fires = Fires(
            self.definitions, self.announcements, self.runs, self.drift, self._notify
        )
        self.changes = Changes(self.definitions, service.registry)
        self.in_use = self.runs.in_use
        if notifier is not None:
            self.notify_with(notifier)
        service.registry.sweeps.append(self.sweep)

    def notify_with(self, notifier: ScheduleNotifier) -> None:
        """Show what schedules do through ``notifier`` (until then it stays owed, for a
        process whose face shows it)."""
        self._notifier = notifier
        self.outbox.handle(WARNING, self.fires.deliver_warning)
        self.outbox.handle(ANNOUNCEMENT, self.announcements.deliver)
        self.outbox.handle(
            SUMMARY,
            self.runs.deliver_summary,
            interval=self.config.scheduling.summary_interval.total_seconds(),
        )
        self.outbox.handle(DRIFT, self.drift.deliver)

    def count_savings_with(self, savings: Savings) -> None:
        """Summaries say what a run is expected to save; the drift watch stops counting
        what it sees running."""
        self.runs.savings = savings
        self.drift.savings = savings

    def _notify(self) -> ScheduleNotifier:
        """The face's notifier (the outbox delivers a schedule's messages only with one)."""
        assert self._notifier is not None
        return self._notifier

    # -- definitions (bot.schedules.definitions) ----------------------------------------

    def sync_config(self) -> None:
        self.definitions.sync_config()

    def schedules(self) -> dict[str, ScheduleConfig]:
        return self.definitions.schedules()

    def schedule(self, name: str) -> ScheduleConfig:
        return self.definitions.schedule(name)

    def add(self, schedule: ScheduleConfig, actor: str) -> None:
        self.definitions.add(schedule, actor)

    def remove(self, name: str, actor: str) -> None:
        self.definitions.remove(name, actor)

    def next_fire(self, schedule: ScheduleConfig, after: dt.datetime | None = None) -> dt.datetime:
        return self.definitions.next_fire(schedule, after)

    def upcoming(self, schedule: ScheduleConfig) -> dt.datetime:
        return self.definitions.upcoming(schedule)

    def next_run(
        self, schedule: ScheduleConfig, *, counting_skips: bool = True
    ) -> tuple[dt.datetime, dt.datetime]:
        return self.definitions.next_run(schedule, counting_skips=counting_skips)

    def selected(self, schedule: ScheduleConfig) -> list[Resource]:
        return self.definitions.selected(schedule)

    def next_stop_of(self, resource: str, after: dt.datetime) -> dt.datetime | None:
        return self.definitions.next_stop_of(resource, after)

    def plan(self, schedule: ScheduleConfig, at: dt.datetime | None = None) -> list[PlanItem]:
        return self.definitions.plan(schedule, at)

    async def read_plan(
        self, schedule: ScheduleConfig, *, started_by: str | None = None
    ) -> list[PlanItem]:
        return await self.definitions.read_plan(schedule, started_by=started_by)

    def warning_plan(self, schedule: ScheduleConfig, at: dt.datetime) -> list[PlanItem]:
        """The plan of the run at ``at`` as its warning shows it: with the questions asked
        about resources in use, and their answers (no provider read)."""
        questions = {q.resource: q for q in self.store.in_use_questions(schedule.name, at)}
        return mark(self.definitions.plan(schedule, at), questions)

    # -- the clock (bot.schedules.fires) ----------------------------------------------

    async def tick(self) -> None:
        """Do everything that is due now. Idempotent."""
        await self.fires.tick()

    async def sweep(self) -> None:
        await self.fires.sweep()

    # -- what people change (bot.schedules.changes) -----------------------------------

    def skip(self, name: str, actor: str, fire: dt.datetime | None = None) -> Change:
        return self.changes.skip(name, actor, fire)

    def snooze(
        self, name: str, duration: dt.timedelta, actor: str, fire: dt.datetime | None = None
    ) -> Change:
        return self.changes.snooze(name, duration, actor, fire)

    def keep(self, name: str, resource: str, until: dt.datetime, actor: str) -> None:
        self.changes.keep(name, resource, until, actor)

    # -- runs (bot.schedules.runs) ------------------------------------------------------

    async def run_now(self, name: str, actor: str) -> ScheduleRun:
        return await self.runs.run_now(name, actor)

    def resume(self) -> int:
        return self.runs.resume()

    def report(self, run_id: str, schedule: ScheduleConfig | None = None) -> RunReport | None:
        return self.runs.report(run_id, schedule)

    async def cancel(self) -> None:
        await self.runs.cancel()

    async def wait(self) -> None:
        await self.runs.wait()
