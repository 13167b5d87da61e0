"""The Qovery client against the simulated Qovery API, over real HTTP on loopback."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from providers.base import DiscoveredResource, Phase, Resource, ResourceStatus, StopAccepted
from providers.errors import (
    AlreadyStoppedError,
    AuthError,
    ConflictError,
    DroppedError,
    ForbiddenError,
    LockedError,
    NotFoundError,
    ProviderError,
    ProviderTimeoutError,
    UnavailableError,
)
from providers.http import HttpSettings
from providers.qovery import QoveryConfig, QoveryProvider, parse_qovery_error
from providers.simulators.common import Fault
from providers.simulators.qovery import QoverySimulator
from providers.simulators.samples import DEFAULT_SEED, QOVERY_ORG, QOVERY_TOKEN
from providers.simulators.server import SimulatorServer

DEV = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01"
STAGING = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c02"
QA = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c03"
UNKNOWN = "ffffffff-ffff-4fff-8fff-ffffffffffff"
ORG_PATH = f"/qovery/organization/{QOVERY_ORG}"


def cluster(cluster_id: str) -> Resource:
    return Resource(name=cluster_id[-2:], provider="qovery", id=cluster_id)


class CountingTransport(httpx.AsyncBaseTransport):
    """A real HTTP transport that records (method, path) of every request it sends."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_provider(
    base_url: str,
    *,
    token: str = QOVERY_TOKEN,
    organization_id: str = QOVERY_ORG,
    http: HttpSettings | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> QoveryProvider:
    config = QoveryConfig(
        name="qovery", base_url=base_url, token=token, organization_id=organization_id
    )
    return QoveryProvider(config, http=http, transport=transport)


@pytest.fixture
def transport() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
async def qovery(
    sims: SimulatorServer, transport: CountingTransport
) -> AsyncIterator[QoveryProvider]:
    provider = make_provider(sims.url("qovery"), transport=transport)
    yield provider
    await provider.aclose()


@pytest.fixture
def qsim(sims: SimulatorServer) -> QoverySimulator:
    sim = sims.hub["qovery"]
    assert isinstance(sim, QoverySimulator)
    return sim


def mock_provider(
    handler: Callable[[httpx.Request], httpx.Response], http: HttpSettings | None = None
) -> QoveryProvider:
    return make_provider(
        "https://api.qovery.test", http=http, transport=httpx.MockTransport(handler)
    )


def status_body(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "cluster_id": DEV,
        "status": state,
        "is_deployed": True,
        "reason": "UNSPECIFIED",
        **extra,
    }


# -- the stop, through every state -------------------------------------------------


async def test_stop_walks_through_every_stop_state(
    qovery: QoveryProvider, sims: SimulatorServer
) -> None:
    """A stop is accepted as STOP_QUEUED, then reads STOPPING, then STOPPED (terminal)."""
    accepted = await qovery.stop(cluster(DEV))
    assert accepted.resource_id == DEV
    assert accepted.status is not None
    seen = [(accepted.status.state, accepted.status.phase, accepted.status.terminal)]
    for _ in range(3):
        status = await qovery.status(cluster(DEV))
        seen.append((status.state, status.phase, status.terminal))
        sims.hub.clock.advance(3.0)
    assert seen == [
        ("STOP_QUEUED", Phase.STOPPING, False),
        ("STOP_QUEUED", Phase.STOPPING, False),
        ("STOPPING", Phase.STOPPING, False),
        ("STOPPED", Phase.STOPPED, True),
    ]


async def test_failed_stop_ends_in_stop_error(
    qovery: QoveryProvider, sims: SimulatorServer, qsim: QoverySimulator
) -> None:
    """A cluster seeded with fail_stop ends in STOP_ERROR: failed, terminal, execution named."""
    seed = copy.deepcopy(DEFAULT_SEED["qovery"])
    seed["clusters"][0]["fail_stop"] = True
    qsim.seed(seed)
    await qovery.stop(cluster(DEV))
    sims.hub.clock.advance(6.0)
    status = await qovery.status(cluster(DEV))
    execution = qsim.snapshot()["clusters"][0]["last_execution_id"]
    assert (status.state, status.phase, status.terminal) == ("STOP_ERROR", Phase.FAILED, True)
    assert status.message == f"last execution {execution}"


