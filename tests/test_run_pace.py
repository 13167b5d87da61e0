"""Scheduled runs at the providers' speed: requests limited per provider account, not stops;
one bulk read before the stops; 429s slow one account; a lock taken after the read."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot import run_pace
from bot.config import parse_config
from bot.models import Operation, OpState
from bot.schedules import Outcome
from bot.workflow import Preview, PriorRead, Unshown
from providers.base import Provider, Resource
from providers.pacing import RequestGate, RequestLimits
from providers.registry import build_provider
from providers.simulators.common import AccountLimit, Fault
from providers.simulators.samples import DEFAULT_SEED, sample_config
from providers.simulators.server import SimulatorServer
from tests.helpers import sample
from tests.test_schedules import Sched

UTC = dt.UTC
MONDAY = dt.datetime(2027, 1, 11, 12, 0, tzinfo=UTC)
CLUSTERS = [f"0c000000-0000-4000-8000-00000000000{i}" for i in range(8)]


def qovery_estate(
    sims: SimulatorServer, tmp_path: Path, *, in_flight: int, step: float = 3.0
) -> Sched:
    """Eight running Qovery clusters (q0 to q7), stops of ``step`` seconds a step, one
    schedule over them, and Qovery allowing ``in_flight`` requests at once."""
    sims.hub["qovery"].seed(
        {
            **DEFAULT_SEED["qovery"],
            "step_seconds": step,
            "clusters": [
                {"id": cid, "name": f"q{i}", "status": "DEPLOYED"} for i, cid in enumerate(CLUSTERS)
            ],
        }
    )
    providers = sample_config(sims.base_url)["providers"]
    for p in providers:
        if p["name"] == "qovery":
            p["requests"] = {"max_in_flight": in_flight, "max_per_second": None}
    schedule = {
        "name": "nightly",
        "cron": "0 20 * * *",
        "timezone": "UTC",
        "select": {"tags": {"env": "q"}},
        "channel": "C0DEV",
    }
    resources = [
        {"name": f"q{i}", "provider": "qovery", "id": cid, "tags": {"env": "q"}}
        for i, cid in enumerate(CLUSTERS)
    ]
    harness = Sched(
        sims,
        tmp_path / "db",
        [schedule],
        providers=providers,
        resources=resources,
        stops={"timeout": "6h"},
    )
    harness.travel(MONDAY)
    return harness


@pytest.fixture
async def closing() -> AsyncIterator[list[Sched]]:
    harnesses: list[Sched] = []
    yield harnesses
    for harness in harnesses:
        await harness.aclose()


def states(s: Sched) -> list[OpState]:
    return [op.state for op in s.store.recent_operations(limit=100)]


async def test_a_stop_the_provider_accepted_frees_its_slot(
    sims: SimulatorServer, tmp_path: Path, closing: list[Sched]
) -> None:
    """With Qovery allowing one request at a time and stops that take hours, all eight stops
    are accepted while none has stopped: an accepted stop holds no slot (the old design held
    one per stop until it had stopped, and would have sent one)."""
    s = qovery_estate(sims, tmp_path, in_flight=1, step=3600.0)
    closing.append(s)
    run = await s.engine.run_now("nightly", "U0ADMIN")
    accepted = {OpState.ACCEPTED, OpState.IN_PROGRESS}
    for _ in range(20000):  # a guard: turns of the event loop, not time
        if len(states(s)) == 8 and set(states(s)) <= accepted:
            break
        await asyncio.sleep(0)
    assert len(states(s)) == 8 and set(states(s)) <= accepted
    s.travel(s.time.now() + dt.timedelta(hours=3))
    await s.engine.wait()
    assert [i.outcome for i in s.store.run_items(run.id)] == [Outcome.STOPPED] * 8


async def test_a_run_starts_its_stops_as_places_free_up(
    sims: SimulatorServer, tmp_path: Path, closing: list[Sched], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight stops with room for three started and not yet sent: never more than three
    stops exist as tasks before the provider has them (the others wait as items of the
    run), and all eight are sent and end stopped."""
    monkeypatch.setattr(run_pace, "ADMISSION", 3)
    s = qovery_estate(sims, tmp_path, in_flight=1, step=3600.0)
    closing.append(s)
    run = await s.engine.run_now("nightly", "U0ADMIN")
    accepted = {OpState.ACCEPTED, OpState.IN_PROGRESS}
    unsent: list[int] = []
    for _ in range(20000):  # a guard: turns of the event loop, not time
        started = [
            t
            for t in asyncio.all_tasks()
            if t.get_coro().__qualname__.endswith("_execute.<locals>.one")  # type: ignore[union-attr]
        ]
        sent = [state for state in states(s) if state in accepted]
        unsent.append(len(started) - len(sent))
        if len(sent) == 8:
            break
        await asyncio.sleep(0)
    assert max(unsent) == 3 and len(sent) == 8
    s.travel(s.time.now() + dt.timedelta(hours=3))
    await s.engine.wait()
    assert [i.outcome for i in s.store.run_items(run.id)] == [Outcome.STOPPED] * 8


