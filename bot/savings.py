"""What stopping saved: the hours each resource spent stopped because Stopbot stopped it,
and what those hours would have cost running, as estimates.

Hours are counted from facts in the audit log, never from a face's memory:

* a resource is **stopped at** the audit entry of a stop reaching stopped (``stop.stopped``:
  a Slack or terminal stop, a scheduled run, a wake lease ending);
* it is **running again at** the first entry after that saying it runs: a wake or a start
  reaching running (``wake.started``, ``wake.running_already``, any ``*.started``), or a
  start seen at the provider (the schedules' drift watch, ``schedule.drift``; and this
  module's own polling, ``resource.running``, see :meth:`Savings.check`).

A resource stopped and not seen running since counts up to now. Each stretch is clipped to
the period asked. A restart outside Stopbot counts as stopped until a read sees it running:
the polling every ``savings.check_interval`` bounds that error.

Money is hours times a rate an hour of running (:mod:`bot.rates`: configured for the
resource or its tags, else the provider's API where it tells, Qovery's currentCost range,
else the provider's default); a resource with none is counted in hours only. Every figure is an
estimate, says so, and names its rate's source: faces show that.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol
from zoneinfo import ZoneInfo

from bot import reads
from bot.config import WEEKDAYS, ResourceConfig, ScheduleConfig, StopbotConfig
from bot.models import SCHEDULE_ACTOR, SYSTEM, Operation
from bot.rates import Rate, Rates
from bot.store import Store
from bot.text import TextError, say
from providers.base import Phase, Provider, ResourceStatus

__all__ = [
    "PERIODS",
    "RUNNING_ACTIONS",
    "SEEN_RUNNING",
    "STOPPED_ACTIONS",
    "Expected",
    "Line",
    "Report",
    "Savings",
    "SavingsError",
    "Selection",
    "Stretch",
    "parse_period",
]

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

STOPPED_ACTIONS = ("stop.stopped",)
SEEN_RUNNING = "resource.running"
"""This module's own fact: a resource counted stopped was read running at its provider."""
RUNNING_ACTIONS = (
    "wake.started",
    "wake.running_already",
    "start.started",
    "start.running_already",
    "schedule.drift",
    SEEN_RUNNING,
)
FACTS = (*STOPPED_ACTIONS, *RUNNING_ACTIONS)

PERIODS = ("7d", "30d", "month")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
TOTALS_TTL = 30.0
"""Seconds the metrics' totals are kept (a scrape every 15 s reads the audit at most so)."""


class SavingsError(TextError):
    """A savings request that cannot be answered; the message is for the user."""


@dataclass(frozen=True)
class Stretch:
    """One time a resource was stopped: from ``start`` to ``end`` (None: still stopped)."""

    resource: str
    start: dt.datetime
    end: dt.datetime | None
    operation: str | None = None
    ended_by: str | None = None

    def seconds(self, since: dt.datetime, until: dt.datetime) -> float:
        start = max(self.start, since)
        end = min(self.end or until, until)
        return max(0.0, (end - start).total_seconds())


Money = dict[str, tuple[float, float]]
"""currency -> (low, high)."""


def _add(money: Money, currency: str, low: float, high: float) -> None:
    was = money.get(currency, (0.0, 0.0))
    money[currency] = (was[0] + low, was[1] + high)


@dataclass
class Line:
    """Hours stopped and their estimated savings, for one resource, schedule or person."""

    name: str
    seconds: float = 0.0
    money: Money = field(default_factory=dict)
    rate: Rate | None = None
    provider: str | None = None
    stopped_now: bool = False

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "provider": self.provider,
            "hours": round(self.hours, 4),
            "stopped_now": self.stopped_now,
            "estimated_savings": {
                c: {"low": round(lo, 2), "high": round(hi, 2)} for c, (lo, hi) in self.money.items()
            },
            "rate": None
            if self.rate is None
            else {
                "low": self.rate.low,
                "high": self.rate.high,
                "currency": self.rate.currency,
                "per": "hour",
                "source": self.rate.source,
            },
        }


@dataclass
class Report:
    """Savings over ``since`` .. ``until``, for the resources ``selection`` names."""

    since: dt.datetime
    until: dt.datetime
    selection: str
    currency: str
    resources: list[Line]
    schedules: list[Line]
    people: list[Line]
    total: Line

    @property
    def unrated(self) -> list[str]:
        return [line.name for line in self.resources if line.rate is None]

    def to_json(self) -> dict[str, object]:
        """Every figure, ids kept (for ``--json`` and the like); money is an estimate."""

        def lines(found: list[Line], drop: tuple[str, ...]) -> list[dict[str, object]]:
            return [{k: v for k, v in line.to_json().items() if k not in drop} for line in found]

        group = ("provider", "stopped_now", "rate")
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "selection": self.selection,
            "estimate": True,
            "resources": lines(self.resources, ()),
            "schedules": lines(self.schedules, group),
            "people": lines(self.people, group),
            "total": {k: v for k, v in self.total.to_json().items() if k not in ("name", *group)},
            "unrated": self.unrated,
        }