# -- 409: already stopped, locked, busy --------------------------------------------


@pytest.mark.parametrize(
    ("cluster_id", "state", "kind", "message"),
    [
        (QA, None, AlreadyStoppedError, "Cluster qa-old is already stopped"),
        (DEV, "DELETED", AlreadyStoppedError, "Cluster dev-eu is already deleted"),
        (
            STAGING,
            None,
            LockedError,
            "Cluster staging-us is locked by Alice Martin: load test until Friday "
            "(cluster status: DEPLOYED)",
        ),
        (
            DEV,
            "DEPLOYING",
            ConflictError,
            "Cluster dev-eu has an operation in progress (DEPLOYING)",
        ),
    ],
)
async def test_stop_conflict_is_told_apart_by_the_status(
    qovery: QoveryProvider,
    qsim: QoverySimulator,
    cluster_id: str,
    state: str | None,
    kind: type[ConflictError],
    message: str,
) -> None:
    """A 409 on stop becomes AlreadyStopped, Locked or a plain Conflict from the status read."""
    if state is not None:
        qsim.set_state(cluster_id, state)
    with pytest.raises(ConflictError) as caught:
        await qovery.stop(cluster(cluster_id))
    assert type(caught.value) is kind
    assert caught.value.status_code == 409
    assert caught.value.message == message


async def test_second_stop_while_stopping_follows_the_first(
    qovery: QoveryProvider, sims: SimulatorServer, transport: CountingTransport
) -> None:
    """A stop answered 409 while the first is queued is accepted with the status read after it,
    and that one stop still ends in STOPPED."""
    await qovery.stop(cluster(DEV))
    accepted = await qovery.stop(cluster(DEV))
    assert accepted.status is not None
    assert (accepted.status.state, accepted.status.phase, accepted.status.terminal) == (
        "STOP_QUEUED",
        Phase.STOPPING,
        False,
    )
    assert accepted.message == (
        "Qovery was already taking the cluster down (cluster status: STOP_QUEUED); following that."
    )
    stop, status = f"{ORG_PATH}/cluster/{DEV}/stop", f"{ORG_PATH}/cluster/{DEV}/status"
    assert transport.requests == [("POST", stop), ("POST", stop), ("GET", status)]
    sims.hub.clock.advance(6.0)
    assert (await qovery.status(cluster(DEV))).state == "STOPPED"


@pytest.mark.parametrize("state", ["STOP_QUEUED", "STOPPING", "DELETE_QUEUED", "DELETING"])
async def test_stop_answered_409_while_going_down_is_accepted(
    qovery: QoveryProvider, qsim: QoverySimulator, state: str
) -> None:
    """A 409 on a cluster already stopping (or being deleted) is a StopAccepted carrying that
    state, even with a live lock: the cluster goes down whatever the stop's answer."""
    qsim.set_state(STAGING, state)
    accepted = await qovery.stop(cluster(STAGING))
    assert accepted.status is not None
    assert (accepted.resource_id, accepted.status.state, accepted.status.phase) == (
        STAGING,
        state,
        Phase.STOPPING,
    )


