"""Coalesced status reads: many stops followed on one provider cost one list call a round."""

from __future__ import annotations

import asyncio

import httpx

from bot.polling import CROWDED_WAIT, StatusBatcher
from providers.pacing import RequestGate, RequestLimits
from providers.registry import build_provider
from providers.simulators.server import SimulatorServer
from tests.helpers import sample


async def test_concurrent_reads_share_one_list_call(sims: SimulatorServer) -> None:
    """Three clusters polled at once: one GET of the organisation's statuses, same answers."""
    config = sample(sims)
    requests: list[str] = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            requests.append(f"{request.method} {request.url.path}")
            return await super().handle_async_request(request)

    provider = build_provider(config.provider("qovery"), http=config.http, transport=Recording())
    batcher = StatusBatcher(provider, window=0)
    clusters = [config.resource(n) for n in ("dev-eu", "staging-us", "qa-old")]
    try:
        results = await asyncio.gather(*(batcher.status(r) for r in clusters))
        assert [s.state for s in results] == ["DEPLOYED", "DEPLOYED", "STOPPED"]
        org = config.provider("qovery").organization_id  # type: ignore[union-attr]
        assert requests == [f"GET /qovery/organization/{org}/cluster/status"]
    finally:
        await provider.aclose()


async def test_a_single_read_uses_the_status_endpoint(sims: SimulatorServer) -> None:
    """Alone in its round, a read is the resource's own status call."""
    config = sample(sims)
    provider = build_provider(config.provider("feldera"), http=config.http)
    batcher = StatusBatcher(provider, window=0)
    try:
        status = await batcher.status(config.resource("etl"))
        assert (status.state, status.phase.value) == ("Running", "running")
    finally:
        await provider.aclose()


async def test_errors_reach_each_caller(sims: SimulatorServer) -> None:
    """An unknown resource's error goes to its caller; the others still get their status."""
    config = sample(sims)
    provider = build_provider(config.provider("feldera"), http=config.http)
    batcher = StatusBatcher(provider, window=0)
    ghost = config.resource("etl").model_copy(update={"id": "ghost", "name": "ghost"})
    try:
        results = await asyncio.gather(
            batcher.status(config.resource("etl")), batcher.status(ghost), return_exceptions=True
        )
        assert getattr(results[0], "state", None) == "Running"
        assert type(results[1]).__name__ == "NotFoundError"
    finally:
        await provider.aclose()


