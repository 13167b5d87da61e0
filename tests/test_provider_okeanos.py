"""The ~okeanos LoD client against the simulated LoD API, over real loopback HTTP."""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

import providers.okeanos
from providers.base import DiscoveredResource, Phase, Resource
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
)
from providers.http import HttpSettings
from providers.okeanos import OkeanosConfig, OkeanosProvider, parse_okeanos_error
from providers.simulators.common import Fault
from providers.simulators.okeanos import OkeanosSimulator
from providers.simulators.samples import DEFAULT_SEED, OKEANOS_TOKEN
from providers.simulators.server import SimulatorServer

SEED = DEFAULT_SEED["okeanos"]
INSTANCE = SEED["lambda_instances"][0]["id"]
SPARK = SEED["applications"][0]["id"]  # started on INSTANCE
FLINK = SEED["applications"][1]["id"]  # stopped on INSTANCE
STEP = SEED["step_seconds"]
OTHER_INSTANCE = "9c4b7a2e-1d3f-4e5a-b6c7-d8e9f0a1b202"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
ACCEPTED = "Your request to stop the specified application has been accepted"


class Recorder(httpx.AsyncBaseTransport):
    """Real HTTP, remembering every request sent (to count calls and read bodies)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()  # a multipart body is a stream: keep it readable
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def calls(self) -> list[str]:
        return [f"{r.method} {r.url.path.removeprefix('/okeanos')}" for r in self.requests]


def resource(app_id: str = SPARK, instance_id: str | None = INSTANCE) -> Resource:
    options = {"lambda_instance_id": instance_id} if instance_id else {}
    return Resource(name="app", provider="okeanos", id=app_id, options=options)


def seed_with_second_instance() -> dict[str, Any]:
    """The sample estate plus a second instance running flink (spark is not deployed there)."""
    seed: dict[str, Any] = copy.deepcopy(SEED)
    seed["lambda_instances"].append({"id": OTHER_INSTANCE, "name": "lambda-cluster-2"})
    seed["applications"][1]["deployments"].append(
        {"lambda_instance_id": OTHER_INSTANCE, "started": True}
    )
    return seed


@pytest.fixture
def sim(sims: SimulatorServer) -> OkeanosSimulator:
    simulator = sims.hub["okeanos"]
    assert isinstance(simulator, OkeanosSimulator)
    return simulator


@pytest.fixture
async def make(sims: SimulatorServer) -> AsyncIterator[Callable[..., OkeanosProvider]]:
    """Build clients against the simulator; each is closed after the test."""
    made: list[OkeanosProvider] = []

    def build(
        token: str = OKEANOS_TOKEN,
        http: HttpSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> OkeanosProvider:
        config = OkeanosConfig(name="okeanos", base_url=sims.url("okeanos"), token=token)
        provider = OkeanosProvider(config, http=http, transport=transport)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


@pytest.fixture
def provider(make: Callable[..., OkeanosProvider]) -> OkeanosProvider:
    return make()


async def test_stop_goes_from_started_to_stopped(
    provider: OkeanosProvider, sims: SimulatorServer
) -> None:
    """A stop is accepted, the app reads started (not terminal) until the flag flips to stopped."""
    seen = [await provider.status(resource())]
    accepted = await provider.stop(resource())
    seen.append(await provider.status(resource()))
    sims.hub.clock.advance(STEP - 1)
    seen.append(await provider.status(resource()))
    sims.hub.clock.advance(1)
    seen.append(await provider.status(resource()))

    assert accepted.model_dump() == {
        "provider": "okeanos",
        "resource_id": SPARK,
        "status": None,
        "message": ACCEPTED,
    }
    assert [(s.state, s.phase, s.terminal, s.message) for s in seen] == [
        ("started", Phase.RUNNING, False, None),
        ("started", Phase.RUNNING, False, None),
        ("started", Phase.RUNNING, False, None),
        ("stopped", Phase.STOPPED, True, None),
    ]


async def test_stop_sends_the_documented_request(make: Callable[..., OkeanosProvider]) -> None:
    """The stop is a multipart form POST of lambda_instance_id (the docs' example is
    ``curl -F``) with a Token Authorization header."""
    recorder = Recorder()
    await make(transport=recorder).stop(resource())

    [request] = recorder.requests
    assert request.method == "POST"
    assert request.url.path == f"/okeanos/api/apps/{SPARK}/stop/"
    assert request.headers["Authorization"] == f"Token {OKEANOS_TOKEN}"
    media_type, _, boundary = request.headers["Content-Type"].partition("; boundary=")
    assert media_type == "multipart/form-data"
    assert (
        request.content
        == (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="lambda_instance_id"\r\n\r\n'
            f"{INSTANCE}\r\n--{boundary}--\r\n"
        ).encode()
    )


async def test_failed_stop_stays_started_forever(
    provider: OkeanosProvider, sim: OkeanosSimulator, sims: SimulatorServer
) -> None:
    """A stop the service silently drops (fail_stop) is accepted and leaves the app started."""
    sim.set_fail_stop(SPARK, options={"lambda_instance_id": INSTANCE})
    await provider.stop(resource())
    sims.hub.clock.advance(STEP * 100)
    status = await provider.status(resource())
    assert (status.state, status.phase, status.terminal) == ("started", Phase.RUNNING, False)


async def test_second_stop_while_pending_is_accepted(
    provider: OkeanosProvider, sims: SimulatorServer
) -> None:
    """The flag is still true while a stop runs, so a repeated stop is accepted, not a 409."""
    await provider.stop(resource())
    sims.hub.clock.advance(STEP - 1)
    assert (await provider.stop(resource())).message == ACCEPTED
    sims.hub.clock.advance(1)
    assert (await provider.status(resource())).state == "stopped"


async def test_stop_on_stopped_app_is_already_stopped(provider: OkeanosProvider) -> None:
    """The service's 409 for an app already stopped becomes AlreadyStoppedError."""
    with pytest.raises(AlreadyStoppedError) as caught:
        await provider.stop(resource(FLINK))
    assert caught.value.status_code == 409
    assert caught.value.message == (
        "The application flink has already been stopped on the lambda instance lambda-cluster-1."
    )