def conflict_then(status: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    """Qovery answering the stop with a bare 409, and the status read after it with ``status``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(409, json={"message": "Cluster is busy"})
        return httpx.Response(200, json=status)

    return handler


def lock_body(locked_at: str, ttl_in_days: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "cluster_id": DEV,
        "owner_name": "Alice Martin",
        "reason": "load test",
        "locked_at": locked_at,
    }
    if ttl_in_days is not None:
        body["ttl_in_days"] = ttl_in_days
    return body


@pytest.mark.parametrize(
    ("lock", "kind"),
    [
        (lock_body("2020-01-01T00:00:00Z", None), LockedError),
        (lock_body("2020-01-01T00:00:00Z", 36500), LockedError),
        (lock_body("2020-01-01T00:00:00Z", 1), ConflictError),
        (lock_body("2020-01-01T00:00:00", 1), ConflictError),
        (None, ConflictError),
    ],
    ids=["no-ttl", "unexpired", "lapsed", "lapsed-naive", "no-lock"],
)
async def test_only_an_unexpired_lock_explains_a_conflict(
    lock: dict[str, Any] | None, kind: type[ConflictError]
) -> None:
    """A 409 while DEPLOYING is a LockedError only when the cluster_lock has no TTL or one
    still running, and then names the lock's owner and reason (Qovery's words did not); a
    lapsed lock (offset or not) leaves it a plain ConflictError."""
    provider = mock_provider(conflict_then(status_body("DEPLOYING", cluster_lock=lock)))
    with pytest.raises(ConflictError) as caught:
        await provider.stop(cluster(DEV))
    await provider.aclose()
    assert type(caught.value) is kind
    owner = " (locked by Alice Martin: load test)" if kind is LockedError else ""
    assert caught.value.message == f"Cluster is busy (cluster status: DEPLOYING){owner}"


async def test_lapsed_lock_leaves_a_busy_cluster_a_plain_conflict(
    qovery: QoveryProvider, qsim: QoverySimulator
) -> None:
    """A cluster deploying under a lock lapsed a day ago answers the simulator's 'operation in
    progress' 409 as a ConflictError, not a LockedError."""
    locked_at = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    qsim.set_lock(
        DEV, owner="Bob", reason="migration", ttl=dt.timedelta(days=1), locked_at=locked_at
    )
    qsim.set_state(DEV, "DEPLOYING")
    with pytest.raises(ConflictError) as caught:
        await qovery.stop(cluster(DEV))
    assert type(caught.value) is ConflictError
    assert caught.value.message == "Cluster dev-eu has an operation in progress (DEPLOYING)"


async def test_conflict_stands_when_the_status_cannot_be_read() -> None:
    """When the status read after a 409 fails, the original 409 is raised as is."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(409, json={"message": "Cluster is busy"})
        return httpx.Response(403, json={"message": "no access"})

    provider = mock_provider(handler)
    with pytest.raises(ConflictError) as caught:
        await provider.stop(cluster(DEV))
    await provider.aclose()
    assert type(caught.value) is ConflictError
    assert caught.value.message == "Cluster is busy"


# -- other documented errors ---------------------------------------------------------


async def test_wrong_token_is_an_auth_error(sims: SimulatorServer) -> None:
    """A wrong API token is an AuthError carrying Qovery's message, never the token."""
    provider = make_provider(sims.url("qovery"), token="not-the-token")
    with pytest.raises(AuthError) as caught:
        await provider.status(cluster(DEV))
    await provider.aclose()
    assert caught.value.status_code == 401
    assert caught.value.message == "Invalid or missing API token"
    assert "not-the-token" not in str(caught.value)


@pytest.mark.parametrize("operation", ["stop", "status", "lock"])
async def test_unknown_cluster_is_not_found(qovery: QoveryProvider, operation: str) -> None:
    """An unknown cluster id is a NotFoundError for stop, status and lock alike."""
    with pytest.raises(NotFoundError) as caught:
        await getattr(qovery, operation)(cluster(UNKNOWN))
    assert caught.value.status_code == 404
    assert caught.value.message == f"Cluster {UNKNOWN} not found"


async def test_unknown_organization_is_not_found(sims: SimulatorServer) -> None:
    """A wrong organization id is a NotFoundError naming the organization."""
    provider = make_provider(sims.url("qovery"), organization_id=UNKNOWN)
    with pytest.raises(NotFoundError) as caught:
        await provider.list()
    await provider.aclose()
    assert caught.value.message == f"Organization {UNKNOWN} not found"


