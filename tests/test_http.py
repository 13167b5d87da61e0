"""The HTTP layer every provider client shares: which answers are tried again, over real
HTTP against the simulators (their fault injection gives the answers)."""

from __future__ import annotations

import pytest

from providers.errors import NotSentError, UnavailableError
from providers.http import ApiClient, add_call_observer, sending_until
from providers.registry import build_provider
from providers.simulators.common import Fault
from providers.simulators.server import SimulatorServer
from providers.transport import AiohttpTransport
from tests.helpers import sample


async def test_a_500_to_a_read_is_answered_at_once(sims: SimulatorServer) -> None:
    """A provider's own failure is reported, not asked again (Feldera's API: "immediately
    return with an error")."""
    config = sample(sims)
    provider = build_provider(config.provider("qovery"), http=config.http)
    sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", status=500))
    try:
        with pytest.raises(UnavailableError) as caught:
            await provider.status(config.resource("dev-eu"))
    finally:
        await provider.aclose()
    assert caught.value.status_code == 500
    assert sims.hub.faults.counts() == {"qovery": {"GET": 1}}


@pytest.mark.parametrize("status", [408, 502, 503, 504])
async def test_a_gateway_hiccup_on_a_read_is_read_again(sims: SimulatorServer, status: int) -> None:
    config = sample(sims)
    provider = build_provider(config.provider("qovery"), http=config.http)
    sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", status=status))
    try:
        found = await provider.status(config.resource("dev-eu"))
    finally:
        await provider.aclose()
    assert found.state == "DEPLOYED"
    assert sims.hub.faults.counts() == {"qovery": {"GET": 2}}


def _feldera(sims: SimulatorServer) -> ApiClient:
    token = sample(sims).provider("feldera").token  # type: ignore[union-attr]
    return ApiClient(
        "feldera",
        sims.url("feldera"),
        headers={"Authorization": f"Bearer {token.get_secret_value()}"},
    )


STOP = "/v0/pipelines/etl/stop?force=true"


async def test_a_503_to_a_post_is_tried_again(sims: SimulatorServer) -> None:
    """503 says the provider did not act: even a POST may go again."""
    api = _feldera(sims)
    sims.hub.faults.add(Fault(api="feldera", kind="status", method="POST", status=503))
    try:
        response = await api.request("POST", STOP, ok=(202,))
    finally:
        await api.aclose()
    assert response.status_code == 202
    assert sims.hub.faults.counts() == {"feldera": {"POST": 2}}


async def test_a_call_taking_503_as_an_answer_gets_it_at_once(sims: SimulatorServer) -> None:
    """For Feldera's stop, 503 means "cannot be done now", not "busy": no second try."""
    api = _feldera(sims)
    sims.hub.faults.add(Fault(api="feldera", kind="status", method="POST", status=503))
    try:
        with pytest.raises(UnavailableError) as caught:
            await api.request("POST", STOP, ok=(202,), no_retry=frozenset({503}))
    finally:
        await api.aclose()
    assert caught.value.status_code == 503
    assert sims.hub.faults.counts() == {"feldera": {"POST": 1}}


async def test_a_refused_connection_is_tried_again_then_unavailable() -> None:
    """Nothing listening: the transport says it could not connect (httpx's ConnectError),
    which is tried again (the request never left), then reported as unavailable."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again at once: nothing listens there
    attempts: list[str] = []
    remove = add_call_observer(lambda *call: attempts.append(call[3]))
    api = ApiClient("feldera", f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(UnavailableError) as caught:
            await api.request("POST", STOP, ok=(202,))
    finally:
        remove()
        await api.aclose()
    assert caught.value.message.startswith("cannot connect: ")
    assert attempts == ["connect_error"] * api.settings.attempts


async def test_one_pool_an_account_of_its_requests_in_flight(sims: SimulatorServer) -> None:
    """A provider's client sends over aiohttp, one pool the size of the account's requests
    in flight, its connections kept open: a second read opens none."""
    config = sample(sims)
    provider = build_provider(config.provider("qovery"), http=config.http)
    try:
        first = await provider.status(config.resource("dev-eu"))
        transport = provider._api.http._transport  # type: ignore[attr-defined]
        assert isinstance(transport, AiohttpTransport)
        connector = transport._session.connector
        opened = [id(c) for c in connector._conns.values() for c, _ in c]
        second = await provider.status(config.resource("dev-eu"))
        again = [id(c) for c in connector._conns.values() for c, _ in c]
    finally:
        await provider.aclose()
    assert first.state == second.state == "DEPLOYED"
    assert connector.limit == config.provider("qovery").requests.max_in_flight
    assert len(opened) == 1 and again == opened


async def test_a_change_past_its_time_to_be_sent_is_held_back_and_reads_go(
    sims: SimulatorServer,
) -> None:
    """Within ``sending_until``, a request that changes something leaves only while its
    sender's time lasts: past it, NotSentError and nothing sent; reads are not held."""
    api = _feldera(sims)
    open_, closed = (lambda: True), (lambda: False)
    try:
        with sending_until(closed), pytest.raises(NotSentError) as caught:
            await api.request("POST", STOP, ok=(202,))
        with sending_until(closed):
            await api.request("GET", "/v0/pipelines")
        with sending_until(open_):
            await api.request("POST", STOP, ok=(202,))
    finally:
        await api.aclose()
    assert str(caught.value) == (
        "feldera: not sent in time: POST /v0/pipelines/etl/stop held back: its time to be "
        "sent ran out"
    )
    assert sims.hub.faults.counts() == {"feldera": {"GET": 1, "POST": 1}}


@pytest.mark.parametrize("name", ["dev-eu", "web-1", "spark", "etl"])
async def test_an_answered_request_leaves_no_garbage_cycles(
    sims: SimulatorServer, name: str
) -> None:
    """A request answered at its first try leaves nothing that only a full garbage
    collection frees: no retry context (stamina's is a reference cycle of ~50 objects a
    request; Nova's calls had one each), and no response bound to its own stream (httpx's
    cycle, which held each polling round's list, megabytes, until a full collection: at
    10,000 stops most of the bot's memory)."""
    import gc

    config = sample(sims)
    dev = config.resource(name)
    provider = build_provider(config.provider(dev.provider), http=config.http)
    try:
        await provider.status(dev)  # the pool's connection (and a token), once
        gc.collect()
        gc.disable()
        try:
            for _ in range(20):
                await provider.status(dev)
            left = gc.collect()
        finally:
            gc.enable()
    finally:
        await provider.aclose()
    assert left == 0
