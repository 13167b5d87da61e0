"""Full garbage collections at quiet moments (bot/slack/collector.py), on a fake clock:
the interpreter starts none while the collector runs, one is made every ``every`` seconds
once the server is idle, or after ``at_most`` under a load that never pauses, and the
interpreter's thresholds are back once it stops."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bot.slack.app import AfterAck
from bot.slack.collector import NEVER, QuietCollector


class Time:
    """A clock that moves only when the collector sleeps, up to ``until`` (then
    ``reached`` is set); the server's idle time is set by the test as a function of it."""

    def __init__(self, until: float, busy_until: float) -> None:
        self.now = 0.0
        self.until = until
        self.busy_until = busy_until
        self.reached = asyncio.Event()
        self.collections: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.now >= self.until:
            self.reached.set()
            await asyncio.Event().wait()  # cancelled by the test
        await asyncio.sleep(0)

    def idle(self) -> float:
        return max(0.0, self.now - self.busy_until)

    def seen(self, phase: str, info: dict[str, Any]) -> None:
        """gc's callback: when a full collection started, on this clock."""
        if phase == "start" and info["generation"] == 2:
            self.collections.append(self.now)


@pytest.fixture
def watching() -> Iterator[list[Time]]:
    clocks: list[Time] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        for clock in clocks:
            clock.seen(phase, info)

    gc.callbacks.append(callback)
    yield clocks
    gc.callbacks.remove(callback)


async def run(
    time: Time, busy: Callable[[], bool] = lambda: False, **options: float
) -> QuietCollector:
    collector = QuietCollector(
        time.idle, busy=busy, sleep=time.sleep, clock=lambda: time.now, **options
    )
    task = asyncio.create_task(collector.run())
    await time.reached.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return collector


async def test_full_collections_wait_for_a_quiet_server(watching: list[Time]) -> None:
    """Every 30 s, once no request was answered for 1 s: a server busy until 40 s gets
    its first collection at 41 s (idle 1 s), the next at 41 + 30 = 71 s; while it runs the
    interpreter starts none itself, and its thresholds are back after."""
    time = Time(until=80, busy_until=40)
    watching.append(time)
    before = gc.get_threshold()
    during: list[tuple[int, int, int]] = []
    real_sleep = time.sleep

    async def sleep(seconds: float) -> None:
        during.append(gc.get_threshold())
        await real_sleep(seconds)

    time.sleep = sleep  # type: ignore[method-assign]
    collector = await run(time, every=30, quiet=1, at_most=300)
    assert time.collections == [41.0, 71.0]
    assert collector.collections == 2
    assert set(during) == {(before[0], before[1], NEVER)}
    assert gc.get_threshold() == before


async def test_a_load_that_never_pauses_still_gets_a_collection(watching: list[Time]) -> None:
    """Never idle: the collection comes after at_most of waiting (30 + 60 s)."""
    time = Time(until=100, busy_until=10_000)
    watching.append(time)
    await run(time, every=30, quiet=1, at_most=60)
    assert time.collections == [90.0]


async def test_full_collections_wait_while_stops_are_followed(watching: list[Time]) -> None:
    """No request answered, but stops followed until 50 s (a run in flight): the first
    collection waits for them (50 s, not 30 s), the next comes 30 s later; followed
    forever, the collection still comes after at_most (30 + 60 s)."""
    time = Time(until=85, busy_until=0)
    watching.append(time)
    await run(time, busy=lambda: time.now < 50, every=30, quiet=1, at_most=300)
    assert time.collections == [50.0, 80.0]

    always = Time(until=100, busy_until=0)
    watching.append(always)
    await run(always, busy=lambda: True, every=30, quiet=1, at_most=60)
    assert always.collections == [90.0]


async def test_the_server_s_idle_time_counts_from_its_last_answer() -> None:
    """AfterAck says 0 while a request is being answered, then the time since its end."""
    after = AfterAck(4)
    after.begin()
    assert after.idle_for() == 0.0
    after.end()
    await asyncio.sleep(0.01)
    assert 0.005 < after.idle_for() < 1.0
