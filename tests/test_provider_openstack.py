"""The OpenStack Nova client against the simulated Keystone and Nova, over loopback HTTP."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import time_machine
from pydantic import ValidationError

from providers.base import (
    DiscoveredResource,
    Phase,
    ProviderLock,
    Resource,
    ResourceStatus,
    StopAccepted,
    utcnow,
)
from providers.errors import (
    AlreadyStoppedError,
    AuthError,
    ConflictError,
    DroppedError,
    ForbiddenError,
    InvalidRequestError,
    LockedError,
    NotFoundError,
    ProviderError,
    ProviderTimeoutError,
    UnavailableError,
)
from providers.http import HttpSettings
from providers.openstack import (
    SERVER_STATUSES,
    NovaProvider,
    OpenStackConfig,
    parse_openstack_error,
    server_phase,
)
from providers.simulators.common import Fault
from providers.simulators.openstack import (
    DEFAULT_FAIL_MESSAGE,
    STATUS_STATES,
    NovaSimulator,
)
from providers.simulators.samples import DEFAULT_SEED, sample_config
from providers.simulators.server import SimulatorServer

WEB, BATCH, DB = (s["id"] for s in DEFAULT_SEED["nova"]["servers"])
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
UNAUTHORIZED = "The request you have made requires authentication."
STEP = DEFAULT_SEED["nova"]["step_seconds"]
APP_CREDENTIAL = {"id": "423f19a4ac1e4f48bbb4180756e6eb6c", "secret": "rEaqvJka48mpv"}


@dataclasses.dataclass
class Exchange:
    """One request the client sent, and the status it got (None: no answer)."""

    method: str
    path: str
    headers: httpx.Headers
    body: bytes
    status: int | None = None
    response_headers: httpx.Headers | None = None
    params: dict[str, str] = dataclasses.field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


class RecordingTransport(httpx.AsyncBaseTransport):
    """A real loopback transport that records every request, to count and inspect them."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = Exchange(
            request.method,
            request.url.path,
            request.headers,
            await request.aread(),
            params=dict(request.url.params),
        )
        self.exchanges.append(exchange)
        response = await self.inner.handle_async_request(request)
        exchange.status, exchange.response_headers = response.status_code, response.headers
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def sent(self, method: str, path_end: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method and e.path.endswith(path_end)]

    @property
    def logins(self) -> list[Exchange]:
        return self.sent("POST", "/identity/v3/auth/tokens")


def nova_config(sims: SimulatorServer, **changes: Any) -> OpenStackConfig:
    """The sample configuration's ``nova`` entry, with ``changes`` (None removes a key)."""
    (entry,) = (p for p in sample_config(sims.base_url)["providers"] if p["type"] == "openstack")
    entry = {k: v for k, v in {**entry, **changes}.items() if v is not None}
    return OpenStackConfig.model_validate(entry)


def reseed(sims: SimulatorServer, **changes: Any) -> NovaSimulator:
    """Seed the simulated cloud with the sample section plus ``changes``."""
    sim = sims.hub["nova"]
    assert isinstance(sim, NovaSimulator)
    sim.seed({**DEFAULT_SEED["nova"], **changes})
    return sim


def resource(server_id: str) -> Resource:
    return Resource(name=server_id[-2:], provider="nova", id=server_id)


def seen(status: Any) -> tuple[str, Phase, bool]:
    return status.state, status.phase, status.terminal


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
async def nova(sims: SimulatorServer, transport: RecordingTransport) -> AsyncIterator[NovaProvider]:
    provider = NovaProvider(nova_config(sims), transport=transport)
    yield provider
    await provider.aclose()


@pytest.fixture
async def make_nova(
    sims: SimulatorServer, transport: RecordingTransport
) -> AsyncIterator[Callable[..., NovaProvider]]:
    """Clients with other HTTP settings or config changes, closed after the test."""
    made: list[NovaProvider] = []

    def make(*, http: HttpSettings | None = None, **changes: Any) -> NovaProvider:
        made.append(NovaProvider(nova_config(sims, **changes), http=http, transport=transport))
        return made[-1]

    yield make
    for provider in made:
        await provider.aclose()


# Configuration


@pytest.mark.parametrize(
    "login",
    [
        {"username": "u", "password": "p", "project_name": "dev"},
        {"username": "u", "password": "p", "project_id": "a6944d763bf64ee6a275f1263fae0352"},
        {"application_credential_id": "id", "application_credential_secret": "s"},
    ],
)
def test_config_accepts_a_complete_login(login: dict[str, str]) -> None:
    """Password (project by name or id) and application credential logins are both valid."""
    config = OpenStackConfig(name="os", type="openstack", auth_url="https://k/v3", **login)
    assert config.interface == "public"
    assert config.user_domain_name == config.project_domain_name == "Default"


@pytest.mark.parametrize(
    ("login", "message"),
    [
        ({}, "password login is missing username, password, project_name or project_id"),
        ({"username": "u", "password": "p"}, "password login is missing project_name"),
        ({"username": "u", "project_name": "dev"}, "password login is missing password"),
        (
            {"application_credential_id": "id"},
            "an application credential needs both application_credential_id and "
            "application_credential_secret",
        ),
        (
            {
                "username": "u",
                "password": "p",
                "project_name": "dev",
                "application_credential_id": "id",
                "application_credential_secret": "s",
            },
            "not both",
        ),
    ],
)
def test_config_refuses_an_incomplete_login(login: dict[str, str], message: str) -> None:
    """A login missing a piece is refused with a message naming what is missing."""
    with pytest.raises(ValidationError, match=message):
        OpenStackConfig(name="os", type="openstack", auth_url="https://k/v3", **login)


def test_config_hides_secrets() -> None:
    """Neither the password nor the application credential secret shows in the config's repr."""
    password = OpenStackConfig(
        name="os",
        type="openstack",
        auth_url="https://k",
        username="u",
        password="hunter2-secret",
        project_name="dev",
    )
    credential = OpenStackConfig(
        name="os",
        type="openstack",
        auth_url="https://k",
        application_credential_id="id",
        application_credential_secret="s3cr3t-value",
    )
    assert "hunter2-secret" not in repr(password) + str(password)
    assert "s3cr3t-value" not in repr(credential) + str(credential)


