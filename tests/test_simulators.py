"""The Simulator interface: every simulated API answers the same operations, and what they
do is what that API then serves to its real client."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from providers.base import Phase, Provider, Resource
from providers.registry import PROVIDERS, ProviderKind, build_provider
from providers.simulators.common import SimulatedLock, SimulatedResource, Simulator
from providers.simulators.server import SimulatorServer
from tests.helpers import sample

# For each provider type: a running resource of the sample estate, and the API's own
# words for running and stopped. A provider added to the list and not here fails here.
SAMPLES = {
    "qovery": ("dev-eu", "DEPLOYED", "STOPPED"),
    "openstack": ("web-1", "ACTIVE", "SHUTOFF"),
    "okeanos": ("spark", "started", "stopped"),
    "feldera": ("etl", "Running", "Stopped"),
}
# How a stop made to fail ends, as the client reads it: the state, and the message given
# to set_fail_stop where the API reports one (Qovery names its execution; LoD says nothing
# and the application runs on; a Feldera pipeline stops with its deployment error).
FAILED_STOPS = {
    "qovery": ("STOP_ERROR", None),
    "openstack": ("ERROR", "disk on fire"),
    "okeanos": ("started", None),
    "feldera": ("Stopped", "disk on fire"),
}
LONG_ENOUGH = 3600.0
"""Longer than any simulated stop takes."""


class Api:
    """One simulated API, a resource it has, and the real client that reads it."""

    def __init__(self, sims: SimulatorServer, kind: ProviderKind[Any], client: Provider) -> None:
        name, self.running, self.stopped = SAMPLES[kind.type]
        self.sims = sims
        self.kind = kind
        self.client = client
        self.simulator: Simulator = sims.hub[kind.simulator.name]
        self.resource: Resource = sample(sims).resource(name)

    def describe(self) -> SimulatedResource | None:
        return self.simulator.describe(self.resource.id, options=self.resource.options)

    async def phase(self) -> Phase:
        return (await self.client.status(self.resource)).phase


@pytest.fixture(params=PROVIDERS, ids=lambda kind: kind.type)
async def api(request: pytest.FixtureRequest, sims: SimulatorServer) -> AsyncIterator[Api]:
    kind: ProviderKind[Any] = request.param
    config = sample(sims)
    client = build_provider(next(p for p in config.providers if p.type == kind.type))
    yield Api(sims, kind, client)
    await client.aclose()


async def test_a_state_set_is_the_state_served(api: Api) -> None:
    """set_state puts the resource in one of the API's states at once: describe says so,
    settled, and the real client reads it."""
    r = api.resource
    api.simulator.set_state(r.id, api.stopped, options=r.options)
    assert api.describe() == SimulatedResource(api.stopped, settled=True)
    assert await api.phase() == Phase.STOPPED
    api.simulator.set_state(r.id, api.running, options=r.options)
    assert api.describe() == SimulatedResource(api.running, settled=True)
    assert await api.phase() == Phase.RUNNING


async def test_start_after_a_stop_is_running_again(api: Api) -> None:
    """start (a control of the simulator, the playground's Start) puts a stopped resource
    back in the API's running state, which the real client reads as running."""
    r = api.resource
    assert api.simulator.running_state == api.running
    await api.client.stop(r, force=api.kind.client.supports_force)
    api.sims.hub.clock.advance(LONG_ENOUGH)
    assert await api.phase() == Phase.STOPPED
    api.simulator.start(r.id, options=r.options)
    assert api.describe() == SimulatedResource(api.running, settled=True)
    assert await api.phase() == Phase.RUNNING


async def test_a_state_the_api_does_not_have_is_refused(api: Api) -> None:
    """set_state refuses a state that is not one of the API's own, changing nothing."""
    r = api.resource
    with pytest.raises(ValueError):
        api.simulator.set_state(r.id, "hibernating", options=r.options)
    assert await api.phase() == Phase.RUNNING


async def test_a_stop_made_to_fail_fails_as_the_api_s_do(api: Api) -> None:
    """After set_fail_stop a stop is accepted and ends the way a failed stop ends on that
    API, with the message given where it reports one; with fail=False the next one stops."""
    r = api.resource
    force = api.kind.client.supports_force
    api.simulator.set_fail_stop(r.id, "disk on fire", options=r.options)
    await api.client.stop(r, force=force)
    api.sims.hub.clock.advance(LONG_ENOUGH)
    failed = await api.client.status(r)
    state, message = FAILED_STOPS[api.kind.type]
    assert failed.state == state
    assert message is None or failed.message == message
    api.simulator.set_fail_stop(r.id, fail=False, options=r.options)
    api.simulator.set_state(r.id, api.running, options=r.options)
    await api.client.stop(r, force=force)
    api.sims.hub.clock.advance(LONG_ENOUGH)
    assert await api.phase() == Phase.STOPPED


async def test_locks_set_are_the_api_s_own_where_it_has_them(api: Api) -> None:
    """A simulator has locks exactly where its client reads them: a lock set is described
    and read by the client until cleared; elsewhere setting one is refused."""
    r = api.resource
    assert api.kind.simulator.has_locks == api.kind.client.has_locks
    if not api.simulator.has_locks:
        with pytest.raises(NotImplementedError):
            api.simulator.set_lock(r.id, owner="Alice Martin", reason="demo")
        api.simulator.clear_lock(r.id)
        assert (api.describe() or SimulatedResource("", False)).lock is None
        return
    api.simulator.set_lock(r.id, owner="Alice Martin", reason="demo", ttl=dt.timedelta(days=1))
    described = api.describe()
    assert described is not None and described.lock in {
        SimulatedLock("Alice Martin", "demo"),
        SimulatedLock(None, "demo by Alice Martin"),  # Nova keeps no owner: it is signed
    }
    read = await api.client.lock(r)
    assert read is not None and read.reason == described.lock.reason
    api.simulator.clear_lock(r.id)
    assert (api.describe(), await api.client.lock(r)) == (
        SimulatedResource(api.running, settled=True),
        None,
    )


def test_an_unknown_resource_is_described_as_none(api: Api) -> None:
    """describe answers None for an id the API does not have."""
    assert api.simulator.describe("no-such-id", options=api.resource.options) is None