async def test_forbidden_stop_is_a_forbidden_error(
    qovery: QoveryProvider, sims: SimulatorServer
) -> None:
    """A 403 on stop is a ForbiddenError with Qovery's message."""
    sims.hub.faults.add(
        Fault(
            api="qovery",
            kind="status",
            status=403,
            path_contains="/stop",
            body={"status": 403, "message": "You are not allowed to stop this cluster"},
        )
    )
    with pytest.raises(ForbiddenError) as caught:
        await qovery.stop(cluster(DEV))
    assert caught.value.message == "You are not allowed to stop this cluster"


@pytest.mark.parametrize("content", [b"", b"{}", b'{"message": "Stop queued"}', b"[]", b"not json"])
async def test_stop_accepted_without_a_cluster_status(
    content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A 202 whose body is not a ClusterStatus is still a queued stop: StopAccepted with no
    status, and one warning that names the call but not the token."""
    provider = mock_provider(lambda request: httpx.Response(202, content=content))
    with caplog.at_level(logging.WARNING, logger="providers.qovery"):
        accepted = await provider.stop(cluster(DEV))
    await provider.aclose()
    assert accepted == StopAccepted(provider="qovery", resource_id=DEV)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "stop accepted (202) without a ClusterStatus")
    ]
    error = caplog.records[0].error
    assert error.startswith(
        f"unexpected answer to POST /organization/{QOVERY_ORG}/cluster/{DEV}/stop"
    )
    assert QOVERY_TOKEN not in caplog.text and QOVERY_TOKEN not in error


async def test_malformed_answer_is_a_provider_error() -> None:
    """A status body without the spec's required fields is a ProviderError, not a crash."""
    provider = mock_provider(lambda request: httpx.Response(200, json={"state": "DEPLOYED"}))
    with pytest.raises(ProviderError) as caught:
        await provider.status(cluster(DEV))
    await provider.aclose()
    assert type(caught.value) is ProviderError
    path = f"/organization/{QOVERY_ORG}/cluster/{DEV}/status"
    assert caught.value.message.startswith(f"unexpected answer to GET {path}: 2 field error(s)")


# -- locks ------------------------------------------------------------------------


async def test_seeded_lock_is_read(qovery: QoveryProvider, qsim: QoverySimulator) -> None:
    """cluster_lock of ClusterStatus becomes a ProviderLock with owner, reason and a TTL."""
    lock = await qovery.lock(cluster(STAGING))
    assert lock is not None
    seeded = qsim.snapshot()["clusters"][1]["lock"]
    assert (lock.owner, lock.reason, lock.ttl) == (
        "Alice Martin",
        "load test until Friday",
        dt.timedelta(days=3),
    )
    assert lock.locked_at == dt.datetime.fromisoformat(seeded["locked_at"])
    assert await qovery.lock(cluster(DEV)) is None


async def test_cost_is_the_cluster_s_monthly_range(qovery: QoveryProvider) -> None:
    """currentCost is read as a range a month long, in the answer's currency."""
    cost = await qovery.cost(cluster(DEV))
    assert cost is not None
    assert (cost.low, cost.high, cost.currency, cost.hours) == (365.0, 730.0, "USD", 730.0)
    assert cost.per_hour == (0.5, 1.0)
    assert cost.source == "Qovery currentCost, a monthly range"
    staging = await qovery.cost(cluster(STAGING))
    assert staging is not None and (staging.low, staging.high) == (150.0, 300.0)
    with pytest.raises(NotFoundError):
        await qovery.cost(cluster("ffffffff-ffff-4fff-8fff-ffffffffffff"))


async def test_lock_without_ttl_never_expires(
    qovery: QoveryProvider, qsim: QoverySimulator
) -> None:
    """A cluster_lock without ttl_in_days has no TTL and no expiry."""
    locked_at = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    qsim.set_lock(DEV, owner="Bob", reason="migration", locked_at=locked_at)
    lock = await qovery.lock(cluster(DEV))
    assert lock is not None
    assert (lock.owner, lock.reason, lock.locked_at, lock.ttl) == (
        "Bob",
        "migration",
        locked_at,
        None,
    )
    assert lock.expires_at is None
    qsim.clear_lock(DEV)
    assert await qovery.lock(cluster(DEV)) is None


async def test_lock_without_offset_is_read_as_utc() -> None:
    """A locked_at with no offset is read as UTC, so the lock's expiry can be checked."""
    body = status_body("DEPLOYED", cluster_lock=lock_body("2030-01-02T03:04:05", 1))
    provider = mock_provider(lambda request: httpx.Response(200, json=body))
    lock = await provider.lock(cluster(DEV))
    await provider.aclose()
    assert lock is not None
    assert lock.locked_at == dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert lock.expires_at == dt.datetime(2030, 1, 3, 3, 4, 5, tzinfo=dt.UTC)
    assert lock.is_expired() is False
    assert lock.is_expired(dt.datetime(2030, 1, 3, 3, 4, 5, tzinfo=dt.UTC)) is True


async def test_lock_lapses_after_its_ttl(qovery: QoveryProvider, sims: SimulatorServer) -> None:
    """Past ttl_in_days the lock is still reported, but expired, and the stop is accepted."""
    sims.hub.clock.advance(3 * 86400 + 1)
    lock = await qovery.lock(cluster(STAGING))
    sim_now = dt.datetime.fromtimestamp(sims.hub.clock.now(), dt.UTC)
    assert lock is not None and lock.owner == "Alice Martin" and lock.is_expired(sim_now)
    accepted = await qovery.stop(cluster(STAGING))
    assert accepted.status is not None
    assert accepted.status.state == "STOP_QUEUED"


async def test_lock_taken_through_the_api_is_seen(
    qovery: QoveryProvider, sims: SimulatorServer
) -> None:
    """A lock set with POST /cluster/{id}/lock shows in the status and blocks the stop."""
    async with httpx.AsyncClient(headers={"Authorization": f"Token {QOVERY_TOKEN}"}) as client:
        response = await client.post(
            f"{sims.url('qovery')}/cluster/{DEV}/lock", json={"reason": "demo", "ttl_in_days": 1}
        )
    assert response.status_code == 200
    lock = await qovery.lock(cluster(DEV))
    assert lock is not None
    assert (lock.owner, lock.reason, lock.ttl) == ("API token", "demo", dt.timedelta(days=1))
    with pytest.raises(LockedError):
        await qovery.stop(cluster(DEV))


# -- retries and timeouts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "call"),
    [
        ("POST", 503, "stop"),
        ("POST", 429, "stop"),
        ("GET", 503, "status"),
        ("GET", 429, "status"),
    ],
)
async def test_retry_after_answers_are_retried(
    qovery: QoveryProvider,
    sims: SimulatorServer,
    transport: CountingTransport,
    method: str,
    status: int,
    call: str,
) -> None:
    """A 503 or 429 with Retry-After is retried, even for the stop: Qovery did not act."""
    sims.hub.faults.add(
        Fault(api="qovery", kind="status", status=status, method=method, retry_after=1)
    )
    await getattr(qovery, call)(cluster(DEV))
    path = f"{ORG_PATH}/cluster/{DEV}/{call}"
    assert transport.requests == [(method, path), (method, path)]


