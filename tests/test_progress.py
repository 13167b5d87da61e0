"""Progress updates are coalesced to respect Slack's rate limits, and the final one is never lost."""

from __future__ import annotations

import datetime as dt
from typing import Any

from bot.models import Operation, OpState
from bot.slack.progress import _Coalescing

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
