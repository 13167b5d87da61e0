"""Savings (bot/savings.py): hours stopped counted from the audit on the movable clock,
across stops, starts seen at the provider and wakes; rates from the configuration and from
Qovery's currentCost (a range); a run's expected savings; the weekly digest, once."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import ConfigError, ScheduleConfig, parse_config
from bot.metrics import Metrics
from bot.models import SYSTEM, OpState
from bot.rates import COST_TTL, REFRESH_IN_FLIGHT, RETRY_FAILED
from bot.savings import (
    SEEN_RUNNING,
    Expected,
    Report,
    Savings,
    SavingsError,
    Selection,
    parse_period,
    stretches,
)
from bot.schedules import Outcome
from bot.slack.fake_api.blocks import check_blocks
from bot.slack.schedule_views import summary as summary_view
from bot.slack.wording import when
from bot.stopbot import Face
from bot.store import open_store
from bot.workflow import Unshown
from providers.simulators.common import Fault
from providers.simulators.samples import sample_config
from providers.simulators.server import SimulatorServer
from tests.test_core import ALICE, BOB, Core, utc

RATES: dict[str, Any] = {
    "currency": "EUR",
    "providers": {"nova": 0.1},
    "tags": [{"tags": {"env": "dev", "team": "data"}, "per_hour": 0.25}],
}
RESOURCES = {
    "web-1": {"cost_per_hour": 0.4},
    "spark": {"tags": {"env": "dev", "team": "data"}},
}


class Digests:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Report]] = []

    async def digest(self, channel: str, report: Report) -> bool:
        self.sent.append((channel, report))
        return True


@pytest.fixture
async def core(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Core]:
    harness = Core(sims, tmp_path / "db", resources=RESOURCES, savings=RATES)
    harness.travel(utc(2027, 1, 11, 12))  # a Monday
    yield harness
    await harness.aclose()


async def stop(core: Core, resource: str, user: str = BOB) -> dt.datetime:
    """``user`` stops ``resource`` to its end (Feldera's forced stop: the open-source
    edition has no other); when it reached stopped (its audit entry)."""
    actor = core.actor(user)
    preview = await core.bot.service.prepare(
        resource, actor, source="test", notify=True, force=resource == "etl"
    )
    result = core.bot.service.confirm(preview.operation.id, actor)
    assert result.operation is not None
    final = await core.bot.service.run(result.operation.id, Unshown(), core.actor(user))
    assert final.state == OpState.STOPPED
    [entry] = [
        e
        for e in core.store.audit_log(resource=resource)
        if e.action == "stop.stopped" and e.operation_id == final.id
    ]
    return entry.at


def hours(report: Report) -> dict[str, float]:
    return {line.name: round(line.hours, 6) for line in report.resources}


async def test_hours_run_from_stopped_until_a_start_seen_at_the_provider(core: Core) -> None:
    """web-1 stopped 10 h counts 10 h; started outside Stopbot, it counts on until the
    polling reads it running (once), then stops counting; stopped again, it counts again."""
    savings = core.bot.savings
    stopped = await stop(core, "web-1")
    core.travel(stopped + dt.timedelta(hours=10))
    report = await savings.report(stopped - dt.timedelta(days=1))
    assert hours(report) == {"web-1": 10.0}
    [line] = report.resources
    assert line.stopped_now and line.provider == "nova"
    assert line.money == {"EUR": (4.0, 4.0)}
    assert line.rate is not None and line.rate.source == "configured for web-1"
    # Started by hand at the provider: polling sees it an hour later.
    nova = core.sims.hub["nova"]
    nova.set_state("6a1f0e2d-9b8c-4d7e-a6f5-1c2b3a4d5e01", "ACTIVE")
    core.travel(stopped + dt.timedelta(hours=11))
    assert await savings.check() == ["web-1"]
    assert await savings.check() == []  # within check_interval: no read at all
    core.travel(stopped + dt.timedelta(hours=15))
    assert await savings.check() == []  # read again, seen running already: nothing new
    seen = [e for e in core.store.audit_log(resource="web-1") if e.action == SEEN_RUNNING]
    assert [(e.actor, e.detail["state"], e.at) for e in seen] == [
        (SYSTEM, "ACTIVE", stopped + dt.timedelta(hours=11))
    ]
    report = await savings.report(stopped - dt.timedelta(days=1))
    assert hours(report) == {"web-1": 11.0}
    assert not report.resources[0].stopped_now
    again = await stop(core, "web-1", ALICE)
    core.travel(again + dt.timedelta(hours=2))
    report = await savings.report(stopped - dt.timedelta(days=1))
    assert hours(report) == {"web-1": 13.0}
    assert report.total.money == {"EUR": (5.2, 5.2)}
    # By person: Bob's stop 11 h, Alice's 2 h; no schedule stopped anything.
    assert [(p.name, round(p.hours, 6)) for p in report.people] == [(BOB, 11.0), (ALICE, 2.0)]
    assert report.schedules == []
    # A period that starts inside a stretch counts from its start.
    report = await savings.report(stopped + dt.timedelta(hours=9))
    assert hours(report) == {"web-1": 4.0}


async def test_a_wake_ends_a_stretch(core: Core) -> None:
    """A start's audit (a wake reaching running) ends the stretch as a start seen does."""
    stopped = await stop(core, "web-1")
    core.travel(stopped + dt.timedelta(hours=3))
    core.store.audit(ALICE, "wake.started", resource="web-1", operation_id="w1")
    core.travel(stopped + dt.timedelta(hours=8))
    report = await core.bot.savings.report(stopped - dt.timedelta(hours=1))
    assert hours(report) == {"web-1": 3.0}
    assert core.bot.savings.stopped_now() == {}