async def test_stop_on_an_instance_not_started_goes_by_the_flag(
    provider: OkeanosProvider, sim: OkeanosSimulator
) -> None:
    """ApplicationStop.md decides on the application alone, whatever its instance's status:
    a started one is accepted (202), a stopped one is AlreadyStoppedError (409)."""
    sim.set_instance_status(INSTANCE, "STOPPED")
    assert (await provider.stop(resource(SPARK))).message == ACCEPTED
    with pytest.raises(AlreadyStoppedError):
        await provider.stop(resource(FLINK))


@pytest.mark.parametrize(
    ("call", "app_id", "instance_id", "message"),
    [
        ("stop", UNKNOWN_ID, INSTANCE, f"The application {UNKNOWN_ID} does not exist."),
        ("stop", SPARK, UNKNOWN_ID, f"The lambda instance {UNKNOWN_ID} does not exist."),
        (
            "stop",
            SPARK,
            OTHER_INSTANCE,
            "The application spark is not deployed on the lambda instance lambda-cluster-2.",
        ),
        ("status", UNKNOWN_ID, INSTANCE, f"The application {UNKNOWN_ID} does not exist."),
        (
            "status",
            SPARK,
            OTHER_INSTANCE,
            f"application {SPARK} is not deployed on lambda instance {OTHER_INSTANCE}",
        ),
    ],
)
async def test_unknown_ids_are_not_found(
    provider: OkeanosProvider,
    sim: OkeanosSimulator,
    call: str,
    app_id: str,
    instance_id: str,
    message: str,
) -> None:
    """An unknown application or instance, or an app not deployed there, is NotFoundError."""
    sim.seed(seed_with_second_instance())
    with pytest.raises(NotFoundError) as caught:
        await getattr(provider, call)(resource(app_id, instance_id))
    assert caught.value.message == message


