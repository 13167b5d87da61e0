"""The Feldera client against the simulated Feldera API, over real HTTP on loopback."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from providers.base import GracefulStop, Phase, Resource, StopAccepted
from providers.errors import (
    AlreadyStoppedError,
    AuthError,
    ConflictError,
    DroppedError,
    InvalidRequestError,
    NotFoundError,
    ProviderError,
    ProviderTimeoutError,
    UnavailableError,
    UnsupportedError,
)
from providers.feldera import (
    FORCE_ADVICE,
    FelderaConfig,
    FelderaProvider,
    IllegalPipelineActionError,
    map_deployment_status,
)
from providers.http import HttpSettings
from providers.simulators.common import Fault
from providers.simulators.feldera import FelderaSimulator
from providers.simulators.samples import DEFAULT_SEED, FELDERA_API_KEY
from providers.simulators.server import SimulatorServer

STEP = DEFAULT_SEED["feldera"]["step_seconds"]
Seen = tuple[str, Phase, bool, str | None]


class CountingTransport(httpx.AsyncBaseTransport):
    """Real HTTP, remembering each request's method, path and query."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path, dict(request.url.params)))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.requests]


def pipeline(name: str) -> Resource:
    return Resource(name=name, provider="feldera", id=name)


def seen(status: Any) -> Seen:
    return (status.state, status.phase, status.terminal, status.message)


def simulator(sims: SimulatorServer) -> FelderaSimulator:
    sim = sims.hub["feldera"]
    assert isinstance(sim, FelderaSimulator)
    return sim


def reseed(sims: SimulatorServer, **changes: Any) -> None:
    """The sample Feldera section with top-level keys replaced, and per-pipeline extras."""
    section = copy.deepcopy(DEFAULT_SEED["feldera"])
    extras: dict[str, dict[str, Any]] = changes.pop("pipeline_extras", {})
    section.update(changes)
    for item in section["pipelines"]:
        item.update(extras.get(item["name"], {}))
    simulator(sims).seed(section)


@pytest.fixture
def counting() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
async def make_provider(
    sims: SimulatorServer, counting: CountingTransport
) -> AsyncIterator[Callable[..., FelderaProvider]]:
    """Providers on the simulator (through ``counting``), closed after the test."""
    made: list[FelderaProvider] = []

    def make(
        token: str | None = FELDERA_API_KEY, http: HttpSettings | None = None
    ) -> FelderaProvider:
        config = FelderaConfig(name="feldera", base_url=sims.url("feldera"), token=token)
        provider = FelderaProvider(config, http=http, transport=counting)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()


@pytest.fixture
def provider(make_provider: Callable[..., FelderaProvider]) -> FelderaProvider:
    return make_provider()


# The stop, step by step


@pytest.mark.parametrize(("name", "before"), [("etl", "Running"), ("analytics", "Paused")])
async def test_forced_stop_goes_through_stopping_to_stopped(
    sims: SimulatorServer, provider: FelderaProvider, name: str, before: str
) -> None:
    """A forced stop reads Stopping at once, then Stopped one step later."""
    states = [seen(await provider.status(pipeline(name)))]
    accepted = await provider.stop(pipeline(name), force=True)
    states.append(seen(await provider.status(pipeline(name))))
    sims.hub.clock.advance(STEP)
    states.append(seen(await provider.status(pipeline(name))))
    assert accepted == StopAccepted(
        provider="feldera", resource_id=name, message="Pipeline is forcefully stopping"
    )
    assert states == [
        (before, Phase.RUNNING, True, None),
        ("Stopping", Phase.STOPPING, False, None),
        ("Stopped", Phase.STOPPED, True, None),
    ]