async def test_stop_is_never_retried_on_a_dropped_connection(
    qovery: QoveryProvider,
    sims: SimulatorServer,
    transport: CountingTransport,
    qsim: QoverySimulator,
) -> None:
    """A POST stop whose connection drops is not sent again: it may have been acted on."""
    sims.hub.faults.add(Fault(api="qovery", kind="drop", method="POST"))
    with pytest.raises(DroppedError):
        await qovery.stop(cluster(DEV))
    assert transport.requests == [("POST", f"{ORG_PATH}/cluster/{DEV}/stop")]
    assert qsim.snapshot()["clusters"][0]["status"] == "DEPLOYED"


async def test_status_is_retried_on_a_dropped_connection(
    qovery: QoveryProvider, sims: SimulatorServer, transport: CountingTransport
) -> None:
    """A GET whose connection drops is sent again and succeeds."""
    sims.hub.faults.add(Fault(api="qovery", kind="drop", method="GET"))
    status = await qovery.status(cluster(DEV))
    assert status.state == "DEPLOYED"
    assert transport.requests == [("GET", f"{ORG_PATH}/cluster/{DEV}/status")] * 2


async def test_lasting_outage_is_unavailable(sims: SimulatorServer) -> None:
    """When every try gets a 503, the call ends in UnavailableError with Qovery's message."""
    sims.hub.faults.add(
        Fault(
            api="qovery",
            kind="status",
            status=503,
            count=None,
            body={"status": 503, "message": "Qovery API is under maintenance"},
        )
    )
    provider = make_provider(sims.url("qovery"), http=HttpSettings(attempts=2))
    with pytest.raises(UnavailableError) as caught:
        await provider.status(cluster(DEV))
    await provider.aclose()
    assert caught.value.message == "Qovery API is under maintenance"