@pytest.mark.parametrize("call", ["stop", "status"])
async def test_missing_instance_id_fails_before_any_call(
    make: Callable[..., OkeanosProvider], call: str
) -> None:
    """A resource without lambda_instance_id is an InvalidRequestError telling what to set."""
    recorder = Recorder()
    with pytest.raises(InvalidRequestError) as caught:
        await getattr(make(transport=recorder), call)(resource(instance_id=None))
    assert "set lambda_instance_id" in caught.value.message
    assert recorder.requests == []


@pytest.mark.parametrize("call", ["stop", "status", "list"])
async def test_wrong_token_is_auth_error(make: Callable[..., OkeanosProvider], call: str) -> None:
    """A token the service rejects is AuthError with its own message, and no token shown."""
    provider = make(token="wrong-token")
    with pytest.raises(AuthError) as caught:
        await (provider.list() if call == "list" else getattr(provider, call)(resource()))
    assert caught.value.message == "Invalid token"
    assert caught.value.code == "unauthorized"
    assert "wrong-token" not in str(caught.value)


def test_token_is_never_shown() -> None:
    """The token stays out of the config's repr and dump."""
    config = OkeanosConfig(name="okeanos", base_url="https://lod.example", token="s3cret")
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(config.model_dump())


async def test_lock_is_none(provider: OkeanosProvider) -> None:
    """LoD has no provider-side locks."""
    assert await provider.lock(resource()) is None


@pytest.mark.parametrize("status", [503, 429])
async def test_busy_answer_is_retried_after_retry_after(
    make: Callable[..., OkeanosProvider], sims: SimulatorServer, status: int
) -> None:
    """A 503/429 with Retry-After on the stop POST is retried, then the stop goes through."""
    sims.hub.faults.add(
        Fault(api="okeanos", kind="status", status=status, retry_after=1, method="POST")
    )
    recorder = Recorder()
    accepted = await make(transport=recorder).stop(resource())
    assert accepted.message == ACCEPTED
    assert recorder.calls == [f"POST /api/apps/{SPARK}/stop/"] * 2


async def test_dropped_stop_is_not_retried(
    make: Callable[..., OkeanosProvider], sims: SimulatorServer, sim: OkeanosSimulator
) -> None:
    """A POST stop whose connection drops is reported, never sent twice."""
    sims.hub.faults.add(Fault(api="okeanos", kind="drop", method="POST"))
    recorder = Recorder()
    with pytest.raises(DroppedError):
        await make(transport=recorder).stop(resource())
    assert len(recorder.requests) == 1
    assert sim.snapshot()["applications"][0]["deployments"][0]["stop_requests"] == 0


async def test_dropped_read_is_retried(
    make: Callable[..., OkeanosProvider], sims: SimulatorServer
) -> None:
    """A GET whose connection drops is retried and succeeds."""
    sims.hub.faults.add(Fault(api="okeanos", kind="drop", method="GET"))
    recorder = Recorder()
    status = await make(transport=recorder).status(resource())
    assert status.state == "started"
    assert recorder.calls == [f"GET /api/apps/{SPARK}/"] * 2


async def test_slow_answer_times_out(
    make: Callable[..., OkeanosProvider], sims: SimulatorServer
) -> None:
    """An answer slower than the configured timeout is ProviderTimeoutError."""
    sims.hub.faults.add(Fault(api="okeanos", kind="latency", seconds=0.5, method="GET"))
    provider = make(http=HttpSettings(timeout=0.05, attempts=1))
    with pytest.raises(ProviderTimeoutError) as caught:
        await provider.status(resource())
    assert caught.value.message == "no answer within 0.05s"