async def test_the_drift_watch_stops_the_count(sims: SimulatorServer, tmp_path: Path) -> None:
    """A resource a scheduled run stopped, seen running again by the drift watch before
    `until`, stops counting at that read; the run's summary said what it would save."""
    nightly = {
        "name": "nightly",
        "cron": "0 20 * * 1-5",
        "timezone": "Europe/Paris",
        "select": {"resources": ["web-1", "etl"]},
        "channel": "C0DEV",
        "until": "07:00",
        "force": True,  # Feldera's open-source edition stops only so
    }
    core = Core(sims, tmp_path / "db", resources=RESOURCES, savings=RATES, schedules=[nightly])
    try:
        core.travel(utc(2027, 1, 11, 12))
        core.bot.engine.sync_config()
        await core.bot.engine.tick()
        core.travel(utc(2027, 1, 11, 19))
        await core.bot.engine.tick()
        await core.bot.engine.wait()
        await core.bot.outbox.flush()
        summary = core.told.final_summary()
        assert {i.resource: i.outcome for i in summary.items} == {
            "web-1": Outcome.STOPPED,
            "etl": Outcome.STOPPED,
        }
        expected = summary.expected
        assert expected is not None
        finished = summary.run.finished_at
        assert finished is not None
        # Until 07:00 Paris (06:00 UTC): web-1 at 0.40 EUR an hour; etl has no rate.
        assert expected.until == utc(2027, 1, 12, 6)
        assert expected.hours == pytest.approx((utc(2027, 1, 12, 6) - finished).seconds / 3600)
        assert expected.money == {"EUR": pytest.approx((0.4 * expected.hours,) * 2)}
        assert (expected.resources, expected.unrated) == (2, 1)
        assert expected.sources == ("configured for web-1",)
        _, blocks = summary_view(summary)
        check_blocks(blocks)
        assert blocks[-1]["elements"][0]["text"] == (
            f":moneybag: Expected to save ≈ {0.4 * expected.hours:,.2f} EUR until "
            f"{when(utc(2027, 1, 12, 6))} ({expected.hours:.1f} h, 2 resource(s), 1 without "
            "a rate; estimate: configured for web-1)"
        )
        # etl started by hand at 23:00 UTC; the drift watch reads it at its next check.
        sims.hub["feldera"].set_state("etl", "Running")
        core.travel(utc(2027, 1, 11, 23))
        await core.bot.engine.tick()
        [seen] = [e for e in core.store.audit_log(resource="etl") if e.action == "schedule.drift"]
        core.travel(utc(2027, 1, 12, 9))
        report = await core.bot.savings.report(utc(2027, 1, 11))
        stopped = {e.resource: e.at for e in core.store.audit_log() if e.action == "stop.stopped"}
        assert hours(report) == {
            "web-1": round((utc(2027, 1, 12, 9) - stopped["web-1"]).total_seconds() / 3600, 6),
            "etl": round((seen.at - stopped["etl"]).total_seconds() / 3600, 6),
        }
        assert [s.name for s in report.schedules] == ["nightly"]
        assert report.people == []
        assert report.unrated == ["etl"]
    finally:
        await core.aclose()


