"""Crontab expressions read as crontab(5) reads them, whatever APScheduler's own rules."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest

from bot.cron import cron_trigger, next_fire


def fires(expression: str, start: dt.datetime, count: int, zone: str = "UTC") -> list[str]:
    trigger = cron_trigger(expression, zone)
    out, at = [], start
    for _ in range(count):
        at = next_fire(trigger, at)
        out.append(at.strftime("%a %Y-%m-%d %H:%M"))
    return out


UTC = dt.UTC
START = dt.datetime(2027, 3, 1, 12, 0, tzinfo=UTC)  # a Monday, after 09:00


def test_day_of_month_or_weekday_when_both_are_restricted() -> None:
    """`0 9 1,15 * 5`: the 1st, the 15th and every Friday (cron ORs the two fields)."""
    assert fires("0 9 1,15 * 5", START, 5) == [
        "Fri 2027-03-05 09:00",
        "Fri 2027-03-12 09:00",
        "Mon 2027-03-15 09:00",
        "Fri 2027-03-19 09:00",
        "Fri 2027-03-26 09:00",
    ]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # Weekday restricted, day of month '*': weekdays only.
        ("0 20 * * 1-5", ["Mon 2027-03-01 20:00", "Tue 2027-03-02 20:00"]),
        # Day of month restricted, weekday '*': those days only.
        ("0 9 2 * *", ["Tue 2027-03-02 09:00", "Fri 2027-04-02 09:00"]),
        # A step from '*' counts as unrestricted, as in crontab(5): every other day that
        # is also a Sunday.
        ("0 9 */2 * 0", ["Sun 2027-03-07 09:00", "Sun 2027-03-21 09:00"]),
    ],
)
def test_one_restricted_day_field_is_anded(expression: str, expected: list[str]) -> None:
    assert fires(expression, START, 2) == expected


def test_or_of_day_fields_keeps_the_time_zone() -> None:
    """The two halves of an OR fire in the schedule's zone (09:00 in Paris is 08:00 UTC
    in winter)."""
    assert fires("0 9 1 * 5", START, 2, "Europe/Paris") == [
        "Fri 2027-03-05 08:00",
        "Fri 2027-03-12 08:00",
    ]


def test_a_bad_day_field_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"'0 9 32 \* 1' is not a valid crontab"):
        cron_trigger("0 9 32 * 1", "UTC")


SATURDAY = dt.datetime(2027, 2, 27, 12, 0, tzinfo=UTC)  # after 09:00: the next is Sunday's


@pytest.mark.parametrize(
    ("weekday", "expected"),
    [
        # Sunday to Thursday: 0 is Sunday, so the range starts the week.
        ("0-4", ["Sun", "Mon", "Tue", "Wed", "Thu", "Sun"]),
        # Every day, whichever way Sunday is written.
        ("0-6", ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("1-7", ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri"]),
        # A step from '*' counts from Sunday: Sunday, Tuesday, Thursday, Saturday.
        ("*/2", ["Sun", "Tue", "Thu", "Sat", "Sun", "Tue"]),
        # A step in a range: Monday, Wednesday, Friday.
        ("1-5/2", ["Mon", "Wed", "Fri", "Mon", "Wed", "Fri"]),
        # A step from a day runs to the end of the week (7, Sunday, included).
        ("5/2", ["Sun", "Fri", "Sun", "Fri", "Sun", "Fri"]),
        # Names, in either case, and Sunday closing a range.
        ("MON-FRI", ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon"]),
        ("fri-sun", ["Sun", "Fri", "Sat", "Sun", "Fri", "Sat"]),
        ("7", ["Sun", "Sun", "Sun", "Sun", "Sun", "Sun"]),
        ("6,0", ["Sun", "Sat", "Sun", "Sat", "Sun", "Sat"]),
    ],
)
def test_weekday_fields_read_as_crontab(weekday: str, expected: list[str]) -> None:
    """Weekday ranges, lists and steps count from Sunday = 0 (7 is Sunday too)."""
    found = fires(f"0 9 * * {weekday}", SATURDAY, 6)
    assert [f[:3] for f in found] == expected


def test_weekday_field_becomes_day_names() -> None:
    """APScheduler is given the days by name, in crontab's order."""
    trigger = cron_trigger("0 9 * * 0-4", "UTC")
    assert "day_of_week='sun,mon,tue,wed,thu'" in repr(trigger.trigger)