@pytest.mark.parametrize(
    ("auth_url", "identity_url"),
    [
        ("https://keystone.example.com:5000", "https://keystone.example.com:5000/v3"),
        ("https://keystone.example.com/identity/v3/", "https://keystone.example.com/identity/v3"),
    ],
)
def test_identity_url_ends_in_v3(auth_url: str, identity_url: str) -> None:
    """An auth URL without the API version (as clouds.yaml often has it) gets ``/v3``."""
    config = OpenStackConfig(
        name="os",
        type="openstack",
        auth_url=auth_url,
        application_credential_id="id",
        application_credential_secret="s",
    )
    assert config.identity_url == identity_url


# The stop and its statuses


async def test_stop_goes_through_powering_off_to_shutoff(
    sims: SimulatorServer, nova: NovaProvider
) -> None:
    """A stop shows ACTIVE, then ACTIVE (powering-off) for a step, then SHUTOFF."""
    observed = [seen(await nova.status(resource(WEB)))]
    accepted = await nova.stop(resource(WEB))
    observed.append(seen(await nova.status(resource(WEB))))
    sims.hub.clock.advance(STEP / 2)
    observed.append(seen(await nova.status(resource(WEB))))
    sims.hub.clock.advance(STEP / 2)
    observed.append(seen(await nova.status(resource(WEB))))
    assert accepted == StopAccepted(provider="nova", resource_id=WEB)
    assert observed == [
        ("ACTIVE", Phase.RUNNING, True),
        ("ACTIVE (powering-off)", Phase.STOPPING, False),
        ("ACTIVE (powering-off)", Phase.STOPPING, False),
        ("SHUTOFF", Phase.STOPPED, True),
    ]


async def test_stop_sends_os_stop_with_token_and_microversion(
    nova: NovaProvider, transport: RecordingTransport
) -> None:
    """The stop is POST /servers/{id}/action {"os-stop": null}, with the token and 2.73."""
    await nova.stop(resource(WEB))
    (login,) = transport.logins
    (stop,) = transport.sent("POST", f"/v2.1/servers/{WEB}/action")
    assert login.response_headers is not None
    assert stop.json() == {"os-stop": None}
    assert stop.headers["X-Auth-Token"] == login.response_headers["X-Subject-Token"]
    assert stop.headers["OpenStack-API-Version"] == "compute 2.73"
    assert stop.headers["X-OpenStack-Nova-API-Version"] == "2.73"
    assert stop.status == 202


async def test_password_login_body(nova: NovaProvider, transport: RecordingTransport) -> None:
    """The password login names the user and project with their domains (authenticate-v3)."""
    await nova.list()
    assert transport.logins[0].json() == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": "stopbot",
                        "domain": {"name": "Default"},
                        "password": "sim-nova-password",
                    }
                },
            },
            "scope": {"project": {"name": "dev", "domain": {"name": "Default"}}},
        }
    }


async def test_password_login_by_project_id(
    sims: SimulatorServer, make_nova: Callable[..., NovaProvider], transport: RecordingTransport
) -> None:
    """With project_id configured, the scope names the project by id alone."""
    nova = make_nova(project_name=None, project_id="a6944d763bf64ee6a275f1263fae0352")
    assert len(await nova.list()) == 3
    assert transport.logins[0].json()["auth"]["scope"] == {
        "project": {"id": "a6944d763bf64ee6a275f1263fae0352"}
    }


async def test_application_credential_login(
    sims: SimulatorServer, make_nova: Callable[..., NovaProvider], transport: RecordingTransport
) -> None:
    """An application credential logs in by id and secret, with no scope block."""
    reseed(sims, application_credentials=[APP_CREDENTIAL])
    nova = make_nova(
        username=None,
        password=None,
        project_name=None,
        application_credential_id=APP_CREDENTIAL["id"],
        application_credential_secret=APP_CREDENTIAL["secret"],
    )
    assert [r.name for r in await nova.list()] == ["web-1", "batch-2", "db-3"]
    assert transport.logins[0].json() == {
        "auth": {
            "identity": {
                "methods": ["application_credential"],
                "application_credential": APP_CREDENTIAL,
            }
        }
    }
    await nova.aclose()


async def test_stop_of_a_stopped_server_is_already_stopped(nova: NovaProvider) -> None:
    """Nova's 409 for a SHUTOFF server becomes AlreadyStoppedError with Nova's message."""
    with pytest.raises(AlreadyStoppedError) as caught:
        await nova.stop(resource(DB))
    assert caught.value.message == f"Cannot 'stop' instance {DB} while it is in vm_state stopped"
    assert (caught.value.status_code, caught.value.code) == (409, "conflictingRequest")


async def test_stop_of_a_locked_server_is_locked(nova: NovaProvider) -> None:
    """Nova's 409 for a locked server becomes LockedError with Nova's message and the
    server's locked_reason."""
    with pytest.raises(LockedError) as caught:
        await nova.stop(resource(BATCH))
    assert caught.value.message == (
        f"Instance {BATCH} is locked (reason: kernel upgrade in progress)"
    )
    assert (caught.value.status_code, caught.value.code) == (409, "conflictingRequest")


async def test_an_admin_stops_a_locked_server(sims: SimulatorServer, nova: NovaProvider) -> None:
    """An administrator's stop goes through Nova's lock."""
    reseed(sims, admin=True)
    await nova.stop(resource(BATCH))
    assert seen(await nova.status(resource(BATCH))) == (
        "ACTIVE (powering-off)",
        Phase.STOPPING,
        False,
    )


async def test_stop_while_powering_off_is_a_plain_conflict(nova: NovaProvider) -> None:
    """A second stop during the first is a ConflictError, neither stopped nor locked."""
    await nova.stop(resource(WEB))
    with pytest.raises(ConflictError) as caught:
        await nova.stop(resource(WEB))
    assert type(caught.value) is ConflictError
    assert caught.value.message == (
        f"Cannot 'stop' instance {WEB} while it is in task_state powering-off"
    )


async def test_a_failed_stop_ends_in_error_with_the_fault(
    sims: SimulatorServer, nova: NovaProvider
) -> None:
    """A stop Nova cannot finish ends in ERROR: FAILED, terminal, with the fault's message."""
    reseed(
        sims,
        servers=[{"id": WEB, "name": "web-1", "fail_stop": True, "fail_message": "No power"}],
    )
    await nova.stop(resource(WEB))
    observed = [seen(await nova.status(resource(WEB)))]
    sims.hub.clock.advance(STEP)
    status = await nova.status(resource(WEB))
    observed.append(seen(status))
    assert observed == [
        ("ACTIVE (powering-off)", Phase.STOPPING, False),
        ("ERROR", Phase.FAILED, True),
    ]
    assert status.message == "No power"


