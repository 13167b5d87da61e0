"""Standard crontab expressions for APScheduler 3.

APScheduler 3 numbers weekdays from Monday = 0 and ``CronTrigger.from_crontab`` passes
the field through, so the crontab ``1-5`` (Monday to Friday) would fire Tuesday to
Saturday. Weekday numbers are translated to names here (0 and 7 are Sunday).

APScheduler also requires *both* the day of the month and the weekday to match, where
cron (crontab(5)) fires when *either* matches once both are restricted (neither starts
with ``*``): ``0 9 1 * 1`` is 09:00 on the 1st and on every Monday. Such an expression
becomes an ``OrTrigger`` of the two.
"""

from __future__ import annotations

import datetime as dt
import re

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

__all__ = ["cron_trigger", "next_fire"]

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NUMBER = re.compile(r"\d+")


def _weekdays(field: str) -> str:
    def name(match: re.Match[str]) -> str:
        number = int(match.group())
        if number > 7:
            raise ValueError(f"weekday {number} is out of range (0-7, 0 and 7 are Sunday)")
        return _DAYS[number]

    parts = []
    for part in field.split(","):
        days, slash, step = part.partition("/")
        parts.append(_NUMBER.sub(name, days) + slash + step)
    return ",".join(parts)


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
        if day.startswith("*") or weekday.startswith("*"):
            return trigger(day, weekday)
        return OrTrigger([trigger(day, "*"), trigger("*", weekday)])
    except ValueError as exc:
        raise ValueError(f"{expression!r} is not a valid crontab: {exc}") from None


def next_fire(trigger: BaseTrigger, after: dt.datetime) -> dt.datetime:
    """The first fire time strictly after ``after``, in UTC."""
    fire = trigger.get_next_fire_time(None, after + dt.timedelta(microseconds=1))
    if fire is None:  # pragma: no cover - 5-field crontabs always fire again
        raise ValueError("the schedule never fires again")
    return fire.astimezone(dt.UTC)  # type: ignore[no-any-return]
