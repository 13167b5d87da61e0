"""Schedules as defined (stopbot.yaml's, and those added from a face, all kept in the
store), when each fires, and what a run of one would do: the planning every other part of
:mod:`bot.schedules` reads. Nothing here changes a resource."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bot import reads
from bot.config import ScheduleConfig, StopbotConfig
from bot.cron import cron_trigger, next_fire
from bot.durations import format_duration
from bot.locks import check_locks
from bot.models import Actor
from bot.schedules.facts import Clock, Outcome, PlanItem, ScheduleError, starts
from bot.store import Store
from bot.text import Person, Text, say
from bot.workflow import StopService
from providers.base import Phase, Resource

if TYPE_CHECKING:
    from bot.leases import Leases

log = logging.getLogger(__name__)


class Definitions:
    """The schedules, their fires and their plans."""

    def __init__(
        self, config: StopbotConfig, store: Store, service: StopService, clock: Clock
    ) -> None:
        self.config = config
        self.settings = config.scheduling
        self.store = store
        self.service = service
        self.clock = clock
        # Wake leases keep their resources out of runs (set by the assembled bot).
        self.leases: Leases | None = None

    def sync_config(self) -> None:
        """The config's schedules into the store, which holds Slack-added ones too; those
        that came from the config and are no longer in it are removed, with their state."""
        for schedule in self.config.schedules:
            self.store.save_schedule(
                schedule.name, schedule.model_dump(mode="json"), "stopbot.yaml", source="config"
            )
        configured = {s.name for s in self.config.schedules}
        for name, source in self.store.schedule_sources().items():
            if source == "config" and name not in configured:
                self.store.delete_schedule(name, "stopbot.yaml")
                log.info("schedule %s is no longer in stopbot.yaml: removed", name)

    def schedules(self) -> dict[str, ScheduleConfig]:
        found = {}
        for name, definition in self.store.schedules().items():
            try:
                found[name] = ScheduleConfig.model_validate(definition)
            except ValueError:
                log.error("schedule %s in the store is invalid; ignored", name)
        return found

    def schedule(self, name: str) -> ScheduleConfig:
        found = self.schedules().get(name)
        if found is None:
            known = ", ".join(sorted(self.schedules())) or "none"
            raise ScheduleError(Text(f"No schedule named `{name}` (known: {known})."))
        return found

    def add(self, schedule: ScheduleConfig, actor: str) -> None:
        if schedule.name in self.schedules():
            raise ScheduleError(Text(f"A schedule named `{schedule.name}` exists already."))
        self._check_selection(schedule)
        self.store.save_schedule(schedule.name, schedule.model_dump(mode="json"), actor)

    def _check_selection(self, schedule: ScheduleConfig) -> None:
        names = {r.name for r in self.config.resources}
        unknown = [r for r in schedule.select.resources or [] if r not in names]
        if unknown:
            raise ScheduleError(Text(f"No resource named {', '.join(unknown)}."))
        missing = [c for c in schedule.skip_on if c not in self.config.calendars]
        if missing:
            raise ScheduleError(Text(f"No calendar named {', '.join(missing)}."))

    def remove(self, name: str, actor: str) -> None:
        self.schedule(name)
        if self.store.schedule_sources().get(name) == "config":
            raise ScheduleError(
                Text(
                    f"`{name}` is defined in stopbot.yaml: remove it there (it would come back at "
                    "the next start otherwise)."
                )
            )
        self.store.delete_schedule(name, actor)

    def next_fire(self, schedule: ScheduleConfig, after: dt.datetime | None = None) -> dt.datetime:
        return next_fire(cron_trigger(schedule.cron, schedule.timezone), after or self.clock())

    def next_start_fire(
        self, schedule: ScheduleConfig, after: dt.datetime | None = None
    ) -> dt.datetime | None:
        """The next fire of the schedule's morning start (``start_cron``), if it has one."""
        if schedule.start_cron is None:
            return None
        return next_fire(
            cron_trigger(schedule.start_cron, schedule.timezone), after or self.clock()
        )

    def next_any_fire(
        self, schedule: ScheduleConfig, after: dt.datetime | None = None
    ) -> dt.datetime:
        """The next fire, a stop's or a start's."""
        fire = self.next_fire(schedule, after)
        start = self.next_start_fire(schedule, after)
        return min(fire, start) if start is not None else fire

    def upcoming(self, schedule: ScheduleConfig) -> dt.datetime:
        """The next time it will actually run: snoozes and skips taken into account."""
        return self.next_run(schedule)[1]

    def next_run(
        self, schedule: ScheduleConfig, *, counting_skips: bool = True
    ) -> tuple[dt.datetime, dt.datetime]:
        """The next run as (the fire it is for, when it happens): the earlier of the next
        regular fire (past holidays, snoozed fires and, ``counting_skips``, skipped ones)
        and the next snoozed run."""
        now = self.clock()
        skipped = self.store.skips(schedule.name) if counting_skips else {}
        snoozes = self.store.snoozes(schedule.name)
        fire = self.next_any_fire(schedule)
        while fire in skipped or fire in snoozes or self.holiday(schedule, fire):
            fire = self.next_any_fire(schedule, fire)
        found = (fire, fire)
        for snoozed, (until, started) in snoozes.items():
            if not started and now < until < found[1]:
                found = (snoozed, until)
        return found

    def selected(self, schedule: ScheduleConfig) -> list[Resource]:
        resources = self.config.all_resources()
        if schedule.select.environment is not None:
            # Its members in stop order; none when it is gone from the configuration.
            tiers = self.config.environments.get(schedule.select.environment, [])
            wanted = [m for tier in tiers for members in tier.values() for m in members]
        elif schedule.select.resources is not None:
            wanted = schedule.select.resources
        else:
            return [r for r in resources if schedule.select.matches(r)]
        by_name = {r.name: r for r in resources}
        return [by_name[name] for name in wanted if name in by_name]

    def next_stop_of(self, resource: str, after: dt.datetime) -> dt.datetime | None:
        """The next regular fire after ``after`` of a schedule that stops ``resource``
        (holidays passed over), if one does: a lease kept "until tomorrow's run" ends then."""
        fires = []
        for schedule in self.schedules().values():
            if resource not in {r.name for r in self.selected(schedule)}:
                continue
            fire = self.next_fire(schedule, after)
            for _ in range(366):
                if not self.holiday(schedule, fire):
                    fires.append(fire)
                    break
                fire = self.next_fire(schedule, fire)
        return min(fires, default=None)

    def plan_for(
        self, schedule: ScheduleConfig, fire: dt.datetime, at: dt.datetime | None = None
    ) -> list[PlanItem]:
        """What the run of ``fire`` would do: start (a morning start's fire) or stop."""
        if is_start_fire(schedule, fire):
            return self.start_plan(schedule, at)
        return self.plan(schedule, at)

    def start_plan(self, schedule: ScheduleConfig, at: dt.datetime | None = None) -> list[PlanItem]:
        """What a morning start would start: what the schedule's latest stop run stopped
        (not what a person stopped by hand since, nor what it found stopped already),
        less what is opted out or under someone's Stopbot lock now."""
        at = at or self.clock()
        stopped: list[str] = []
        for run in self.store.runs(schedule=schedule.name, limit=20):
            if starts(run) or run.status not in {"done", "missed"} or run.fire_time > at:
                continue
            stopped = self.store.run_names(run.id, Outcome.STOPPED)
            break
        resources = {r.name: r for r in self.config.all_resources()}
        locks = {lock.resource: lock for lock in self.store.active_locks()}
        items = []
        for name in stopped:
            r = resources.get(name)
            if r is None:
                continue
            item = PlanItem(resource=r.name, provider=r.provider, stop=True, action="start")
            lock = locks.get(r.name)
            if r.tags.get(self.settings.opt_out_tag, "").lower() in {"true", "yes", "1"}:
                item.stop, item.outcome = False, Outcome.OPTED_OUT
                item.detail = say("tagged {}", self.settings.opt_out_tag)
            elif lock is not None and not lock.is_expired(at):
                item.stop, item.outcome = False, Outcome.LOCKED
                why = f": {lock.reason}" if lock.reason else ""
                item.detail = say("locked by {}{}", Person(lock.owner), why)
            items.append(item)
        return items

    def plan(self, schedule: ScheduleConfig, at: dt.datetime | None = None) -> list[PlanItem]:
        """What a run would do, from what the bot knows without calling any provider:
        opt-out tags, Keep exceptions, Stopbot locks. Provider locks and statuses are
        read at run time (and by :meth:`read_plan`, for a dry run)."""
        at = at or self.clock()
        kept = {e.resource: e for e in self.store.active_exceptions(schedule.name)}
        leased = {
            lease.resource: lease
            for lease in (self.leases.running() if self.leases is not None else [])
            if lease.ends_at > at
        }
        locks = {
            lock.resource: lock for lock in self.store.active_locks()
        }  # one read, not one each
        items = []
        for r in self.selected(schedule):
            item = PlanItem(resource=r.name, provider=r.provider, stop=True)
            lock = locks.get(r.name)
            if r.tags.get(self.settings.opt_out_tag, "").lower() in {"true", "yes", "1"}:
                item.stop, item.outcome = False, Outcome.OPTED_OUT
                item.detail = say("tagged {}", self.settings.opt_out_tag)
            elif r.name in kept and kept[r.name].until > at:
                e = kept[r.name]
                item.stop, item.outcome = False, Outcome.KEPT
                item.detail = say(
                    "kept by {} for {}", Person(e.created_by), format_duration(e.until - at)
                )
            elif r.name in leased:
                lease = leased[r.name]
                item.stop, item.outcome = False, Outcome.LEASED
                item.detail = say(
                    "woken by {} for {} more",
                    Person(lease.owner),
                    format_duration(lease.ends_at - at),
                )
            elif lock is not None and not lock.is_expired(at):
                item.stop, item.outcome = False, Outcome.LOCKED
                why = f": {lock.reason}" if lock.reason else ""
                item.detail = say("locked by {}{}", Person(lock.owner), why)
            items.append(item)
        return items

    async def read_plan(
        self, schedule: ScheduleConfig, *, started_by: str | None = None
    ) -> list[PlanItem]:
        """What a run started now would do, from reads only (no stop call): :meth:`plan`,
        then, for each resource it would stop, its status and provider lock (one bulk read
        per provider, all at once, bounded in time) judged as a run judges them: the lock
        rule for the run's actor (the schedule, or ``started_by`` for a manual run), then
        already stopped. A resource whose read failed is unknown, and says why."""
        now = self.clock()
        actor = self.actor(schedule, started_by)
        is_admin = self.service.policy.is_admin(actor.id)

        def planned() -> tuple[list[PlanItem], list[Resource]]:
            items = self.plan(schedule, now)
            selected = {r.name: r for r in self.selected(schedule)}
            return items, [selected[i.resource] for i in items if i.stop]

        def judge(items: list[PlanItem], readings: dict[str, reads.Reading]) -> None:
            # Stopbot's locks in one read (not one per resource: a round trip each on
            # PostgreSQL).
            locks = {lock.resource: lock for lock in self.store.active_locks()}
            for item in items:
                reading = readings.get(item.resource)
                if reading is None:
                    continue
                verdict = check_locks(
                    actor,
                    item.resource,
                    item.provider,
                    reading.lock,
                    locks.get(item.resource),
                    is_admin=is_admin,
                    now=now,
                )
                if verdict.blocked:
                    item.stop, item.outcome = False, Outcome.LOCKED
                    item.detail = _without_subject(verdict.reason or Text(), item.resource)
                elif reading.status is not None and reading.status.phase == Phase.STOPPED:
                    item.stop, item.outcome = False, Outcome.ALREADY
                    item.detail = Text(reading.status.state)
                elif reading.status_error is not None or reading.lock_error is not None:
                    item.stop, item.outcome, item.detail = False, Outcome.UNKNOWN, _unread(reading)

        # In a thread, with the store's reads: for a schedule of 10,000 resources, some
        # 300 ms of building them and their items, which on the loop held every Slack ack
        # meanwhile (in a thread, the loop gets the GIL back every few milliseconds).
        items, stopping = await asyncio.to_thread(planned)
        await asyncio.to_thread(judge, items, await reads.read(self.service.providers, stopping))
        return items

    def holiday(self, schedule: ScheduleConfig, fire: dt.datetime) -> str | None:
        """The calendar in ``skip_on`` that makes ``fire`` a holiday, if one does."""
        local = fire.astimezone(ZoneInfo(schedule.timezone)).date()
        for name in schedule.skip_on:
            if local in self.config.calendars.get(name, []):
                return name
        return None

    def actor(self, schedule: ScheduleConfig, started_by: str | None) -> Actor:
        """Who asks for a run's stops: the schedule, or the person who started it."""
        if started_by:
            return self.config.actor(started_by)
        return Actor(id=f"schedule:{schedule.name}")