async def test_fail_stop_can_be_set_from_a_test(sims: SimulatorServer, nova: NovaProvider) -> None:
    """The simulator's set_fail_stop makes the next stop fail with the default message."""
    sim = sims.hub["nova"]
    assert isinstance(sim, NovaSimulator)
    sim.set_fail_stop(WEB)
    await nova.stop(resource(WEB))
    sims.hub.clock.advance(STEP)
    status = await nova.status(resource(WEB))
    assert (status.state, status.message) == ("ERROR", DEFAULT_FAIL_MESSAGE)


# Locks


async def test_lock_reports_nova_lock_reason(nova: NovaProvider) -> None:
    """A locked server's lock has Nova's locked_reason, no owner and no time limit."""
    assert await nova.lock(resource(BATCH)) == ProviderLock(
        owner=None, reason="kernel upgrade in progress", locked_at=None, ttl=None
    )
    assert await nova.lock(resource(WEB)) is None


async def test_lock_follows_the_simulator(sims: SimulatorServer, nova: NovaProvider) -> None:
    """Locks set and cleared on the simulator show through lock()."""
    sim = sims.hub["nova"]
    assert isinstance(sim, NovaSimulator)
    sim.set_lock(WEB)
    assert await nova.lock(resource(WEB)) == ProviderLock()
    sim.clear_lock(BATCH)
    assert await nova.lock(resource(BATCH)) is None


# Errors


async def test_wrong_password_is_an_auth_error(make_nova: Callable[..., NovaProvider]) -> None:
    """Keystone's 401 is an AuthError with Keystone's message, and never the password."""
    nova = make_nova(password="wrong-password-123")
    with pytest.raises(AuthError) as caught:
        await nova.list()
    assert (caught.value.message, caught.value.status_code) == (UNAUTHORIZED, 401)
    assert caught.value.code == "Unauthorized"
    assert "wrong-password-123" not in str(caught.value) + repr(caught.value)


async def test_wrong_application_credential_is_an_auth_error(
    sims: SimulatorServer, make_nova: Callable[..., NovaProvider]
) -> None:
    """An unknown application credential secret is refused by Keystone."""
    reseed(sims, application_credentials=[APP_CREDENTIAL])
    nova = make_nova(
        username=None,
        password=None,
        project_name=None,
        application_credential_id=APP_CREDENTIAL["id"],
        application_credential_secret="not-it",
    )
    with pytest.raises(AuthError, match=UNAUTHORIZED):
        await nova.list()


@pytest.mark.parametrize("call", ["status", "stop", "lock"])
async def test_unknown_server_is_not_found(nova: NovaProvider, call: str) -> None:
    """Nova's itemNotFound is a NotFoundError with Nova's message."""
    with pytest.raises(NotFoundError) as caught:
        await getattr(nova, call)(resource(UNKNOWN_ID))
    assert caught.value.message == f"Instance {UNKNOWN_ID} could not be found."
    assert (caught.value.status_code, caught.value.code) == (404, "itemNotFound")


# Tokens


async def test_token_is_reused(nova: NovaProvider, transport: RecordingTransport) -> None:
    """Calls share one Keystone token while it is valid."""
    await nova.list()
    await nova.status(resource(WEB))
    await nova.stop(resource(WEB))
    assert len(transport.logins) == 1


@pytest.mark.parametrize("how", ["expired", "revoked"])
async def test_rejected_token_is_renewed_once(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport, how: str
) -> None:
    """A token Nova refuses (expired or revoked) is renewed once and the call made again."""
    await nova.status(resource(WEB))
    sim = sims.hub["nova"]
    assert isinstance(sim, NovaSimulator)
    if how == "expired":
        sims.hub.clock.advance(3601)
    else:
        sim.revoke_tokens()
    await nova.stop(resource(WEB))
    assert len(transport.logins) == 2
    assert [e.status for e in transport.sent("POST", "/action")] == [401, 202]


async def test_second_401_is_an_auth_error(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport
) -> None:
    """If Nova refuses the renewed token too, the call ends in AuthError, not a loop."""
    body = {"error": {"code": 401, "title": "Unauthorized", "message": UNAUTHORIZED}}
    sims.hub.faults.add(
        Fault(api="nova", kind="status", status=401, body=body, path_contains="/v2.1/", count=2)
    )
    with pytest.raises(AuthError, match=UNAUTHORIZED):
        await nova.status(resource(WEB))
    assert len(transport.logins) == 2
    assert len(transport.sent("GET", f"/servers/{WEB}")) == 2


async def test_token_near_expiry_is_renewed_before_use(
    nova: NovaProvider, transport: RecordingTransport
) -> None:
    """A token with less than five minutes left is renewed before the call, not after a 401."""
    with time_machine.travel(utcnow(), tick=True) as traveller:
        await nova.status(resource(WEB))
        traveller.shift(dt.timedelta(seconds=3600 - 299))
        await nova.status(resource(WEB))
    assert len(transport.logins) == 2
    assert [e.status for e in transport.sent("GET", f"/servers/{WEB}")] == [200, 200]


# Retries and timeouts


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/servers/detail", 503, {"serviceUnavailable": {"code": 503, "message": "busy"}}),
        ("POST", "/action", 429, {"overLimit": {"code": 429, "message": "Rate limit"}}),
        ("POST", "/action", 413, {"overLimit": {"code": 413, "message": "Rate limit"}}),
        ("GET", "/servers/detail", 413, {"overLimit": {"code": 413, "message": "Rate limit"}}),
    ],
)
async def test_busy_answers_are_retried(
    sims: SimulatorServer,
    nova: NovaProvider,
    transport: RecordingTransport,
    method: str,
    path: str,
    status: int,
    body: dict[str, Any],
) -> None:
    """503, 429 and Nova's 413 overLimit with Retry-After are retried, then succeed."""
    sims.hub.faults.add(
        Fault(
            api="nova",
            kind="status",
            method=method,
            path_contains=path,
            status=status,
            body=body,
            retry_after=1,
        )
    )
    if method == "GET":
        assert len(await nova.statuses([resource(WEB)])) == 1
    else:
        await nova.stop(resource(WEB))
    assert [e.status for e in transport.sent(method, path)] == [
        status,
        200 if method == "GET" else 202,
    ]


async def test_lasting_overlimit_is_unavailable(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport
) -> None:
    """A 413 overLimit that does not go away ends in UnavailableError with Nova's message."""
    sims.hub.faults.add(
        Fault(
            api="nova",
            kind="status",
            method="POST",
            path_contains="/action",
            status=413,
            body={"overLimit": {"code": 413, "message": "This request was rate-limited."}},
            retry_after=1,
            count=None,
        )
    )
    with pytest.raises(UnavailableError) as caught:
        await nova.stop(resource(WEB))
    assert (caught.value.message, caught.value.status_code) == (
        "This request was rate-limited.",
        413,
    )
    assert len(transport.sent("POST", "/action")) == HttpSettings().attempts