async def test_a_run_s_stops_are_never_taken_for_stranded(
    sims: SimulatorServer, tmp_path: Path, closing: list[Sched]
) -> None:
    """The sweep that carries on this process's stops nobody drives runs at every turn of
    the event loop during a run: it finds none (each stop is driven from the moment it is
    confirmed), and each stop is sent once."""
    s = qovery_estate(sims, tmp_path, in_flight=2, step=0.0)
    closing.append(s)
    sims.hub.faults.reset_counts()
    run = await s.engine.run_now("nightly", "U0ADMIN")
    taken: list[object] = []
    for _ in range(20000):  # a guard: turns of the event loop, not time
        taken += await s.service.resume(lambda op: Unshown())
        if s.store.run(run.id).finished_at is not None:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0)
    await s.engine.wait()
    assert taken == []
    assert [i.outcome for i in s.store.run_items(run.id)] == [Outcome.STOPPED] * 8
    assert sims.hub.faults.counts()["qovery"]["POST"] == 8


async def test_requests_in_flight_never_exceed_the_accounts_limit(
    sims: SimulatorServer, tmp_path: Path, closing: list[Sched]
) -> None:
    """Eight stops with Qovery allowing three requests at once (every call slowed so that
    they overlap, and the simulator refusing a fourth with 429): the simulator never serves
    more than three at once, and serves three."""
    s = qovery_estate(sims, tmp_path, in_flight=3)
    closing.append(s)
    sims.hub.faults.set_limit(AccountLimit(api="qovery", max_in_flight=3))
    sims.hub.faults.add(Fault(api="qovery", kind="latency", seconds=0.05, count=None))
    sims.hub.faults.reset_counts()
    run = await s.engine.run_now("nightly", "U0ADMIN")
    await s.engine.wait()
    assert sims.hub.faults.peaks()["qovery"] == 3
    assert [i.outcome for i in s.store.run_items(run.id)] == [Outcome.STOPPED] * 8
    # Eight stops, none refused with a 429, and never a read per cluster before its stop.
    assert sims.hub.faults.counts()["qovery"]["POST"] == 8


async def test_a_lock_taken_after_the_bulk_read_is_a_skip_with_its_owner(
    sims: SimulatorServer, tmp_path: Path, closing: list[Sched]
) -> None:
    """The run reads dev-eu and staging-us in one list call; staging-us is locked then (by
    Alice Martin), dev-eu is locked by Carol Danvers right after the read: Qovery refuses
    its stop, and both are reported skipped as locked, each with its owner."""
    s = Sched(
        sims,
        tmp_path / "db",
        [
            {
                "name": "nightly",
                "cron": "0 20 * * *",
                "timezone": "UTC",
                "select": {"resources": ["dev-eu", "staging-us"]},
                "channel": "C0DEV",
            }
        ],
    )
    closing.append(s)
    qovery = s.providers["qovery"]
    read = qovery.statuses_and_locks
    dev_eu = s.config.resource("dev-eu")

    async def read_then_lock(resources: list[Resource]) -> Any:
        found = await read(resources)
        sims.hub["qovery"].set_lock(dev_eu.id, owner="Carol Danvers", reason="demo at 9")
        return found

    qovery.statuses_and_locks = read_then_lock  # type: ignore[method-assign]
    sims.hub.faults.reset_counts()
    run = await s.engine.run_now("nightly", "U0ADMIN")
    await s.engine.wait()
    items = {i.resource: i for i in s.store.run_items(run.id)}
    assert items["dev-eu"].outcome == Outcome.LOCKED
    assert "Carol Danvers" in str(items["dev-eu"].detail or "")
    assert "demo at 9" in str(items["dev-eu"].detail or "")
    assert items["staging-us"].outcome == Outcome.LOCKED
    assert str(items["staging-us"].detail or "").startswith(
        "staging-us is locked in qovery by Alice Martin (load test until Friday)"
    )
    requests = sims.hub.faults.counts()["qovery"]
    # The list, dev-eu's stop, and the read of dev-eu that tells Qovery's 409 apart.
    assert requests == {"GET": 2, "POST": 1}