async def test_qovery_s_cost_range_is_the_rate_of_a_cluster_without_one(core: Core) -> None:
    """dev-eu has no configured rate: Qovery's currentCost (365-730 USD a month) is its
    rate, 0.50-1.00 USD an hour, a range in its own currency, its source said."""
    stopped = await stop(core, "dev-eu")
    core.travel(stopped + dt.timedelta(hours=4))
    report = await core.bot.savings.report(stopped, selection=Selection("resource", value="dev-eu"))
    [line] = report.resources
    assert line.rate is not None
    assert (line.rate.low, line.rate.high, line.rate.currency) == (0.5, 1.0, "USD")
    assert line.rate.source == "Qovery currentCost, a monthly range"
    assert line.money == {"USD": (2.0, 4.0)}
    assert report.currency == "EUR"


async def test_costs_are_read_by_the_leader_kept_for_all_and_a_run_asks_none_it_knows(
    core: Core, sims: SimulatorServer, tmp_path: Path
) -> None:
    """Housekeeping reads every Qovery cluster's cost (in the background), again only once
    COST_TTL old; the answers are in the store, so a second process's run summary asks
    Qovery nothing, nor does this one's when the answers are old (an estimate); a store
    that never had an answer asks once."""
    clusters = [
        r.name
        for r in core.config.resources
        if r.provider == "qovery" and core.bot.savings.rates.configured(r) is None
    ]
    assert "dev-eu" in clusters

    async def qovery_gets(action: Any) -> int:
        sims.hub.faults.reset_counts()
        await action()
        return sims.hub.faults.counts().get("qovery", {}).get("GET", 0)

    async def housekeeping() -> None:
        await core.bot.tick()
        assert core.bot.cost_refresh is not None
        await core.bot.cost_refresh

    assert await qovery_gets(housekeeping) == len(clusters)
    assert await qovery_gets(housekeeping) == 0
    core.travel(core.time.now() + COST_TTL + dt.timedelta(minutes=1))
    assert await qovery_gets(housekeeping) == len(clusters)

    nightly = core.config.schedules[0] if core.config.schedules else None
    schedule = nightly or ScheduleConfig.model_validate(
        {"name": "n", "cron": "0 20 * * *", "select": {"resources": ["dev-eu"]}}
    )
    other = Savings(core.config, core.store, core.providers, clock=core.time.now)
    found: list[Expected | None] = []

    async def summary(savings: Savings) -> None:
        found.append(await savings.expected(schedule, ["dev-eu"], core.time.now()))

    assert await qovery_gets(lambda: summary(other)) == 0
    core.travel(core.time.now() + COST_TTL * 2)
    assert await qovery_gets(lambda: summary(core.bot.savings)) == 0
    for expected in found:
        assert expected is not None and expected.sources == ("Qovery currentCost, a monthly range",)
        assert expected.unrated == 0

    fresh = open_store(tmp_path / "fresh.db", clock=core.time.now)
    try:
        newcomer = Savings(core.config, fresh, core.providers, clock=core.time.now)
        assert await qovery_gets(lambda: summary(newcomer)) == 1
        assert fresh.costs(["dev-eu"])["dev-eu"][1]["low"] == 365.0
    finally:
        fresh.close()