async def test_dropped_stop_is_not_retried(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport
) -> None:
    """A stop whose connection drops is not sent again: it may have been acted on."""
    await nova.list()
    sims.hub.faults.add(Fault(api="nova", kind="drop", method="POST", path_contains="/action"))
    with pytest.raises(DroppedError):
        await nova.stop(resource(WEB))
    assert len(transport.sent("POST", "/action")) == 1
    assert seen(await nova.status(resource(WEB))) == ("ACTIVE", Phase.RUNNING, True)


async def test_dropped_read_is_retried(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport
) -> None:
    """A status read whose connection drops is simply read again."""
    await nova.list()
    sims.hub.faults.add(Fault(api="nova", kind="drop", method="GET", path_contains=f"/{WEB}"))
    assert seen(await nova.status(resource(WEB))) == ("ACTIVE", Phase.RUNNING, True)
    assert len(transport.sent("GET", f"/servers/{WEB}")) == 2


async def test_slow_stop_times_out_once(
    sims: SimulatorServer, make_nova: Callable[..., NovaProvider], transport: RecordingTransport
) -> None:
    """A stop with no answer within the timeout is a ProviderTimeoutError, sent once."""
    nova = make_nova(http=HttpSettings(timeout=0.2))
    await nova.list()
    # An unknown server: the late request, once it reaches the simulator, changes nothing.
    sims.hub.faults.add(
        Fault(api="nova", kind="latency", method="POST", path_contains="/action", seconds=0.6)
    )
    with pytest.raises(ProviderTimeoutError):
        await nova.stop(resource(UNKNOWN_ID))
    assert len(transport.sent("POST", "/action")) == 1


async def test_slow_read_is_retried(
    sims: SimulatorServer, make_nova: Callable[..., NovaProvider], transport: RecordingTransport
) -> None:
    """A status read that times out is read again."""
    nova = make_nova(http=HttpSettings(timeout=0.2))
    await nova.list()
    sims.hub.faults.add(
        Fault(api="nova", kind="latency", method="GET", path_contains=f"/{WEB}", seconds=0.6)
    )
    assert seen(await nova.status(resource(WEB))) == ("ACTIVE", Phase.RUNNING, True)
    assert len(transport.sent("GET", f"/servers/{WEB}")) == 2


# Listing and bulk statuses


async def test_list_discovers_every_server(nova: NovaProvider) -> None:
    """list() names each server of the project with its state and phase (no tags)."""
    assert await nova.list() == [
        DiscoveredResource(
            provider="nova", id=WEB, name="web-1", state="ACTIVE", phase=Phase.RUNNING
        ),
        DiscoveredResource(
            provider="nova", id=BATCH, name="batch-2", state="ACTIVE", phase=Phase.RUNNING
        ),
        DiscoveredResource(
            provider="nova", id=DB, name="db-3", state="SHUTOFF", phase=Phase.STOPPED
        ),
    ]


async def test_statuses_make_one_call(nova: NovaProvider, transport: RecordingTransport) -> None:
    """statuses() reads every server with one GET /servers/detail; unknown ids are left out."""
    await nova.stop(resource(WEB))
    result = await nova.statuses([resource(i) for i in (WEB, BATCH, DB, UNKNOWN_ID)])
    assert {k: seen(v) for k, v in result.items()} == {
        WEB: ("ACTIVE (powering-off)", Phase.STOPPING, False),
        BATCH: ("ACTIVE", Phase.RUNNING, True),
        DB: ("SHUTOFF", Phase.STOPPED, True),
    }
    assert [(e.method, e.path.rsplit("/nova", 1)[1]) for e in transport.exchanges] == [
        ("POST", "/identity/v3/auth/tokens"),
        ("POST", f"/v2.1/servers/{WEB}/action"),
        ("GET", "/v2.1/servers/detail"),
    ]


async def test_statuses_and_locks_make_one_call(
    nova: NovaProvider, transport: RecordingTransport
) -> None:
    """statuses_and_locks() reads every server and its lock with one GET /servers/detail;
    a server it leaves out is read on its own (its NotFoundError)."""
    found = await nova.statuses_and_locks([resource(i) for i in (WEB, BATCH, DB, UNKNOWN_ID)])
    assert [(e.method, e.path.rsplit("/nova", 1)[1]) for e in transport.exchanges] == [
        ("POST", "/identity/v3/auth/tokens"),
        ("GET", "/v2.1/servers/detail"),
        ("GET", f"/v2.1/servers/{UNKNOWN_ID}"),
    ]
    assert {
        k: (seen(s), lock) for k, (s, lock) in found.items() if isinstance(s, ResourceStatus)
    } == {
        WEB: (("ACTIVE", Phase.RUNNING, True), None),
        BATCH: (("ACTIVE", Phase.RUNNING, True), ProviderLock(reason="kernel upgrade in progress")),
        DB: (("SHUTOFF", Phase.STOPPED, True), None),
    }
    status, lock = found[UNKNOWN_ID]
    assert isinstance(status, NotFoundError) and lock is status