async def test_slow_answer_is_a_timeout(sims: SimulatorServer) -> None:
    """An answer slower than the configured timeout is a ProviderTimeoutError."""
    sims.hub.faults.add(Fault(api="qovery", kind="latency", seconds=0.5, method="GET"))
    provider = make_provider(sims.url("qovery"), http=HttpSettings(timeout=0.05, attempts=1))
    with pytest.raises(ProviderTimeoutError) as caught:
        await provider.status(cluster(DEV))
    await provider.aclose()
    assert caught.value.message == "no answer within 0.05s"


# -- statuses and list -------------------------------------------------------------------


async def test_statuses_cost_one_call_for_the_organization(
    qovery: QoveryProvider, transport: CountingTransport
) -> None:
    """statuses() reads every cluster with one GET .../cluster/status; unknown ids are left out."""
    found = await qovery.statuses([cluster(DEV), cluster(STAGING), cluster(QA), cluster(UNKNOWN)])
    assert {k: (s.state, s.phase, s.terminal) for k, s in found.items()} == {
        DEV: ("DEPLOYED", Phase.RUNNING, True),
        STAGING: ("DEPLOYED", Phase.RUNNING, True),
        QA: ("STOPPED", Phase.STOPPED, True),
    }
    assert transport.requests == [("GET", f"{ORG_PATH}/cluster/status")]


async def test_statuses_and_locks_cost_one_call_for_the_organization(
    qovery: QoveryProvider, transport: CountingTransport
) -> None:
    """statuses_and_locks() answers what status_and_lock() does for each cluster, with one
    GET .../cluster/status; a cluster it leaves out is read on its own (its NotFoundError)."""
    found = await qovery.statuses_and_locks([cluster(DEV), cluster(STAGING), cluster(QA)])
    assert transport.requests == [("GET", f"{ORG_PATH}/cluster/status")]
    for cluster_id, (status, lock) in found.items():
        alone_status, alone_lock = await qovery.status_and_lock(cluster(cluster_id))
        assert isinstance(status, ResourceStatus) and isinstance(alone_status, ResourceStatus)
        assert (status.state, status.phase, lock) == (
            alone_status.state,
            alone_status.phase,
            alone_lock,
        )
    assert [found[c][1] is not None for c in (DEV, STAGING, QA)] == [False, True, False]
    transport.requests.clear()
    [(status, lock)] = (await qovery.statuses_and_locks([cluster(UNKNOWN)])).values()
    assert isinstance(status, NotFoundError) and lock is status
    assert transport.requests == [
        ("GET", f"{ORG_PATH}/cluster/status"),
        ("GET", f"{ORG_PATH}/cluster/{UNKNOWN}/status"),
    ]


