"""What schedules are about, shared by every part of them and by the faces: the outcome of
each resource in a run, a run as its summary shows it, what a skip or a snooze changed, and the
notifier through which a face shows it all (the outbox kinds it is owed under)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, model_validator

from bot.config import ScheduleConfig
from bot.models import RunItem, ScheduleRun
from bot.savings import Expected
from bot.text import Text, TextError
from providers.base import ResourceStatus
from providers.lean import Lean

Clock = Callable[[], dt.datetime]

IN_PROGRESS = "in progress"
"""A run's resources without an outcome yet, as a summary counts them."""
LISTED = 1000
"""A summary lists at most this many resources of each outcome, beside its count: it is
one message, with no room for more."""
Sleep = Callable[[float], Awaitable[None]]


class ScheduleError(TextError):
    """A schedule request that cannot be done; the message is for the user."""


class Outcome:
    """What became of one resource in a run."""

    STOPPED = "stopped"
    ALREADY = "already stopped"
    STARTED = "started"
    ALREADY_RUNNING = "already running"
    LOCKED = "skipped: locked"
    KEPT = "skipped: kept"
    LEASED = "skipped: leased"
    OPTED_OUT = "skipped: opted out"
    IN_USE = "kept: in use"  # asked at the warning; kept by an answer or the default
    AWAITING_APPROVAL = "awaiting approval"
    REFUSED = "refused"
    MISSED = "missed"
    FAILED = "failed"
    UNKNOWN = "unknown"  # a dry run's: its status or lock could not be read

    SKIPPED = frozenset({LOCKED, KEPT, LEASED, OPTED_OUT, IN_USE})
    # Outcomes whose detail says why, in the summary.
    EXPLAINED = SKIPPED | {REFUSED, MISSED, FAILED}
    # Outcomes whose detail, when they have one, the summary shows too (stopped anyway).
    NOTED = frozenset({STOPPED})


class PlanItem(Lean):
    resource: str
    provider: str
    stop: bool = Field(description="The run acts on it (stops it, or for a start, starts it).")
    action: str = "stop"
    outcome: str | None = None
    detail: Text | None = None
    in_use: Text | None = Field(
        default=None, description="Signs of use it was asked about (the warning's question)."
    )
    in_use_answer: str | None = Field(default=None, description="keep or stop, once answered.")
    in_use_by: str | None = Field(default=None, description="Who answered.")


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
    items: list[RunItem] = Field(
        description="Its resources in the order first recorded: all of them, or, when "
        "`counts` is given, the first few of each outcome (a run of 10,000 is not read "
        "whole for a summary)."
    )
    elapsed: dt.timedelta
    counts: dict[str, int] = Field(
        default_factory=dict,
        description=f"How many resources each outcome has ({IN_PROGRESS!r}: none yet), in "
        "the order first recorded; counted from `items` when not given.",
    )
    expected: Expected | None = Field(
        default=None, description="What the resources it stopped are expected to save."
    )

    @model_validator(mode="after")
    def _counted(self) -> RunReport:
        counted: dict[str, int] = {}
        for item in self.items:
            outcome = item.outcome or IN_PROGRESS
            counted[outcome] = counted.get(outcome, 0) + 1
        for outcome, count in counted.items():  # every item listed is counted
            self.counts[outcome] = max(count, self.counts.get(outcome, 0))
        return self

    @property
    def finished(self) -> bool:
        return self.run.status != "running"

    def by_outcome(self) -> dict[str, tuple[int, list[RunItem]]]:
        """Each outcome's count and the items listed of it, in the order first recorded."""
        groups: dict[str, tuple[int, list[RunItem]]] = {
            outcome: (count, []) for outcome, count in self.counts.items()
        }
        for item in self.items:
            groups[item.outcome or IN_PROGRESS][1].append(item)
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


START_KINDS = frozenset({"start", "start-snooze"})
"""The kinds of a morning start run (its fire, or that fire snoozed): what it does is start
what the schedule's last stop run stopped."""


def starts(run: ScheduleRun) -> bool:
    """Whether ``run`` is a morning start run (else a stop run)."""
    return run.kind in START_KINDS


# The outbox kinds of what schedules owe their face.
WARNING = "schedule-warning"
ANNOUNCEMENT = "schedule-announcement"
SUMMARY = "schedule-summary"
DRIFT = "schedule-drift"


def local(schedule: ScheduleConfig, at: dt.datetime) -> str:
    """``at`` as the schedule's people read it: in its time zone, named."""
    return at.astimezone(ZoneInfo(schedule.timezone)).strftime(
        f"%a %d %b %H:%M {schedule.timezone}"
    )