async def test_statuses_of_stopping_servers_ask_for_the_changes_since_their_stops(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport
) -> None:
    """Polling servers it stopped, the client lists only the servers changed since the
    latest change Nova showed it before the earliest of those stops, less the margin;
    a server it did not stop, or one whose stop is over, means the whole list again."""
    sims.hub.clock.freeze()
    sim = reseed(
        sims,
        servers=[
            {"id": WEB, "name": "web-1"},
            {"id": BATCH, "name": "batch-2"},
            {"id": DB, "name": "db-3", "status": "SHUTOFF"},
        ],
    )
    start = sim.now()  # every server's last change
    await nova.status(resource(BATCH))
    sim.clock.advance(120)
    await nova.stop(resource(BATCH))
    sim.clock.advance(STEP)  # BATCH is SHUTOFF since start + 120 + STEP
    assert seen((await nova.statuses([resource(BATCH)]))[BATCH]) == (
        "SHUTOFF",
        Phase.STOPPED,
        True,
    )
    sim.clock.advance(30)
    await nova.stop(resource(WEB))
    polled = await nova.statuses([resource(WEB)])
    sim.clock.advance(STEP)
    ended = await nova.statuses([resource(WEB)])
    mixed = await nova.statuses([resource(WEB), resource(DB)])

    def since(moment: float) -> str:
        return dt.datetime.fromtimestamp(int(moment) - 60, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")

    # BATCH's first poll: its stop came after the seed (the latest change seen), and WEB's
    # after BATCH's SHUTOFF; once WEB's stop is over, no filter (nor with DB, not stopped).
    assert [e.params for e in transport.sent("GET", "/servers/detail")] == [
        {"changes-since": since(start)},
        {"changes-since": since(start + 120 + STEP)},
        {"changes-since": since(start + 120 + STEP)},
        {},
    ]
    assert seen(polled[WEB]) == ("ACTIVE (powering-off)", Phase.STOPPING, False)
    assert seen(ended[WEB]) == ("SHUTOFF", Phase.STOPPED, True)
    assert {k: seen(v) for k, v in mixed.items()} == {
        WEB: ("SHUTOFF", Phase.STOPPED, True),
        DB: ("SHUTOFF", Phase.STOPPED, True),
    }
    # What Nova answered to WEB's polls: BATCH and WEB, changed since; not DB.
    token = transport.logins[0].response_headers["X-Subject-Token"]  # type: ignore[index]
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{sims.url('nova')}/v2.1/servers/detail",
            params={"changes-since": since(start + 120 + STEP)},
            headers={"X-Auth-Token": token},
        )
    listed = answer.json()["servers"]
    assert sorted(s["id"] for s in listed) == sorted([BATCH, WEB])


async def test_list_pages_at_the_microversion_and_reads_tags_and_metadata(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport
) -> None:
    """Discovery's list: every page of GET /servers/detail at microversion 2.73 (the
    marker from servers_links), each server's metadata and tags (2.26+) as its tags."""
    servers = [dict(s) for s in DEFAULT_SEED["nova"]["servers"]]
    servers[0] |= {"tags": ["stopbot/skip", "env=dev"], "metadata": {"team": "web", "env": "x"}}
    reseed(sims, max_limit=2, servers=servers)
    found = await nova.list()
    assert [(r.id, r.tags) for r in found] == [
        (WEB, {"team": "web", "env": "dev", "stopbot/skip": "true"}),
        (BATCH, {}),
        (DB, {}),
    ]
    pages = transport.sent("GET", "/servers/detail")
    assert [e.params for e in pages] == [{}, {"limit": "2", "marker": BATCH}]
    assert {e.headers["OpenStack-API-Version"] for e in pages} == {"compute 2.73"}
    assert {e.headers["X-OpenStack-Nova-API-Version"] for e in pages} == {"2.73"}


async def test_statuses_follow_the_next_pages(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport
) -> None:
    """Past Nova's page size, statuses() follows servers_links until a page is not full."""
    reseed(sims, max_limit=2)
    result = await nova.statuses([resource(i) for i in (WEB, BATCH, DB)])
    assert sorted(result) == sorted([WEB, BATCH, DB])
    assert len(transport.sent("GET", "/servers/detail")) == 2


async def test_statuses_of_nothing_call_nothing(
    nova: NovaProvider, transport: RecordingTransport
) -> None:
    """No resources, no request."""
    assert await nova.statuses([]) == {}
    assert transport.exchanges == []


async def test_every_status_through_the_simulator(
    sims: SimulatorServer, nova: NovaProvider
) -> None:
    """Each status the simulator can show reads back with the phase the mapping gives."""
    reseed(
        sims,
        servers=[
            {"id": f"s-{status.lower()}", "name": status, "status": status}
            for status in STATUS_STATES
        ],
    )
    result = await nova.statuses([resource(f"s-{s.lower()}") for s in STATUS_STATES])
    expected = {}
    for status, (_, task_state, _) in STATUS_STATES.items():
        state = f"{status} ({task_state})" if task_state else status
        expected[f"s-{status.lower()}"] = (state, *server_phase(status, task_state))
    assert {k: seen(v) for k, v in result.items()} == expected


# Mapping and parsing units


EXPECTED_PHASES = {
    "ACTIVE": (Phase.RUNNING, True),
    "BUILD": (Phase.RUNNING, False),
    "DELETED": (Phase.STOPPED, True),
    "ERROR": (Phase.FAILED, True),
    "HARD_REBOOT": (Phase.RUNNING, False),
    "MIGRATING": (Phase.RUNNING, False),
    "PASSWORD": (Phase.RUNNING, False),
    "PAUSED": (Phase.RUNNING, True),
    "REBOOT": (Phase.RUNNING, False),
    "REBUILD": (Phase.RUNNING, False),
    "RESCUE": (Phase.RUNNING, True),
    "RESIZE": (Phase.RUNNING, False),
    "REVERT_RESIZE": (Phase.RUNNING, False),
    "SHELVED": (Phase.STOPPED, True),
    "SHELVED_OFFLOADED": (Phase.STOPPED, True),
    "SHUTOFF": (Phase.STOPPED, True),
    "SOFT_DELETED": (Phase.STOPPED, True),
    "SUSPENDED": (Phase.STOPPED, True),
    "UNKNOWN": (Phase.UNKNOWN, False),
    "VERIFY_RESIZE": (Phase.RUNNING, True),
}


@pytest.mark.parametrize(("status", "expected"), sorted(EXPECTED_PHASES.items()))
def test_status_phase(status: str, expected: tuple[Phase, bool]) -> None:
    """Each Nova server status maps to its phase; with no task running."""
    assert server_phase(status, None) == expected


def test_mapping_covers_the_expected_statuses() -> None:
    """The client maps exactly the statuses listed above, no more, no fewer."""
    assert set(SERVER_STATUSES) == set(EXPECTED_PHASES)


@pytest.mark.parametrize(
    ("status", "task_state", "expected"),
    [
        ("ACTIVE", "powering-off", (Phase.STOPPING, False)),
        ("RESCUE", "powering-off", (Phase.STOPPING, False)),
        ("ERROR", "powering-off", (Phase.STOPPING, False)),
        ("SHUTOFF", "powering-on", (Phase.RUNNING, False)),
        ("ACTIVE", "image_snapshot", (Phase.RUNNING, False)),
        ("SHUTOFF", "image_snapshot", (Phase.STOPPED, False)),
        ("HIBERNATING", None, (Phase.UNKNOWN, False)),
    ],
)
def test_task_state_phase(
    status: str, task_state: str | None, expected: tuple[Phase, bool]
) -> None:
    """A running task means non-terminal; powering-off is STOPPING; new statuses UNKNOWN."""
    assert server_phase(status, task_state) == expected


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        ({"itemNotFound": {"code": 404, "message": "Gone."}}, "Gone.", "itemNotFound"),
        (
            {"error": {"code": 401, "title": "Unauthorized", "message": UNAUTHORIZED}},
            UNAUTHORIZED,
            "Unauthorized",
        ),
        ({"message": "plain"}, "plain", None),
        ({"badRequest": "Malformed request body"}, "Malformed request body", "badRequest"),
    ],
)
def test_error_bodies_are_parsed(body: dict[str, Any], message: str, code: str | None) -> None:
    """Nova faults and Keystone errors both yield their message and a code."""
    details = parse_openstack_error(httpx.Response(400, json=body))
    assert (details.message, details.code) == (message, code)