def test_weekday_or_day_of_month_with_a_weekday_range() -> None:
    """`0 9 13 * 0-1`: the 13th, and every Sunday and Monday (still an OR)."""
    assert fires("0 9 13 * 0-1", START, 5) == [
        "Sun 2027-03-07 09:00",
        "Mon 2027-03-08 09:00",
        "Sat 2027-03-13 09:00",
        "Sun 2027-03-14 09:00",
        "Mon 2027-03-15 09:00",
    ]


@pytest.mark.parametrize(
    ("weekday", "reason"),
    [
        ("5-1", "weekday range '5-1' runs backwards (0 and 7 are Sunday)"),
        ("8", "weekday 8 is out of range (0-7, 0 and 7 are Sunday)"),
        ("funday", "'funday' is not a weekday (0-7 or sun-sat)"),
        ("*/0", "weekday '*/0': a step of 0 never moves"),
    ],
)
def test_a_bad_weekday_is_a_clear_error(weekday: str, reason: str) -> None:
    """A weekday crontab would refuse is refused, saying why."""
    expected = f"'0 9 * * {weekday}' is not a valid crontab: {reason}"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        cron_trigger(f"0 9 * * {weekday}", "UTC")


def local_fires(expression: str, zone: str, start: dt.datetime, count: int) -> list[str]:
    """Fires as UTC and the local time with its offset."""
    trigger = cron_trigger(expression, zone)
    out, at = [], start
    for _ in range(count):
        at = next_fire(trigger, at)
        local = at.astimezone(ZoneInfo(zone))
        out.append(f"{at:%m-%d %H:%M}Z {local:%a %H:%M%z}")
    return out


def test_fixed_time_runs_once_when_clocks_go_back() -> None:
    """Paris, 31 Oct 2027: 02:30 happens twice (CEST, then CET); `30 2 * * *` runs at the
    first only, as cron does."""
    assert local_fires(
        "30 2 * * *", "Europe/Paris", dt.datetime(2027, 10, 29, 12, tzinfo=UTC), 3
    ) == [
        "10-30 00:30Z Sat 02:30+0200",
        "10-31 00:30Z Sun 02:30+0200",
        "11-01 01:30Z Mon 02:30+0100",
    ]


def test_hourly_runs_at_both_repeated_hours() -> None:
    """A job every hour (`*` in the hour) runs in the repeated hour too, as cron does."""
    start = dt.datetime(2027, 10, 30, 23, 30, tzinfo=UTC)
    assert local_fires("0 * * * *", "Europe/Paris", start, 3) == [
        "10-31 00:00Z Sun 02:00+0200",
        "10-31 01:00Z Sun 02:00+0100",
        "10-31 02:00Z Sun 03:00+0100",
    ]


def test_a_time_skipped_when_clocks_go_forward_runs_once_after_the_gap() -> None:
    """Paris, 28 Mar 2027: there is no 02:30; `30 2 * * *` runs at 03:30 that day, once."""
    assert local_fires(
        "30 2 * * *", "Europe/Paris", dt.datetime(2027, 3, 26, 12, tzinfo=UTC), 3
    ) == [
        "03-27 01:30Z Sat 02:30+0100",
        "03-28 01:30Z Sun 03:30+0200",
        "03-29 00:30Z Mon 02:30+0200",
    ]


def test_half_hour_dst_zone() -> None:
    """Lord Howe Island moves its clocks by 30 minutes: on 4 Apr 2027 01:30-02:00 happens
    twice, and `0,30 1 * * *` runs 01:00 and 01:30 once each."""
    assert local_fires(
        "0,30 1 * * *", "Australia/Lord_Howe", dt.datetime(2027, 4, 3, 12, tzinfo=UTC), 4
    ) == [
        "04-03 14:00Z Sun 01:00+1100",
        "04-03 14:30Z Sun 01:30+1100",
        "04-04 14:30Z Mon 01:00+1030",
        "04-04 15:00Z Mon 01:30+1030",
    ]
