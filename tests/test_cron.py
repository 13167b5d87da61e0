"""Crontab expressions read as crontab(5) reads them, whatever APScheduler's own rules."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.cron import cron_trigger, next_fire


def fires(expression: str, start: dt.datetime, count: int, zone: str = "UTC") -> list[str]:
    trigger = cron_trigger(expression, zone)
    out, at = [], start
    for _ in range(count):
        at = next_fire(trigger, at)
        out.append(at.strftime("%a %Y-%m-%d %H:%M"))
    return out


START = dt.datetime(2027, 3, 1, 12, 0, tzinfo=dt.UTC)  # a Monday, after 09:00


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