async def test_statuses_and_locks_give_each_cluster_the_failure(
    qovery: QoveryProvider, sims: SimulatorServer
) -> None:
    """A 503 on the organization's statuses is each cluster's status and lock: unknown, with
    the same UnavailableError, not "no lock"."""
    sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", count=None))
    found = await qovery.statuses_and_locks([cluster(DEV), cluster(STAGING)])
    assert list(found) == [DEV, STAGING]
    for status, lock in found.values():
        assert isinstance(status, UnavailableError) and lock is status


async def test_statuses_of_nothing_cost_nothing(
    qovery: QoveryProvider, transport: CountingTransport
) -> None:
    """statuses([]) makes no call at all."""
    assert await qovery.statuses([]) == {}
    assert transport.requests == []


async def test_list_discovers_every_cluster(
    qovery: QoveryProvider, transport: CountingTransport
) -> None:
    """list() gives each cluster's id, name, state, region and cloud provider from one
    GET .../cluster."""
    assert await qovery.list() == [
        DiscoveredResource(
            provider="qovery",
            id=cluster_id,
            name=name,
            state=state,
            phase=phase,
            tags={"region": "eu-west-3", "cloud_provider": "AWS"},
        )
        for cluster_id, name, state, phase in [
            (DEV, "dev-eu", "DEPLOYED", Phase.RUNNING),
            (STAGING, "staging-us", "DEPLOYED", Phase.RUNNING),
            (QA, "qa-old", "STOPPED", Phase.STOPPED),
        ]
    ]
    assert transport.requests == [("GET", f"{ORG_PATH}/cluster")]


async def test_list_reads_missing_states_from_the_bulk_status() -> None:
    """When the cluster list omits a status (optional in the spec), the bulk status fills it."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/cluster/status"):
            return httpx.Response(200, json={"results": [status_body("STOPPING")]})
        return httpx.Response(200, json={"results": [{"id": DEV, "name": "dev-eu"}]})

    provider = mock_provider(handler)
    found = await provider.list()
    await provider.aclose()
    assert [(d.id, d.state, d.phase) for d in found] == [(DEV, "STOPPING", Phase.STOPPING)]


# -- the state table and the wire format ----------------------------------------------------


@pytest.mark.parametrize(
    ("state", "phase", "terminal"),
    [
        ("BUILDING", Phase.RUNNING, False),
        ("BUILD_ERROR", Phase.FAILED, True),
        ("CANCELED", Phase.UNKNOWN, True),
        ("CANCELING", Phase.UNKNOWN, False),
        ("DELETED", Phase.STOPPED, True),
        ("DELETE_ERROR", Phase.FAILED, True),
        ("DELETE_QUEUED", Phase.STOPPING, False),
        ("DELETING", Phase.STOPPING, False),
        ("DEPLOYED", Phase.RUNNING, True),
        ("DEPLOYING", Phase.RUNNING, False),
        ("DEPLOYMENT_ERROR", Phase.FAILED, True),
        ("DEPLOYMENT_QUEUED", Phase.RUNNING, False),
        ("DRY_RUN", Phase.UNKNOWN, False),
        ("QUEUED", Phase.RUNNING, False),
        ("READY", Phase.RUNNING, True),
        ("STOPPED", Phase.STOPPED, True),
        ("STOPPING", Phase.STOPPING, False),
        ("STOP_ERROR", Phase.FAILED, True),
        ("STOP_QUEUED", Phase.STOPPING, False),
        ("RESTART_QUEUED", Phase.RUNNING, False),
        ("RESTARTING", Phase.RUNNING, False),
        ("RESTARTED", Phase.RUNNING, True),
        ("RESTART_ERROR", Phase.FAILED, True),
        ("INVALID_CREDENTIALS", Phase.FAILED, True),
        ("HIBERNATING", Phase.UNKNOWN, False),
        ("HIBERNATE_ERROR", Phase.FAILED, True),
    ],
)
async def test_every_cluster_state_maps_to_a_phase(
    state: str, phase: Phase, terminal: bool
) -> None:
    """Each ClusterStateEnum value (and a future one) maps to its phase and terminal flag."""
    provider = mock_provider(lambda request: httpx.Response(200, json=status_body(state)))
    status = await provider.status(cluster(DEV))
    await provider.aclose()
    assert (status.state, status.phase, status.terminal) == (state, phase, terminal)


async def test_requests_carry_the_api_token_and_spec_paths() -> None:
    """Calls use 'Authorization: Token <token>' and the spec's paths and methods."""
    seen: list[tuple[str, str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.headers.get("Authorization")))
        if request.method == "POST":
            return httpx.Response(202, json=status_body("STOP_QUEUED"))
        if request.url.path.endswith("/cluster"):
            return httpx.Response(200, json={"results": []})
        if request.url.path.endswith("/cluster/status"):
            return httpx.Response(200, json={"results": []})
        return httpx.Response(200, json=status_body("DEPLOYED"))

    provider = mock_provider(handler)
    await provider.stop(cluster(DEV))
    await provider.status(cluster(DEV))
    await provider.statuses([cluster(DEV)])
    await provider.lock(cluster(DEV))
    await provider.list()
    await provider.aclose()
    org = f"/organization/{QOVERY_ORG}"
    token = f"Token {QOVERY_TOKEN}"
    assert seen == [
        ("POST", f"{org}/cluster/{DEV}/stop", token),
        ("GET", f"{org}/cluster/{DEV}/status", token),
        ("GET", f"{org}/cluster/status", token),
        ("GET", f"{org}/cluster/{DEV}/status", token),
        ("GET", f"{org}/cluster", token),
    ]