async def test_graceful_stop_in_enterprise_suspends_first(
    sims: SimulatorServer, provider: FelderaProvider
) -> None:
    """Enterprise force=false: Running (desired Suspended), Suspended, Stopping, Stopped."""
    reseed(sims, enterprise=True)
    accepted = await provider.stop(pipeline("etl"))
    states = [seen(await provider.status(pipeline("etl")))]
    for _ in range(3):
        sims.hub.clock.advance(STEP)
        states.append(seen(await provider.status(pipeline("etl"))))
    assert accepted.message == "Pipeline is suspending"
    assert states == [
        ("Running", Phase.STOPPING, False, None),
        ("Suspended", Phase.STOPPING, False, None),
        ("Stopping", Phase.STOPPING, False, None),
        ("Stopped", Phase.STOPPED, True, None),
    ]


@pytest.mark.parametrize(
    ("enterprise", "force", "expected"),
    [
        (
            False,
            True,
            [
                ("Stopping", Phase.STOPPING, False, "disk full"),
                ("Stopped", Phase.STOPPED, True, "disk full"),
            ],
        ),
        (
            True,
            False,
            [
                ("Running", Phase.STOPPING, False, None),
                ("Stopping", Phase.STOPPING, False, "disk full"),
                ("Stopped", Phase.STOPPED, True, "disk full"),
            ],
        ),
    ],
)
async def test_failing_stop_ends_stopped_showing_the_deployment_error(
    sims: SimulatorServer,
    provider: FelderaProvider,
    enterprise: bool,
    force: bool,
    expected: list[Seen],
) -> None:
    """A stop that hits an error still ends Stopped (compute released): STOPPED, terminal,
    with deployment_error's message kept for the user."""
    reseed(
        sims,
        enterprise=enterprise,
        pipeline_extras={"etl": {"fail_stop": True, "fail_message": "disk full"}},
    )
    await provider.stop(pipeline("etl"), force=force)
    states = [seen(await provider.status(pipeline("etl")))]
    for _ in expected[1:]:
        sims.hub.clock.advance(STEP)
        states.append(seen(await provider.status(pipeline("etl"))))
    assert states == expected


async def test_graceful_stop_on_open_source_tells_to_force(
    provider: FelderaProvider, counting: CountingTransport
) -> None:
    """The open-source edition's 501 EnterpriseFeature becomes UnsupportedError with advice."""
    with pytest.raises(UnsupportedError) as caught:
        await provider.stop(pipeline("etl"), force=False)
    assert caught.value.message == (
        "The feature 'stop?force=false' is only available in the Enterprise edition of "
        f"Feldera. {FORCE_ADVICE}"
    )
    assert (caught.value.status_code, caught.value.code) == (501, "EnterpriseFeature")
    assert counting.methods() == ["POST"]
    assert (await provider.status(pipeline("etl"))).state == "Running"


@pytest.mark.parametrize(("force", "sent"), [(True, "true"), (False, "false")])
async def test_stop_sends_force_explicitly(
    sims: SimulatorServer,
    provider: FelderaProvider,
    counting: CountingTransport,
    force: bool,
    sent: str,
) -> None:
    """The server's default (force=false) is never relied on: force is always in the query."""
    reseed(sims, enterprise=True)
    await provider.stop(pipeline("etl"), force=force)
    assert counting.requests[-1] == ("POST", "/feldera/v0/pipelines/etl/stop", {"force": sent})


async def test_stop_of_a_stopped_pipeline_is_a_no_op_202(
    provider: FelderaProvider, counting: CountingTransport
) -> None:
    """Feldera takes a stop of a Stopped pipeline as a no-op: accepted, one POST, still Stopped."""
    accepted = await provider.stop(pipeline("archive"), force=True)
    assert accepted.resource_id == "archive"
    assert counting.methods() == ["POST"]
    assert (await provider.status(pipeline("archive"))).state == "Stopped"


async def test_stop_of_a_stopping_pipeline_is_accepted(
    sims: SimulatorServer, provider: FelderaProvider, counting: CountingTransport
) -> None:
    """A stop sent to a pipeline already stopping is accepted, with no status read first."""
    simulator(sims).set_state("etl", "Stopping")
    await provider.stop(pipeline("etl"), force=True)
    assert counting.methods() == ["POST"]
    assert (await provider.status(pipeline("etl"))).phase is Phase.STOPPING