@dataclass(frozen=True)
class Expected:
    """What a run is expected to save until the next start: ``hours`` each (None: no
    next start known, so ``money`` is an hour's worth), for ``resources`` resources."""

    resources: int
    until: dt.datetime | None
    hours: float | None
    money: Money
    unrated: int
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Selection:
    """Which resources a report covers: all, one by name, by tag, or by env."""

    kind: str  # all, resource, tag or env
    key: str = ""
    value: str = ""

    def label(self) -> str:
        if self.kind == "all":
            return "all resources"
        if self.kind == "tag":
            return f"tag {self.key}={self.value}"
        if self.kind == "env":
            return f"env {self.value}"
        return self.value

    def matches(self, resource: ResourceConfig) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "resource":
            return resource.name == self.value
        return resource.tags.get(self.key) == self.value

    @classmethod
    def parse(cls, config: StopbotConfig, word: str | None) -> Selection:
        """A resource's name, ``tag:key=value`` (or ``key=value``), or an env (the ``env``
        tag's value, or ``env:value``). Names hold neither ``=`` nor ``:``."""
        if not word:
            return cls("all")
        if word.startswith("env:") and len(word) > 4:
            return cls("env", "env", word[4:])
        if word.startswith("tag:") or "=" in word:
            key, sep, value = word.removeprefix("tag:").partition("=")
            if not sep or not key or not value:
                raise SavingsError(say("write a tag as tag:key=value (tag:env=dev)"))
            return cls("tag", key, value)
        if any(r.name == word for r in config.resources):
            return cls("resource", value=word)
        if any(r.tags.get("env") == word for r in config.resources):
            return cls("env", "env", word)
        raise SavingsError(
            say("no resource or env named {} (or write a tag as tag:key=value)", word[:60])
        )


def parse_period(word: str | None, now: dt.datetime) -> tuple[dt.datetime, str]:
    """The start of ``7d``, ``30d``, ``<n>d``/``<n>h`` or ``month`` (this calendar month,
    UTC) before ``now``, and its label."""
    if word is None or word == "":
        word = "30d"
    if word == "month":
        start = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return start, "this month"
    found = re.fullmatch(r"(\d{1,4})([dh])", word)
    if found is None or int(found[1]) == 0:
        raise SavingsError(say("a period is 7d, 30d or month (or a number of days: 90d)"))
    amount = int(found[1])
    delta = dt.timedelta(days=amount) if found[2] == "d" else dt.timedelta(hours=amount)
    if delta > dt.timedelta(days=3660):
        raise SavingsError(say("a period is ten years at most"))
    return now - delta, f"the last {word}"


class Fact(Protocol):
    """What a stretch is read from: an audit entry (:class:`~bot.models.AuditEntry`)."""

    @property
    def at(self) -> dt.datetime: ...
    @property
    def action(self) -> str: ...
    @property
    def resource(self) -> str | None: ...
    @property
    def operation_id(self) -> str | None: ...


def stretches(facts: Iterable[Fact], *, ends: Iterable[str] = RUNNING_ACTIONS) -> list[Stretch]:
    """The stretches stopped that ``facts`` (oldest first) tell."""
    running = set(ends)
    open_: dict[str, Stretch] = {}
    done: list[Stretch] = []
    for entry in facts:
        resource, action, at = entry.resource, entry.action, entry.at
        if resource is None:
            continue
        if action in STOPPED_ACTIONS:
            # Stopped again with no start seen between: the first stop still holds (the
            # start in between went unseen, and its hours cannot be told apart).
            if resource not in open_:
                open_[resource] = Stretch(resource, at, None, entry.operation_id)
        elif action in running or action.endswith(".started"):
            stretch = open_.pop(resource, None)
            if stretch is not None:
                done.append(Stretch(stretch.resource, stretch.start, at, stretch.operation, action))
    return sorted([*done, *open_.values()], key=lambda s: (s.start, s.resource))


