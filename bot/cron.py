"""Standard crontab expressions for APScheduler 3.

APScheduler 3 numbers weekdays from Monday = 0 and ``CronTrigger.from_crontab`` passes
the field through, so the crontab ``1-5`` (Monday to Friday) would fire Tuesday to
Saturday, ``0-4`` (Sunday to Thursday) would be refused and ``*/2`` would step from
Monday. The weekday field is expanded here into the explicit list of day names that
crontab(5) means: 0 and 7 are Sunday, ``*`` and its steps run over 0-7 from Sunday.

APScheduler also requires *both* the day of the month and the weekday to match, where
cron (crontab(5)) fires when *either* matches once both are restricted (neither starts
with ``*``): ``0 9 1 * 1`` is 09:00 on the 1st and on every Monday. Such an expression
becomes an ``OrTrigger`` of the two.

When clocks go back, a local time happens twice. cron runs a job at a fixed time (its
minute and hour are plain numbers, lists or ranges) once, at the first of the two, and a
job that runs every so often (``*`` or a step in the minute or the hour) at both; the
trigger does the same. When clocks go forward, a time that does not exist runs at the
first time after the gap (``30 2 * * *`` runs at 03:30 that day, once), as APScheduler
does by itself.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

__all__ = ["cron_trigger", "next_fire"]

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_WEEKDAY_PART = re.compile(r"(?P<first>\*|\w+)(?:-(?P<last>\w+))?(?:/(?P<step>\d+))?")


def _day(word: str, *, end: bool = False) -> int:
    """A crontab weekday number (0-7) or name; ``sun`` closing a range is 7."""
    if word.isdigit():
        number = int(word)
        if number > 7:
            raise ValueError(f"weekday {number} is out of range (0-7, 0 and 7 are Sunday)")
        return number
    if word in _DAYS:
        return 7 if end and word == "sun" else _DAYS.index(word)
    raise ValueError(f"{word!r} is not a weekday (0-7 or sun-sat)")


def _weekdays(field: str) -> str:
    """The crontab weekday field as APScheduler's explicit list of day names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        match = _WEEKDAY_PART.fullmatch(part)
        if match is None:
            raise ValueError(f"weekday {part!r} is not a day, a range or a step (e.g. 1-5, */2)")
        first, last, step = match.group("first", "last", "step")
        if first == "*":
            if last is not None:
                raise ValueError(f"weekday {part!r}: a range cannot start with *")
            low, high = 0, 7
        else:
            low = _day(first)
            # 'N/step' runs from N to the end of the week, as cron reads it.
            high = _day(last, end=True) if last is not None else (7 if step else low)
        if high < low:
            raise ValueError(f"weekday range {part!r} runs backwards (0 and 7 are Sunday)")
        stride = int(step or 1)
        if stride == 0:
            raise ValueError(f"weekday {part!r}: a step of 0 never moves")
        days.update(number % 7 for number in range(low, high + 1, stride))
    return ",".join(_DAYS[number] for number in sorted(days))


class _FixedTimeOnce(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 is untyped
    """Drops the second run of a fixed local time on the day clocks go back."""

    __slots__ = ("trigger", "zone")

    def __init__(self, trigger: BaseTrigger, zone: ZoneInfo) -> None:
        self.trigger = trigger
        self.zone = zone

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        fire: dt.datetime | None = self.trigger.get_next_fire_time(previous_fire_time, now)
        while fire is not None and self._repeated(fire):
            # In UTC: adding to a local time is wall-clock arithmetic, which forgets the
            # fold and lands before the repeated hour again.
            after = fire.astimezone(dt.UTC) + dt.timedelta(microseconds=1)
            fire = self.trigger.get_next_fire_time(after, after)
        return fire

    def _repeated(self, fire: dt.datetime) -> bool:
        """True when ``fire``'s local wall time happened earlier the same night."""
        wall = fire.astimezone(self.zone).replace(tzinfo=None)
        first = wall.replace(tzinfo=self.zone, fold=0)
        # Compared in UTC: aware datetimes sharing a tzinfo compare by wall time alone.
        return first.astimezone(dt.UTC) < fire.astimezone(dt.UTC)

    def __str__(self) -> str:
        return f"{self.trigger} once at fixed times"


def _fixed_time(minute: str, hour: str) -> bool:
    return not any(mark in field for field in (minute, hour) for mark in "*/")


def cron_trigger(expression: str, timezone: str) -> BaseTrigger:
    """A trigger for a 5-field crontab (minute hour day month weekday) in ``timezone``.

    Raises ValueError with the expected form when the expression is malformed.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"{expression!r} is not a crontab: use 5 fields, minute hour day month weekday, "
            "e.g. '0 20 * * 1-5' for 20:00 on weekdays"
        )
    minute, hour, day, month, weekday = fields

    def trigger(day: str, weekday: str) -> CronTrigger:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_weekdays(weekday),
            timezone=timezone,
        )

    try:
        found: BaseTrigger
        if day.startswith("*") or weekday.startswith("*"):
            found = trigger(day, weekday)
        else:
            found = OrTrigger([trigger(day, "*"), trigger("*", weekday)])
    except ValueError as exc:
        raise ValueError(f"{expression!r} is not a valid crontab: {exc}") from None
    if _fixed_time(minute, hour):
        return _FixedTimeOnce(found, ZoneInfo(timezone))
    return found


def next_fire(trigger: BaseTrigger, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after ``after``, in UTC."""
    fire = trigger.get_next_fire_time(None, after + dt.timedelta(microseconds=1))
    if fire is None:  # pragma: no cover - 5-field crontabs always fire again
        raise ValueError("the schedule never fires again")
    return fire.astimezone(dt.UTC)  # type: ignore[no-any-return]