async def test_forced_stop_cuts_a_graceful_one_short(
    sims: SimulatorServer, provider: FelderaProvider
) -> None:
    """force=true during a graceful stop goes straight to Stopping (stop endpoint docs)."""
    reseed(sims, enterprise=True)
    await provider.stop(pipeline("etl"))
    await provider.stop(pipeline("etl"), force=True)
    assert seen(await provider.status(pipeline("etl"))) == (
        "Stopping",
        Phase.STOPPING,
        False,
        None,
    )


async def test_graceful_stop_refused_for_lack_of_storage(
    sims: SimulatorServer, provider: FelderaProvider
) -> None:
    """405 UnsupportedPipelineAction on force=false is UnsupportedError with the advice."""
    reseed(sims, enterprise=True, pipeline_extras={"etl": {"supports_suspend": False}})
    with pytest.raises(UnsupportedError) as caught:
        await provider.stop(pipeline("etl"))
    assert caught.value.message == (
        "Unsupported pipeline action 'suspend': this pipeline does not support the suspend "
        "action for the following reason(s):\n    - Storage must be configured. "
        f"{FORCE_ADVICE}"
    )
    assert caught.value.status_code == 405


# Errors, as the spec's ErrorResponse bodies say them

ILLEGAL = {
    "message": "Deployment resources status (current: 'Stopping', desired: 'Stopped') cannot "
    "have desired changed to 'Provisioned'.",
    "error_code": "IllegalPipelineAction",
    "details": {"status": "Stopping"},
}
UNSUPPORTED = {
    "message": "Unsupported pipeline action 'suspend': storage must be configured",
    "error_code": "UnsupportedPipelineAction",
    "details": {"action": "suspend"},
}


@pytest.mark.parametrize(
    ("status", "body", "force", "kind", "message"),
    [
        (400, ILLEGAL, True, IllegalPipelineActionError, ILLEGAL["message"]),
        (405, UNSUPPORTED, True, UnsupportedError, UNSUPPORTED["message"]),
        (
            405,
            UNSUPPORTED,
            False,
            UnsupportedError,
            f"{UNSUPPORTED['message']}. {FORCE_ADVICE}",
        ),
        (
            500,
            {"message": "database unreachable", "error_code": "DBError", "details": {}},
            True,
            UnavailableError,
            "database unreachable",
        ),
    ],
)
async def test_stop_error_codes_map_to_the_error_tree(
    sims: SimulatorServer,
    provider: FelderaProvider,
    status: int,
    body: dict[str, Any],
    force: bool,
    kind: type[ProviderError],
    message: str,
) -> None:
    """Each documented error of /stop raises its class, with Feldera's own message."""
    reseed(sims, enterprise=True)
    sims.hub.faults.add(
        Fault(api="feldera", kind="status", method="POST", status=status, body=body, count=None)
    )
    with pytest.raises(kind) as caught:
        await provider.stop(pipeline("etl"), force=force)
    assert caught.value.message == message
    assert (caught.value.status_code, caught.value.code) == (status, body["error_code"])


def test_illegal_action_is_both_a_conflict_and_an_invalid_request() -> None:
    """IllegalPipelineAction is a 400 the bot can still treat as a busy resource."""
    assert issubclass(IllegalPipelineActionError, ConflictError)
    assert issubclass(IllegalPipelineActionError, InvalidRequestError)


# A stop refused because the pipeline is stopping or stopped already


