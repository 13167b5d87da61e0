"""``Provider.usage``: signs of live use read from the simulators over real HTTP on loopback
(Qovery's ``last_deployment_date``, Feldera's ``/stats`` input), none where an API has none."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import httpx
import pytest

from providers.base import Resource, UsageSignal
from providers.errors import NotFoundError, UnavailableError
from providers.feldera import FelderaConfig, FelderaProvider
from providers.qovery import QoveryConfig, QoveryProvider
from providers.registry import build_provider
from providers.simulators.common import Fault
from providers.simulators.feldera import FelderaSimulator
from providers.simulators.qovery import QoverySimulator
from providers.simulators.samples import FELDERA_API_KEY, QOVERY_ORG, QOVERY_TOKEN
from providers.simulators.server import SimulatorServer
from tests.helpers import sample

DEV_EU = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01"
QA_OLD = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c03"


class Paths(httpx.AsyncBaseTransport):
    """Real HTTP, remembering each request's method and path."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def paths() -> Paths:
    return Paths()


@pytest.fixture
async def qovery(sims: SimulatorServer, paths: Paths) -> AsyncIterator[QoveryProvider]:
    config = QoveryConfig(
        name="qovery", base_url=sims.url("qovery"), token=QOVERY_TOKEN, organization_id=QOVERY_ORG
    )
    provider = QoveryProvider(config, transport=paths)
    yield provider
    await provider.aclose()


@pytest.fixture
async def feldera(sims: SimulatorServer) -> AsyncIterator[FelderaProvider]:
    config = FelderaConfig(name="feldera", base_url=sims.url("feldera"), token=FELDERA_API_KEY)
    provider = FelderaProvider(config)
    yield provider
    await provider.aclose()


def qsim(sims: SimulatorServer) -> QoverySimulator:
    sim = sims.hub["qovery"]
    assert isinstance(sim, QoverySimulator)
    return sim


def fsim(sims: SimulatorServer) -> FelderaSimulator:
    sim = sims.hub["feldera"]
    assert isinstance(sim, FelderaSimulator)
    return sim


def cluster(cluster_id: str = DEV_EU) -> Resource:
    return Resource(name="dev-eu", provider="qovery", id=cluster_id)


def pipeline(name: str) -> Resource:
    return Resource(name=name, provider="feldera", id=name)


async def test_qovery_usage_is_the_last_deployment_date(
    sims: SimulatorServer, qovery: QoveryProvider
) -> None:
    """A cluster deployed 12 minutes ago says so (the spec's ClusterStatus names nobody)."""
    deployed = dt.datetime(2026, 12, 4, 18, 48, 3, tzinfo=dt.UTC)
    qsim(sims).set_last_deployment(DEV_EU, deployed)
    assert await qovery.usage(cluster()) == [UsageSignal(kind="deployed", at=deployed)]


async def test_qovery_sample_clusters_were_deployed_a_day_before_the_seed(
    sims: SimulatorServer, qovery: QoveryProvider
) -> None:
    """The simulator's seed dates a deployed cluster's last deployment a day back."""
    [signal] = await qovery.usage(cluster())
    assert signal.at is not None
    now = dt.datetime.fromtimestamp(sims.hub.clock.now(), dt.UTC)
    assert dt.timedelta(hours=23, minutes=59) < now - signal.at <= dt.timedelta(days=1, minutes=1)


async def test_qovery_cluster_never_deployed_has_no_signal(
    sims: SimulatorServer, qovery: QoveryProvider
) -> None:
    """No ``last_deployment_date`` (null): no signal."""
    qsim(sims).set_last_deployment(DEV_EU, None)
    assert await qovery.usage(cluster()) == []


