"""Drift watch: a schedule with ``until`` checks, every ``drift_check_interval`` until
then, that what its last runs stopped is still stopped, and owes its channel one message per
resource found running again (started by hand or by something else)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

from bot import reads
from bot.config import ScheduleConfig
from bot.models import Owed
from bot.outbox import Outbox
from bot.savings import Savings
from bot.schedules.definitions import Definitions
from bot.schedules.facts import DRIFT, Outcome, ScheduleNotifier, starts
from providers.base import Phase, ResourceStatus


class DriftWatch:
    def __init__(
        self,
        definitions: Definitions,
        outbox: Outbox,
        notifier: Callable[[], ScheduleNotifier],
    ) -> None:
        self.definitions = definitions
        self.config = definitions.config
        self.settings = definitions.settings
        self.store = definitions.store
        self.service = definitions.service
        self.outbox = outbox
        self.notifier = notifier
        self.savings: Savings | None = None
        """Told what the watch sees running, to stop counting it stopped (when set)."""

    def _window_end(self, schedule: ScheduleConfig, after: dt.datetime) -> dt.datetime | None:
        if schedule.until is None:
            return None
        zone = ZoneInfo(schedule.timezone)
        local = after.astimezone(zone)
        end = local.replace(
            hour=schedule.until.hour, minute=schedule.until.minute, second=0, microsecond=0
        )
        if end <= local:
            end = (local + dt.timedelta(days=1)).replace(
                hour=schedule.until.hour, minute=schedule.until.minute, second=0, microsecond=0
            )
        return end.astimezone(dt.UTC)

    async def watch(self, schedule: ScheduleConfig, now: dt.datetime) -> None:
        if schedule.until is None:
            return
        state = self.store.schedule_state(schedule.name)
        if (
            state.drift_checked_at
            and now - state.drift_checked_at < self.settings.drift_check_interval
        ):
            return
        self.store.update_schedule_state(schedule.name, drift_checked_at=now)
        for run in self.store.runs(status="done", schedule=schedule.name, limit=3):
            if starts(run):
                continue  # a morning start: what it started runs, as it should
            end = self._window_end(schedule, run.finished_at or run.fire_time)
            if end is None or now >= end:
                continue
            stopped = self.store.run_names(run.id, Outcome.STOPPED)
            # A resource woken for a while (a wake lease) runs on purpose: not drift.
            leased = (
                {lease.resource for lease in self.definitions.leases.running()}
                if self.definitions.leases is not None
                else set()
            )
            resources = [
                r for r in self.config.all_resources() if r.name in stopped and r.name not in leased
            ]
            found = await reads.statuses(self.service.providers, resources)
            if self.savings is not None:
                self.savings.observe(found)
            for name, status in found.items():
                owed = self.outbox.message(
                    DRIFT,
                    f"{run.id}:{name}",
                    {
                        "schedule": schedule.model_dump(mode="json"),
                        "run": run.id,
                        "resource": name,
                        "status": status.model_dump(mode="json"),
                    },
                )
                if status.phase == Phase.RUNNING and self.store.claim(owed.key, owe=owed):
                    self.store.audit(
                        f"schedule:{schedule.name}",
                        "schedule.drift",
                        resource=name,
                        detail={"state": status.state},
                    )
                    self.outbox.kick()

    async def deliver(self, owed: Owed) -> bool:
        run = self.store.run(owed.payload["run"])
        if run is None:
            return True
        schedule = ScheduleConfig.model_validate(owed.payload["schedule"])
        status = ResourceStatus.model_validate(owed.payload["status"])
        return (
            await self.notifier().drift(schedule, run, owed.payload["resource"], status)
            is not False
        )
