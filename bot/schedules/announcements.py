"""What schedules say in their channel besides warnings and summaries: runs skipped (a
holiday, a person's Skip) and runs missed (the bot was down past the grace time), each owed
through the outbox and marked told on the runs it tells of."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

from bot.config import ScheduleConfig
from bot.durations import format_duration
from bot.models import Owed, ScheduleRun
from bot.outbox import Outbox
from bot.processes import ProcessRegistry
from bot.schedules.definitions import Definitions
from bot.schedules.facts import ANNOUNCEMENT, ScheduleNotifier, local
from bot.text import Command, Text, say


class Announcements:
    def __init__(
        self,
        definitions: Definitions,
        outbox: Outbox,
        registry: ProcessRegistry,
        notifier: Callable[[], ScheduleNotifier],
    ) -> None:
        self.definitions = definitions
        self.store = definitions.store
        self.outbox = outbox
        self.registry = registry
        self.notifier = notifier

    def record_missed(
        self, schedule: ScheduleConfig, fire: dt.datetime, kind: str
    ) -> ScheduleRun | None:
        return self.store.create_run(
            schedule.name,
            fire,
            kind=kind,
            status="missed",
            reason=say("the bot was down at {:%H:%M} UTC, longer than the grace time", fire),
            owner=self.registry.id,
        )

    def announce(
        self, schedule: ScheduleConfig, fire: dt.datetime, text: Text, runs: list[str]
    ) -> None:
        """Owe an announcement in the schedule's channel, the runs it tells of marked told."""
        owed = self.outbox.message(
            ANNOUNCEMENT,
            uuid.uuid4().hex,
            {
                "schedule": schedule.model_dump(mode="json"),
                "fire": fire.isoformat(),
                "text": text.to_json(),
            },
        )
        self.store.announce_runs(runs, owed)
        self.outbox.kick()

    async def report_missed(
        self, schedule: ScheduleConfig, runs: list[ScheduleRun], now: dt.datetime
    ) -> None:
        """One message for consecutive missed fires (then forgets them)."""
        if not runs:
            return
        fires = [r.fire_time for r in runs]
        ids = [r.id for r in runs]
        runs.clear()
        first, last, count = fires[0], fires[-1], len(fires)
        grace = format_duration(self.definitions.settings.grace_time)
        if count == 1:
            what = (
                f"Missed the {schedule.name} run due {local(schedule, first)}: Stopbot was "
                f"not running, and {format_duration(now - first)} is past the grace time "
                f"of {grace}."
            )
        else:
            what = (
                f"Missed {count} {schedule.name} runs, due from {local(schedule, first)} to "
                f"{local(schedule, last)}: Stopbot was not running, and even the last is "
                f"{format_duration(now - last)} late, past the grace time of {grace}."
            )
        self.announce(
            schedule,
            first,
            say(
                "{} Nothing was stopped; run it now with {}.",
                what,
                Command("schedule run", schedule.name),
            ),
            ids,
        )

    def skipped_text(self, schedule: ScheduleConfig, fire: dt.datetime, why: Text) -> Text:
        return say(
            "The {} run due {} is skipped ({}). Next run: {}.",
            schedule.name,
            local(schedule, fire),
            why,
            local(schedule, self.definitions.upcoming(schedule)),
        )

    async def deliver(self, owed: Owed) -> bool:
        schedule = ScheduleConfig.model_validate(owed.payload["schedule"])
        fire = dt.datetime.fromisoformat(owed.payload["fire"])
        text = Text.coerce(owed.payload["text"])
        return await self.notifier().announce(schedule, fire, text) is not False