async def test_a_refresh_reads_a_few_costs_at_a_time_and_a_failed_one_waits(
    core: Core, sims: SimulatorServer
) -> None:
    """A refresh reads at most REFRESH_IN_FLIGHT costs of an account at once (a run's
    stops keep the rest of its requests); a cluster whose read was refused is not asked
    again at the next rounds, only once RETRY_FAILED has passed."""
    clusters = [
        r.name
        for r in core.config.resources
        if r.provider == "qovery" and core.bot.savings.rates.configured(r) is None
    ]
    assert len(clusters) > REFRESH_IN_FLIGHT
    refused = Fault(
        api="qovery", kind="status", method="GET", path_contains="currentCost", status=403
    )
    sims.hub.faults.add(Fault(api="qovery", kind="latency", seconds=0.2, count=None))
    sims.hub.faults.add(refused.model_copy(update={"count": None}))

    async def housekeeping() -> int:
        sims.hub.faults.reset_counts()
        await core.bot.tick()
        assert core.bot.cost_refresh is not None
        await core.bot.cost_refresh
        return sims.hub.faults.counts().get("qovery", {}).get("GET", 0)

    assert await housekeeping() == len(clusters)
    assert sims.hub.faults.peaks()["qovery"] == REFRESH_IN_FLIGHT
    assert await housekeeping() == 0
    core.travel(core.time.now() + RETRY_FAILED - dt.timedelta(minutes=1))
    assert await housekeeping() == 0
    sims.hub.faults.clear()
    core.travel(core.time.now() + dt.timedelta(minutes=2))
    assert await housekeeping() == len(clusters)
    assert core.store.costs(clusters).keys() == set(clusters)


async def test_a_resource_without_a_rate_counts_hours_only(core: Core) -> None:
    """etl (Feldera: no rate configured, none from the API) counts hours and no money."""
    stopped = await stop(core, "etl")
    core.travel(stopped + dt.timedelta(hours=5))
    report = await core.bot.savings.report(stopped - dt.timedelta(hours=1))
    assert hours(report) == {"etl": 5.0}
    assert report.resources[0].money == {} and report.unrated == ["etl"]
    assert report.total.money == {}


def test_stretches_from_facts() -> None:
    """Two stops with no start seen between are one stretch; a start before any stop and
    facts of other resources change nothing."""

    class E:
        def __init__(self, h: int, action: str, resource: str = "a") -> None:
            self.at, self.action, self.resource = utc(2027, 1, 1, h), action, resource
            self.operation_id = f"op{h}"

    found = stretches(
        [
            E(0, "wake.started"),
            E(1, "stop.stopped"),
            E(2, "stop.stopped"),
            E(3, "stop.stopped", "b"),
            E(4, "resource.running"),
            E(5, "stop.stopped"),
        ]
    )
    assert [(s.resource, s.start.hour, s.end.hour if s.end else None) for s in found] == [
        ("a", 1, 4),
        ("b", 3, None),
        ("a", 5, None),
    ]


def test_selection_and_period_errors_say_what_to_write(core: Core) -> None:
    """A selection names a resource, an env or a tag; a period is 7d, 30d or month."""
    config = core.config
    assert Selection.parse(config, "web-1") == Selection("resource", value="web-1")
    assert Selection.parse(config, "dev") == Selection("env", "env", "dev")
    assert Selection.parse(config, "tag:team=data") == Selection("tag", "team", "data")
    assert Selection.parse(config, "team=data") == Selection("tag", "team", "data")
    assert Selection.parse(config, "env:prod") == Selection("env", "env", "prod")
    with pytest.raises(SavingsError, match="no resource or env named nope"):
        Selection.parse(config, "nope")
    with pytest.raises(SavingsError, match="tag:key=value"):
        Selection.parse(config, "tag:team")
    now = utc(2027, 1, 11, 12)
    assert parse_period("7d", now) == (utc(2027, 1, 4, 12), "the last 7d")
    assert parse_period("month", now) == (utc(2027, 1, 1), "this month")
    assert parse_period(None, now)[0] == utc(2026, 12, 12, 12)
    for bad in ("7w", "0d", "-3d", "month2"):
        with pytest.raises(SavingsError, match="7d, 30d or month"):
            parse_period(bad, now)