async def test_stop_timeout_is_not_retried() -> None:
    """A stop POST that times out is reported once: it may have reached the service."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    config = OkeanosConfig(name="okeanos", base_url="https://lod.example", token="t")
    provider = OkeanosProvider(config, transport=httpx.MockTransport(handler))
    with pytest.raises(ProviderTimeoutError):
        await provider.stop(resource())
    await provider.aclose()
    assert len(sent) == 1


async def test_statuses_is_one_call_per_instance(
    make: Callable[..., OkeanosProvider], sims: SimulatorServer
) -> None:
    """Statuses of many apps on one instance cost one LambdaInstanceDetails call."""
    recorder = Recorder()
    provider = make(transport=recorder)
    await provider.stop(resource(SPARK))
    sims.hub.clock.advance(STEP)
    recorder.requests.clear()

    found = await provider.statuses([resource(SPARK), resource(FLINK)])

    assert recorder.calls == [f"GET /api/lambda-instances/{INSTANCE}/"]
    assert {k: (s.state, s.phase, s.terminal) for k, s in found.items()} == {
        SPARK: ("stopped", Phase.STOPPED, True),
        FLINK: ("stopped", Phase.STOPPED, True),
    }


async def test_statuses_and_locks_say_why_a_status_is_unknown(
    make: Callable[..., OkeanosProvider], sims: SimulatorServer
) -> None:
    """statuses_and_locks() reads the statuses in bulk; an app the bulk read left out (its
    instance answered 503) is read on its own, whose failure is its status. ~okeanos holds
    no locks: each lock is none, read or not."""
    sims.hub.faults.add(
        Fault(
            api="okeanos",
            kind="status",
            method="GET",
            path_contains="/lambda-instances/",
            count=None,
        )
    )
    recorder = Recorder()
    found = await make(transport=recorder).statuses_and_locks([resource(SPARK), resource(FLINK)])
    assert set(recorder.calls) == {
        f"GET /api/lambda-instances/{INSTANCE}/",  # tried again, as every read
        f"GET /api/apps/{FLINK}/",
        f"GET /api/apps/{SPARK}/",
    }
    assert {k: (type(s).__name__, lock) for k, (s, lock) in found.items()} == {
        SPARK: ("ResourceStatus", None),
        FLINK: ("ResourceStatus", None),
    }
    sims.hub.faults.add(Fault(api="okeanos", kind="status", method="GET", count=None))
    [(status, lock)] = (await make().statuses_and_locks([resource(SPARK)])).values()
    assert isinstance(status, UnavailableError) and lock is None


async def test_statuses_leaves_out_what_it_cannot_read(
    make: Callable[..., OkeanosProvider], sim: OkeanosSimulator
) -> None:
    """Apps not on their instance, unknown instances and missing options are left out."""
    sim.seed(seed_with_second_instance())
    recorder = Recorder()
    found = await make(transport=recorder).statuses(
        [
            resource(SPARK),
            resource(FLINK, OTHER_INSTANCE),
            resource(SPARK, OTHER_INSTANCE),
            resource(FLINK, UNKNOWN_ID),
            resource(FLINK, None),
        ]
    )
    assert {k: s.state for k, s in found.items()} == {SPARK: "started", FLINK: "started"}
    # The unknown instance has no details page: its app is read on its own, and is not found.
    assert sorted(recorder.calls) == [
        f"GET /api/apps/{FLINK}/",
        f"GET /api/lambda-instances/{UNKNOWN_ID}/",
        f"GET /api/lambda-instances/{INSTANCE}/",
        f"GET /api/lambda-instances/{OTHER_INSTANCE}/",
    ]


async def test_list_follows_pages(
    make: Callable[..., OkeanosProvider],
    sim: OkeanosSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """list() pages through the instances and yields one resource per app deployment,
    with its type and its instance's name as tags (LambdaInstanceDetails)."""
    sim.seed(seed_with_second_instance())
    monkeypatch.setattr(providers.okeanos, "PAGE_SIZE", 1)
    recorder = Recorder()
    found = await make(transport=recorder).list()

    assert found == [
        DiscoveredResource(
            provider="okeanos",
            id=SPARK,
            name="spark",
            state="started",
            phase=Phase.RUNNING,
            options={"lambda_instance_id": INSTANCE},
            tags={"type": "BATCH", "lambda_instance": "lambda-cluster-1"},
        ),
        DiscoveredResource(
            provider="okeanos",
            id=FLINK,
            name="flink",
            state="stopped",
            phase=Phase.STOPPED,
            options={"lambda_instance_id": INSTANCE},
            tags={"type": "STREAMING", "lambda_instance": "lambda-cluster-1"},
        ),
        DiscoveredResource(
            provider="okeanos",
            id=FLINK,
            name="flink",
            state="started",
            phase=Phase.RUNNING,
            options={"lambda_instance_id": OTHER_INSTANCE},
            tags={"type": "STREAMING", "lambda_instance": "lambda-cluster-2"},
        ),
    ]
    assert [str(r.url).split("/okeanos")[1] for r in recorder.requests] == [
        "/api/lambda-instances/?limit=1",
        "/api/lambda-instances/?limit=1&offset=1",
        f"/api/lambda-instances/{INSTANCE}/",
        f"/api/lambda-instances/{OTHER_INSTANCE}/",
    ]