class VirtualTime:
    """A clock that moves only when a gate sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_a_429_slows_that_account_and_no_other(sims: SimulatorServer) -> None:
    """Qovery answers one 429 with Retry-After 2: its next request goes out 2 s later and
    its account is allowed half the requests in flight; Feldera, asked at the same time and
    after, is neither paused nor slowed."""
    config = sample(sims)
    time = VirtualTime()
    sent: list[tuple[str, float]] = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent.append((request.url.path.split("/")[1], time.now))
            return await super().handle_async_request(request)

    limits = RequestLimits(max_in_flight=4, max_per_second=None)
    gates = {name: RequestGate(limits, clock=time.clock, sleep=time.sleep) for name in ("q", "f")}
    providers: dict[str, Provider] = {
        "qovery": build_provider(
            config.provider("qovery"), http=config.http, transport=Recording(), gate=gates["q"]
        ),
        "feldera": build_provider(
            config.provider("feldera"), http=config.http, transport=Recording(), gate=gates["f"]
        ),
    }
    sims.hub.faults.add(Fault(api="qovery", kind="status", status=429, retry_after=2))
    try:
        await asyncio.gather(
            providers["qovery"].status(config.resource("dev-eu")),
            providers["feldera"].status(config.resource("etl")),
        )
        await providers["feldera"].status(config.resource("etl"))
    finally:
        for provider in providers.values():
            await provider.aclose()
    assert sent == [("qovery", 0.0), ("feldera", 0.0), ("qovery", 2.0), ("feldera", 2.0)]
    assert (gates["q"].concurrency, gates["q"].paused_until) == (2, 2.0)
    assert (gates["f"].concurrency, gates["f"].paused_until) == (4, float("-inf"))


def test_the_old_concurrency_setting_limits_requests_and_says_so() -> None:
    """`scheduling.per_provider_concurrency: 7` still loads: it becomes the requests in
    flight of each provider that sets none (one that does keeps its own), stops in progress
    stay uncapped, and a deprecation line says what to write instead."""
    document = sample_config("http://127.0.0.1:9")
    document["providers"][0]["requests"] = {"max_in_flight": 3}
    document["scheduling"] = {"per_provider_concurrency": 7}
    config = parse_config(document, "test", env={})
    assert [(p.name, p.requests.max_in_flight) for p in config.providers] == [
        ("qovery", 3),
        ("nova", 7),
        ("okeanos", 7),
        ("feldera", 7),
    ]
    assert config.scheduling.max_stops_in_progress is None
    [line] = config.deprecations()
    assert line.startswith("scheduling.per_provider_concurrency (7) is deprecated: ")
    assert "providers[].requests.max_in_flight" in line
    assert parse_config(sample_config("http://127.0.0.1:9"), "t", env={}).deprecations() == []


async def test_a_followed_stop_holds_neither_its_preview_nor_its_bulk_read(
    sims: SimulatorServer, tmp_path: Path, closing: list[Sched]
) -> None:
    """Once the provider has accepted them, eight stops being followed (stops of hours)
    hold no Preview and no bulk read of theirs, and only their follower holds their
    operation (a run of 10,000 follows thousands at once: each held its preview and ~4
    versions of its operation, in the frames of its preparation and of its send)."""
    s = qovery_estate(sims, tmp_path, in_flight=1, step=3600.0)
    closing.append(s)
    run = await s.engine.run_now("nightly", "U0ADMIN")
    for _ in range(20000):  # a guard: turns of the event loop, not time
        if len(states(s)) == 8 and set(states(s)) == {OpState.IN_PROGRESS}:
            break
        await asyncio.sleep(0)
    assert len(states(s)) == 8 and set(states(s)) == {OpState.IN_PROGRESS}
    ids = {op.id for op in s.store.recent_operations(limit=100)}
    gc.unfreeze()  # (objects frozen meanwhile would not be listed)
    gc.collect()
    live = gc.get_objects()
    previews = [o for o in live if isinstance(o, Preview) and o.operation.id in ids]
    reads = [o for o in live if isinstance(o, PriorRead) and o.read[0].resource_id in CLUSTERS]
    held_by = set()
    for op in (o for o in live if isinstance(o, Operation) and o.id in ids):
        for referrer in gc.get_referrers(op):
            # A coroutine's locals, directly or in a tuple (a result unpacked later).
            around = gc.get_referrers(referrer) if isinstance(referrer, tuple) else [referrer]
            held_by |= {c.cr_code.co_qualname for c in around if inspect.iscoroutine(c)}
    del live
    assert (previews, reads) == ([], [])
    assert held_by == {"StopService._follow"}  # follow's loop; not its wrapper
    s.travel(s.time.now() + dt.timedelta(hours=3))
    await s.engine.wait()
    assert [i.outcome for i in s.store.run_items(run.id)] == [Outcome.STOPPED] * 8