@pytest.mark.parametrize(
    ("before", "accepted_as"),
    [
        ("suspending", ("Running", Phase.STOPPING, False, None)),
        ("Suspended", ("Suspended", Phase.STOPPING, False, None)),
        ("Stopping", ("Stopping", Phase.STOPPING, False, None)),
    ],
)
async def test_graceful_stop_of_a_pipeline_stopping_already_is_followed(
    sims: SimulatorServer,
    provider: FelderaProvider,
    counting: CountingTransport,
    before: str,
    accepted_as: Seen,
) -> None:
    """A graceful stop refused with 400 IllegalPipelineAction because the pipeline is
    suspending or stopping already is accepted, with the status read once, and ends Stopped."""
    reseed(sims, enterprise=True)
    if before == "suspending":
        await provider.stop(pipeline("etl"))
    else:
        simulator(sims).set_state("etl", before)
    counting.requests.clear()
    accepted = await provider.stop(pipeline("etl"))
    assert accepted.status is not None
    assert seen(accepted.status) == accepted_as
    desired, doing = (
        ("Suspended", "suspending") if before == "suspending" else ("Stopped", "stopping")
    )
    assert accepted.message == (
        f"The pipeline was stopping already ({accepted_as[0]}); Feldera said: Pipeline 'etl' "
        f"is {doing} already (status '{accepted_as[0]}', desired '{desired}'): it cannot be "
        "stopped gracefully now. Stop it with force=true, or wait until it has stopped."
    )
    assert counting.methods() == ["POST", "GET"]
    sims.hub.clock.advance(3 * STEP)
    assert (await provider.status(pipeline("etl"))).phase is Phase.STOPPED


async def test_illegal_action_on_a_pipeline_not_stopping_stays_an_error(
    sims: SimulatorServer, provider: FelderaProvider, counting: CountingTransport
) -> None:
    """IllegalPipelineAction for a pipeline that reads Running is still the error, after one
    status read."""
    reseed(sims, enterprise=True)
    sims.hub.faults.add(
        Fault(api="feldera", kind="status", method="POST", status=400, body=ILLEGAL, count=1)
    )
    with pytest.raises(IllegalPipelineActionError) as caught:
        await provider.stop(pipeline("etl"))
    assert caught.value.message == ILLEGAL["message"]
    assert counting.methods() == ["POST", "GET"]


async def test_illegal_action_on_a_pipeline_stopped_meanwhile_is_already_stopped() -> None:
    """IllegalPipelineAction, then a status read that says Stopped: AlreadyStoppedError."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(400, json=ILLEGAL)
        return httpx.Response(200, json={"name": "etl", "deployment_status": "Stopped"})

    provider = mock_provider(handler)
    with pytest.raises(AlreadyStoppedError) as caught:
        await provider.stop(pipeline("etl"))
    assert caught.value.message == f"{ILLEGAL['message'].rstrip('.')}; its status is Stopped"
    assert (caught.value.status_code, caught.value.code) == (400, "IllegalPipelineAction")
    await provider.aclose()


# The documented 503 of /stop: Feldera could not act

REFUSED = "Pipeline etl is suspended already"


async def test_stop_answered_503_on_a_stopped_pipeline_is_already_stopped(
    sims: SimulatorServer, provider: FelderaProvider, counting: CountingTransport
) -> None:
    """A 503 from /stop, with the pipeline Stopped: AlreadyStoppedError, one status read."""
    simulator(sims).set_stop_unavailable("archive", REFUSED)
    with pytest.raises(AlreadyStoppedError) as caught:
        await provider.stop(pipeline("archive"), force=True)
    assert caught.value.message == f"{REFUSED}; its status is Stopped"
    assert (caught.value.status_code, caught.value.code) == (503, "PipelineInteractionUnreachable")
    methods = counting.methods()
    assert (set(methods[:-1]), methods[-1]) == ({"POST"}, "GET")


async def test_stop_answered_503_on_a_stopping_pipeline_is_followed(
    sims: SimulatorServer, provider: FelderaProvider, counting: CountingTransport
) -> None:
    """A 503 from /stop, with the pipeline Stopping: accepted with that status, then Stopped."""
    simulator(sims).set_state("etl", "Stopping")
    simulator(sims).set_stop_unavailable("etl", REFUSED)
    accepted = await provider.stop(pipeline("etl"), force=True)
    assert accepted.status is not None
    assert seen(accepted.status) == ("Stopping", Phase.STOPPING, False, None)
    assert accepted.message == (
        f"The pipeline was stopping already (Stopping); Feldera said: {REFUSED}."
    )
    assert counting.methods().count("GET") == 1
    sims.hub.clock.advance(STEP)
    assert (await provider.status(pipeline("etl"))).phase is Phase.STOPPED


async def test_stop_answered_503_on_a_running_pipeline_is_a_conflict(
    sims: SimulatorServer, provider: FelderaProvider
) -> None:
    """A 503 from /stop, with the pipeline Running: a ConflictError (not "try again later")
    with Feldera's message and the status; the pipeline is left running."""
    simulator(sims).set_stop_unavailable("etl", REFUSED)
    with pytest.raises(ConflictError) as caught:
        await provider.stop(pipeline("etl"), force=True)
    assert type(caught.value) is ConflictError
    assert str(caught.value) == (
        "feldera: the resource cannot take this action right now (HTTP 503): Feldera did not act on "
        f"the stop ({REFUSED}) and the pipeline is Running. Check its status before trying again."
    )
    assert (await provider.status(pipeline("etl"))).state == "Running"


