"""Scheduled stops: cron fires in two time zones across DST, warnings, skip, snooze, keep,
holidays, missed runs, runs against the simulators, restarts and drift. Time travels; nothing
sleeps."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import ScheduleConfig
from bot.cron import cron_trigger, next_fire
from bot.models import Operation, ScheduleRun
from bot.schedules import Outcome, PlanItem, RunReport, ScheduleEngine, ScheduleRunner
from bot.store import Store
from bot.workflow import StopService
from providers.base import Provider, ResourceStatus
from providers.registry import build_provider
from providers.simulators.server import SimulatorServer
from tests.helpers import SimTime, sample

UTC = dt.UTC
DEV_EU = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01"
STAGING = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c02"


class Notes:
    """A notifier that keeps everything it is told."""

    def __init__(self) -> None:
        self.warnings: list[tuple[str, dt.datetime, list[PlanItem]]] = []
        self.announcements: list[str] = []
        self.summaries: list[RunReport] = []
        self.drifts: list[tuple[str, str, str]] = []
        self.approvals: list[Operation] = []

    async def warn(self, schedule: ScheduleConfig, fire: dt.datetime, plan: list[PlanItem]) -> None:
        self.warnings.append((schedule.name, fire, plan))

    async def announce(self, schedule: ScheduleConfig, fire: dt.datetime, text: str) -> None:
        self.announcements.append(text)

    async def summary(self, report: RunReport) -> None:
        self.summaries.append(report)

    async def drift(
        self, schedule: ScheduleConfig, run: ScheduleRun, resource: str, status: ResourceStatus
    ) -> None:
        self.drifts.append((schedule.name, resource, status.state))

    async def approval_requested(self, op: Operation) -> None:
        self.approvals.append(op)

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
        self.store = Store(self.db, clock=self.time.now)
        self.service = StopService(
            self.config, self.store, self.providers, clock=self.time.now, sleep=self.time.sleep
        )
        self.notes = Notes()
        self.engine = ScheduleEngine(self.config, self.store, self.service, self.notes)
        self.engine.sync_config()

    async def restart(self) -> None:
        await self.engine.cancel()
        await self.service.aclose()
        self.store.close()
        self.start()

    def travel(self, when: dt.datetime) -> None:
        """Move the one clock (simulators and bot) to ``when``."""
        self.sims.hub.clock.advance((when - self.time.now()).total_seconds())

    async def tick_at(self, when: dt.datetime) -> None:
        self.travel(when)
        await self.engine.tick()

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
    fire = s.engine.skip_next("nightly", "U0BOB")
    assert fire == utc(2027, 1, 11, 19)
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
    until = s.engine.snooze("nightly", dt.timedelta(hours=1), "U0BOB")
    assert until == utc(2027, 1, 11, 20)
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
    assert [(i.resource, i.outcome, i.detail) for i in s.notes.final().items] == [
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
        assert (run.status, run.reason) == ("skipped", "fr holiday")
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
        h.sims.hub["qovery"].set_lock(  # type: ignore[attr-defined]
            STAGING, owner_name="Alice Martin", reason="load test until Friday", ttl_in_days=3
        )
        h.store.set_lock("web-1", "U0ALICE", utc(2027, 1, 12), reason="demo")
        await h.tick_at(utc(2027, 1, 11, 19))
        await h.engine.wait()
        outcomes = {i.resource: (i.outcome, i.detail) for i in h.notes.final().items}
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
        h.sims.hub["qovery"].set_state(DEV_EU, "DEPLOYED")  # type: ignore[attr-defined]
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
    from bot.schedules import ScheduleError

    with pytest.raises(ScheduleError, match=r"`nightly` is defined in stopbot\.yaml"):
        s.engine.remove("nightly", "U0ADMIN")


async def test_runner_builds_jobs_from_the_store(s: Sched) -> None:
    """APScheduler gets a tick job and one cron job per schedule."""
    runner = ScheduleRunner(s.engine)
    runner.start()
    try:
        assert runner.running
        assert sorted(j.id for j in runner.scheduler.get_jobs()) == ["cron:nightly", "tick"]
    finally:
        await runner.stop()


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