def _catalog_cloud(
    catalog: list[dict[str, Any]],
    hits: list[str],
    times: dict[str, str] | None = None,
) -> httpx.MockTransport:
    """A fake Keystone with ``catalog`` (and token ``times``) and a fake Nova, both
    recording the URLs they are reached on."""

    def handle(request: httpx.Request) -> httpx.Response:
        hits.append(str(request.url.copy_with(query=None)))
        if request.url.path.endswith("/auth/tokens"):
            token = {
                "expires_at": "2099-01-01T00:00:00.000000Z",
                "issued_at": "2098-12-31T23:00:00.000000Z",
                "catalog": catalog,
            }
            if times is not None:
                token = {"catalog": catalog, **times}
            return httpx.Response(201, json={"token": token}, headers={"X-Subject-Token": "t"})
        return httpx.Response(200, json={"servers": []})

    return httpx.MockTransport(handle)


CATALOG = [
    {"type": "identity", "endpoints": [{"interface": "public", "url": "http://k"}]},
    {
        "type": "compute",
        "endpoints": [
            {"interface": i, "region_id": r, "region": r, "url": f"http://{i}.{r}/v2.1/p"}
            for r in ("one", "two")
            for i in ("public", "internal")
        ],
    },
]


@pytest.mark.parametrize(
    ("interface", "region", "url"),
    [
        ("public", None, "http://public.one/v2.1/p/servers/detail"),
        ("internal", "two", "http://internal.two/v2.1/p/servers/detail"),
        ("public", "two", "http://public.two/v2.1/p/servers/detail"),
    ],
)
async def test_compute_endpoint_comes_from_the_catalog(
    interface: str, region: str | None, url: str
) -> None:
    """The compute URL is the catalog's compute endpoint for the interface and region."""
    hits: list[str] = []
    config = OpenStackConfig(
        name="os",
        type="openstack",
        auth_url="http://k/v3",
        application_credential_id="i",
        application_credential_secret="s",
        interface=interface,
        region=region,
    )
    nova = NovaProvider(config, transport=_catalog_cloud(CATALOG, hits))
    assert await nova.list() == []
    assert hits == ["http://k/v3/auth/tokens", url]
    await nova.aclose()


async def test_missing_compute_endpoint_is_explained() -> None:
    """A catalog without our compute endpoint is an error naming what it has."""
    config = OpenStackConfig(
        name="os",
        type="openstack",
        auth_url="http://k/v3",
        application_credential_id="i",
        application_credential_secret="s",
        region="three",
    )
    nova = NovaProvider(config, transport=_catalog_cloud(CATALOG, []))
    with pytest.raises(ProviderError) as caught:
        await nova.list()
    assert caught.value.message == (
        "no compute endpoint with interface 'public' in region 'three' (the catalog has: "
        "public@one, internal@one, public@two, internal@two)"
    )
    await nova.aclose()


# The simulator's own controls


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"servers": [{"id": "a", "name": "a", "status": "RUNNING"}]}, "unknown server status"),
        (
            {"servers": [{"id": "a", "name": "a"}, {"id": "a", "name": "b"}]},
            "duplicate server id",
        ),
        ({"servers": [{"id": "a", "name": "a", "colour": "red"}]}, "colour"),
        ({"token_ttl_seconds": 0}, "token_ttl_seconds"),
        ({"max_microversion": "3.0"}, "max_microversion '3.0' is not a version"),
    ],
)
def test_bad_seed_is_a_clear_error(
    sims: SimulatorServer, change: dict[str, Any], message: str
) -> None:
    """A seed the simulator cannot use is refused with a message naming the problem."""
    with pytest.raises(ValidationError, match=message):
        reseed(sims, **change)
    response = httpx.post(
        f"{sims.base_url}/_sim/seed", json={"nova": {**DEFAULT_SEED["nova"], **change}}
    )
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_snapshot_shows_current_states(sims: SimulatorServer, nova: NovaProvider) -> None:
    """The snapshot is plain JSON with each server's state as of the simulator clock."""
    await nova.stop(resource(WEB))
    sims.hub.clock.advance(STEP)
    snapshot = json.loads(json.dumps(sims.hub["nova"].snapshot()))
    assert snapshot["servers"][0] == {
        "id": WEB,
        "name": "web-1",
        "status": "SHUTOFF",
        "task_state": None,
        "vm_state": "stopped",
        "power_state": 4,
        "locked": False,
        "locked_reason": None,
        "fault": None,
        "settled": True,
    }
    assert snapshot["valid_tokens"] == 1


async def test_start_powers_the_server_back_on(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport
) -> None:
    """os-start on the simulator goes SHUTOFF (powering-on), then ACTIVE, as the client reads."""
    await nova.list()
    (login,) = transport.logins
    assert login.response_headers is not None
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{sims.url('nova')}/v2.1/servers/{DB}/action",
            json={"os-start": None},
            headers={"X-Auth-Token": login.response_headers["X-Subject-Token"]},
        )
    assert response.status_code == 202
    observed = [seen(await nova.status(resource(DB)))]
    sims.hub.clock.advance(STEP)
    observed.append(seen(await nova.status(resource(DB))))
    assert observed == [
        ("SHUTOFF (powering-on)", Phase.RUNNING, False),
        ("ACTIVE", Phase.RUNNING, True),
    ]


@pytest.mark.parametrize(
    "times",
    [
        # Keystone's own sample: long past by our clock, but a one-hour token.
        {"expires_at": "2015-11-07T02:58:43.578887Z", "issued_at": "2015-11-07T01:58:43.578929Z"},
        {"expires_at": "2099-01-01T01:00:00Z", "issued_at": "2099-01-01T00:00:00Z"},
        {},
    ],
)
async def test_token_lifetime_counts_from_our_clock(times: dict[str, str]) -> None:
    """A skewed Keystone clock, or no expiry at all, does not make every call log in."""
    hits: list[str] = []
    config = OpenStackConfig(
        name="os",
        type="openstack",
        auth_url="http://k/v3",
        application_credential_id="i",
        application_credential_secret="s",
    )
    nova = NovaProvider(config, transport=_catalog_cloud(CATALOG, hits, times))
    await nova.list()
    await nova.list()
    assert hits.count("http://k/v3/auth/tokens") == 1
    await nova.aclose()