async def test_stop_answered_503_with_no_status_to_read_stays_unavailable(
    sims: SimulatorServer, provider: FelderaProvider
) -> None:
    """A 503 from /stop when the status cannot be read either: the UnavailableError stands."""
    simulator(sims).set_stop_unavailable("etl", REFUSED)
    sims.hub.faults.add(Fault(api="feldera", kind="status", method="GET", count=None))
    with pytest.raises(UnavailableError) as caught:
        await provider.stop(pipeline("etl"), force=True)
    assert caught.value.message == REFUSED
    assert caught.value.status_code == 503


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("apikey:wrong", "Unauthorized: the API key or token is not valid"),
        (None, "Unauthorized: missing Authorization header (expected 'Bearer <API key>')"),
    ],
)
async def test_bad_or_missing_api_key_is_auth_error(
    make_provider: Callable[..., FelderaProvider], token: str | None, message: str
) -> None:
    """A wrong or absent API key is an AuthError with Feldera's 401 message."""
    provider = make_provider(token=token)
    with pytest.raises(AuthError) as caught:
        await provider.status(pipeline("etl"))
    assert caught.value.message == message
    assert caught.value.code == "Unauthorized"
    assert "wrong" not in str(caught.value)


async def test_instance_without_auth_needs_no_key(
    sims: SimulatorServer, make_provider: Callable[..., FelderaProvider]
) -> None:
    """A local Feldera without authentication answers a client configured without a key."""
    reseed(sims, api_key=None)
    status = await make_provider(token=None).status(pipeline("etl"))
    assert status.state == "Running"


@pytest.mark.parametrize("call", ["status", "stop"])
async def test_unknown_pipeline_is_not_found(provider: FelderaProvider, call: str) -> None:
    """An unknown pipeline name is NotFoundError with Feldera's UnknownPipelineName message."""
    with pytest.raises(NotFoundError) as caught:
        if call == "stop":
            await provider.stop(pipeline("nope"), force=True)
        else:
            await provider.status(pipeline("nope"))
    assert caught.value.message == "Unknown pipeline name 'nope'"
    assert caught.value.code == "UnknownPipelineName"


# Retries and timeouts


async def test_stop_answered_503_is_not_sent_again(
    sims: SimulatorServer, provider: FelderaProvider, counting: CountingTransport
) -> None:
    """The spec's 503 for /stop means the action cannot be performed: the stop is not sent
    again (even with Retry-After); the status read after it says what it means."""
    sims.hub.faults.add(
        Fault(api="feldera", kind="status", method="POST", status=503, retry_after=1, count=1)
    )
    with pytest.raises(ConflictError) as caught:
        await provider.stop(pipeline("etl"), force=True)
    assert type(caught.value) is ConflictError
    assert counting.methods() == ["POST", "GET"]
    assert (await provider.status(pipeline("etl"))).state == "Running"