async def test_one_follower_follows_many_stops_with_one_list_call_a_round(
    sims: SimulatorServer,
) -> None:
    """Three stops watched at once on one account: every round is one list call for all of
    them, a stop whose state is unchanged is not woken, one whose state changed (or whose
    time to look up came) is, with its status."""
    config = sample(sims)
    requests: list[str] = []

    class Recording(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            requests.append(f"{request.method} {request.url.path}")
            return await super().handle_async_request(request)

    provider = build_provider(config.provider("qovery"), http=config.http, transport=Recording())
    now = [100.0]

    async def sleep(seconds: float) -> None:  # the rounds' pacing, on a clock the test moves
        now[0] += seconds

    batcher = StatusBatcher(provider, window=0, every=1.0, clock=lambda: now[0], sleep=sleep)
    dev, staging, qa = (config.resource(n) for n in ("dev-eu", "staging-us", "qa-old"))
    try:
        unchanged = asyncio.ensure_future(batcher.change(dev, "DEPLOYED", until=103.0))
        look_up = asyncio.ensure_future(batcher.change(staging, "DEPLOYED", until=101.0))
        changed = await batcher.change(qa, "DEPLOYED", until=1000.0)
        assert (changed.state, len(requests)) == ("STOPPED", 1)
        assert not unchanged.done() and not look_up.done()
        found = await look_up
        assert (found.state, len(requests), now[0]) == ("DEPLOYED", 2, 101.0)
        assert not unchanged.done()
        assert (await unchanged).state == "DEPLOYED"
        org = config.provider("qovery").organization_id  # type: ignore[union-attr]
        listed = f"GET /qovery/organization/{org}/cluster/status"
        alone = f"GET /qovery/organization/{org}/cluster/{dev.id}/status"
        # Left alone in its rounds, a stop is read with its own status call.
        assert requests == [listed, listed, alone, alone]
        assert now[0] == 103.0
    finally:
        await provider.aclose()


async def test_a_watch_given_up_is_dropped_from_the_rounds(sims: SimulatorServer) -> None:
    """A follower cancelled while it waits (its process stops following) is no longer
    read: the rounds end with it."""
    config = sample(sims)
    provider = build_provider(config.provider("feldera"), http=config.http)
    batcher = StatusBatcher(provider, window=0)
    try:
        watching = asyncio.ensure_future(
            batcher.change(config.resource("etl"), "Running", until=float("inf"))
        )
        await asyncio.sleep(0.05)
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        for _ in range(20):
            if not batcher._watching and batcher._flush is None:
                break
            await asyncio.sleep(0.01)
        assert batcher._watching == {} and batcher._flush is None
    finally:
        await provider.aclose()


async def test_a_crowded_account_holds_its_followers_round_not_an_asked_status(
    sims: SimulatorServer,
) -> None:
    """While the account's requests queue for its slots (a run's stops being sent), a round
    of followed stops waits a second at a time, ten seconds at most; a status asked for
    (a preview) is read at once all the same."""
    config = sample(sims)
    provider = build_provider(config.provider("qovery"), http=config.http)
    now = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    crowded_until = [103.0]
    asked: list[float] = []

    def crowded(within: float) -> bool:
        asked.append(within)
        return now[0] < crowded_until[0]

    provider.crowded = crowded  # type: ignore[method-assign]
    batcher = StatusBatcher(provider, window=0, every=0.5, clock=lambda: now[0], sleep=sleep)
    qa = config.resource("qa-old")
    try:
        # Crowded for three seconds: the first look waits them out, a second at a time.
        assert (await batcher.change(qa, "DEPLOYED", until=now[0])).state == "STOPPED"
        assert (waits, now[0], set(asked)) == ([1.0, 1.0, 1.0], 103.0, {1.0})
        # Crowded for good: a round waits CROWDED_WAIT seconds, then is made.
        waits.clear()
        crowded_until[0] = float("inf")
        assert (await batcher.change(qa, "DEPLOYED", until=now[0])).state == "STOPPED"
        assert (waits, now[0]) == ([0.5, *[1.0] * int(CROWDED_WAIT)], 103.5 + CROWDED_WAIT)
        # A status asked for does not wait for the crowd.
        waits.clear()
        assert (await batcher.status(qa)).state == "STOPPED"
        assert (waits, now[0]) == ([0.5], 104.0 + CROWDED_WAIT)
    finally:
        await provider.aclose()


async def test_a_gate_is_crowded_while_a_request_found_every_slot_taken() -> None:
    """``crowded(within)``: a request waited for a slot in the last ``within`` seconds."""
    now = [0.0]
    gate = RequestGate(RequestLimits(max_in_flight=2, max_per_second=None), clock=lambda: now[0])
    release = asyncio.Event()

    async def request() -> None:
        async with gate.slot():
            await release.wait()

    first = [asyncio.ensure_future(request()) for _ in range(2)]
    await asyncio.sleep(0)
    assert (gate.in_flight, gate.crowded(1.0)) == (2, False)  # two slots, two requests
    now[0] = 10.0
    third = asyncio.ensure_future(request())  # finds both slots taken
    await asyncio.sleep(0)
    assert gate.crowded(1.0)
    release.set()
    await asyncio.gather(*first, third)
    now[0] = 10.9
    assert gate.crowded(1.0) and not gate.crowded(0.5)
    now[0] = 11.0
    assert not gate.crowded(1.0)
