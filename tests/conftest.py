"""Shared fixtures: the simulators on a loopback port, the Slack app behind its endpoint,
instant retries, paths to ../shared, a PostgreSQL server and a schema per test (tests/pg.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import stamina

from providers.simulators.server import SimulatorServer
from tests.pg import pg_location, pg_schema, postgres_server
from tests.slack_harness import Slack

__all__ = ["pg_location", "pg_schema", "postgres_server"]  # fixtures, for every test file

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def _instant_backoff() -> Iterator[None]:
    """Retries keep their configured attempts but never wait, so no test sleeps."""
    with stamina.set_testing(True, attempts=10, cap=True):
        yield


@pytest.fixture(scope="session")
def sim_server() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


@pytest.fixture
def sims(sim_server: SimulatorServer) -> Iterator[SimulatorServer]:
    """The simulators, back to the sample estate with no faults, for each test."""
    sim_server.hub.reset()
    yield sim_server
    sim_server.hub.reset()


@pytest.fixture
async def slack(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Slack]:
    """The bot behind its HTTP endpoint, with a fake Slack, on the sample configuration."""
    harness = Slack(sims, tmp_path / "stopbot.db")
    yield harness
    harness.close()


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test: a user's fresh clone has no ../shared."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the reference specs live in ../shared (CI has them)")
    return path