async def test_list_skips_an_instance_it_cannot_read(
    make: Callable[..., OkeanosProvider],
    sim: OkeanosSimulator,
    sims: SimulatorServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An instance whose details cannot be read is left out of list(), with a warning;
    the applications of the other instances are still listed."""
    sim.seed(seed_with_second_instance())
    sims.hub.faults.add(
        Fault(
            api="okeanos",
            kind="status",
            status=404,
            method="GET",
            path_contains=f"/api/lambda-instances/{OTHER_INSTANCE}/",
            count=None,
        )
    )
    with caplog.at_level(logging.WARNING, logger="providers.okeanos"):
        found = await make().list()
    assert [(r.id, r.options["lambda_instance_id"]) for r in found] == [
        (SPARK, INSTANCE),
        (FLINK, INSTANCE),
    ]
    [record] = [r for r in caplog.records if r.name == "providers.okeanos"]
    assert record.levelno == logging.WARNING
    assert getattr(record, "lambda_instance_id", None) == OTHER_INSTANCE


async def test_instance_failure_message_is_reported(
    provider: OkeanosProvider, sim: OkeanosSimulator
) -> None:
    """The instance's failure_message is the status message, in status and statuses alike."""
    sim.set_instance_status(INSTANCE, "KAFKA_FAILED", "Ansible task failed")
    single = await provider.status(resource())
    bulk = (await provider.statuses([resource()]))[SPARK]
    assert single.message == bulk.message == "lambda instance KAFKA_FAILED: Ansible task failed"


# Small parsing units: shapes the simulator does not send but the service or its docs do.


def mock_provider(handler: Callable[[httpx.Request], httpx.Response]) -> OkeanosProvider:
    config = OkeanosConfig(name="okeanos", base_url="https://lod.example", token="t")
    return OkeanosProvider(config, transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (
            {"errors": [{"message": "Invalid token", "code": 401, "details": "unauthorized"}]},
            "Invalid token",
            "unauthorized",
        ),
        (
            {"errors": [{"status": 404, "detail": "The specified application doesn't exist."}]},
            "The specified application doesn't exist.",
            None,
        ),
        (
            {"errors": [{"status": 400, "detail": ["name: too long", "type: bad"]}]},
            "name: too long; type: bad",
            None,
        ),
        ({"detail": "Method not allowed."}, "Method not allowed.", None),
    ],
)
def test_error_bodies_are_parsed(body: dict[str, Any], message: str, code: str | None) -> None:
    """Both the documented error shape and the service's own Django REST shape are read."""
    details = parse_okeanos_error(httpx.Response(400, json=body))
    assert (details.message, details.code) == (message, code)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, InvalidRequestError), (401, AuthError), (404, NotFoundError), (409, ConflictError)],
)
async def test_documented_error_codes_map_to_the_tree(
    status: int, kind: type[ProviderError]
) -> None:
    """Each documented error status is its error class, carrying the service's message."""
    body = {"errors": [{"status": status, "detail": "the service's words"}]}
    provider = mock_provider(lambda request: httpx.Response(status, json=body))
    with pytest.raises(kind) as caught:
        await provider.status(resource())
    await provider.aclose()
    assert type(caught.value) is kind
    assert caught.value.message == "the service's words"


