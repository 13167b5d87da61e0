"""Progress updates are coalesced to respect Slack's rate limits, and the final one is never lost."""

from __future__ import annotations

import datetime as dt
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.models import Operation, OpState
from bot.slack.fake_api import DEFAULT_TOKEN, FakeSlack, FakeSlackServer, SlackChannel
from bot.slack.progress import MessageProgress, _Coalescing

T0 = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC)


def op(state: OpState, provider_state: str | None) -> Operation:
    return Operation(
        id="op1",
        resource="dev-eu",
        provider="qovery",
        resource_id="c1",
        requested_by="U1",
        source="slack",
        state=state,
        provider_state=provider_state,
        created_at=T0,
        updated_at=T0,
    )


class Sent(_Coalescing):
    def __init__(self, interval: float, clock: list[float]) -> None:
        super().__init__(interval, monotonic=lambda: clock[0])
        self.sent: list[str | None] = []

    async def send(self, text: str, blocks: list[dict[str, Any]], operation: Operation) -> None:
        self.sent.append(operation.provider_state)


async def test_updates_within_interval_are_coalesced_and_final_is_sent_at_once() -> None:
    """Within one interval only the first update goes out; the final state goes out at once."""
    clock = [100.0]
    sink = Sent(interval=5.0, clock=clock)
    await sink.progress(op(OpState.IN_PROGRESS, "STOP_QUEUED"), [], None)
    clock[0] = 101.0
    await sink.progress(op(OpState.IN_PROGRESS, "STOPPING"), [], None)
    clock[0] = 102.0
    await sink.progress(op(OpState.STOPPED, "STOPPED"), [], None)
    assert sink.sent == ["STOP_QUEUED", "STOPPED"]


async def test_update_after_interval_is_sent() -> None:
    """Once the interval has passed, the next update goes out immediately."""
    clock = [100.0]
    sink = Sent(interval=5.0, clock=clock)
    await sink.progress(op(OpState.IN_PROGRESS, "STOP_QUEUED"), [], None)
    clock[0] = 106.0
    await sink.progress(op(OpState.IN_PROGRESS, "STOPPING"), [], None)
    assert sink.sent == ["STOP_QUEUED", "STOPPING"]


async def test_infinite_interval_sends_first_and_final_only() -> None:
    """With an infinite interval (response_url's five uses) only first and final are sent."""
    clock = [100.0]
    sink = Sent(interval=float("inf"), clock=clock)
    for state in ("STOP_QUEUED", "STOPPING", "STOPPING2"):
        clock[0] += 1
        await sink.progress(op(OpState.IN_PROGRESS, state), [], None)
    await sink.progress(op(OpState.STOPPED, "STOPPED"), [], None)
    assert sink.sent == ["STOP_QUEUED", "STOPPED"]


async def test_a_failed_final_update_is_tried_again_and_a_progress_one_is_not() -> None:
    """Slack failing chat.update (internal_error, which slack_sdk does not retry): a state
    in progress is dropped, since a later one replaces it; the final state is tried again
    until Slack takes it."""
    with FakeSlackServer(
        FakeSlack(tokens=[DEFAULT_TOKEN], channels=[SlackChannel("C1OPS", "ops")])
    ) as server:
        client = AsyncWebClient(token=DEFAULT_TOKEN, base_url=server.api_url)
        fake = server.slack
        posted = await client.chat_postMessage(channel="C1OPS", text="Stopping dev-eu")
        sink = MessageProgress(client, str(posted["channel"]), str(posted["ts"]), 0.0)
        fake.fail_next("chat.update", "internal_error")
        await sink.progress(op(OpState.IN_PROGRESS, "STOPPING"), [], None)
        fake.fail_next("chat.update", "internal_error")
        fake.fail_next("chat.update", "internal_error")
        await sink.progress(op(OpState.STOPPED, "STOPPED"), [], None)
        answers = [c.response.get("error", "ok") for c in fake.calls("chat.update")]  # type: ignore[union-attr]
        assert answers == ["internal_error", "internal_error", "internal_error", "ok"]
        [shown] = fake.messages("C1OPS")
        assert shown["text"].startswith("dev-eu: :white_check_mark: Stopped")