async def test_status_retried_after_429(
    sims: SimulatorServer, provider: FelderaProvider, counting: CountingTransport
) -> None:
    """A 429 with Retry-After on a status read is retried, then answered."""
    sims.hub.faults.add(Fault(api="feldera", kind="status", status=429, retry_after=2, count=1))
    assert (await provider.status(pipeline("etl"))).state == "Running"
    assert counting.methods() == ["GET", "GET"]


async def test_stop_not_retried_on_dropped_connection(
    sims: SimulatorServer, provider: FelderaProvider, counting: CountingTransport
) -> None:
    """A /stop whose connection drops is not sent again: it might have been acted on."""
    sims.hub.faults.add(Fault(api="feldera", kind="drop", method="POST", count=None))
    with pytest.raises(DroppedError):
        await provider.stop(pipeline("etl"), force=True)
    assert counting.methods() == ["POST"]


async def test_status_retried_on_dropped_connection(
    sims: SimulatorServer, provider: FelderaProvider, counting: CountingTransport
) -> None:
    """A status read whose connection drops is simply read again."""
    sims.hub.faults.add(Fault(api="feldera", kind="drop", method="GET", count=1))
    assert (await provider.status(pipeline("etl"))).state == "Running"
    assert counting.methods() == ["GET", "GET"]


async def test_slow_answer_is_a_timeout(
    sims: SimulatorServer, make_provider: Callable[..., FelderaProvider]
) -> None:
    """No answer within the configured timeout is ProviderTimeoutError."""
    sims.hub.faults.add(Fault(api="feldera", kind="latency", method="GET", seconds=0.5))
    provider = make_provider(http=HttpSettings(timeout=0.05, attempts=1))
    with pytest.raises(ProviderTimeoutError) as caught:
        await provider.status(pipeline("etl"))
    assert caught.value.message == "no answer within 0.05s"


# Bulk reads


async def test_statuses_cost_one_call(
    provider: FelderaProvider, counting: CountingTransport
) -> None:
    """statuses() reads every pipeline with one list call; unknown ones are left out."""
    names = ["etl", "analytics", "archive", "nope"]
    statuses = await provider.statuses([pipeline(n) for n in names])
    assert {name: seen(s) for name, s in statuses.items()} == {
        "etl": ("Running", Phase.RUNNING, True, None),
        "analytics": ("Paused", Phase.RUNNING, True, None),
        "archive": ("Stopped", Phase.STOPPED, True, None),
    }
    assert counting.requests == [("GET", "/feldera/v0/pipelines", {"selector": "status"})]


async def test_statuses_of_nothing_costs_nothing(
    provider: FelderaProvider, counting: CountingTransport
) -> None:
    """No resources, no request."""
    assert await provider.statuses([]) == {}
    assert counting.requests == []


async def test_list_discovers_every_pipeline(provider: FelderaProvider) -> None:
    """list() names every pipeline of the instance with its state and phase."""
    found = await provider.list()
    assert [(d.id, d.name, d.state, d.phase) for d in found] == [
        ("etl", "etl", "Running", Phase.RUNNING),
        ("analytics", "analytics", "Paused", Phase.RUNNING),
        ("archive", "archive", "Stopped", Phase.STOPPED),
    ]


async def test_feldera_has_no_provider_locks(provider: FelderaProvider) -> None:
    """Feldera has no lock concept: lock() is None."""
    assert await provider.lock(pipeline("etl")) is None


# Status mapping and parsing (no server needed)


