"""Scheduled stops: cron fires in two time zones across DST, warnings, skip, snooze, keep,
holidays, missed runs, runs against the simulators, restarts and drift. Time travels; nothing
sleeps."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import ScheduleConfig
from bot.cron import cron_trigger, next_fire
from bot.models import Operation, OpState, ScheduleRun
from bot.schedules import (
    Outcome,
    PlanItem,
    RunReport,
    ScheduleEngine,
    ScheduleError,
    ScheduleRunner,
)
from bot.slack.wording import mrkdwn
from bot.store import open_store
from bot.text import Text
from bot.workflow import StopService
from providers.base import Provider, ResourceStatus
from providers.errors import ProviderTimeoutError
from providers.registry import build_provider
from providers.simulators.server import SimulatorServer
from tests.helpers import SimTime, sample

UTC = dt.UTC
DEV_EU = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01"
STAGING = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c02"


class Notes:
    """A notifier that keeps everything it is told (texts as Slack shows them)."""

    def __init__(self) -> None:
        self.warnings: list[tuple[str, dt.datetime, list[PlanItem]]] = []
        self.warned_fires: list[dt.datetime] = []
        self.announcements: list[str] = []
        self.summaries: list[RunReport] = []
        self.drifts: list[tuple[str, str, str]] = []
        self.failing_warnings = 0  # how many warnings to fail to show, as a Slack outage would

    async def warn(
        self, schedule: ScheduleConfig, at: dt.datetime, plan: list[PlanItem], *, fire: dt.datetime
    ) -> bool:
        if self.failing_warnings:
            self.failing_warnings -= 1
            return False
        self.warnings.append((schedule.name, at, plan))
        self.warned_fires.append(fire)
        return True

    async def announce(self, schedule: ScheduleConfig, fire: dt.datetime, text: Text) -> None:
        self.announcements.append(mrkdwn(text))

    async def summary(self, report: RunReport) -> None:
        self.summaries.append(report)

    async def drift(
        self, schedule: ScheduleConfig, run: ScheduleRun, resource: str, status: ResourceStatus
    ) -> None:
        self.drifts.append((schedule.name, resource, status.state))

    def final(self) -> RunReport:
        return next(r for r in reversed(self.summaries) if r.finished)


NIGHTLY = {
    "name": "nightly",
    "cron": "0 20 * * 1-5",
    "timezone": "Europe/Paris",
    "select": {"resources": ["dev-eu", "spark"]},
    "channel": "C0DEV",
    "warn_before": "15m",
}


class Sched:
    def __init__(
        self, sims: SimulatorServer, db: Path, schedules: list[dict[str, Any]], **config: Any
    ) -> None:
        self.sims = sims
        sims.hub.clock.freeze()
        self.time = SimTime(sims)
        self.config = sample(sims, schedules=schedules, **config)
        self.db = db
        self.providers: dict[str, Provider] = {
            p.name: build_provider(p, http=self.config.http) for p in self.config.providers
        }
        self.start()

    def start(self) -> None:
        self.store = open_store(self.db, clock=self.time.now)
        self.service = StopService(
            self.config, self.store, self.providers, clock=self.time.now, sleep=self.time.sleep
        )
        self.notes = Notes()
        self.engine = ScheduleEngine(self.config, self.store, self.service, self.notes)
        self.engine.sync_config()

    async def restart(self) -> None:
        """The process dies (what it drove left as it stands) and a new one starts."""
        self.service.registry.me.abandon()
        await self.engine.cancel()
        await self.service.aclose()
        self.store.close()
        self.start()

    def travel(self, when: dt.datetime) -> None:
        """Move the one clock (simulators and bot) to ``when``."""
        self.sims.hub.clock.advance((when - self.time.now()).total_seconds())

    async def tick_at(self, when: dt.datetime) -> None:
        """Move the clock, tick, and let the outbox deliver what the tick owes."""
        self.travel(when)
        await self.engine.tick()
        await self.service.outbox.flush()

    async def aclose(self) -> None:
        await self.engine.cancel()
        await self.service.aclose()
        for p in self.providers.values():
            await p.aclose()
        self.store.close()


@pytest.fixture
async def s(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Sched]:
    harness = Sched(sims, tmp_path / "db", [NIGHTLY])
    harness.travel(dt.datetime(2027, 1, 11, 12, 0, tzinfo=UTC))  # a Monday in winter
    await harness.engine.tick()  # the schedule starts counting from here
    yield harness
    await harness.aclose()


def said(text: Text | None) -> str | None:
    """A sentence of the core as Slack shows it."""
    return None if text is None else mrkdwn(text)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        # 20:00 Paris is 19:00 UTC in winter (CET) and 18:00 UTC in summer (CEST).
        ("Europe/Paris", utc(2026, 3, 27, 12), [utc(2026, 3, 27, 19), utc(2026, 3, 30, 18)]),
        ("Europe/Paris", utc(2026, 10, 23, 12), [utc(2026, 10, 23, 18), utc(2026, 10, 26, 19)]),
        # 20:00 New York is 01:00 UTC next day in winter (EST), 00:00 UTC in summer (EDT).
        ("America/New_York", utc(2026, 3, 6, 12), [utc(2026, 3, 7, 1), utc(2026, 3, 10, 0)]),
        ("America/New_York", utc(2026, 10, 30, 12), [utc(2026, 10, 31, 0), utc(2026, 11, 3, 1)]),
    ],
)
def test_weekday_cron_across_dst(
    zone: str, after: dt.datetime, expected: list[dt.datetime]
) -> None:
    """'0 20 * * 1-5' fires at 20:00 local time on weekdays, before and after a DST change."""
    trigger = cron_trigger("0 20 * * 1-5", zone)
    first = next_fire(trigger, after)
    assert [first, next_fire(trigger, first)] == expected


def test_crontab_weekdays_are_standard() -> None:
    """Weekday 0 and 7 are Sunday, 1 is Monday (APScheduler's own numbering differs)."""
    trigger = cron_trigger("0 9 * * 0,6", "UTC")
    sat = next_fire(trigger, utc(2026, 11, 25, 12))
    assert (sat, next_fire(trigger, sat)) == (utc(2026, 11, 28, 9), utc(2026, 11, 29, 9))
    with pytest.raises(ValueError, match="is not a crontab: use 5 fields"):
        cron_trigger("0 20 * *", "UTC")


async def test_warning_then_run_at_the_fire_time(s: Sched) -> None:
    """15 minutes before 20:00 Paris the warning goes out once; at 20:00 the run stops all."""
    await s.tick_at(utc(2027, 1, 11, 18, 44))
    assert s.notes.warnings == []
    await s.tick_at(utc(2027, 1, 11, 18, 45))
    await s.tick_at(utc(2027, 1, 11, 18, 50))
    [(name, fire, plan)] = s.notes.warnings
    assert (name, fire) == ("nightly", utc(2027, 1, 11, 19))
    assert [(i.resource, i.stop) for i in plan] == [("dev-eu", True), ("spark", True)]
    await s.tick_at(utc(2027, 1, 11, 19, 0))
    await s.engine.wait()
    final = s.notes.final()
    assert [(i.resource, i.outcome) for i in final.items] == [
        ("dev-eu", Outcome.STOPPED),
        ("spark", Outcome.STOPPED),
    ]
    assert final.run.kind == "cron" and final.run.fire_time == utc(2027, 1, 11, 19)


async def test_each_fire_runs_once_even_across_a_restart(s: Sched) -> None:
    """Ticking again, or a new process ticking, never runs the same fire twice."""
    await s.tick_at(utc(2027, 1, 11, 19, 0))
    await s.engine.tick()
    await s.engine.wait()
    await s.restart()
    await s.engine.tick()
    await s.engine.wait()
    assert len(s.store.runs(schedule="nightly")) == 1
    accepted = [e for e in s.store.audit_log() if e.action == "stop.accepted"]
    assert sorted(e.resource or "" for e in accepted) == ["dev-eu", "spark"]


async def test_skip_next_run(s: Sched) -> None:
    """Skip tonight: the run is recorded as skipped and announced; tomorrow runs."""
    change = s.engine.skip("nightly", "U0BOB")
    assert (change.fire, change.repeat) == (utc(2027, 1, 11, 19), False)
    await s.tick_at(utc(2027, 1, 11, 19, 0))
    assert s.notes.announcements == [
        "The nightly run due Mon 11 Jan 20:00 Europe/Paris is skipped (skipped by <@U0BOB>). "
        "Next run: Tue 12 Jan 20:00 Europe/Paris."
    ]
    assert s.notes.summaries == []
    await s.tick_at(utc(2027, 1, 12, 19, 0))
    await s.engine.wait()
    assert s.notes.final().run.fire_time == utc(2027, 1, 12, 19)


async def test_snooze_moves_tonights_run(s: Sched) -> None:
    """Snooze 1h: nothing at 20:00, the run at 21:00, and the warning comes again before it."""
    change = s.engine.snooze("nightly", dt.timedelta(hours=1), "U0BOB")
    assert (change.fire, change.at) == (utc(2027, 1, 11, 19), utc(2027, 1, 11, 20))
    await s.tick_at(utc(2027, 1, 11, 19, 0))
    assert s.store.runs(schedule="nightly") == []
    await s.tick_at(utc(2027, 1, 11, 19, 45))
    assert [w[1] for w in s.notes.warnings] == [utc(2027, 1, 11, 20)]
    await s.tick_at(utc(2027, 1, 11, 20, 0))
    await s.engine.wait()
    [run] = s.store.runs(schedule="nightly")
    assert (run.kind, run.fire_time, run.status) == ("snooze", utc(2027, 1, 11, 20), "done")


async def test_keep_exception_expires_by_itself(s: Sched) -> None:
    """'Keep dev-eu 1h' spares it from tonight's run; it is listed, then gone."""
    s.travel(utc(2027, 1, 11, 18, 50))
    s.engine.keep("nightly", "dev-eu", s.time.now() + dt.timedelta(hours=1), "U0ALICE")
    [kept] = s.store.active_exceptions("nightly")
    assert (kept.resource, kept.created_by) == ("dev-eu", "U0ALICE")
    await s.tick_at(utc(2027, 1, 11, 19, 0))
    await s.engine.wait()
    assert [(i.resource, i.outcome, said(i.detail)) for i in s.notes.final().items] == [
        ("dev-eu", Outcome.KEPT, "kept by <@U0ALICE> for 50m"),
        ("spark", Outcome.STOPPED, None),
    ]
    s.travel(utc(2027, 1, 11, 19, 51))
    assert s.store.active_exceptions("nightly") == []
    assert [i.stop for i in s.engine.plan(s.engine.schedule("nightly"))] == [True, True]
    [audit] = [e for e in s.store.audit_log() if e.action == "schedule.keep"]
    assert audit.actor == "U0ALICE"


async def test_holiday_is_skipped_and_announced(sims: SimulatorServer, tmp_path: Path) -> None:
    """A fire on a calendar day off is announced as skipped, not silently dropped."""
    h = Sched(
        sims, tmp_path / "db", [{**NIGHTLY, "skip_on": ["fr"]}], calendars={"fr": ["2026-12-25"]}
    )
    try:
        h.travel(utc(2026, 12, 25, 8))
        await h.engine.tick()
        await h.tick_at(utc(2026, 12, 25, 19))
        assert h.notes.announcements == [
            "The nightly run due Fri 25 Dec 20:00 Europe/Paris is skipped (fr holiday). "
            "Next run: Mon 28 Dec 20:00 Europe/Paris."
        ]
        [run] = h.store.runs(schedule="nightly")
        assert (run.status, said(run.reason)) == ("skipped", "fr holiday")
    finally:
        await h.aclose()


async def test_missed_run_within_grace_runs_on_start(s: Sched) -> None:
    """Down at 20:00 and back at 20:10 (grace 30m): the run happens once, on start."""
    await s.restart()
    await s.tick_at(utc(2027, 1, 11, 19, 10))
    await s.engine.wait()
    [run] = s.store.runs(schedule="nightly")
    assert (run.fire_time, run.status) == (utc(2027, 1, 11, 19), "done")


async def test_missed_run_beyond_grace_is_reported(s: Sched) -> None:
    """Down until 22:00: the 20:00 run is reported as missed and nothing is stopped."""
    await s.tick_at(utc(2027, 1, 11, 21, 0))
    [run] = s.store.runs(schedule="nightly")
    assert run.status == "missed"
    assert s.notes.announcements == [
        "Missed the nightly run due Mon 11 Jan 20:00 Europe/Paris: Stopbot was not running, "
        "and 2h is past the grace time of 30m. Nothing was stopped; run it now with "
        "`/stop schedule run nightly`."
    ]
    assert [e for e in s.store.audit_log() if e.action == "stop.accepted"] == []


async def test_run_with_locked_already_stopped_failing_and_opted_out(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """Each kind of resource ends in its own line of the summary, failures after a retry."""
    everything = {
        **NIGHTLY,
        "force": True,
        "select": {
            "resources": [
                "dev-eu",
                "staging-us",
                "qa-old",
                "web-1",
                "batch-2",
                "spark",
                "etl",
                "analytics",
            ]
        },
    }
    h = Sched(
        sims,
        tmp_path / "db",
        [everything],
        resources_patch={"analytics": {"tags": {"env": "dev", "stopbot/skip": "true"}}},
    )
    try:
        seed = h.sims.hub.initial_seed["qovery"]
        h.sims.hub["qovery"].seed(
            {
                **seed,
                "clusters": [
                    {**c, "fail_stop": True} if c["name"] == "dev-eu" else c
                    for c in seed["clusters"]
                ],
            }
        )
        h.travel(utc(2027, 1, 11, 12))
        await h.engine.tick()
        h.sims.hub["qovery"].set_lock(
            STAGING, owner="Alice Martin", reason="load test until Friday", ttl=dt.timedelta(days=3)
        )
        h.store.set_lock("web-1", "U0ALICE", utc(2027, 1, 12), reason="demo")
        await h.tick_at(utc(2027, 1, 11, 19))
        await h.engine.wait()
        outcomes = {i.resource: (i.outcome, said(i.detail)) for i in h.notes.final().items}
        assert outcomes == {
            "dev-eu": (Outcome.FAILED, outcomes["dev-eu"][1]),
            "staging-us": (
                Outcome.LOCKED,
                "staging-us is locked in qovery by Alice Martin "
                "(load test until Friday); it expires in 2d 17h.",
            ),
            "qa-old": (Outcome.ALREADY, None),
            "web-1": (Outcome.LOCKED, "locked by <@U0ALICE>: demo"),
            "batch-2": (
                Outcome.LOCKED,
                "batch-2 is locked in nova (kernel upgrade in progress); "
                "only an admin can stop it.",
            ),
            "spark": (Outcome.STOPPED, None),
            "etl": (Outcome.STOPPED, None),
            "analytics": (Outcome.OPTED_OUT, "tagged stopbot/skip"),
        }
        assert "STOP_ERROR" in (outcomes["dev-eu"][1] or "")
        dev_stops = [e for e in h.store.audit_log(resource="dev-eu") if e.action == "stop.accepted"]
        assert len(dev_stops) == 2  # the first try and one retry
    finally:
        await h.aclose()


async def test_restart_during_a_run_finishes_it_without_stopping_twice(s: Sched) -> None:
    """Killed mid-run, the next process resumes the run; each resource got one stop."""
    await s.tick_at(utc(2027, 1, 11, 19, 0))
    # Let the stops be accepted, then "kill" the process before they finish.
    while not [e for e in s.store.audit_log() if e.action == "stop.in_progress"]:
        await s.time.sleep(0)
    await s.restart()
    await s.service.resume(lambda op: _Null())
    assert s.engine.resume() == 1
    await s.engine.wait()
    [run] = s.store.runs(schedule="nightly")
    assert run.status == "done"
    assert {i.resource: i.outcome for i in s.store.run_items(run.id)} == {
        "dev-eu": Outcome.STOPPED,
        "spark": Outcome.STOPPED,
    }
    accepted = [e.resource for e in s.store.audit_log() if e.action == "stop.accepted"]
    assert sorted(accepted) == ["dev-eu", "spark"]


async def test_schedule_rebuilt_from_the_store_after_restart(s: Sched) -> None:
    """A schedule added from Slack lives in the store: a restarted engine still runs it."""
    s.engine.add(
        ScheduleConfig.model_validate(
            {
                **NIGHTLY,
                "name": "late",
                "cron": "0 23 * * *",
                "select": {"resources": ["etl"]},
                "force": True,
            }
        ),
        "U0ADMIN",
    )
    await s.restart()
    await s.engine.tick()
    await s.tick_at(utc(2027, 1, 11, 22, 0))
    await s.engine.wait()
    [run] = s.store.runs(schedule="late")
    assert run.status == "done"


async def test_drift_reported_once(sims: SimulatorServer, tmp_path: Path) -> None:
    """A stopped cluster running again before 07:00 is reported once."""
    h = Sched(sims, tmp_path / "db", [{**NIGHTLY, "until": "07:00"}])
    try:
        h.travel(utc(2027, 1, 11, 12))
        await h.engine.tick()
        await h.tick_at(utc(2027, 1, 11, 19))
        await h.engine.wait()
        h.sims.hub["qovery"].set_state(DEV_EU, "DEPLOYED")
        await h.tick_at(utc(2027, 1, 11, 23))
        await h.tick_at(utc(2027, 1, 12, 1))
        assert h.notes.drifts == [("nightly", "dev-eu", "DEPLOYED")]
        await h.tick_at(utc(2027, 1, 12, 7, 30))  # working hours: no longer watched
        assert len(h.notes.drifts) == 1
    finally:
        await h.aclose()


async def test_dry_run_plan_calls_no_provider(s: Sched) -> None:
    """The plan is made from the store alone: no provider request."""
    before = len(s.sims.hub.faults.listing())
    s.store.set_lock("spark", "U0ALICE", utc(2027, 1, 12), reason="demo")
    plan = s.engine.plan(s.engine.schedule("nightly"))
    assert [(i.resource, i.stop, i.outcome) for i in plan] == [
        ("dev-eu", True, None),
        ("spark", False, Outcome.LOCKED),
    ]
    assert len(s.sims.hub.faults.listing()) == before


async def test_config_schedule_cannot_be_removed_from_slack(s: Sched) -> None:
    """A schedule from stopbot.yaml is refused removal with where to remove it."""
    with pytest.raises(ScheduleError, match=r"`nightly` is defined in stopbot\.yaml"):
        s.engine.remove("nightly", "U0ADMIN")


async def test_runner_sleeps_until_the_next_thing_due_on_the_bots_clock(s: Sched) -> None:
    """The runner's next wake-up is the warning's start on the engine's clock (then the
    fire), never later than its interval; it runs until stopped."""
    runner = ScheduleRunner(s.engine, interval=86400)
    runner.start()
    try:
        assert runner.running
        schedule = s.engine.schedule("nightly")
        fire = s.engine.definitions.next_fire(schedule)
        assert runner.next_due() == fire - schedule.warn_before
        wait = (fire - schedule.warn_before - s.engine.clock()).total_seconds()
        assert await runner._wait() == wait
    finally:
        await runner.stop()
    assert not runner.running


class _Null:
    async def progress(self, op: Operation, timeline: Any, status: Any) -> None:
        return None


def test_summary_of_a_large_run_fits_slack_sections() -> None:
    """1,000 stopped and 50 failed resources: every section stays under 3,000 characters,
    failures keep their reason, and the rest is counted."""
    from bot.models import RunItem
    from bot.slack.schedule_views import summary

    run = ScheduleRun(
        id="r1",
        schedule="nightly",
        fire_time=utc(2027, 1, 11, 19),
        kind="cron",
        status="done",
        started_at=utc(2027, 1, 11, 19),
    )
    items = [
        RunItem(run_id="r1", resource=f"res-{i:04d}", outcome=Outcome.STOPPED) for i in range(1000)
    ]
    items += [
        RunItem(
            run_id="r1",
            resource=f"bad-{i:02d}",
            outcome=Outcome.FAILED,
            detail="qovery reports STOP_ERROR",
        )
        for i in range(50)
    ]
    report = RunReport(
        run=run,
        schedule=ScheduleConfig.model_validate(NIGHTLY),
        items=items,
        elapsed=dt.timedelta(minutes=3),
    )
    text, blocks = summary(report)
    assert text == "nightly run done: 1000 stopped, 50 failed"
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(s) <= 3000 for s in sections)
    assert sections[0].startswith(":white_check_mark: Stopped (1000): res-0000; res-0001")
    assert sections[0].endswith(" more")
    assert sections[1].startswith(":x: Failed (50): bad-00 (qovery reports STOP_ERROR); ")


def test_summary_counts_what_a_report_does_not_list() -> None:
    """A report of a large run lists only the first items of each outcome: the summary's
    counts and its "more" are the run's, not the list's."""
    from bot.models import RunItem
    from bot.slack.schedule_views import summary

    run = ScheduleRun(
        id="r1", schedule="nightly", fire_time=utc(2027, 1, 11, 19), kind="cron", status="running"
    )
    report = RunReport(
        run=run,
        schedule=ScheduleConfig.model_validate(NIGHTLY),
        items=[
            RunItem(run_id="r1", resource="web-1", outcome=Outcome.STOPPED),
            RunItem(run_id="r1", resource="web-2"),
            RunItem(run_id="r1", resource="web-3", outcome=Outcome.STOPPED),
        ],
        counts={Outcome.STOPPED: 7000, "in progress": 2998},
        elapsed=dt.timedelta(seconds=20),
    )
    text, blocks = summary(report)
    assert text == "nightly run running: 7000 stopped, 2998 in progress"
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert sections[0] == ":white_check_mark: Stopped (7000): web-1; web-3 … and 6998 more"
    assert sections[1].endswith("(2998): web-2 … and 2997 more")


@pytest.mark.parametrize(
    ("resource", "requests"),
    [
        # One read of status and lock together, the stop, then the polls.
        ("dev-eu", {"qovery": {"GET": 1 + 7, "POST": 1}}),
        # The same, after the Keystone login (a POST).
        ("web-1", {"nova": {"GET": 1 + 4, "POST": 1 + 1}}),
        # No lock to read: the status, the stop, the polls.
        ("spark", {"okeanos": {"GET": 1 + 4, "POST": 1}}),
        ("etl", {"feldera": {"GET": 1 + 4, "POST": 1}}),
    ],
)
async def test_a_scheduled_stop_reads_status_and_lock_once_before_stopping(
    sims: SimulatorServer, tmp_path: Path, resource: str, requests: dict[str, dict[str, int]]
) -> None:
    """The lock read with the status just before is the one checked before the stop: no
    second read. Polls every second: Qovery's stop takes two 3 s steps, the others one."""
    one = {**NIGHTLY, "force": True, "select": {"resources": [resource]}}
    h = Sched(sims, tmp_path / "db", [one])
    try:
        h.travel(utc(2027, 1, 11, 12))
        await h.engine.tick()
        sims.hub.faults.reset_counts()
        await h.tick_at(utc(2027, 1, 11, 19))
        await h.engine.wait()
        assert [(i.resource, i.outcome) for i in h.notes.final().items] == [
            (resource, Outcome.STOPPED)
        ]
        assert sims.hub.faults.counts() == requests
        (op,) = h.store.recent_operations(resource=resource)
        assert [t.state for t in h.store.transitions(op.id) if t.provider_state is None] == [
            "requested",
            "awaiting_confirmation",
            "submitting",
            "accepted",
            "in_progress",
            "stopped",
        ]
    finally:
        await h.aclose()


# -- skip and snooze act on one fire ---------------------------------------------------

TONIGHT = utc(2027, 1, 11, 19)  # 20:00 Paris, Monday
TOMORROW = utc(2027, 1, 12, 19)


async def test_skip_clicked_twice_skips_that_fire_once(s: Sched) -> None:
    """Two clicks on one warning's Skip skip that fire: the second changes nothing and says
    who skipped it; the next night runs."""
    first = s.engine.skip("nightly", "U0BOB", TONIGHT)
    second = s.engine.skip("nightly", "U0CAROL", TONIGHT)
    assert (first.fire, first.by, first.repeat) == (TONIGHT, "U0BOB", False)
    assert (second.fire, second.by, second.repeat) == (TONIGHT, "U0BOB", True)
    assert s.store.skips("nightly") == {TONIGHT: "U0BOB"}
    assert len([e for e in s.store.audit_log() if e.action == "schedule.skip"]) == 1
    assert s.engine.upcoming(s.engine.schedule("nightly")) == TOMORROW
    await s.tick_at(TONIGHT)
    await s.tick_at(TOMORROW)
    await s.engine.wait()
    assert [(r.fire_time, r.status) for r in s.store.runs(schedule="nightly")] == [
        (TOMORROW, "done"),
        (TONIGHT, "skipped"),
    ]


async def test_skip_or_snooze_after_the_run_started_changes_nothing(s: Sched) -> None:
    """Skip or Snooze pressed a minute after the fire answer that the run started, and
    leave tomorrow's run alone."""
    await s.tick_at(TONIGHT + dt.timedelta(minutes=1))
    started = re.escape(
        "The `nightly` run due Mon 11 Jan 20:00 Europe/Paris has already started: "
        "nothing was changed."
    )
    with pytest.raises(ScheduleError, match=f"^{started}$"):
        s.engine.skip("nightly", "U0BOB", TONIGHT)
    with pytest.raises(ScheduleError, match=f"^{started}$"):
        s.engine.snooze("nightly", dt.timedelta(hours=1), "U0BOB", TONIGHT)
    await s.engine.wait()
    assert (s.store.skips("nightly"), s.store.snoozes("nightly")) == ({}, {})
    await s.tick_at(TOMORROW)
    await s.engine.wait()
    assert [(r.fire_time, r.status) for r in s.store.runs(schedule="nightly")] == [
        (TOMORROW, "done"),
        (TONIGHT, "done"),
    ]


async def test_snooze_clicked_twice_moves_the_run_once(s: Sched) -> None:
    """Snooze 1h twice: one hour from the fire, not two; another duration replaces it."""
    first = s.engine.snooze("nightly", dt.timedelta(hours=1), "U0BOB", TONIGHT)
    second = s.engine.snooze("nightly", dt.timedelta(hours=1), "U0CAROL", TONIGHT)
    assert (first.at, first.repeat) == (utc(2027, 1, 11, 20), False)
    assert (second.at, second.repeat) == (utc(2027, 1, 11, 20), True)
    assert s.engine.snooze("nightly", dt.timedelta(hours=2), "U0BOB", TONIGHT).at == utc(
        2027, 1, 11, 21
    )
    assert s.store.snoozes("nightly") == {TONIGHT: (utc(2027, 1, 11, 21), False)}
    assert s.engine.upcoming(s.engine.schedule("nightly")) == utc(2027, 1, 11, 21)
    assert len([e for e in s.store.audit_log() if e.action == "schedule.snooze"]) == 2


async def test_a_snooze_past_the_next_fire_keeps_that_fire(s: Sched) -> None:
    """Tonight's run snoozed by 25 hours: tomorrow's 20:00 still comes first, warned and
    run, then the snoozed run at 21:00, warned too."""
    change = s.engine.snooze("nightly", dt.timedelta(hours=25), "U0BOB")
    assert (change.fire, change.at) == (TONIGHT, utc(2027, 1, 12, 20))
    assert s.engine.upcoming(s.engine.schedule("nightly")) == TOMORROW
    for at in (TONIGHT, utc(2027, 1, 12, 18, 45), TOMORROW):
        await s.tick_at(at)
    await s.engine.wait()
    for at in (utc(2027, 1, 12, 19, 45), utc(2027, 1, 12, 20)):
        await s.tick_at(at)
    await s.engine.wait()
    assert [w[1] for w in s.notes.warnings] == [TOMORROW, utc(2027, 1, 12, 20)]
    assert s.notes.warned_fires == [TOMORROW, TONIGHT]
    assert [(r.fire_time, r.kind, r.status) for r in s.store.runs(schedule="nightly")] == [
        (utc(2027, 1, 12, 20), "snooze", "done"),
        (TOMORROW, "cron", "done"),
    ]


# -- grace time ------------------------------------------------------------------------


async def test_a_snoozed_run_past_the_grace_time_is_missed(s: Sched) -> None:
    """Snoozed to 21:00 Paris, and the bot down from 20:00 to 09:00: the run is recorded
    as missed and announced, and nothing is stopped in the morning."""
    s.engine.snooze("nightly", dt.timedelta(hours=1), "U0BOB")
    await s.tick_at(TONIGHT)
    await s.restart()
    await s.tick_at(utc(2027, 1, 12, 8))
    await s.engine.wait()
    [run] = s.store.runs(schedule="nightly")
    assert (run.kind, run.fire_time, run.status) == ("snooze", utc(2027, 1, 11, 20), "missed")
    assert s.notes.announcements == [
        "Missed the nightly run due Mon 11 Jan 21:00 Europe/Paris: Stopbot was not running, "
        "and 12h is past the grace time of 30m. Nothing was stopped; run it now with "
        "`/stop schedule run nightly`."
    ]
    assert [e for e in s.store.audit_log() if e.action == "stop.accepted"] == []


def gate(provider: Provider, method: str) -> asyncio.Event:
    """Hold ``provider.method`` until the event is set (a slow provider, frozen)."""
    event = asyncio.Event()
    original = getattr(provider, method)

    async def held(*args: Any, **kwargs: Any) -> Any:
        await event.wait()
        return await original(*args, **kwargs)

    setattr(provider, method, held)
    return event


async def test_a_run_resumed_past_the_grace_time_starts_no_more_stops(s: Sched) -> None:
    """Killed while spark's preview was read, back 12 hours later: what was stopped stays
    recorded, spark is not stopped (missed), and the run is announced as cut."""
    gate(s.providers["okeanos"], "status_and_lock")
    await s.tick_at(TONIGHT)
    [run] = s.store.runs(schedule="nightly")
    while s.store.run_items(run.id)[0].outcome is None:  # dev-eu
        await s.time.sleep(0)
    await s.restart()
    del s.providers["okeanos"].status_and_lock  # type: ignore[attr-defined]
    s.travel(utc(2027, 1, 12, 7))
    assert s.engine.resume() == 1
    await asyncio.wait_for(s.engine.wait(), 10)  # a guard: it hung forever before
    run = s.store.run(run.id) or run
    assert run.status == "missed"
    assert [(i.resource, i.outcome, said(i.detail)) for i in s.store.run_items(run.id)] == [
        ("dev-eu", Outcome.STOPPED, None),
        (
            "spark",
            Outcome.MISSED,
            "not stopped: Stopbot was down for 12h, past the grace time of 30m",
        ),
    ]
    (spark,) = s.store.recent_operations(resource="spark")
    assert (spark.state.value, said(spark.detail)) == (
        "failed",
        "interrupted by a restart while it was being prepared: nothing was stopped",
    )
    assert s.notes.announcements == [
        "The nightly run due Mon 11 Jan 20:00 Europe/Paris was cut by a restart, and Stopbot "
        "was down for 12h, past the grace time of 30m: 1 resource it had not stopped yet "
        "were not stopped. Run it now with `/stop schedule run nightly`."
    ]
    assert s.notes.final().run.status == "missed"


async def test_a_restart_while_preparing_a_stop_fails_it_and_tries_again(s: Sched) -> None:
    """Killed while dev-eu's preview was read: the next process ends that request as failed
    (it would wait for it forever otherwise) and tries again once, which stops it."""
    gate(s.providers["qovery"], "status_and_lock")
    await s.tick_at(TONIGHT)
    for _ in range(20):
        await asyncio.sleep(0)
    [first] = s.store.recent_operations(resource="dev-eu")
    assert first.state.value == "requested"
    await s.restart()
    del s.providers["qovery"].status_and_lock  # type: ignore[attr-defined]
    await s.service.resume(lambda op: _Null())
    assert s.engine.resume() == 1
    await asyncio.wait_for(s.engine.wait(), 10)  # a guard: it hung forever before
    [run] = s.store.runs(schedule="nightly")
    assert run.status == "done"
    assert {i.resource: i.outcome for i in s.store.run_items(run.id)} == {
        "dev-eu": Outcome.STOPPED,
        "spark": Outcome.STOPPED,
    }
    assert [(t.state, said(t.message)) for t in s.store.transitions(first.id)] == [
        ("requested", None),
        ("failed", "interrupted by a restart while it was being prepared: nothing was stopped"),
    ]
    accepted = [e for e in s.store.audit_log(resource="dev-eu") if e.action == "stop.accepted"]
    assert len(accepted) == 1


# -- schedules removed, downtime -------------------------------------------------------


async def test_a_schedule_removed_from_stopbot_yaml_is_deleted(s: Sched) -> None:
    """Gone from the file, gone from the store at the next start, with its skips, Keep
    exceptions and state, audited; it no longer runs."""
    s.engine.skip("nightly", "U0BOB", TOMORROW)
    s.engine.keep("nightly", "dev-eu", TOMORROW, "U0ALICE")
    s.config = sample(s.sims, schedules=[])
    await s.restart()
    assert s.engine.schedules() == {}
    assert s.store.skips("nightly") == {}
    assert s.store.active_exceptions("nightly") == []
    assert s.store.schedule_state("nightly").checked_through is None
    [removed] = [e for e in s.store.audit_log() if e.action == "schedule.removed"]
    assert (removed.actor, removed.detail) == (
        "stopbot.yaml",
        {"name": "nightly", "source": "config"},
    )
    await s.tick_at(TONIGHT)
    await s.engine.wait()
    assert s.store.runs(schedule="nightly") == []


async def test_a_schedule_added_again_starts_afresh(s: Sched) -> None:
    """Removed, then added again under its name days later: the fires in between are not
    reported as missed (they were never its)."""
    late = ScheduleConfig.model_validate(
        {**NIGHTLY, "name": "late", "cron": "0 23 * * *", "select": {"resources": ["etl"]}}
    )
    s.engine.add(late, "U0ADMIN")
    await s.tick_at(utc(2027, 1, 11, 13))
    s.engine.remove("late", "U0ADMIN")
    s.travel(utc(2027, 1, 14, 12))
    s.engine.add(late, "U0ADMIN")
    await s.tick_at(utc(2027, 1, 14, 12, 1))
    assert s.store.runs(schedule="late") == []
    assert [a for a in s.notes.announcements if "run late`" in a] == []


async def test_missed_fires_after_downtime_are_announced_together(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """A schedule every 5 minutes, the bot down for two days: each fire is recorded missed,
    and the channel gets one message per stretch of consecutive misses (a skipped fire
    splits them), not 576."""
    h = Sched(
        sims,
        tmp_path / "db",
        [{**NIGHTLY, "cron": "*/5 * * * *"}],
        scheduling={"grace_time": "1m"},
    )
    try:
        h.travel(utc(2027, 1, 11, 12))
        await h.engine.tick()
        h.engine.skip("nightly", "U0BOB", utc(2027, 1, 12, 12))
        await h.restart()
        await h.tick_at(utc(2027, 1, 13, 12, 2))
        assert h.notes.announcements == [
            "Missed 287 nightly runs, due from Mon 11 Jan 13:05 Europe/Paris to Tue 12 Jan "
            "12:55 Europe/Paris: Stopbot was not running, and even the last is 1d 7m late, "
            "past the grace time of 1m. Nothing was stopped; run it now with "
            "`/stop schedule run nightly`.",
            "The nightly run due Tue 12 Jan 13:00 Europe/Paris is skipped (skipped by "
            "<@U0BOB>). Next run: Wed 13 Jan 13:05 Europe/Paris.",
            "Missed 288 nightly runs, due from Tue 12 Jan 13:05 Europe/Paris to Wed 13 Jan "
            "13:00 Europe/Paris: Stopbot was not running, and even the last is 2m late, "
            "past the grace time of 1m. Nothing was stopped; run it now with "
            "`/stop schedule run nightly`.",
        ]
        runs = h.store.runs(schedule="nightly", limit=1000)
        assert len(runs) == 576
        assert {r.status for r in runs if r.fire_time != utc(2027, 1, 12, 12)} == {"missed"}
    finally:
        await h.aclose()


# -- a run always ends -----------------------------------------------------------------


async def test_an_unexpected_error_fails_one_resource_and_the_run_ends(
    s: Sched, caplog: pytest.LogCaptureFixture
) -> None:
    """okeanos raising something unforeseen fails spark alone, with a reference to the
    log; dev-eu is stopped and the run ends with its summary."""

    async def broken(resource: Any, force: bool = False) -> Any:
        raise RuntimeError("unexpected payload")

    s.providers["okeanos"].stop = broken  # type: ignore[method-assign]
    await s.tick_at(TONIGHT)
    await s.engine.wait()
    final = s.notes.final()
    assert final.run.status == "done"
    outcomes = {i.resource: (i.outcome, said(i.detail)) for i in final.items}
    assert outcomes["dev-eu"] == (Outcome.STOPPED, None)
    outcome, detail = outcomes["spark"]
    assert outcome == Outcome.FAILED
    found = re.fullmatch(
        r"unexpected error \(RuntimeError\); Stopbot's log has the details under reference "
        r"([0-9a-f]{8})",
        detail or "",
    )
    assert found is not None
    [logged] = [r for r in caplog.records if r.getMessage() == "scheduled stop failed"]
    assert (logged.reference, logged.resource) == (found.group(1), "spark")  # type: ignore[attr-defined]
    assert logged.exc_info is not None


async def test_removing_a_schedule_mid_run_ends_its_summary(s: Sched) -> None:
    """A Slack-added schedule removed while it runs: its summary still ends."""
    late = ScheduleConfig.model_validate(
        {
            **NIGHTLY,
            "name": "late",
            "cron": "0 23 * * *",
            "select": {"resources": ["etl"]},
            "force": True,
        }
    )
    s.engine.add(late, "U0ADMIN")
    await s.engine.tick()  # it counts from here
    await s.tick_at(utc(2027, 1, 11, 22))
    assert [r.status for r in s.store.runs(schedule="late")] == ["running"]
    while not s.notes.summaries:
        await s.time.sleep(0)
    s.engine.remove("late", "U0ADMIN")
    await s.engine.wait()
    final = s.notes.final()
    assert (final.schedule.name, final.run.status) == ("late", "done")
    assert [(i.resource, i.outcome) for i in final.items] == [("etl", Outcome.STOPPED)]


# -- summaries and warnings ------------------------------------------------------------


async def test_refusals_other_than_locks_say_why(sims: SimulatorServer, tmp_path: Path) -> None:
    """A resource the provider does not know is reported refused with the provider's
    words, not as 'skipped: locked'."""
    h = Sched(
        sims,
        tmp_path / "db",
        [NIGHTLY],
        resources_patch={"spark": {"id": "00000000-0000-4000-8000-000000000000"}},
    )
    try:
        h.travel(utc(2027, 1, 11, 12))
        await h.engine.tick()
        await h.tick_at(TONIGHT)
        await h.engine.wait()
        outcomes = {i.resource: (i.outcome, said(i.detail)) for i in h.notes.final().items}
        assert outcomes["dev-eu"] == (Outcome.STOPPED, None)
        outcome, detail = outcomes["spark"]
        assert outcome == Outcome.REFUSED
        assert (detail or "").startswith(
            "okeanos does not know spark (id 00000000-0000-4000-8000-000000000000): "
        )
        assert (detail or "").endswith("Check the id in the configuration.")
    finally:
        await h.aclose()


async def test_a_warning_that_could_not_be_shown_is_tried_again(s: Sched) -> None:
    """The warning's post fails at 19:45: the next tick, still before the run, posts it."""
    s.notes.failing_warnings = 1
    await s.tick_at(utc(2027, 1, 11, 18, 45))
    assert s.notes.warnings == []
    await s.tick_at(utc(2027, 1, 11, 18, 46))
    await s.tick_at(utc(2027, 1, 11, 18, 47))
    assert [(w[0], w[1]) for w in s.notes.warnings] == [("nightly", TONIGHT)]


async def test_no_second_stop_after_a_stop_that_timed_out(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """The stop call timed out, and the provider had taken it: its state says so, and the
    run follows that stop to Stopped without sending a second one."""
    h = Sched(sims, tmp_path / "db", [{**NIGHTLY, "select": {"resources": ["dev-eu"]}}])
    try:
        h.travel(utc(2027, 1, 11, 12))
        await h.engine.tick()
        qovery = h.providers["qovery"]
        original, calls = qovery.stop, []

        async def times_out(resource: Any, force: bool = False) -> Any:
            calls.append(resource.name)
            await original(resource, force=force)
            raise ProviderTimeoutError("qovery", "no answer within 10s")

        qovery.stop = times_out  # type: ignore[method-assign]
        await h.tick_at(TONIGHT)
        await h.engine.wait()
        assert calls == ["dev-eu"]
        assert [(i.resource, i.outcome) for i in h.notes.final().items] == [
            ("dev-eu", Outcome.STOPPED)
        ]
        [op] = h.store.recent_operations(resource="dev-eu")
        [accepted] = [t for t in h.store.transitions(op.id) if t.state == "accepted"]
        assert said(accepted.message) == (
            "qovery: the provider did not answer in time: no answer within 10s; the provider "
            "took it all the same"
        )
    finally:
        await h.aclose()


async def test_a_second_process_beside_a_run_sends_nothing_and_takes_it_over_when_it_dies(
    s: Sched,
) -> None:
    """A second process started while the first executes a run (a rolling deploy) leaves
    the run and its stops to it, even a stop whose call is on the wire. The first then
    dies: the second takes the run over; the stop the dead one had claimed is judged by
    the provider (it never left: not taken) and sent again, so each resource gets one
    stop call in all."""
    held = gate(s.providers["qovery"], "stop")
    s.sims.hub.faults.reset_counts()
    await s.tick_at(TONIGHT)
    [run] = s.store.runs(schedule="nightly")
    while not any(op.send_claimed_at for op in s.store.recent_operations(resource="dev-eu")):
        await s.time.sleep(0)
    beside = StopService(s.config, s.store, s.providers, clock=s.time.now, sleep=s.time.sleep)
    engine = ScheduleEngine(s.config, s.store, beside, Notes())
    assert await beside.resume(lambda op: _Null()) == []
    assert engine.resume() == 0

    s.service.registry.me.abandon()  # the first process dies, its stop call never sent
    await s.engine.cancel()
    await s.service.aclose()
    held.set()
    await beside.resume(lambda op: _Null())
    assert engine.resume() == 1
    await asyncio.wait_for(engine.wait(), 10)

    run = s.store.run(run.id) or run
    assert run.status == "done"
    assert {i.resource: i.outcome for i in s.store.run_items(run.id)} == {
        "dev-eu": Outcome.STOPPED,
        "spark": Outcome.STOPPED,
    }
    [dev] = s.store.recent_operations(resource="dev-eu")
    assert (dev.state, dev.sends) == (OpState.STOPPED, 2)
    assert [e.action for e in s.store.audit_log(resource="dev-eu")].count("stop.not_taken") == 1
    counts = s.sims.hub.faults.counts()
    assert (counts["qovery"].get("POST"), counts["okeanos"].get("POST")) == (1, 1)
    ended = [e for e in s.store.audit_log() if e.action == "schedule.run.done"]
    assert len(ended) == 1
    await beside.aclose()