@pytest.mark.parametrize(
    ("response", "message", "code"),
    [
        (
            httpx.Response(409, json={"status": 409, "message": "Cluster busy"}),
            "Cluster busy",
            None,
        ),
        (httpx.Response(400, json={"code": "E42", "detail": "bad id"}), "bad id", "E42"),
        (
            httpx.Response(500, json={"error": "Internal Server Error"}),
            "Internal Server Error",
            None,
        ),
        (httpx.Response(502, text="<html>Bad gateway</html>"), "<html>Bad gateway</html>", None),
        (httpx.Response(401), "Unauthorized", None),
    ],
)
def test_error_bodies_give_qovery_s_message(
    response: httpx.Response, message: str, code: str | None
) -> None:
    """The error parser takes the JSON message, else the text, else the reason phrase."""
    details = parse_qovery_error(response)
    assert (details.message, details.code) == (message, code)


def test_config_keeps_the_token_secret() -> None:
    """The token never shows in the config's repr, and unknown keys are refused."""
    config = QoveryConfig(name="q", token="s3cret", organization_id=QOVERY_ORG)
    assert "s3cret" not in repr(config)
    assert config.base_url == "https://api.qovery.com"
    assert json.loads(config.model_dump_json())["token"] == "**********"
    with pytest.raises(ValidationError, match="extra"):
        QoveryConfig.model_validate(
            {"name": "q", "token": "t", "organization_id": "o", "region": "eu"}
        )


async def test_status_and_lock_come_from_one_read(
    qovery: QoveryProvider, transport: CountingTransport
) -> None:
    """status_and_lock() answers what status() and lock() do, with one GET .../status;
    an unknown cluster is the same NotFoundError for both."""
    both = await qovery.status_and_lock(cluster(STAGING))
    assert transport.requests == [("GET", f"{ORG_PATH}/cluster/{STAGING}/status")]
    status, lock = both
    assert isinstance(status, ResourceStatus)
    assert (status.state, status.phase) == (
        (await qovery.status(cluster(STAGING))).state,
        Phase.RUNNING,
    )
    assert lock == await qovery.lock(cluster(STAGING))
    assert lock is not None and lock.owner == "Alice Martin"
    status, lock = await qovery.status_and_lock(cluster(UNKNOWN))
    assert isinstance(status, NotFoundError) and lock is status