@pytest.mark.parametrize(
    ("status", "desired", "error", "expected"),
    [
        ("Running", "Running", None, (Phase.RUNNING, True)),
        ("Paused", "Paused", None, (Phase.RUNNING, True)),
        ("Standby", "Standby", None, (Phase.RUNNING, True)),
        ("AwaitingApproval", "Running", None, (Phase.RUNNING, True)),
        ("Provisioning", "Running", None, (Phase.RUNNING, False)),
        ("Initializing", "Running", None, (Phase.RUNNING, False)),
        ("Bootstrapping", "Running", None, (Phase.RUNNING, False)),
        ("ConcurrentBootstrapping", "Running", None, (Phase.RUNNING, False)),
        ("Synchronizing", "Running", None, (Phase.RUNNING, False)),
        ("Replaying", "Running", None, (Phase.RUNNING, False)),
        ("Coordination", "Running", None, (Phase.RUNNING, False)),
        ("Unavailable", "Running", None, (Phase.UNKNOWN, False)),
        ("Running", "Suspended", None, (Phase.STOPPING, False)),
        ("Paused", "Stopped", None, (Phase.STOPPING, False)),
        ("Unavailable", "Stopped", None, (Phase.STOPPING, False)),
        ("Suspended", "Stopped", None, (Phase.STOPPING, False)),
        ("Stopping", "Stopped", None, (Phase.STOPPING, False)),
        ("Stopping", "Stopped", "boom", (Phase.STOPPING, False)),
        ("Stopped", "Stopped", None, (Phase.STOPPED, True)),
        ("Stopped", "Stopped", "boom", (Phase.STOPPED, True)),
        ("Running", None, None, (Phase.RUNNING, True)),
        ("Suspending", "Suspended", None, (Phase.STOPPING, False)),
        ("Shutdown", None, None, (Phase.STOPPED, True)),
        ("Failed", None, "boom", (Phase.FAILED, True)),
        ("Hibernating", "Stopped", None, (Phase.UNKNOWN, False)),
    ],
)
def test_deployment_status_mapping(
    status: str, desired: str | None, error: str | None, expected: tuple[Phase, bool]
) -> None:
    """Every status, current or older, maps to a phase; a stop desired means stopping;
    Stopped is stopped even with a deployment_error."""
    assert map_deployment_status(status, desired, error) == expected


def mock_provider(handler: Callable[[httpx.Request], httpx.Response]) -> FelderaProvider:
    config = FelderaConfig(name="feldera", base_url="http://feldera.test", token="apikey:secret")
    return FelderaProvider(
        config, http=HttpSettings(attempts=1), transport=httpx.MockTransport(handler)
    )


async def test_error_without_feldera_body_keeps_the_proxy_text() -> None:
    """A proxy's own 502 page (no ErrorResponse) still gives its text as the message."""
    provider = mock_provider(lambda request: httpx.Response(502, text="Bad Gateway from nginx"))
    with pytest.raises(UnavailableError) as caught:
        await provider.status(pipeline("etl"))
    assert caught.value.message == "Bad Gateway from nginx"
    await provider.aclose()


