"""Morning starts: a schedule with office hours (``cron`` stops at night, ``start_cron``
starts in the morning) starts only what its night run stopped, warns before, and skips
holidays. Time travels on the one movable clock; nothing sleeps."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import ScheduleConfig
from bot.models import Action
from bot.schedules import Outcome
from providers.simulators.server import SimulatorServer
from tests.test_schedules import Sched, utc

OFFICE = {
    "name": "office",
    "cron": "0 20 * * 1-5",
    "start_cron": "0 8 * * 1-5",
    "timezone": "Europe/Paris",
    "select": {"resources": ["dev-eu", "staging-us", "spark"]},
    "channel": "C0DEV",
    "warn_before": "15m",
    "skip_on": ["fr"],
}
DEV_EU = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01"
STAGING = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c02"


@pytest.fixture
async def s(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Sched]:
    harness = Sched(sims, tmp_path / "db", [OFFICE], calendars={"fr": [dt.date(2027, 1, 13)]})
    harness.travel(utc(2027, 1, 11, 12, 0))  # a Monday in winter: Paris is UTC+1
    await harness.engine.tick()
    yield harness
    await harness.aclose()


def qovery_state(s: Sched, cluster: str) -> str:
    found = s.sims.hub["qovery"].describe(cluster)
    assert found is not None
    return found.status


async def test_a_morning_start_starts_only_what_the_night_stopped(s: Sched) -> None:
    """staging-us was stopped by hand before the night run (already stopped then): the
    morning start brings back dev-eu and spark, warned 15 minutes before, and leaves
    staging-us as its person left it."""
    s.sims.hub["qovery"].set_state(STAGING, "STOPPED")
    await s.tick_at(utc(2027, 1, 11, 19, 0))
    await s.engine.wait()
    night = s.notes.final()
    assert [(i.resource, i.outcome) for i in night.items] == [
        ("dev-eu", Outcome.STOPPED),
        ("staging-us", Outcome.ALREADY),
        ("spark", Outcome.STOPPED),
    ]
    await s.tick_at(utc(2027, 1, 12, 6, 45))
    [*_, (name, at, plan)] = s.notes.warnings
    assert (name, at) == ("office", utc(2027, 1, 12, 7))
    assert [(i.resource, i.stop, i.action) for i in plan] == [
        ("dev-eu", True, "start"),
        ("spark", True, "start"),
    ]
    await s.tick_at(utc(2027, 1, 12, 7, 0))
    await s.engine.wait()
    morning = s.notes.final()
    assert (morning.run.kind, morning.run.fire_time) == ("start", utc(2027, 1, 12, 7))
    assert [(i.resource, i.outcome) for i in morning.items] == [
        ("dev-eu", Outcome.STARTED),
        ("spark", Outcome.STARTED),
    ]
    assert qovery_state(s, DEV_EU) == "DEPLOYED"
    assert qovery_state(s, STAGING) == "STOPPED"
    starts = [
        op
        for op in s.store.recent_operations(limit=20)
        if op.action == Action.START and op.source == "schedule"
    ]
    assert sorted(op.resource for op in starts) == ["dev-eu", "spark"]
    assert {op.requested_by for op in starts} == {"schedule:office"}


async def test_a_holiday_skips_the_morning_start(s: Sched) -> None:
    """Wednesday 13 is a holiday: Tuesday night stops, Wednesday morning's start is
    skipped and announced (nobody is working), and what was stopped stays stopped."""
    for moment in (utc(2027, 1, 11, 19), utc(2027, 1, 12, 7), utc(2027, 1, 12, 19)):
        await s.tick_at(moment)
        await s.engine.wait()
    assert qovery_state(s, DEV_EU) == "STOPPED"
    await s.tick_at(utc(2027, 1, 13, 7, 0))
    await s.engine.wait()
    [start, *_] = [r for r in s.store.runs(schedule="office") if r.kind == "start"]
    assert (start.status, start.fire_time) == ("skipped", utc(2027, 1, 13, 7))
    assert s.notes.announcements[-1].startswith(
        "The office run due Wed 13 Jan 08:00 Europe/Paris is skipped (fr holiday)."
    )
    assert qovery_state(s, DEV_EU) == "STOPPED"


async def test_skip_acts_on_the_next_start_too(s: Sched) -> None:
    """After the night run, Skip takes the next run, the morning start: nothing starts."""
    await s.tick_at(utc(2027, 1, 11, 19, 0))
    await s.engine.wait()
    change = s.engine.skip("office", "U0BOB")
    assert change.fire == utc(2027, 1, 12, 7)
    await s.tick_at(utc(2027, 1, 12, 7, 0))
    await s.engine.wait()
    assert qovery_state(s, DEV_EU) == "STOPPED"


def test_start_cron_is_checked_like_cron() -> None:
    """A start_cron that is not a crontab is refused with the crontab's error."""
    with pytest.raises(ValueError, match="is not a crontab"):
        ScheduleConfig.model_validate({**OFFICE, "start_cron": "8 * *"})


def test_action_start_points_to_start_cron() -> None:
    """The grammar is one: ``action: stop`` is the default, ``action: start`` is refused
    with the way to say it (``start_cron`` on the schedule that stops)."""
    assert ScheduleConfig.model_validate({**OFFICE, "action": "stop"}).action == "stop"
    with pytest.raises(ValueError, match="give the same schedule a start_cron"):
        ScheduleConfig.model_validate({**OFFICE, "action": "start"})


async def test_drift_is_still_reported_outside_office_hours(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """With office hours and ``until``, a resource started by hand in the night is still
    reported; what the morning start starts is not drift."""
    harness = Sched(sims, tmp_path / "db", [{**OFFICE, "until": "07:30"}], calendars={"fr": []})
    try:
        harness.travel(utc(2027, 1, 11, 12, 0))
        await harness.engine.tick()
        await harness.tick_at(utc(2027, 1, 11, 19, 0))
        await harness.engine.wait()
        harness.sims.hub["qovery"].set_state(DEV_EU, "DEPLOYED")
        await harness.tick_at(utc(2027, 1, 11, 21, 0))
        assert harness.notes.drifts == [("office", "dev-eu", "DEPLOYED")]
        await harness.tick_at(utc(2027, 1, 12, 7, 0))
        await harness.engine.wait()
        await harness.tick_at(utc(2027, 1, 12, 7, 20))
        assert harness.notes.drifts == [("office", "dev-eu", "DEPLOYED")]
        assert [(i.resource, i.outcome) for i in harness.notes.final().items] == [
            ("dev-eu", Outcome.ALREADY_RUNNING),
            ("staging-us", Outcome.STARTED),
            ("spark", Outcome.STARTED),
        ]
    finally:
        await harness.aclose()