async def test_status_and_lock_come_from_one_read(
    nova: NovaProvider, transport: RecordingTransport
) -> None:
    """status_and_lock() answers what status() and lock() do, with one GET /servers/{id};
    an unknown server is the same NotFoundError for both."""
    status, lock = await nova.status_and_lock(resource(BATCH))
    assert [(e.method, e.path.rsplit("/nova", 1)[1]) for e in transport.exchanges] == [
        ("POST", "/identity/v3/auth/tokens"),
        ("GET", f"/v2.1/servers/{BATCH}"),
    ]
    assert isinstance(status, ResourceStatus)
    assert seen(status) == ("ACTIVE", Phase.RUNNING, True)
    assert lock == ProviderLock(reason="kernel upgrade in progress")
    status, lock = await nova.status_and_lock(resource(UNKNOWN_ID))
    assert isinstance(status, NotFoundError) and lock is status


# Against a fake cloud: answers the simulator does not give, but the api-ref allows

COMPUTE = "http://nova.example/v2.1"
UPDATED = "2026-01-01T00:00:00Z"
NovaHandler = Callable[[httpx.Request], httpx.Response]


def fake_cloud(nova: NovaHandler, sent: list[httpx.Request]) -> NovaProvider:
    """A client of a fake Keystone, issuing one-hour tokens whose catalog names COMPUTE,
    and of ``nova`` behind it; every request it sends is kept in ``sent``."""
    catalog = [
        {
            "type": "compute",
            "endpoints": [{"interface": "public", "region_id": "one", "url": COMPUTE}],
        }
    ]

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if request.url.path.endswith("/auth/tokens"):
            token = {
                "expires_at": "2099-01-01T01:00:00.000000Z",
                "issued_at": "2099-01-01T00:00:00.000000Z",
                "catalog": catalog,
            }
            return httpx.Response(201, json={"token": token}, headers={"X-Subject-Token": "t"})
        return nova(request)

    config = OpenStackConfig(
        name="os",
        type="openstack",
        auth_url="http://keystone.example/v3",
        application_credential_id="i",
        application_credential_secret="s",
    )
    return NovaProvider(config, transport=httpx.MockTransport(handle))


def server_body(**fields: Any) -> dict[str, Any]:
    """A server as GET /servers/{id} shows it: ACTIVE, no task, unlocked, unless changed."""
    server = {
        "id": WEB,
        "name": "web-1",
        "status": "ACTIVE",
        "OS-EXT-STS:task_state": None,
        "locked": False,
        "updated": UPDATED,
    }
    return {"server": server | fields}


def calls(sent: list[httpx.Request]) -> list[tuple[str, str]]:
    return [(r.method, r.url.path) for r in sent]


def nova_login_config() -> OpenStackConfig:
    return OpenStackConfig(
        name="os",
        type="openstack",
        auth_url="http://keystone.example/v3",
        username="u",
        password="p",
        project_name="dev",
    )