async def test_status_request_is_bearer_authenticated_status_selector() -> None:
    """The status read sends the API key as a bearer token and selector=status."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"name": "etl", "deployment_status": "Running", "extra": 1})

    provider = mock_provider(handler)
    assert (await provider.status(pipeline("etl"))).state == "Running"
    assert requests[0].headers["Authorization"] == "Bearer apikey:secret"
    assert str(requests[0].url) == "http://feldera.test/v0/pipelines/etl?selector=status"
    await provider.aclose()


async def test_malformed_status_answer_is_a_provider_error() -> None:
    """A 200 without deployment_status is reported, not crashed on."""
    provider = mock_provider(lambda request: httpx.Response(200, json={"name": "etl"}))
    with pytest.raises(ProviderError) as caught:
        await provider.status(pipeline("etl"))
    assert caught.value.message == "unexpected pipeline status answer: 1 error(s)"
    await provider.aclose()


def test_api_key_never_shows_in_config_repr() -> None:
    """The API key is a secret: neither repr nor str of the config shows it."""
    config = FelderaConfig(name="feldera", base_url="http://f", token="apikey:topsecret")
    assert "topsecret" not in repr(config)
    assert "topsecret" not in str(config.model_dump())


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "f", "type": "qovery", "base_url": "http://f"},
        {"name": "f", "base_url": "ftp://f"},
        {"name": "f", "base_url": "http://f", "api_key": "x"},
    ],
)
def test_config_rejects_wrong_entries(entry: dict[str, Any]) -> None:
    """Another type, a non-HTTP URL or an unknown key is a configuration error."""
    with pytest.raises(ValidationError):
        FelderaConfig.model_validate(entry)


# The simulator itself


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"pipelines": [{"name": "x", "deployment_status": "Sleeping"}]}, "deployment_status"),
        ({"pipelines": [{"name": "x"}, {"name": "x"}]}, "duplicate pipeline name(s): x"),
        ({"region": "eu"}, "region"),
        ({"step_seconds": 0}, "step_seconds"),
    ],
)
def test_bad_seed_is_a_clear_error(
    sims: SimulatorServer, change: dict[str, Any], fragment: str
) -> None:
    """A seed with an unknown status, a duplicate name or an unknown key is refused by name."""
    section = {**copy.deepcopy(DEFAULT_SEED["feldera"]), **change}
    with pytest.raises(ValidationError) as caught:
        simulator(sims).seed(section)
    assert fragment in str(caught.value)


def test_snapshot_reads_states_from_the_clock(sims: SimulatorServer) -> None:
    """The snapshot shows each pipeline's current status, moved on by the clock."""
    sim = simulator(sims)
    sim.set_state("etl", "Stopping")
    before = {p["name"]: p["deployment_status"] for p in sim.snapshot()["pipelines"]}
    sims.hub.clock.advance(STEP)
    after = {p["name"]: p["deployment_status"] for p in sim.snapshot()["pipelines"]}
    assert before == {"etl": "Stopping", "analytics": "Paused", "archive": "Stopped"}
    assert after == {"etl": "Stopped", "analytics": "Paused", "archive": "Stopped"}
    assert sim.snapshot()["auth_required"] is True


async def test_set_fail_stop_makes_the_next_stop_fail(
    sims: SimulatorServer, provider: FelderaProvider
) -> None:
    """set_fail_stop() lets a test make any pipeline's stop end in deployment_error."""
    simulator(sims).set_fail_stop("analytics", "out of memory")
    await provider.stop(pipeline("analytics"), force=True)
    sims.hub.clock.advance(STEP)
    assert seen(await provider.status(pipeline("analytics"))) == (
        "Stopped",
        Phase.STOPPED,
        True,
        "out of memory",
    )


# The edition: whether a graceful stop exists


@pytest.mark.parametrize(
    ("enterprise", "expected"),
    [
        (False, GracefulStop(available=False, why="Open source edition")),
        (True, GracefulStop(available=True, why="Enterprise edition")),
    ],
)
async def test_edition_is_read_once_and_tells_whether_a_graceful_stop_exists(
    sims: SimulatorServer,
    provider: FelderaProvider,
    counting: CountingTransport,
    enterprise: bool,
    expected: GracefulStop,
) -> None:
    """GET /v0/config once: the open-source edition has no graceful stop, Enterprise has."""
    reseed(sims, enterprise=enterprise)
    answers = [await provider.graceful_stop(), await provider.graceful_stop()]
    assert answers == [expected, expected]
    assert [(m, p) for m, p, _ in counting.requests] == [("GET", "/feldera/v0/config")]


async def test_an_unread_edition_is_unknown_and_asked_again(
    sims: SimulatorServer, provider: FelderaProvider, counting: CountingTransport
) -> None:
    """A failed /v0/config read is unknown, with Feldera's words, and not remembered."""
    sims.hub.faults.add(
        Fault(
            api="feldera",
            kind="status",
            status=500,
            path_contains="/v0/config",
            body={"message": "config store down"},
        )
    )
    first = await provider.graceful_stop()
    second = await provider.graceful_stop()
    assert first == GracefulStop(available=None, why="config store down")
    assert second == GracefulStop(available=False, why="Open source edition")
    assert [p for _, p, _ in counting.requests] == ["/feldera/v0/config"] * 2
