"""Scheduled stops: cron fires in their time zone, warnings, skips and snoozes, runs, drift.

The engine is driven by :meth:`ScheduleEngine.tick`, which does whatever is due at the
clock's ``now`` and is safe to call at any time and any number of times: every fire is
recorded once in the store (``schedule_runs`` is unique per schedule and fire time), so a
restart, a second process or an early tick never runs a schedule twice. APScheduler wakes
the engine at each cron fire and every half minute (see :class:`ScheduleRunner`); tests
call ``tick`` with a moved clock instead of waiting.

Skips and snoozes act on one fire each, named by the button that was pressed: a second
click finds that fire skipped (or snoozed to the same time) and changes nothing, and a
click after the fire's run started changes nothing either. A snooze moves only the fire
it was pressed for; the regular fires after it keep happening, with their warnings.
Whatever starts late, a regular fire, a snoozed run or a run resumed after a restart,
starts only within ``grace_time``, else it is recorded as missed and announced.

Nothing here knows about Slack: a :class:`ScheduleNotifier` shows what happens. Who may
ask for what is :mod:`bot.schedules.rights`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import BaseModel, Field

from bot import reads
from bot.config import ScheduleConfig, StopbotConfig
from bot.cron import cron_trigger, next_fire
from bot.durations import format_duration
from bot.locks import check_locks
from bot.models import Actor, Operation, OpState, Owed, RunItem, ScheduleRun, Transition
from bot.run_pace import RunPace
from bot.store import Store
from bot.text import Command, Person, Text, TextError, say
from bot.workflow import INTERRUPTED_PREPARING, Preview, StopService
from providers.base import Phase, Resource, ResourceStatus

__all__ = [
    "Change",
    "Outcome",
    "PlanItem",
    "RunReport",
    "ScheduleEngine",
    "ScheduleError",
    "ScheduleNotifier",
    "ScheduleRunner",
]

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Sleep = Callable[[float], Awaitable[None]]


MAX_SNOOZE = dt.timedelta(days=7)
"""The most a snooze moves a run: more is a skip, which says so."""


class ScheduleError(TextError):
    """A schedule request that cannot be done; the message is for the user."""


class Outcome:
    """What became of one resource in a run."""

    STOPPED = "stopped"
    ALREADY = "already stopped"
    LOCKED = "skipped: locked"
    KEPT = "skipped: kept"
    OPTED_OUT = "skipped: opted out"
    AWAITING_APPROVAL = "awaiting approval"
    REFUSED = "refused"
    MISSED = "missed"
    FAILED = "failed"
    UNKNOWN = "unknown"  # a dry run's: its status or lock could not be read

    SKIPPED = frozenset({LOCKED, KEPT, OPTED_OUT})
    # Outcomes whose detail says why, in the summary.
    EXPLAINED = SKIPPED | {REFUSED, MISSED, FAILED}


# States in which the provider has a stop: following it holds no place in a run's window.
_SENT = frozenset({OpState.ACCEPTED, OpState.IN_PROGRESS})

# How the workflow words a failure after which the stop may have gone out (a timeout of
# the stop call, a restart around it): trying again could stop twice.
_UNCERTAIN = ("may or may not have been taken", "the status is unknown")


class PlanItem(BaseModel):
    resource: str
    provider: str
    stop: bool
    outcome: str | None = None
    detail: Text | None = None


class Change(BaseModel):
    """What a skip or a snooze did to one fire."""

    fire: dt.datetime
    at: dt.datetime | None = Field(default=None, description="When its run happens now.")
    by: str | None = Field(default=None, description="Who skipped or snoozed it.")
    repeat: bool = Field(default=False, description="It was so already: nothing changed.")


class RunReport(BaseModel):
    """A run as its summary shows it."""

    run: ScheduleRun
    schedule: ScheduleConfig
    items: list[RunItem]
    elapsed: dt.timedelta

    @property
    def finished(self) -> bool:
        return self.run.status != "running"

    def by_outcome(self) -> dict[str, list[RunItem]]:
        groups: dict[str, list[RunItem]] = {}
        for item in self.items:
            groups.setdefault(item.outcome or "in progress", []).append(item)
        return groups


class ScheduleNotifier(Protocol):
    """A face that shows what schedules do (a Slack channel, a log). Each call is a
    delivery from the outbox: False means it could not be shown and is tried again later
    (anything else: done)."""

    async def warn(
        self, schedule: ScheduleConfig, at: dt.datetime, plan: list[PlanItem], *, fire: dt.datetime
    ) -> bool:
        """Show that ``schedule`` runs at ``at`` (for its ``fire``, which Skip and Snooze
        act on)."""
        ...

    async def announce(
        self, schedule: ScheduleConfig, fire: dt.datetime, text: Text
    ) -> bool | None: ...

    async def summary(self, report: RunReport) -> bool | None: ...

    async def drift(
        self, schedule: ScheduleConfig, run: ScheduleRun, resource: str, status: ResourceStatus
    ) -> bool | None: ...


# The outbox kinds of what schedules owe their face.
WARNING = "schedule-warning"
ANNOUNCEMENT = "schedule-announcement"
SUMMARY = "schedule-summary"
DRIFT = "schedule-drift"


class _ItemListener:
    """Keeps a run's summary current while one of its stops progresses, and tells when the
    provider has the stop (``sent``): it then holds no place in the window of stops being
    sent."""

    def __init__(self, engine: ScheduleEngine, run_id: str, resource: str) -> None:
        self.engine, self.run_id, self.resource = engine, run_id, resource
        self.sent = asyncio.Event()
        self._shown: str | None = None

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None:
        if op.state in _SENT or op.state.final:
            self.sent.set()
        shown = op.provider_state or op.state.value.replace("_", " ")
        if not op.state.final and shown != self._shown:
            # Only a change is written: a night of thousands of stops polls them all each
            # round, and the store's writes are most of a run's own work.
            self._shown = shown
            detail = Text(shown)
            self.engine.store.record_item(self.run_id, self.resource, None, detail, op.id)
            self.engine.publish_soon(self.run_id)


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
        self.settings = config.scheduling
        self.store = store
        self.service = service
        self.clock = clock or service.clock
        self.sleep = sleep or service.sleep
        self.registry = service.registry
        self.outbox = service.outbox
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._summary_owed: set[str] = set()
        self._tick_lock = asyncio.Lock()
        self._notifier = notifier
        if notifier is not None:
            self.notify_with(notifier)
        self.registry.sweeps.append(self.sweep)

    def notify_with(self, notifier: ScheduleNotifier) -> None:
        """Show what schedules do through ``notifier`` (until then it stays owed, for a
        process whose face shows it)."""
        self._notifier = notifier
        self.outbox.handle(WARNING, self._deliver_warning)
        self.outbox.handle(ANNOUNCEMENT, self._deliver_announcement)
        self.outbox.handle(
            SUMMARY, self._deliver_summary, interval=self.settings.summary_interval.total_seconds()
        )
        self.outbox.handle(DRIFT, self._deliver_drift)

    @property
    def notifier(self) -> ScheduleNotifier:
        """The face's notifier (the outbox delivers a schedule's messages only with one)."""
        assert self._notifier is not None
        return self._notifier

    # -- definitions ------------------------------------------------------------------

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
        fire = self.next_fire(schedule)
        while fire in skipped or fire in snoozes or self._holiday(schedule, fire):
            fire = self.next_fire(schedule, fire)
        found = (fire, fire)
        for snoozed, (until, started) in snoozes.items():
            if not started and now < until < found[1]:
                found = (snoozed, until)
        return found

    # -- what a run would do -----------------------------------------------------------

    def selected(self, schedule: ScheduleConfig) -> list[Resource]:
        resources = self.config.all_resources()
        if schedule.select.resources is not None:
            wanted = schedule.select.resources
            return [r for name in wanted for r in resources if r.name == name]
        tags = schedule.select.tags or {}
        return [r for r in resources if all(r.tags.get(k) == v for k, v in tags.items())]

    def plan(self, schedule: ScheduleConfig, at: dt.datetime | None = None) -> list[PlanItem]:
        """What a run would do, from what the bot knows without calling any provider:
        opt-out tags, Keep exceptions, Stopbot locks. Provider locks and statuses are
        read at run time (and by :meth:`read_plan`, for a dry run)."""
        at = at or self.clock()
        kept = {e.resource: e for e in self.store.active_exceptions(schedule.name)}
        items = []
        for r in self.selected(schedule):
            item = PlanItem(resource=r.name, provider=r.provider, stop=True)
            lock = self.store.get_lock(r.name)
            if r.tags.get(self.settings.opt_out_tag, "").lower() in {"true", "yes", "1"}:
                item.stop, item.outcome = False, Outcome.OPTED_OUT
                item.detail = say("tagged {}", self.settings.opt_out_tag)
            elif r.name in kept and kept[r.name].until > at:
                e = kept[r.name]
                item.stop, item.outcome = False, Outcome.KEPT
                item.detail = say(
                    "kept by {} for {}", Person(e.created_by), format_duration(e.until - at)
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
        items = self.plan(schedule, now)
        actor = self._actor(schedule, started_by)
        is_admin = self.service.policy.is_admin(actor.id)
        selected = {r.name: r for r in self.selected(schedule)}
        readings = await reads.read(
            self.service.providers, [selected[i.resource] for i in items if i.stop]
        )
        for item in items:
            reading = readings.get(item.resource)
            if reading is None:
                continue
            verdict = check_locks(
                actor,
                item.resource,
                item.provider,
                reading.lock,
                self.store.get_lock(item.resource),
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
        return items

    # -- the clock --------------------------------------------------------------------

    def _holiday(self, schedule: ScheduleConfig, fire: dt.datetime) -> str | None:
        local = fire.astimezone(ZoneInfo(schedule.timezone)).date()
        for name in schedule.skip_on:
            if local in self.config.calendars.get(name, []):
                return name
        return None

    async def tick(self) -> None:
        """Do everything that is due now. Idempotent."""
        async with self._tick_lock:
            now = self.clock()
            for schedule in self.schedules().values():
                try:
                    await self._tick_one(schedule, now)
                except Exception:
                    log.exception("schedule %s: tick failed", schedule.name)

    async def _tick_one(self, schedule: ScheduleConfig, now: dt.datetime) -> None:
        state = self.store.schedule_state(schedule.name)
        if state.checked_through is None:
            # A new schedule starts from now: fires before it existed are not "missed".
            self.store.update_schedule_state(schedule.name, checked_through=now)
            state.checked_through = now
        missed: list[ScheduleRun] = []
        fire = self.next_fire(schedule, state.checked_through)
        while fire <= now:
            await self._due(schedule, fire, now, missed)
            fire = self.next_fire(schedule, fire)
        await self._report_missed(schedule, missed, now)
        await self._snoozes_due(schedule, now)
        await self._warn_if_due(schedule, now)
        self.store.update_schedule_state(schedule.name, checked_through=now)
        await self._watch_drift(schedule, now)

    async def _due(
        self,
        schedule: ScheduleConfig,
        fire: dt.datetime,
        now: dt.datetime,
        missed: list[ScheduleRun],
    ) -> None:
        """Handle one regular fire. Missed ones are added to ``missed``, announced together
        with their neighbours (after a long downtime they are hundreds), and before
        anything else is said, so the channel reads in order."""
        holiday = self._holiday(schedule, fire)
        skipped_by = self.store.skips(schedule.name).get(fire)
        if holiday or skipped_by:
            await self._report_missed(schedule, missed, now)
            await self._skip(
                schedule,
                fire,
                say("{} holiday", holiday)
                if holiday
                else say("skipped by {}", Person(str(skipped_by))),
            )
        elif fire in self.store.snoozes(schedule.name):
            return  # it runs at its snooze time
        elif now - fire > self.settings.grace_time:
            run = self._record_missed(schedule, fire, "cron")
            if run is not None:
                missed.append(run)
        else:
            await self._report_missed(schedule, missed, now)
            await self._start(schedule, fire, "cron", now)

    def _record_missed(
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

    def _announce(
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

    async def _report_missed(
        self, schedule: ScheduleConfig, runs: list[ScheduleRun], now: dt.datetime
    ) -> None:
        """One message for consecutive missed fires (then forgets them)."""
        if not runs:
            return
        fires = [r.fire_time for r in runs]
        ids = [r.id for r in runs]
        runs.clear()
        first, last, count = fires[0], fires[-1], len(fires)
        grace = format_duration(self.settings.grace_time)
        if count == 1:
            what = (
                f"Missed the {schedule.name} run due {_local(schedule, first)}: Stopbot was "
                f"not running, and {format_duration(now - first)} is past the grace time "
                f"of {grace}."
            )
        else:
            what = (
                f"Missed {count} {schedule.name} runs, due from {_local(schedule, first)} to "
                f"{_local(schedule, last)}: Stopbot was not running, and even the last is "
                f"{format_duration(now - last)} late, past the grace time of {grace}."
            )
        self._announce(
            schedule,
            first,
            say(
                "{} Nothing was stopped; run it now with {}.",
                what,
                Command("schedule run", schedule.name),
            ),
            ids,
        )

    async def _snoozes_due(self, schedule: ScheduleConfig, now: dt.datetime) -> None:
        """Start the snoozed runs whose time has come, within the grace time."""
        snoozes = self.store.snoozes(schedule.name)
        for fire, (until, started) in sorted(snoozes.items(), key=lambda s: s[1][0]):
            if started or until > now:
                continue
            # The run is recorded before the snooze is marked started: a crash between the
            # two finds the run recorded, and does not start it twice.
            if now - until > self.settings.grace_time:
                run = self._record_missed(schedule, until, "snooze")
                self.store.start_snooze(schedule.name, fire)
                if run is not None:
                    await self._report_missed(schedule, [run], now)
            else:
                await self._start(schedule, until, "snooze", now)
                self.store.start_snooze(schedule.name, fire)

    async def _skip(self, schedule: ScheduleConfig, fire: dt.datetime, why: Text) -> None:
        run = self.store.create_run(
            schedule.name,
            fire,
            kind="cron",
            status="skipped",
            reason=why,
            owner=self.registry.id,
        )
        if run is not None:
            self._announce(schedule, fire, self._skipped_text(schedule, fire, why), [run.id])

    def _skipped_text(self, schedule: ScheduleConfig, fire: dt.datetime, why: Text) -> Text:
        return say(
            "The {} run due {} is skipped ({}). Next run: {}.",
            schedule.name,
            _local(schedule, fire),
            why,
            _local(schedule, self.upcoming(schedule)),
        )

    async def _warn_if_due(self, schedule: ScheduleConfig, now: dt.datetime) -> None:
        fire, at = self.next_run(schedule)
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

    async def _deliver_warning(self, owed: Owed) -> bool:
        schedule = ScheduleConfig.model_validate(owed.payload["schedule"])
        at = dt.datetime.fromisoformat(owed.payload["at"])
        if self.clock() >= at:
            log.warning(
                "schedule warning not shown before its run", extra={"schedule": schedule.name}
            )
            return True
        fire = dt.datetime.fromisoformat(owed.payload["fire"])
        return await self.notifier.warn(schedule, at, self.plan(schedule, at), fire=fire)

    async def _deliver_announcement(self, owed: Owed) -> bool:
        schedule = ScheduleConfig.model_validate(owed.payload["schedule"])
        fire = dt.datetime.fromisoformat(owed.payload["fire"])
        text = Text.coerce(owed.payload["text"])
        return await self.notifier.announce(schedule, fire, text) is not False

    # -- commands from the faces -------------------------------------------------------

    def skip(self, name: str, actor: str, fire: dt.datetime | None = None) -> Change:
        """Skip ``fire`` (a button names the one it was shown for), else the next run.

        Skipping it again changes nothing (``repeat``); once its run has started, raises
        ScheduleError and changes nothing.
        """
        schedule = self.schedule(name)
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
        schedule = self.schedule(name)
        fire = self._fire(schedule, fire)
        run = self.store.run_at(name, fire)
        skipped = (run is not None and run.status == "skipped") or fire in self.store.skips(name)
        if skipped or self._holiday(schedule, fire):
            raise ScheduleError(
                Text(
                    f"The `{name}` run due {_local(schedule, fire)} is skipped: there is nothing "
                    "to snooze."
                )
            )
        self._refuse_if_started(schedule, fire, run)
        until = fire + duration
        now = self.clock()
        if until <= now:
            raise ScheduleError(
                Text(
                    f"{_local(schedule, until)} has passed: snooze `{name}` by more than "
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
            return self.next_run(schedule)[0]
        if self.next_fire(schedule, fire - dt.timedelta(microseconds=1)) != fire:
            raise ScheduleError(
                Text(
                    f"`{schedule.name}` no longer runs at {_local(schedule, fire)} (it was changed "
                    "since): nothing was changed."
                )
            )
        return fire

    def _refuse_if_started(
        self, schedule: ScheduleConfig, fire: dt.datetime, run: ScheduleRun | None
    ) -> None:
        """Raise ScheduleError when ``fire`` can no longer be skipped or snoozed."""
        due = f"The `{schedule.name}` run due {_local(schedule, fire)}"
        if run is not None:
            verb = "was missed" if run.status == "missed" else "has already started"
            raise ScheduleError(Text(f"{due} {verb}: nothing was changed."))
        snooze = self.store.snoozes(schedule.name).get(fire)
        if snooze is not None and snooze[1]:
            raise ScheduleError(
                Text(
                    f"{due}, snoozed to {_local(schedule, snooze[0])}, has already started: "
                    "nothing was changed."
                )
            )
        checked = self.store.schedule_state(schedule.name).checked_through
        if snooze is None and checked is not None and fire <= checked:
            raise ScheduleError(Text(f"{due} has passed: nothing was changed."))

    def keep(self, name: str, resource: str, until: dt.datetime, actor: str) -> None:
        schedule = self.schedule(name)
        if resource not in {r.name for r in self.selected(schedule)}:
            raise ScheduleError(Text(f"{resource} is not stopped by `{name}`."))
        self.store.add_exception(name, resource, until, actor)

    async def run_now(self, name: str, actor: str) -> ScheduleRun:
        """A manual run, after the user confirmed it."""
        schedule = self.schedule(name)
        now = self.clock()
        run = await self._start(schedule, now, "manual", now, started_by=actor)
        if run is None:
            raise ScheduleError(Text(f"`{name}` is running already."))
        return run

    # -- a run ------------------------------------------------------------------------

    async def _start(
        self,
        schedule: ScheduleConfig,
        fire: dt.datetime,
        kind: str,
        now: dt.datetime,
        *,
        started_by: str | None = None,
    ) -> ScheduleRun | None:
        run = self.store.create_run(
            schedule.name,
            fire,
            kind=kind,
            channel=schedule.channel,
            reason=say("started by {}", Person(started_by)) if started_by else None,
            started_by=started_by,
            owner=self.registry.id,
        )
        if run is None:
            return None  # this fire was handled already
        for item in self.plan(schedule, now):
            self.store.record_item(run.id, item.resource, item.outcome, item.detail)
        self._spawn(run, schedule=schedule)
        return run

    def _spawn(
        self,
        run: ScheduleRun,
        late: str | None = None,
        *,
        schedule: ScheduleConfig | None = None,
    ) -> None:
        task = asyncio.create_task(
            self._execute(run.id, late, schedule), name=f"schedule-run-{run.id}"
        )
        self._runs[run.id] = task
        task.add_done_callback(lambda _: self._runs.pop(run.id, None))

    def resume(self) -> int:
        """Take over the runs that processes now dead were executing; returns how many.

        Within the grace time of when that process last ticked (about when it stopped),
        a run goes on as it would have. Later, only what it had already sent to a provider
        is followed to its end; the rest is recorded as missed, and announced.
        """
        count = 0
        now = self.clock()
        live = self.registry.live()
        for run in self.store.running_runs():
            if run.id in self._runs or not self.registry.orphaned(run.owner, live):
                continue
            if self.registry.take("schedule_runs", run.id, run.owner):
                self._spawn(run, self._lateness(run, now))
                count += 1
        return count

    async def sweep(self) -> None:
        """What dead processes left: their runs, and skipped or missed runs they recorded
        but did not live to announce."""
        self.resume()
        async with self._tick_lock:  # this process's own tick announces its own
            live = self.registry.live()
            now = self.clock()
            missed: dict[str, list[ScheduleRun]] = {}
            for run in self.store.unannounced_runs():
                schedule = self.schedules().get(run.schedule)
                if not self.registry.orphaned(run.owner, live):
                    continue
                if schedule is None:
                    self.store.announce_runs([run.id], None)
                elif run.status == "missed":
                    missed.setdefault(run.schedule, []).append(run)
                else:
                    why = run.reason or Text("skipped")
                    text = self._skipped_text(schedule, run.fire_time, why)
                    self._announce(schedule, run.fire_time, text, [run.id])
            for name, runs in missed.items():
                await self._report_missed(self.schedule(name), runs, now)

    def _lateness(self, run: ScheduleRun, now: dt.datetime) -> str | None:
        """Why ``run``, resumed at ``now``, is too late to start more stops; None if it is
        not."""
        checked = self.store.schedule_state(run.schedule).checked_through
        since = max(run.fire_time, checked or run.fire_time)
        if now - since <= self.settings.grace_time:
            return None
        return (
            f"Stopbot was down for {format_duration(now - since)}, past the grace time of "
            f"{format_duration(self.settings.grace_time)}"
        )

    async def cancel(self) -> None:
        """Stop working on runs (they stay running in the store; the next start resumes)."""
        for task in self._runs.values():
            task.cancel()
        await asyncio.gather(*self._runs.values(), return_exceptions=True)

    async def wait(self) -> None:
        """Until every run this engine started has finished and what it owes is delivered
        (tests, shutdown)."""
        while self._runs:
            await asyncio.gather(*list(self._runs.values()), return_exceptions=True)
        await self.outbox.flush()

    async def _execute(
        self, run_id: str, late: str | None = None, started: ScheduleConfig | None = None
    ) -> None:
        """Stop what the run selected, each resource on its own: one that raises is
        recorded as failed and the others go on; the run always ends with its summary
        (unless this process is shutting down: the next one resumes it). ``started``, the
        definition the run started with, still shows its summary if it is removed."""
        run = self.store.run(run_id)
        if run is None:
            return
        schedule = self.schedules().get(run.schedule) or started
        if schedule is None:
            self.store.finish_run(run_id, "done", owner=self.registry.id)
            return
        pending = [i for i in self.store.run_items(run_id) if i.outcome is None]
        resources = {r.name: r for r in self.config.all_resources()}
        selected = [resources[i.resource] for i in pending if i.resource in resources]
        pace = RunPace(self.config, self.service.providers, selected, self.clock)

        async def one(item: RunItem) -> None:
            try:
                resource = resources.get(item.resource)
                if resource is None:
                    self.store.record_item(
                        run_id,
                        item.resource,
                        Outcome.FAILED,
                        Text("no longer in the configuration"),
                    )
                    return
                async with pace.in_progress(resource.provider):
                    await self._stop_one(run, schedule, resource, late, pace)
            except Exception as exc:
                reference = uuid.uuid4().hex[:8]
                log.exception(
                    "scheduled stop failed",
                    extra={"run": run_id, "resource": item.resource, "reference": reference},
                )
                self.store.record_item(
                    run_id,
                    item.resource,
                    Outcome.FAILED,
                    say(
                        "unexpected error ({}); Stopbot's log has the details under reference {}",
                        type(exc).__name__,
                        reference,
                    ),
                )
            self.publish_soon(run_id)

        try:
            self.publish(run_id, schedule)
            await asyncio.gather(*(one(i) for i in pending), return_exceptions=True)
        except Exception:
            log.exception("scheduled run failed", extra={"run": run_id})
        await self._finish(run, schedule, late)

    async def _finish(self, run: ScheduleRun, schedule: ScheduleConfig, late: str | None) -> None:
        left = [i.resource for i in self.store.run_items(run.id) if i.outcome == Outcome.MISSED]
        finished = self.store.finish_run(
            run.id,
            "missed" if left else "done",
            owner=self.registry.id,
            owe=self._summary(run.id, schedule, urgent=True),
        )
        self.outbox.kick()
        if finished and left and late is not None:
            self._announce(
                schedule,
                run.fire_time,
                say(
                    "The {} run due {} was cut by a restart, and {}: {} resource(s) it had "
                    "not stopped yet were not stopped. Run it now with {}.",
                    schedule.name,
                    _local(schedule, run.fire_time),
                    late,
                    len(left),
                    Command("schedule run", schedule.name),
                ),
                [],
            )

    async def _stop_one(
        self,
        run: ScheduleRun,
        schedule: ScheduleConfig,
        resource: Resource,
        late: str | None,
        pace: RunPace,
    ) -> None:
        """One resource of a run, tried again after a failure ``retries`` times, except
        when the stop may have gone out (it could stop twice) or the run is ``late``. A
        preparation a restart cut short is no failure: it is simply tried again.

        The first try uses the run's bulk read of the resource; a try holds its place in
        the provider's window of stops being sent until the provider accepts the stop (or
        the try ends), then follows it with no place held."""
        actor = self._actor_of(run, schedule)
        failures = 0
        for attempt in itertools.count():
            key = f"schedule:{run.id}:{resource.name}:{attempt}"
            if late is not None and not self._sent(key, actor):
                self.store.record_item(
                    run.id, resource.name, Outcome.MISSED, say("not stopped: {}", late)
                )
                return
            prior = await pace.prior(resource) if attempt == 0 else None
            listener = _ItemListener(self, run.id, resource.name)
            async with pace.sending(resource.provider):
                async with pace.previewing(resource.provider):
                    preview = await self.service.prepare(
                        resource.name,
                        actor,
                        source="schedule",
                        reason=f"schedule {schedule.name}",
                        force=schedule.force,
                        channel=schedule.channel,
                        idempotency_key=key,
                        prior=prior,
                    )
                driving = asyncio.create_task(
                    self._drive(preview, run, schedule, resource, actor, listener),
                    name=f"schedule-stop-{run.id}-{resource.name}",
                )
                try:
                    await _until_sent(listener, driving)
                except asyncio.CancelledError:
                    driving.cancel()
                    raise
            try:
                op = await driving
            except asyncio.CancelledError:
                driving.cancel()
                raise
            if op.state == OpState.FAILED and op.detail == INTERRUPTED_PREPARING:
                continue
            outcome, detail = self._outcome(op, preview)
            uncertain = any(words in str(op.detail or "") for words in _UNCERTAIN)
            if outcome != Outcome.FAILED or failures == schedule.retries or late or uncertain:
                self.store.record_item(run.id, resource.name, outcome, detail, op.id)
                return
            failures += 1
            self.store.record_item(
                run.id, resource.name, None, say("failed, trying again: {}", op.detail or ""), op.id
            )
            self.publish_soon(run.id)
            await self.sleep(self.settings.retry_delay.total_seconds())

    def _actor_of(self, run: ScheduleRun, schedule: ScheduleConfig) -> Actor:
        """Who asks for a run's stops: the schedule, or for a manual run the person who
        started it, so that its stops are theirs as a `/stop` would be (approval by
        someone else, the audit log)."""
        return self._actor(schedule, run.started_by if run.kind == "manual" else None)

    def _actor(self, schedule: ScheduleConfig, started_by: str | None) -> Actor:
        if started_by:
            return self.config.actor(started_by)
        return Actor(id=f"schedule:{schedule.name}")

    async def _drive(
        self,
        preview: Preview,
        run: ScheduleRun,
        schedule: ScheduleConfig,
        resource: Resource,
        actor: Actor,
        listener: _ItemListener,
    ) -> Operation:
        """Take an operation from wherever it is (new, or found again after a restart)
        to its end."""
        op = preview.operation
        prepared: Preview | None = None
        if op.state == OpState.REQUESTED:
            # prepare() waits for a preparation going on in this process, and prepares
            # again one whose process died: one left REQUESTED is another live process's.
            op = await self.service.until_decided(op.id)
        if op.state == OpState.AWAITING_CONFIRMATION:
            # A person's run goes through approval as their /stop would; a timed one as
            # the schedule says.
            needs = schedule.approval or run.kind == "manual"
            result = self.service.confirm(op.id, actor, require_approval=needs)
            if result.operation is None:
                return self.store.get_operation(op.id) or op
            op = result.operation
            if not result.needs_approval:  # (the request to approvers is owed by confirm)
                prepared = preview  # submitted at once: its lock read is still fresh
        if op.state == OpState.SUBMITTING and op.id not in self.service.in_flight():
            return await self.service.drive(op.id, listener, actor, prepared=prepared)
        return await self.service.until_final(op.id, listener)

    def _sent(self, key: str, actor: Actor) -> bool:
        """Whether the stop recorded under ``key`` went (or may have gone) to the provider.
        One that never got that far is ended: a late run does not start it."""
        op = self.store.operation_for_key(key)
        if op is None:
            return False
        if op.state == OpState.REQUESTED:
            self.service.end_unprepared(op)
            return False
        if op.state == OpState.AWAITING_CONFIRMATION:
            self.store.transition(
                op.id,
                OpState.CANCELLED,
                allowed_from=[OpState.AWAITING_CONFIRMATION],
                actor=actor.id,
                detail=Text("not started: the scheduled run resumed past its grace time"),
            )
            return False
        return True

    def _outcome(self, op: Operation, preview: Preview) -> tuple[str, Text | None]:
        if op.state == OpState.REFUSED:
            # A lock refuses at preview (where it is named) or right before the stop (the
            # only refusal once submitting); anything else refused says its own reason.
            locked = preview.blocking_lock is not None and preview.operation.id == op.id
            if locked or any(
                t.state == OpState.SUBMITTING.value for t in self.store.transitions(op.id)
            ):
                return Outcome.LOCKED, op.detail
            return Outcome.REFUSED, op.detail
        return _outcome(op)

    def publish_soon(self, run_id: str) -> None:
        """Show the run's progress: its summary is owed, and shown at most every
        ``summary_interval`` however many of its stops moved meanwhile (building a report
        reads every item of the run: at each event, a run of n resources cost O(n^2)).
        Owed already and not shown yet, it is not owed again: it will show this too."""
        if run_id not in self._summary_owed:
            self._summary_owed.add(run_id)
            self.publish(run_id)

    def publish(self, run_id: str, schedule: ScheduleConfig | None = None) -> None:
        """Owe the run's summary; ``schedule`` stands in for its definition once it was
        removed mid-run, so the summary still ends."""
        self.store.owe(self._summary(run_id, schedule))
        self.outbox.kick()

    def _summary(
        self, run_id: str, schedule: ScheduleConfig | None, *, urgent: bool = False
    ) -> Owed:
        return self.outbox.message(
            SUMMARY,
            run_id,
            {"run": run_id, "schedule": schedule.model_dump(mode="json") if schedule else None},
            urgent=urgent,
        )

    def report(self, run_id: str, schedule: ScheduleConfig | None = None) -> RunReport | None:
        """The run as its summary shows it now."""
        run = self.store.run(run_id)
        if run is None:
            return None
        schedule = self.schedules().get(run.schedule) or schedule
        if schedule is None:
            return None
        end = run.finished_at or self.clock()
        return RunReport(
            run=run,
            schedule=schedule,
            items=self.store.run_items(run_id),
            elapsed=end - (run.started_at or end),
        )

    async def _deliver_summary(self, owed: Owed) -> bool:
        self._summary_owed.discard(owed.payload["run"])  # what changes from now is owed again
        given = owed.payload.get("schedule")
        report = self.report(
            owed.payload["run"], ScheduleConfig.model_validate(given) if given else None
        )
        if report is None:
            return True
        return await self.notifier.summary(report) is not False

    # -- drift ------------------------------------------------------------------------

    def _drift_window_end(self, schedule: ScheduleConfig, after: dt.datetime) -> dt.datetime | None:
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

    async def _watch_drift(self, schedule: ScheduleConfig, now: dt.datetime) -> None:
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
            end = self._drift_window_end(schedule, run.finished_at or run.fire_time)
            if end is None or now >= end:
                continue
            stopped = [
                i.resource for i in self.store.run_items(run.id) if i.outcome == Outcome.STOPPED
            ]
            resources = [r for r in self.config.all_resources() if r.name in stopped]
            for name, status in (await reads.statuses(self.service.providers, resources)).items():
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

    async def _deliver_drift(self, owed: Owed) -> bool:
        run = self.store.run(owed.payload["run"])
        if run is None:
            return True
        schedule = ScheduleConfig.model_validate(owed.payload["schedule"])
        status = ResourceStatus.model_validate(owed.payload["status"])
        return (
            await self.notifier.drift(schedule, run, owed.payload["resource"], status) is not False
        )


async def _until_sent(listener: _ItemListener, driving: asyncio.Task[Operation]) -> None:
    """Until the provider has the stop ``driving`` sends, or ``driving`` is over."""
    sent = asyncio.create_task(listener.sent.wait())
    try:
        await asyncio.wait({sent, driving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        sent.cancel()


def _local(schedule: ScheduleConfig, at: dt.datetime) -> str:
    return at.astimezone(ZoneInfo(schedule.timezone)).strftime(
        f"%a %d %b %H:%M {schedule.timezone}"
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


def _outcome(op: Operation) -> tuple[str, Text | None]:
    if op.state == OpState.STOPPED:
        return Outcome.STOPPED, None
    if op.state == OpState.STOPPED_ALREADY:
        return Outcome.ALREADY, None
    if op.state == OpState.AWAITING_APPROVAL:
        return Outcome.AWAITING_APPROVAL, Text("an approver decides in the channel")
    return Outcome.FAILED, op.detail or Text(op.state.value.replace("_", " "))


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