@pytest.mark.parametrize(
    ("savings", "resources", "problem"),
    [
        ({"currency": "euro"}, {}, "savings.currency"),
        ({"providers": {"nova": -1}}, {}, "negative"),
        ({"providers": {"aws": 1}}, {}, "savings.providers.aws: no provider named 'aws'"),
        ({"tags": [{"tags": {}, "per_hour": 1}]}, {}, "savings.tags[0].tags"),
        ({"digest": {"channel": "C1", "timezone": "Mars/Olympus"}}, {}, "unknown time zone"),
        ({"digest": {"channel": "C1", "weekday": "funday"}}, {}, "savings.digest.weekday"),
        ({}, {"web-1": {"cost_per_hour": -0.5}}, "cost_per_hour"),
    ],
)
def test_bad_rates_are_clear_config_errors(
    savings: dict[str, Any], resources: dict[str, dict[str, Any]], problem: str
) -> None:
    """A bad savings setting is refused with where it is and why."""
    document = sample_config("http://127.0.0.1:1")
    document["savings"] = savings
    for r in document["resources"]:
        r.update(resources.get(r["name"], {}))
    with pytest.raises(ConfigError) as caught:
        parse_config(document, "stopbot.yaml", env={})
    assert problem in str(caught.value)


async def test_the_weekly_digest_is_owed_once_across_restarts(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """Monday 09:00 Paris the digest is owed once (a claim in the store): a second tick, a
    restarted process or a replica on the same store owes it no more; the next week again."""
    digest = {
        **RATES,
        "digest": {
            "channel": "C0FIN",
            "weekday": "monday",
            "at": "09:00",
            "timezone": "Europe/Paris",
        },
    }
    first = Core(sims, tmp_path / "db", resources=RESOURCES, savings=digest)
    shown = Digests()
    first.bot.attach(Face(savings=shown))
    try:
        first.travel(utc(2027, 1, 11, 7, 59))
        assert not first.bot.owe_digest()
        stopped = await stop(first, "web-1")
        first.travel(utc(2027, 1, 18, 8, 0))  # 09:00 Paris, a week later
        await first.bot.tick()
        await first.bot.tick()
        await first.bot.outbox.flush()
        second = Core(sims, tmp_path / "db", resources=RESOURCES, savings=digest)
        try:
            assert not second.bot.owe_digest()
        finally:
            await second.aclose()
        [(channel, report)] = shown.sent
        assert channel == "C0FIN"
        assert (report.since, report.until) == (utc(2027, 1, 11, 8), utc(2027, 1, 18, 8))
        assert stopped < report.since  # stopped before the week: the whole week counts
        assert hours(report) == {"web-1": 168.0}
        first.travel(utc(2027, 1, 19, 9))  # more than a day late: that week's is not sent
        assert not first.bot.owe_digest()
        first.travel(utc(2027, 1, 25, 8, 30))
        assert first.bot.owe_digest()
    finally:
        await first.aclose()


async def test_metrics_count_seconds_stopped_and_estimates_by_provider(core: Core) -> None:
    """stopbot_stopped_seconds_total and stopbot_estimated_savings_total grow with a
    stretch still going, by provider (a range's two bounds), from the audit."""
    stopped = await stop(core, "web-1")
    core.travel(stopped + dt.timedelta(hours=10))
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(
            Metrics(core.store, core.bot.savings).render().decode()
        )
        for s in family.samples
    }
    assert got[("stopbot_stopped_seconds_total", (("provider", "nova"),))] == 36000.0
    for bound in ("low", "high"):
        labels = (("bound", bound), ("currency", "EUR"), ("provider", "nova"))
        assert got[("stopbot_estimated_savings_total", labels)] == pytest.approx(4.0)