@pytest.mark.parametrize(("status", "root"), [(409, "conflictingRequest"), (403, "forbidden")])
@pytest.mark.parametrize(
    ("lock", "message"),
    [
        ({"locked": True, "locked_reason": "disk migration"}, "Refused. (reason: disk migration)"),
        ({"locked": True, "locked_reason": None}, "Refused."),
    ],
)
async def test_a_refused_stop_of_a_locked_server_is_locked_whatever_the_wording(
    status: int, root: str, lock: dict[str, Any], message: str
) -> None:
    """A 409 or a 403 to os-stop, in any wording, on a server whose one read shows
    ``locked`` is LockedError, with the locked_reason when there is one."""
    sent: list[httpx.Request] = []

    def nova(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(status, json={root: {"code": status, "message": "Refused."}})
        return httpx.Response(200, json=server_body(**lock))

    provider = fake_cloud(nova, sent)
    with pytest.raises(LockedError) as caught:
        await provider.stop(resource(WEB))
    await provider.aclose()
    assert (caught.value.message, caught.value.status_code, caught.value.code) == (
        message,
        status,
        root,
    )
    assert calls(sent) == [
        ("POST", "/v3/auth/tokens"),
        ("POST", f"/v2.1/servers/{WEB}/action"),
        ("GET", f"/v2.1/servers/{WEB}"),
    ]


async def test_a_forbidden_stop_of_an_unlocked_server_stays_forbidden() -> None:
    """A 403 to os-stop on a server that is not locked stays ForbiddenError with Nova's
    message, even when the server is stopped: only a 409 means "already stopped"."""
    text = "Policy doesn't allow os_compute_api:servers:stop to be performed."
    sent: list[httpx.Request] = []

    def nova(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(403, json={"forbidden": {"code": 403, "message": text}})
        return httpx.Response(200, json=server_body(status="SHUTOFF"))

    provider = fake_cloud(nova, sent)
    with pytest.raises(ForbiddenError) as caught:
        await provider.stop(resource(WEB))
    await provider.aclose()
    assert type(caught.value) is ForbiddenError
    assert (caught.value.message, caught.value.status_code) == (text, 403)
    assert len(sent) == 3


async def test_a_vague_conflict_on_a_stopped_server_is_already_stopped() -> None:
    """A 409 whose wording names no state, on an unlocked server the read shows SHUTOFF,
    is AlreadyStoppedError: the same one read decides."""
    sent: list[httpx.Request] = []

    def nova(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(409, json={"conflictingRequest": {"code": 409, "message": "No."}})
        return httpx.Response(200, json=server_body(status="SHUTOFF"))

    provider = fake_cloud(nova, sent)
    with pytest.raises(AlreadyStoppedError) as caught:
        await provider.stop(resource(WEB))
    await provider.aclose()
    assert (caught.value.message, caught.value.status_code) == ("No.", 409)
    assert len(sent) == 3


@pytest.mark.parametrize(
    ("status", "title", "text", "kind"),
    [
        (400, "Bad Request", "Expecting to find identity in auth.", AuthError),
        (403, "Forbidden", "You are not authorized to perform the requested action.", AuthError),
        (404, "Not Found", "Could not find project: dev.", AuthError),
        (429, "Busy", "Try later.", UnavailableError),
        (503, "Busy", "Try later.", UnavailableError),
    ],
)
async def test_a_refused_login_is_an_auth_error_and_a_busy_keystone_unavailable(
    status: int, title: str, text: str, kind: type[ProviderError]
) -> None:
    """Keystone's 400, 403 and 404 to POST /v3/auth/tokens are AuthError with Keystone's
    message (a 404 there is a wrong project, not a server that does not exist); its 429
    and 5xx stay UnavailableError: try again later, not fix the login."""
    body = {"error": {"code": status, "title": title, "message": text}}
    provider = NovaProvider(
        nova_login_config(),
        transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body)),
    )
    with pytest.raises(ProviderError) as caught:
        await provider.status(resource(WEB))
    await provider.aclose()
    assert type(caught.value) is kind
    assert (caught.value.message, caught.value.status_code) == (text, status)
    if kind is AuthError:
        assert caught.value.code == title


async def test_statuses_read_a_server_the_changes_since_answer_left_out() -> None:
    """changes-since is "when the server last changed status" (parameters.yaml): a cloud
    may leave out a server still ACTIVE (powering-off), which statuses() then reads on its
    own. The time is sent in UTC with no zone designator."""
    sent: list[httpx.Request] = []
    stopped = False

    def nova(request: httpx.Request) -> httpx.Response:
        nonlocal stopped
        if request.method == "POST":
            stopped = True
            return httpx.Response(202)
        if request.url.path.endswith("/servers/detail"):
            return httpx.Response(200, json={"servers": []})
        task = "powering-off" if stopped else None
        return httpx.Response(200, json=server_body(**{"OS-EXT-STS:task_state": task}))

    provider = fake_cloud(nova, sent)
    await provider.status(resource(WEB))
    await provider.stop(resource(WEB))
    found = await provider.statuses([resource(WEB)])
    await provider.aclose()
    assert {k: seen(v) for k, v in found.items()} == {
        WEB: ("ACTIVE (powering-off)", Phase.STOPPING, False)
    }
    assert [(r.method, r.url.path, dict(r.url.params)) for r in sent[3:]] == [
        ("GET", "/v2.1/servers/detail", {"changes-since": "2025-12-31T23:59:00"}),
        ("GET", f"/v2.1/servers/{WEB}", {}),
    ]


# Tokens of a short lifetime, and clouds of an older microversion


async def test_short_tokens_are_renewed_a_tenth_of_their_lifetime_early(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport
) -> None:
    """A 120 s token serves every call until 12 s are left (a tenth of its lifetime), not
    only while more than five minutes are left, which would be never."""
    reseed(sims, token_ttl_seconds=120)
    with time_machine.travel(utcnow(), tick=True) as traveller:
        await nova.status(resource(WEB))
        traveller.shift(dt.timedelta(seconds=60))
        await nova.status(resource(WEB))
        traveller.shift(dt.timedelta(seconds=45))  # 15 s left
        await nova.status(resource(WEB))
        logins_while_fresh = len(transport.logins)
        traveller.shift(dt.timedelta(seconds=5))  # 10 s left
        await nova.status(resource(WEB))
    assert (logins_while_fresh, len(transport.logins)) == (1, 2)


async def test_an_older_cloud_is_asked_at_its_highest_microversion(
    sims: SimulatorServer, nova: NovaProvider, transport: RecordingTransport
) -> None:
    """A cloud whose maximum is 2.60 answers 406 to 2.73: the client reads the maximum from
    the version document, asks again at 2.60 and keeps to it; 2.60 shows the lock without
    its reason."""
    reseed(sims, max_microversion="2.60")
    status = await nova.status(resource(BATCH))
    lock = await nova.lock(resource(BATCH))
    await nova.stop(resource(WEB))
    assert [
        (e.method, e.path.rsplit("/nova", 1)[1], e.headers.get("OpenStack-API-Version"), e.status)
        for e in transport.exchanges[1:]
    ] == [
        ("GET", f"/v2.1/servers/{BATCH}", "compute 2.73", 406),
        ("GET", "/v2.1/", None, 200),
        ("GET", f"/v2.1/servers/{BATCH}", "compute 2.60", 200),
        ("GET", f"/v2.1/servers/{BATCH}", "compute 2.60", 200),
        ("POST", f"/v2.1/servers/{WEB}/action", "compute 2.60", 202),
    ]
    assert seen(status) == ("ACTIVE", Phase.RUNNING, True)
    assert lock == ProviderLock()


@pytest.mark.parametrize(
    ("accepted", "asked"),
    [("2.9", ["2.73", "2.9"]), ("none", ["2.73", "2.9"])],
    ids=["falls back to 2.9", "no second retry"],
)
async def test_without_a_version_document_the_client_asks_at_2_9(
    accepted: str, asked: list[str]
) -> None:
    """When the version document cannot be read, the client asks again at 2.9, the first
    microversion with ``locked``; a 406 to that too is an error, not a loop."""
    sent: list[httpx.Request] = []
    refused = {"computeFault": {"code": 406, "message": "Version not supported."}}

    def nova(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2.1/":
            return httpx.Response(404, json={"itemNotFound": {"code": 404, "message": "No."}})
        if request.headers["X-OpenStack-Nova-API-Version"] == accepted:
            return httpx.Response(200, json=server_body(locked=True))
        return httpx.Response(406, json=refused)

    provider = fake_cloud(nova, sent)
    try:
        if accepted == "none":
            with pytest.raises(InvalidRequestError) as caught:
                await provider.lock(resource(WEB))
            assert caught.value.status_code == 406
        else:
            assert await provider.lock(resource(WEB)) == ProviderLock()
    finally:
        await provider.aclose()
    server_reads = [r for r in sent if r.url.path == f"/v2.1/servers/{WEB}"]
    assert [r.headers["X-OpenStack-Nova-API-Version"] for r in server_reads] == asked
    assert len([r for r in sent if r.url.path == "/v2.1/"]) == 1


async def test_below_2_9_a_bulk_read_says_the_locks_are_unknown(
    sims: SimulatorServer, nova: NovaProvider
) -> None:
    """A cloud whose maximum is 2.6 shows no ``locked`` in servers/detail: the statuses are
    read, and each lock is an error saying it cannot be known (not "unlocked")."""
    reseed(sims, max_microversion="2.6")
    found = await nova.statuses_and_locks([resource(WEB), resource(BATCH)])
    status, lock = found[BATCH]
    assert seen(status) == ("ACTIVE", Phase.RUNNING, True)
    assert isinstance(lock, ProviderError)
    assert "microversion 2.6, which shows no locks" in str(lock)