class Savings:
    """Hours stopped and savings, read from the store; the polling that stops counting a
    resource seen running again."""

    def __init__(
        self,
        config: StopbotConfig,
        store: Store,
        providers: Mapping[str, Provider],
        *,
        clock: Clock,
    ) -> None:
        self.config = config
        self.store = store
        self.providers = providers
        self.clock = clock
        self.rates = Rates(config, providers, store, clock=clock)
        self._checked: dt.datetime | None = None
        self._totals: tuple[float, dict[str, tuple[float, Money]]] | None = None

    # -- hours ----------------------------------------------------------------------

    def stretches(self, since: dt.datetime) -> list[Stretch]:
        """Every stretch stopped that overlaps ``since`` .. now."""
        found = stretches(self.store.audit_facts(FACTS, since=since))
        return [s for s in found if s.end is None or s.end > since]

    def stopped_now(self) -> dict[str, Stretch]:
        """The resources counted stopped now, by name."""
        return {s.resource: s for s in self.stretches(self.clock()) if s.end is None}

    # -- reports --------------------------------------------------------------------

    async def report(
        self,
        since: dt.datetime,
        *,
        selection: Selection | None = None,
        until: dt.datetime | None = None,
    ) -> Report:
        """Hours and estimated savings by resource, schedule and person, ``since`` ..
        ``until`` (default now), for the resources ``selection`` names (default all)."""
        until = until or self.clock()
        selection = selection or Selection("all")
        configured = {r.name: r for r in self.config.resources if selection.matches(r)}
        # The store's reads off the event loop: over a large audit they take seconds.
        facts = await asyncio.to_thread(self.store.audit_facts, FACTS, since=since)
        found = [s for s in stretches(facts) if s.resource in configured]
        found = [s for s in found if s.start < until and (s.end is None or s.end > since)]
        rates = await self.rates.rates([configured[n] for n in sorted({s.resource for s in found})])
        operations = await asyncio.to_thread(
            self.store.operations, [s.operation for s in found if s.operation]
        )
        by_resource: dict[str, Line] = {}
        by_schedule: dict[str, Line] = {}
        by_person: dict[str, Line] = {}
        total = Line("total")
        for stretch in found:
            seconds = stretch.seconds(since, until)
            rate = rates.get(stretch.resource)
            line = by_resource.setdefault(
                stretch.resource,
                Line(stretch.resource, rate=rate, provider=configured[stretch.resource].provider),
            )
            if stretch.end is None or stretch.end > until:
                line.stopped_now = stretch.end is None
            op = operations.get(stretch.operation or "")
            groups = [line, total]
            schedule = self._schedule_of(op)
            if schedule is not None:
                groups.append(by_schedule.setdefault(schedule, Line(schedule)))
            person = _person_of(op)
            if person is not None:
                groups.append(by_person.setdefault(person, Line(person)))
            for group in groups:
                group.seconds += seconds
                if rate is not None:
                    hours = seconds / 3600
                    _add(group.money, rate.currency, rate.low * hours, rate.high * hours)
        return Report(
            since=since,
            until=until,
            selection=selection.label(),
            currency=self.config.savings.currency,
            resources=sorted(by_resource.values(), key=_largest_first),
            schedules=sorted(by_schedule.values(), key=_largest_first),
            people=sorted(by_person.values(), key=_largest_first),
            total=total,
        )

    def _schedule_of(self, op: Operation | None) -> str | None:
        if op is None or op.source != "schedule":
            return None
        if op.requested_by.startswith(SCHEDULE_ACTOR):
            return op.requested_by.removeprefix(SCHEDULE_ACTOR)
        # A run started by hand is its starter's: its key names the run.
        parts = (op.idempotency_key or "").split(":")
        run = self.store.run(parts[1]) if len(parts) > 2 and parts[0] == "schedule" else None
        return run.schedule if run is not None else None

    def totals(self) -> dict[str, tuple[float, Money]]:
        """Seconds stopped and estimated savings since the audit began, by provider (for
        the metrics: rates known now, no provider asked; computed at most every
        ``TOTALS_TTL`` seconds)."""
        if self._totals is not None and time.monotonic() - self._totals[0] < TOTALS_TTL:
            return self._totals[1]
        now = self.clock()
        configured = {r.name: r for r in self.config.resources}
        totals: dict[str, tuple[float, Money]] = {}
        for stretch in stretches(self.store.audit_facts(FACTS, since=EPOCH)):
            resource = configured.get(stretch.resource)
            if resource is None:
                continue
            seconds = stretch.seconds(EPOCH, now)
            was, money = totals.get(resource.provider, (0.0, {}))
            rate = self.rates.cached(resource)
            if rate is not None:
                hours = seconds / 3600
                _add(money, rate.currency, rate.low * hours, rate.high * hours)
            totals[resource.provider] = (was + seconds, money)
        self._totals = (time.monotonic(), totals)
        return totals

    # -- a run's summary ------------------------------------------------------------

    async def expected(
        self, schedule: ScheduleConfig, resources: Sequence[str], after: dt.datetime
    ) -> Expected | None:
        """What ``resources``, stopped by a run of ``schedule`` at ``after``, are expected
        to save until the next start: the schedule's ``until`` (its working hours), else
        an hour's worth. None when nothing was stopped."""
        if not resources:
            return None
        configured = {r.name: r for r in self.config.resources}
        known = [configured[n] for n in resources if n in configured]
        rates = await self.rates.rates(known, stale=False)
        until = _next_local(after, schedule.until, schedule.timezone) if schedule.until else None
        hours = (until - after).total_seconds() / 3600 if until else None
        money: Money = {}
        sources: list[str] = []
        for rate in rates.values():
            if rate is None:
                continue
            _add(money, rate.currency, rate.low * (hours or 1), rate.high * (hours or 1))
            if rate.source not in sources:
                sources.append(rate.source)
        return Expected(
            resources=len(resources),
            until=until,
            hours=hours,
            money=money,
            unrated=sum(1 for r in rates.values() if r is None) + len(resources) - len(known),
            sources=tuple(sources[:5]),
        )

    # -- seen running ---------------------------------------------------------------

    def observe(self, statuses: Mapping[str, ResourceStatus]) -> list[str]:
        """Stop counting each resource counted stopped that ``statuses`` show running (read
        at the provider: a start outside Stopbot); the names, audited ``resource.running``."""
        if not any(s.phase == Phase.RUNNING for s in statuses.values()):
            return []
        stopped = self.stopped_now()
        seen = []
        for name, status in statuses.items():
            stretch = stopped.get(name)
            if stretch is None or status.phase != Phase.RUNNING:
                continue
            self.store.audit(
                SYSTEM,
                SEEN_RUNNING,
                resource=name,
                operation_id=stretch.operation,
                detail={"state": status.state, "provider": status.provider},
            )
            seen.append(name)
        return seen

    async def check(self) -> list[str]:
        """The leader's polling, every ``savings.check_interval``: read what is counted
        stopped, stop counting what runs again."""
        now = self.clock()
        if self._checked is not None and now - self._checked < self.config.savings.check_interval:
            return []
        self._checked = now
        # The store's reads and writes off the loop (the audit's facts, on PostgreSQL a
        # round trip the loop would wait through).
        stopped = await self.store.off_loop(self.stopped_now)
        resources = [r.to_resource() for r in self.config.resources if r.name in stopped]
        if not resources:
            return []
        statuses = await reads.statuses(self.providers, resources)
        return await self.store.off_loop(partial(self.observe, statuses))

    # -- the weekly digest ----------------------------------------------------------

    def digest_due(self, now: dt.datetime) -> dt.datetime | None:
        """The latest digest time at or before ``now`` (this week's), if one is set and
        it is less than a day old (a bot down for longer skips that week's)."""
        digest = self.config.savings.digest
        if digest is None:
            return None
        zone = ZoneInfo(digest.timezone)
        local = now.astimezone(zone)
        back = (local.weekday() - WEEKDAYS.index(digest.weekday)) % 7
        day = (local - dt.timedelta(days=back)).date()
        slot = dt.datetime.combine(day, digest.at, tzinfo=zone)
        if slot > local:
            slot -= dt.timedelta(days=7)
        slot_utc = slot.astimezone(dt.UTC)
        return slot_utc if now - slot_utc < dt.timedelta(days=1) else None


def _largest_first(line: Line) -> tuple[float, str]:
    return -line.seconds, line.name


def _person_of(op: Operation | None) -> str | None:
    """Who asked the stop, when a person did (not a schedule's fire, not the bot)."""
    if op is None or op.requested_by == SYSTEM or op.requested_by.startswith(SCHEDULE_ACTOR):
        return None
    if ":" in op.requested_by and not op.requested_by.startswith("cli:"):
        return None  # lease:<owner> and the like: the bot acting for someone
    return op.requested_by


def _next_local(after: dt.datetime, at: dt.time, timezone: str) -> dt.datetime:
    zone = ZoneInfo(timezone)
    local = after.astimezone(zone)
    end = dt.datetime.combine(local.date(), at, tzinfo=zone)
    if end <= local:
        end = dt.datetime.combine(local.date() + dt.timedelta(days=1), at, tzinfo=zone)
    return end.astimezone(dt.UTC)
