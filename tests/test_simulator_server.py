"""The simulator server's control API and fault injection, common to every simulated API."""

from __future__ import annotations

import logging

import httpx
import pytest

from providers.simulators.common import Fault, Timeline
from providers.simulators.server import SimulatorServer


def test_timeline_reads_state_at_time() -> None:
    """A timeline gives the last step at or before the time asked."""
    timeline = Timeline("RUNNING", at=0.0)
    timeline.plan(10.0, [("STOP_QUEUED", 0.0), ("STOPPING", 2.0), ("STOPPED", 3.0)])
    assert [timeline.state(t) for t in (5.0, 10.0, 11.9, 12.0, 14.9, 15.0, 99.0)] == [
        "RUNNING",
        "STOP_QUEUED",
        "STOP_QUEUED",
        "STOPPING",
        "STOPPING",
        "STOPPED",
        "STOPPED",
    ]
    assert not timeline.settled(14.0)
    assert timeline.settled(15.0)


def test_timeline_replan_drops_future_steps() -> None:
    """Planning anew from a time forgets the steps that had not happened yet."""
    timeline = Timeline("RUNNING")
    timeline.plan(10.0, [("STOPPING", 0.0), ("STOPPED", 5.0)])
    timeline.set(12.0, "RUNNING")
    assert timeline.state(20.0) == "RUNNING"
    assert timeline.state(11.0) == "STOPPING"


def test_clock_advance_over_http(sims: SimulatorServer) -> None:
    """POST /_sim/clock/advance moves the simulators' clock forward."""
    before = httpx.get(f"{sims.base_url}/_sim/clock").json()["now"]
    after = httpx.post(f"{sims.base_url}/_sim/clock/advance", json={"seconds": 3600}).json()["now"]
    assert after - before >= 3600


def test_status_fault_is_served_then_used_up(sims: SimulatorServer) -> None:
    """An injected 503 with Retry-After answers the matching request once, then is gone."""
    response = httpx.post(
        f"{sims.base_url}/_sim/faults",
        json={"api": "feldera", "kind": "status", "status": 503, "retry_after": 7, "count": 1},
    )
    assert response.status_code == 200
    assert len(response.json()["faults"]) == 1
    faulted = httpx.get(f"{sims.base_url}/feldera/anything")
    assert faulted.status_code == 503
    assert faulted.headers["Retry-After"] == "7"
    assert httpx.get(f"{sims.base_url}/_sim/faults").json() == {"faults": []}


def test_drop_fault_breaks_the_connection(sims: SimulatorServer) -> None:
    """A 'drop' fault closes the connection mid-response."""
    httpx.post(f"{sims.base_url}/_sim/faults", json={"api": "qovery", "kind": "drop"})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{sims.base_url}/qovery/organization")


def test_unknown_fault_api_is_refused(sims: SimulatorServer) -> None:
    """A fault for an API the server does not simulate is a 400 naming it."""
    response = httpx.post(f"{sims.base_url}/_sim/faults", json={"api": "aws", "kind": "drop"})
    assert response.status_code == 400
    assert "aws" in response.json()["error"]


def test_seed_with_unknown_section_is_refused(sims: SimulatorServer) -> None:
    """Seeding a section no simulator owns is a 400, and nothing changes."""
    before = httpx.get(f"{sims.base_url}/_sim/state").json()
    response = httpx.post(f"{sims.base_url}/_sim/seed", json={"gcp": {}})
    assert response.status_code == 400
    assert "gcp" in response.json()["error"]
    assert httpx.get(f"{sims.base_url}/_sim/state").json() == before


def test_stats_count_requests_per_api_and_method(sims: SimulatorServer) -> None:
    """GET /_sim/stats counts what each simulated API received, and the most it served at
    once; DELETE starts again."""
    httpx.get(f"{sims.base_url}/feldera/v0/pipelines")
    httpx.post(f"{sims.base_url}/feldera/v0/pipelines/etl/stop")
    httpx.get(f"{sims.base_url}/qovery/organization")
    stats = httpx.get(f"{sims.base_url}/_sim/stats").json()
    assert stats == {
        "requests": {"feldera": {"GET": 1, "POST": 1}, "qovery": {"GET": 1}},
        "peak_in_flight": {"feldera": 1, "qovery": 1},
    }
    httpx.delete(f"{sims.base_url}/_sim/stats")
    assert httpx.get(f"{sims.base_url}/_sim/stats").json() == {
        "requests": {},
        "peak_in_flight": {},
    }


def test_an_injected_drop_is_logged_in_one_line_not_a_traceback(sims: SimulatorServer) -> None:
    """The "dropped connection" fault cuts the connection mid-answer, and the server logs
    it as one warning line, never uvicorn's "Exception in ASGI application" traceback (a
    newcomer would think the bot crashed)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        sims.hub.faults.add(Fault(api="qovery", kind="drop"))
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{sims.url('qovery')}/organization", timeout=5)
    finally:
        logger.removeHandler(handler)
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in records] == [
        (
            "WARNING",
            "simulator: dropped a connection mid-answer, as injected (a drop fault)",
            None,
        )
    ]
