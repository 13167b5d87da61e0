"""GET /metrics: commands, stops by provider and outcome, provider latency, work in flight."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics
from bot.models import OpState
from bot.slack import views
from bot.slack.commands import request_name
from bot.store import open_store
from providers.http import add_call_observer, endpoint_of
from providers.registry import build_provider
from providers.simulators.common import Fault
from providers.simulators.server import SimulatorServer
from tests.helpers import sample
from tests.slack_harness import SECRET, Slack

QOVERY_STATUS = "/organization/{id}/cluster/{id}/status"
QOVERY_STOP = "/organization/{id}/cluster/{id}/stop"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/organization/8d2c5b4e-3f1a/cluster/0b9e1c7a-6f4d/stop", QOVERY_STOP),
        (
            "http://127.0.0.1:8900/nova/v2.1/servers/6a1f0e2d-9b8c/action",
            "/nova/v2.1/servers/{id}/action",
        ),
        ("/v0/pipelines/etl/stop?force=true", "/v0/pipelines/etl/stop"),
        (
            "/api/apps/2e7d5c3b/lambda-instances/9c4b7a2e/stop",
            "/api/apps/{id}/lambda-instances/{id}/stop",
        ),
        ("/v3/auth/tokens", "/v3/auth/tokens"),
    ],
)
def test_endpoints_group_ids_but_keep_versions(path: str, endpoint: str) -> None:
    """Ids in a path become {id}, API versions stay, so latency has one series per endpoint."""
    assert endpoint_of(path) == endpoint


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"command": "/stop", "text": "dev-eu --force"}, "/stop"),
        ({"command": "/stop", "text": "STATUS dev-eu"}, "/stop status"),
        ({"command": "/stop", "text": ""}, "/stop help"),
        ({"command": "/stop", "text": "history"}, "/stop history"),
        (
            {"type": "block_actions", "actions": [{"action_id": "stop_confirm"}]},
            "action:stop_confirm",
        ),
        ({"type": "block_actions", "actions": [{"action_id": "x" * 500}]}, "action:other"),
        ({"type": "block_actions", "actions": "nonsense"}, "action:other"),
        ({"type": "view_submission", "view": {"callback_id": "lock"}}, "view:lock"),
        ({"type": "event_callback"}, "event_callback"),
        ({"type": "💥 " * 40}, "other"),
    ],
)
def test_command_names_are_few_and_bounded(body: dict[str, Any], name: str) -> None:
    """Each request is counted under a short, known name; odd input cannot add label values."""
    assert request_name(body) == name


async def test_provider_calls_are_timed_per_attempt(sims: SimulatorServer, tmp_path: Path) -> None:
    """Every attempt is observed with its outcome: a 503 then the retried 200."""
    config = sample(sims)
    store = open_store(tmp_path / "db")
    metrics = Metrics(store)
    metrics.attach()
    provider = build_provider(config.provider("qovery"), http=config.http)
    sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", status=503))
    try:
        status = await provider.status(config.resource("dev-eu"))
    finally:
        metrics.detach()
        await provider.aclose()
        store.close()
    assert status.state == "DEPLOYED"
    got = samples(metrics.render().decode())
    for outcome in ("503", "200"):
        labels = (
            ("endpoint", QOVERY_STATUS),
            ("method", "GET"),
            ("outcome", outcome),
            ("provider", "qovery"),
        )
        assert got[("stopbot_provider_call_seconds_count", labels)] == 1.0


async def test_a_broken_observer_does_not_break_calls(sims: SimulatorServer) -> None:
    """An observer that raises is logged and ignored: the provider call still succeeds."""
    config = sample(sims)

    def broken(*args: Any) -> None:
        raise RuntimeError("observer bug")

    remove = add_call_observer(broken)
    provider = build_provider(config.provider("feldera"), http=config.http)
    try:
        status = await provider.status(config.resource("etl"))
    finally:
        remove()
        await provider.aclose()
    assert status.state == "Running"


def test_stops_and_work_in_flight_are_read_from_the_store(tmp_path: Path) -> None:
    """Operations are counted by provider and state at scrape time, from the database."""
    store = open_store(tmp_path / "db")
    states = [
        ("qovery", OpState.STOPPED),
        ("qovery", OpState.STOPPED),
        ("qovery", OpState.FAILED),
        ("nova", OpState.IN_PROGRESS),
        ("feldera", OpState.SUBMITTING),
        ("feldera", OpState.AWAITING_CONFIRMATION),
    ]
    for i, (provider, state) in enumerate(states):
        store.create_operation(
            resource=f"r{i}",
            provider=provider,
            resource_id=str(i),
            requested_by="U0BOB",
            source="slack",
            state=state,
        )
    got = samples(Metrics(store).render().decode())
    store.close()
    stops = {k: v for k, v in got.items() if k[0] == "stopbot_stops_total"}
    assert stops == {
        ("stopbot_stops_total", (("outcome", "stopped"), ("provider", "qovery"))): 2.0,
        ("stopbot_stops_total", (("outcome", "failed"), ("provider", "qovery"))): 1.0,
    }
    in_flight = {k: v for k, v in got.items() if k[0] == "stopbot_operations_in_flight"}
    assert in_flight == {
        ("stopbot_operations_in_flight", (("provider", "nova"), ("state", "in_progress"))): 1.0,
        ("stopbot_operations_in_flight", (("provider", "feldera"), ("state", "submitting"))): 1.0,
    }
    assert got[("stopbot_store_up", ())] == 1.0


def test_a_closed_store_is_reported_not_raised(tmp_path: Path) -> None:
    """When the database cannot be read, the scrape still answers, with stopbot_store_up 0."""
    store = open_store(tmp_path / "db")
    metrics = Metrics(store)
    store.close()
    got = samples(metrics.render().decode())
    assert got[("stopbot_store_up", ())] == 0.0
    assert not [k for k in got if k[0] == "stopbot_stops_total"]


@pytest.fixture
async def slack(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[tuple[Slack, Metrics]]:
    """The Slack harness: its server mounts /metrics and times provider calls, as serve does."""
    harness = Slack(sims, tmp_path / "stopbot.db")
    yield harness, harness.bot.metrics
    harness.close()


async def test_metrics_endpoint_after_a_stop(slack: tuple[Slack, Metrics]) -> None:
    """After a confirmed stop, /metrics counts the command, the click, the stop and its POST;
    a forged request is not counted."""
    harness, _ = slack
    assert harness.server is not None
    forged = await harness.command("dev-eu", secret="not-" + SECRET)
    assert forged.status_code == 401
    await harness.command("dev-eu")
    await harness.reply()
    op_id, ts = harness.confirmation()
    await harness.click(views.CONFIRM, op_id, ts)
    final = await harness.final_message()
    assert final["text"].startswith("dev-eu: :white_check_mark: Stopped")
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{harness.server.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    got = samples(response.text)
    assert got[("stopbot_commands_total", (("command", "/stop"),))] == 1.0
    assert got[("stopbot_commands_total", (("command", "action:stop_confirm"),))] == 1.0
    assert got[("stopbot_stops_total", (("outcome", "stopped"), ("provider", "qovery")))] == 1.0
    assert not [k for k in got if k[0] == "stopbot_operations_in_flight"]
    stop_post = (
        ("endpoint", QOVERY_STOP),
        ("method", "POST"),
        ("outcome", "202"),
        ("provider", "qovery"),
    )
    assert got[("stopbot_provider_call_seconds_count", stop_post)] == 1.0
    assert got[("stopbot_provider_call_seconds_sum", stop_post)] > 0.0
