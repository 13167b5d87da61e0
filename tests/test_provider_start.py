"""Each provider's start (a wake) against its simulator, over real HTTP on loopback: a
stopped resource is brought back to running through the provider's own states, and the
refusals come as the error tree names them, as for a stop."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import AsyncIterator

import pytest

from bot.config import StopbotConfig
from providers.base import Phase, Provider, Resource
from providers.errors import AlreadyRunningError, ConflictError, LockedError
from providers.registry import build_provider
from providers.simulators.samples import DEFAULT_SEED
from providers.simulators.server import SimulatorServer
from tests.helpers import sample


@dataclasses.dataclass(frozen=True)
class Case:
    resource: str  # stopped in the sample estate
    running: str  # one that runs
    states: tuple[str, ...]  # the provider's states on the way up, in order
    up: str  # the state a start ends in


CASES = {
    "qovery": Case("qa-old", "dev-eu", ("DEPLOYMENT_QUEUED", "DEPLOYING"), "DEPLOYED"),
    "nova": Case("db-3", "web-1", ("SHUTOFF (powering-on)",), "ACTIVE"),
    "okeanos": Case("flink", "spark", (), "started"),
    "feldera": Case("archive", "etl", ("Stopped", "Provisioning", "Initializing"), "Running"),
}


@pytest.fixture
def config(sims: SimulatorServer) -> StopbotConfig:
    return sample(sims)


@pytest.fixture
async def clients(config: StopbotConfig) -> AsyncIterator[dict[str, Provider]]:
    built = {p.name: build_provider(p) for p in config.providers}
    yield built
    for client in built.values():
        await client.aclose()


def _resource(config: StopbotConfig, name: str) -> Resource:
    return config.resource(name)


@pytest.mark.parametrize("provider", sorted(CASES))
async def test_start_brings_a_stopped_resource_to_running(
    provider: str, sims: SimulatorServer, config: StopbotConfig, clients: dict[str, Provider]
) -> None:
    """A start is accepted, goes through the provider's own states, and ends up."""
    case = CASES[provider]
    client = clients[provider]
    resource = _resource(config, case.resource)
    before = await client.status(resource)
    assert before.phase is Phase.STOPPED
    assert not client.is_up(before)
    sims.hub.clock.freeze()
    accepted = await client.start(resource)
    assert accepted.resource_id == resource.id
    seen: list[str] = []
    for _ in range(10):
        status = await client.status(resource)
        if not seen or seen[-1] != status.state:
            seen.append(status.state)
        if client.is_up(status):
            break
        assert status.phase in {Phase.RUNNING, Phase.STOPPED}, status
        sims.hub.clock.advance(1.0)
    assert seen[-1] == case.up
    assert [s for s in seen[:-1] if s in case.states] == [s for s in case.states if s in seen]
    assert client.is_up(await client.status(resource))


@pytest.mark.parametrize("provider", ["nova", "okeanos", "feldera"])
async def test_start_of_a_running_resource(
    provider: str, config: StopbotConfig, clients: dict[str, Provider]
) -> None:
    """Nova and ~okeanos refuse a start of a running resource: AlreadyRunningError; Feldera
    takes it as a success that changes nothing (its spec)."""
    case = CASES[provider]
    client = clients[provider]
    resource = _resource(config, case.running)
    if provider == "feldera":
        await client.start(resource)
        assert client.is_up(await client.status(resource))
        return
    with pytest.raises(AlreadyRunningError):
        await client.start(resource)


@pytest.mark.parametrize("provider", ["qovery", "nova"])
async def test_a_provider_lock_refuses_a_start(
    provider: str, sims: SimulatorServer, config: StopbotConfig, clients: dict[str, Provider]
) -> None:
    """The same lock rules as a stop: a locked resource is not started (LockedError)."""
    resource = _resource(config, CASES[provider].resource)
    sims.hub[provider].set_lock(resource.id, owner="alice", reason="migrating")
    with pytest.raises(LockedError) as refused:
        await clients[provider].start(resource)
    assert "migrating" in str(refused.value)
    status = await clients[provider].status(resource)
    assert status.phase is Phase.STOPPED


async def test_feldera_refuses_a_start_while_it_stops(
    sims: SimulatorServer, config: StopbotConfig, clients: dict[str, Provider]
) -> None:
    """Feldera cannot start a pipeline still stopping: said so, with its status."""
    resource = _resource(config, "etl")
    sims.hub.clock.freeze()
    await clients["feldera"].stop(resource, force=True)
    with pytest.raises(ConflictError) as refused:
        await clients["feldera"].start(resource)
    assert str(refused.value) == (
        "feldera: the resource cannot take this action right now (HTTP 400): the pipeline "
        "is still stopping: it cannot be started until it has stopped. Try again once it "
        "is Stopped."
    )


async def test_okeanos_refuses_a_start_when_the_job_slot_is_taken(
    sims: SimulatorServer, config: StopbotConfig, clients: dict[str, Provider]
) -> None:
    """LoD runs one job of a type per instance: a start into a taken slot is a 409 that
    is not "already running"."""
    seed = copy.deepcopy(DEFAULT_SEED["okeanos"])
    for app in seed["applications"]:
        app["type"] = "batch"  # spark, started, holds the batch slot flink now wants
    sims.hub["okeanos"].seed(seed)
    flink = _resource(config, "flink")
    with pytest.raises(ConflictError) as refused:
        await clients["okeanos"].start(flink)
    assert not isinstance(refused.value, AlreadyRunningError)
    assert "slot" in str(refused.value)