async def test_qovery_usages_of_every_cluster_cost_one_call(
    sims: SimulatorServer, qovery: QoveryProvider, paths: Paths
) -> None:
    """The organization's cluster status list carries every last deployment: one call."""
    deployed = dt.datetime(2026, 12, 4, 18, 48, tzinfo=dt.UTC)
    qsim(sims).set_last_deployment(DEV_EU, deployed)
    qsim(sims).set_last_deployment(QA_OLD, None)
    found = await qovery.usages([cluster(DEV_EU), cluster(QA_OLD)])
    assert found == {DEV_EU: [UsageSignal(kind="deployed", at=deployed)], QA_OLD: []}
    assert paths.seen == [("GET", f"/qovery/organization/{QOVERY_ORG}/cluster/status")]


async def test_qovery_usages_that_fail_say_why_for_each(
    sims: SimulatorServer, qovery: QoveryProvider
) -> None:
    """The list call failing: each cluster's answer is that error, not "not in use"."""
    sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", count=None))
    found = await qovery.usages([cluster(DEV_EU), cluster(QA_OLD)])
    assert [type(found[c]) for c in (DEV_EU, QA_OLD)] == [UnavailableError] * 2


async def test_feldera_buffered_input_is_ingesting(
    sims: SimulatorServer, feldera: FelderaProvider
) -> None:
    """Records waiting in a running pipeline's inputs: it ingests, told with one read."""
    fsim(sims).set_input("etl", per_second=0, buffered=5)
    assert await feldera.usage(pipeline("etl")) == [
        UsageSignal(kind="ingesting", detail="5 input records buffered")
    ]


async def test_feldera_input_moving_between_two_reads_is_ingesting(
    sims: SimulatorServer, feldera: FelderaProvider
) -> None:
    """Nothing buffered, but ``total_input_records`` grew over the two reads' 2 s."""
    fsim(sims).set_input("etl", per_second=10, buffered=0)

    async def sim_sleep(seconds: float) -> None:
        sims.hub.clock.advance(seconds)  # the two reads apart on the simulator's clock

    assert await feldera.usage(pipeline("etl"), sleep=sim_sleep) == [
        UsageSignal(kind="ingesting", detail="20 input records in 2 s")
    ]


async def test_feldera_idle_pipeline_is_not_in_use(
    sims: SimulatorServer, feldera: FelderaProvider
) -> None:
    """Running, with no input moving over the two reads: no signal."""
    waited: list[float] = []

    async def sim_sleep(seconds: float) -> None:
        waited.append(seconds)
        sims.hub.clock.advance(seconds)

    assert await feldera.usage(pipeline("etl"), sleep=sim_sleep) == []
    assert waited == [2.0]


async def test_feldera_stopped_pipeline_has_no_stats_and_no_signal(
    sims: SimulatorServer, feldera: FelderaProvider
) -> None:
    """A stopped pipeline's ``/stats`` is the spec's 503 PipelineInteractionNotDeployed:
    an answer, taken at once (one request, not a 503 retried as a wait)."""
    fsim(sims).set_input("archive", per_second=10, buffered=5)
    sims.hub.faults.reset_counts()
    assert await feldera.usage(pipeline("archive")) == []
    assert sims.hub.faults.counts()["feldera"] == {"GET": 1}


async def test_feldera_unknown_pipeline_is_an_error(feldera: FelderaProvider) -> None:
    """An unknown pipeline is the provider's 404, not "not in use"."""
    with pytest.raises(NotFoundError):
        await feldera.usage(pipeline("nope"))


@pytest.mark.parametrize("kind", ["openstack", "okeanos"])
async def test_providers_without_usage_signals_say_none(sims: SimulatorServer, kind: str) -> None:
    """Nova and ~okeanos have no sign of use in their APIs: none, with no call made."""
    config = sample(sims)
    [entry] = [p for p in config.providers if p.type == kind]
    provider = build_provider(entry)
    try:
        resource = next(r for r in config.all_resources() if r.provider == entry.name)
        assert await provider.usage(resource) == []
    finally:
        await provider.aclose()
