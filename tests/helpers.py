"""Test helpers shared by the workflow and Slack tests: one movable clock for everything."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from bot.config import StopbotConfig, parse_config
from bot.cron import cron_trigger, next_fire
from bot.estate import SCHEDULE_ZONE, START_CRON
from bot.models import Operation, Transition
from providers.base import ResourceStatus
from providers.simulators.samples import sample_config
from providers.simulators.server import SimulatorServer

FAST_STOPS = {
    "poll_initial": "1s",
    "poll_max": "1s",
    "timeout": "2m",
    "progress_interval": 0,
    "poll_batch_window": 0,
}


def sample(
    sims: SimulatorServer,
    resources_patch: dict[str, dict[str, Any]] | None = None,
    **overrides: Any,
) -> StopbotConfig:
    """The sample configuration for these simulators, with stops followed every second;
    ``resources_patch`` adds keys to named resources."""
    document = sample_config(sims.base_url)
    for resource in document["resources"]:
        resource.update((resources_patch or {}).get(resource["name"], {}))
    document["stops"] = {**FAST_STOPS, **overrides.pop("stops", {})}
    document.update(overrides)
    return parse_config(document, "test", env={})


class SimTime:
    """The simulators' clock as the bot's clock; sleeping moves it instead of waiting."""

    def __init__(self, sims: SimulatorServer) -> None:
        self.sims = sims

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.sims.hub.clock.now(), dt.UTC)

    async def sleep(self, seconds: float) -> None:
        self.sims.hub.clock.advance(seconds)
        await asyncio.sleep(0)


class Recorder:
    """A progress listener that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Operation, list[Transition], ResourceStatus | None]] = []

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None:
        self.calls.append((op, timeline, status))

    def states(self) -> list[tuple[str, str | None]]:
        return [(op.state.value, op.provider_state) for op, _, _ in self.calls]


def clear_of_the_morning_start(sims: SimulatorServer) -> None:
    """The estate's morning start (START_CRON) posts its warning a few minutes before it
    fires: a test whose clock is frozen less than an hour before it (the tests move the
    clock up to 45 minutes) would see messages it does not expect, on weekdays from 06:00
    to 07:00 UTC. Such a clock is moved just past that start, and the estate seeded again
    from there."""
    now = dt.datetime.fromtimestamp(sims.hub.clock.now(), dt.UTC)
    start = next_fire(cron_trigger(START_CRON, SCHEDULE_ZONE), now - dt.timedelta(minutes=5))
    if start - now < dt.timedelta(hours=1):
        sims.hub.clock.advance((start - now).total_seconds() + 5 * 60)
        sims.hub.seed(sims.hub.initial_seed)  # its times (a lock's 3 days) from the new now