async def test_already_stopped_text_needs_no_status_read() -> None:
    """The service's "has already been stopped" 409 is AlreadyStoppedError at once."""
    sent: list[str] = []
    text = "The specified application on the specified lambda instance has already been stopped."

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        return httpx.Response(409, json={"errors": [{"status": 409, "detail": text}]})

    provider = mock_provider(handler)
    with pytest.raises(AlreadyStoppedError) as caught:
        await provider.stop(resource())
    await provider.aclose()
    assert caught.value.message == text
    assert sent == ["POST"]


async def test_inconclusive_conflict_on_a_stopped_app_is_already_stopped() -> None:
    """When the 409 text is not conclusive, a status read showing started=false decides."""
    sent: list[str] = []
    text = "Can't start/stop an application while lambda instance status is STOPPED."

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            return httpx.Response(409, json={"errors": [{"status": 409, "detail": text}]})
        app = {"id": FLINK, "lambda_instances": [{"id": INSTANCE, "started": False}]}
        return httpx.Response(200, json={"data": [app]})

    provider = mock_provider(handler)
    with pytest.raises(AlreadyStoppedError) as caught:
        await provider.stop(resource(FLINK))
    await provider.aclose()
    assert caught.value.message == text
    assert sent == [f"POST /api/apps/{FLINK}/stop/", f"GET /api/apps/{FLINK}/"]


async def test_conflict_names_the_instance_status() -> None:
    """An unclear 409 on an instance that is not STARTED says the instance's status."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(409, json={"errors": [{"status": 409, "detail": "Can't do."}]})
        app = {
            "id": SPARK,
            "lambda_instances": [
                {"id": INSTANCE, "started": True, "status": {"message": "STOPPING"}}
            ],
        }
        return httpx.Response(200, json={"status": {"code": 200}, "data": [app]})

    provider = mock_provider(handler)
    with pytest.raises(ConflictError) as caught:
        await provider.stop(resource())
    await provider.aclose()
    assert type(caught.value) is ConflictError
    assert caught.value.message == f"Can't do. (lambda instance {INSTANCE} is STOPPING)"


@pytest.mark.parametrize("key", ["short-description", "short_description"])
async def test_accepted_reads_either_spelling(key: str) -> None:
    """The 202 description is read whether spelled with a hyphen (docs) or an underscore."""
    body = {"status": {key: "accepted", "code": 202}}
    provider = mock_provider(lambda request: httpx.Response(202, json=body))
    accepted = await provider.stop(resource())
    await provider.aclose()
    assert accepted.message == "accepted"


@pytest.mark.parametrize(
    ("started", "expected"),
    [
        (True, ("started", Phase.RUNNING, False)),
        (False, ("stopped", Phase.STOPPED, True)),
        (None, ("unknown", Phase.UNKNOWN, False)),
        ("paused", ("unknown", Phase.UNKNOWN, False)),
    ],
)
async def test_started_flag_maps_to_phase(started: object, expected: tuple[Any, ...]) -> None:
    """The started flag maps to state/phase/terminal; anything else is unknown, not a crash."""
    app = {"id": SPARK, "lambda_instances": [{"id": INSTANCE, "started": started}]}
    provider = mock_provider(lambda request: httpx.Response(200, json={"data": [app]}))
    status = await provider.status(resource())
    await provider.aclose()
    assert (status.state, status.phase, status.terminal) == expected


async def test_unexpected_body_is_a_provider_error() -> None:
    """A 200 whose body is not the documented shape is a ProviderError, not a crash."""
    provider = mock_provider(lambda request: httpx.Response(200, json={"data": []}))
    with pytest.raises(ProviderError) as caught:
        await provider.status(resource())
    await provider.aclose()
    assert caught.value.message.startswith(f"unexpected answer to GET /api/apps/{SPARK}/")