def is_start_fire(schedule: ScheduleConfig, fire: dt.datetime) -> bool:
    """Whether ``fire`` is one of the schedule's morning start fires (not a stop fire)."""
    if schedule.start_cron is None:
        return False
    trigger = cron_trigger(schedule.start_cron, schedule.timezone)
    return next_fire(trigger, fire - dt.timedelta(seconds=1)) == fire and (
        next_fire(cron_trigger(schedule.cron, schedule.timezone), fire - dt.timedelta(seconds=1))
        != fire
    )


def _unread(reading: reads.Reading) -> Text:
    """What could not be read of a resource, and why, once when one failure cost both."""
    status, lock = reading.status_error, reading.lock_error
    if status is not None and status == lock:
        return say("status and provider lock unknown: {}", status)
    parts = [say("status unknown: {}", status)] if status is not None else []
    parts += [say("provider lock unknown: {}", lock)] if lock is not None else []
    return Text("; ").join(parts)


def _without_subject(reason: Text, name: str) -> Text:
    """A lock rule's sentence about ``name`` without "<name> is " (shown under its name)."""
    subject = f"{name} is "
    first = reason.parts[0] if reason.parts else None
    if isinstance(first, str) and first.startswith(subject):
        return Text(first.removeprefix(subject), *reason.parts[1:])
    return reason
