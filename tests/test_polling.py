"""Coalesced status reads: many stops followed on one provider cost one list call a round."""

from __future__ import annotations

import asyncio

import httpx

from bot.polling import StatusBatcher
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
