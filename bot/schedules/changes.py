"""What people change about a schedule's next runs: Skip and Snooze act on one fire each,
named by the button that was pressed (a second click finds it so already and changes
nothing; a click after its run started changes nothing either; a snooze moves only that fire,
the regular ones after it keep happening); Keep leaves one resource out of a schedule's runs
until a time. Who may ask is :mod:`bot.schedules.rights`."""

from __future__ import annotations

import datetime as dt

from bot.config import ScheduleConfig
from bot.durations import format_duration
from bot.models import ScheduleRun
from bot.processes import ProcessRegistry
from bot.schedules.definitions import Definitions
from bot.schedules.facts import Change, ScheduleError, local
from bot.text import Command, Person, Text, say

MAX_SNOOZE = dt.timedelta(days=7)
"""The most a snooze moves a run: more is a skip, which says so."""


class Changes:
    def __init__(self, definitions: Definitions, registry: ProcessRegistry) -> None:
        self.definitions = definitions
        self.store = definitions.store
        self.clock = definitions.clock
        self.registry = registry

    def skip(self, name: str, actor: str, fire: dt.datetime | None = None) -> Change:
        """Skip ``fire`` (a button names the one it was shown for), else the next run.

        Skipping it again changes nothing (``repeat``); once its run has started, raises
        ScheduleError and changes nothing.
        """
        schedule = self.definitions.schedule(name)
        fire = self._fire(schedule, fire)
        run = self.store.run_at(name, fire)
        if run is not None and run.status == "skipped":
            return Change(fire=fire, by=self.store.skips(name).get(fire), repeat=True)
        self._refuse_if_started(schedule, fire, run)
        skipped_by = self.store.skip_fire(name, fire, actor)
        if skipped_by is not None:
            return Change(fire=fire, by=skipped_by, repeat=True)
        checked = self.store.schedule_state(name).checked_through
        if checked is not None and fire <= checked:
            # A snoozed fire, past already: no tick comes by it again to record the skip.
            run = self.store.create_run(
                name,
                fire,
                kind="snooze",
                status="skipped",
                reason=say("skipped by {}", Person(actor)),
                owner=self.registry.id,
            )
            if run is not None:  # said by the button's answer
                self.store.announce_runs([run.id], None)
        return Change(fire=fire, by=actor)

    def snooze(
        self, name: str, duration: dt.timedelta, actor: str, fire: dt.datetime | None = None
    ) -> Change:
        """Run ``fire`` (else the next run) at ``fire + duration`` instead: pressing the same
        snooze again changes nothing (``repeat``), another duration replaces it. Raises
        ScheduleError, changing nothing, when that run is skipped or has started."""
        if duration > MAX_SNOOZE:
            raise ScheduleError(
                say(
                    "A snooze moves one run by {} at most: to leave a run out, skip it ({}).",
                    format_duration(MAX_SNOOZE),
                    Command("schedule skip", name),
                )
            )
        schedule = self.definitions.schedule(name)
        fire = self._fire(schedule, fire)
        run = self.store.run_at(name, fire)
        skipped = (run is not None and run.status == "skipped") or fire in self.store.skips(name)
        if skipped or self.definitions.holiday(schedule, fire):
            raise ScheduleError(
                Text(
                    f"The `{name}` run due {local(schedule, fire)} is skipped: there is nothing "
                    "to snooze."
                )
            )
        self._refuse_if_started(schedule, fire, run)
        until = fire + duration
        now = self.clock()
        if until <= now:
            raise ScheduleError(
                Text(
                    f"{local(schedule, until)} has passed: snooze `{name}` by more than "
                    f"{format_duration(now - fire)}."
                )
            )
        changed = self.store.snooze_fire(name, fire, until, actor)
        if changed is None:
            self._refuse_if_started(schedule, fire, None)
        return Change(fire=fire, at=until, by=actor, repeat=not changed)

    def _fire(self, schedule: ScheduleConfig, fire: dt.datetime | None) -> dt.datetime:
        """``fire`` if it is one of the schedule's fires, else the next run's fire."""
        if fire is None:
            return self.definitions.next_run(schedule)[0]
        if self.definitions.next_fire(schedule, fire - dt.timedelta(microseconds=1)) != fire:
            raise ScheduleError(
                Text(
                    f"`{schedule.name}` no longer runs at {local(schedule, fire)} (it was changed "
                    "since): nothing was changed."
                )
            )
        return fire

    def _refuse_if_started(
        self, schedule: ScheduleConfig, fire: dt.datetime, run: ScheduleRun | None
    ) -> None:
        """Raise ScheduleError when ``fire`` can no longer be skipped or snoozed."""
        due = f"The `{schedule.name}` run due {local(schedule, fire)}"
        if run is not None:
            verb = "was missed" if run.status == "missed" else "has already started"
            raise ScheduleError(Text(f"{due} {verb}: nothing was changed."))
        snooze = self.store.snoozes(schedule.name).get(fire)
        if snooze is not None and snooze[1]:
            raise ScheduleError(
                Text(
                    f"{due}, snoozed to {local(schedule, snooze[0])}, has already started: "
                    "nothing was changed."
                )
            )
        checked = self.store.schedule_state(schedule.name).checked_through
        if snooze is None and checked is not None and fire <= checked:
            raise ScheduleError(Text(f"{due} has passed: nothing was changed."))

    def keep(self, name: str, resource: str, until: dt.datetime, actor: str) -> None:
        schedule = self.definitions.schedule(name)
        if resource not in {r.name for r in self.definitions.selected(schedule)}:
            raise ScheduleError(Text(f"{resource} is not stopped by `{name}`."))
        self.store.add_exception(name, resource, until, actor)
