"""The fan-out of reads over the providers (bot/reads.py), against the simulators."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot import reads
from bot.config import StopbotConfig
from providers.base import Provider
from providers.registry import build_provider
from providers.simulators.common import Fault
from providers.simulators.server import SimulatorServer
from tests.helpers import sample


@pytest.fixture
def config(sims: SimulatorServer) -> StopbotConfig:
    return sample(sims)


@pytest.fixture
async def providers(config: StopbotConfig) -> AsyncIterator[dict[str, Provider]]:
    built = {p.name: build_provider(p, http=config.http) for p in config.providers}
    yield built
    for provider in built.values():
        await provider.aclose()


async def test_a_slow_provider_is_unknown_past_the_bound_and_the_others_are_read(
    sims: SimulatorServer, config: StopbotConfig, providers: dict[str, Provider]
) -> None:
    """Qovery takes a second and the read waits 0.2 s for each provider: Qovery's
    resources, and their locks, are unknown for that reason; ~okeanos, slow too, has no
    locks to be unknown; Nova's are read, lock included."""
    for api in ("qovery", "okeanos"):
        sims.hub.faults.add(Fault(api=api, kind="latency", seconds=1.0, count=None))
    wanted = [config.resource(n) for n in ("dev-eu", "staging-us", "spark", "batch-2")]
    found = await reads.read(providers, wanted, within=0.2)
    late = "the provider did not answer in time: waited 0.2 s"
    assert {
        name: (r.status_error, r.lock_error)
        for name, r in found.items()
        if r.status_error or r.lock_error
    } == {
        "dev-eu": (f"qovery: {late}", f"qovery: {late}"),
        "staging-us": (f"qovery: {late}", f"qovery: {late}"),
        "spark": (f"okeanos: {late}", None),
    }
    batch = found["batch-2"]
    assert batch.status is not None and batch.status.state == "ACTIVE"
    assert batch.lock is not None and batch.lock.reason == "kernel upgrade in progress"


async def test_lock_reads_skip_providers_without_locks(
    sims: SimulatorServer, config: StopbotConfig, providers: dict[str, Provider]
) -> None:
    """read_locks reads only the providers that hold locks: one bulk call to Qovery and
    one to Nova, none to ~okeanos or Feldera."""
    found = await reads.read_locks(providers, config.all_resources())
    assert sorted(found) == ["batch-2", "db-3", "dev-eu", "qa-old", "staging-us", "web-1"]
    assert {n: r.lock.owner for n, r in found.items() if r.lock is not None} == {
        "staging-us": "Alice Martin",
        "batch-2": None,
    }
    assert sims.hub.faults.counts() == {"qovery": {"GET": 1}, "nova": {"POST": 1, "GET": 1}}


async def test_statuses_leave_out_only_the_provider_that_failed_or_was_slow(
    sims: SimulatorServer, config: StopbotConfig, providers: dict[str, Provider]
) -> None:
    """Qovery answers 503 and ~okeanos takes a second against a 0.2 s bound: only their
    resources are left out, and the others are read, by name."""
    sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", count=None))
    sims.hub.faults.add(Fault(api="okeanos", kind="latency", seconds=1.0, count=None))
    wanted = [config.resource(n) for n in ("dev-eu", "spark", "batch-2", "web-1")]
    found = await reads.statuses(providers, wanted, within=0.2)
    assert {name: s.state for name, s in found.items()} == {
        "batch-2": "ACTIVE",
        "web-1": "ACTIVE",
    }
