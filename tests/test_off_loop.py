"""On PostgreSQL the serving loop never waits for the database.

Every store call there is a round trip, and a write waits its turn at the store's write
lock behind whatever a run is writing: made on the event loop, it held every Slack ack
arriving meanwhile (a lone `/stop` during a night of 10,000 stops waited up to a second,
bench/README.md). So the store's work runs in its lanes' threads (bot/store/background.py)
and the loop only awaits it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bot.models import OpState
from bot.slack import views
from bot.store.postgres import PostgresStore
from providers.simulators.server import SimulatorServer
from tests.slack_harness import Slack

LANES = "stopbot-store-"
"""The names of the store's lanes' threads (bot/store/background.py)."""


def spy_on_round_trips(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, str]]:
    """From now on, each connection the store takes for a call of its own (a batch's
    calls share their batch's), as (the thread's name, the call's function)."""
    taken: list[tuple[str, str]] = []
    connection = store._connection

    @contextlib.contextmanager
    def spied() -> Iterator[Any]:
        if getattr(store._batches, "conn", None) is None:
            taken.append((threading.current_thread().name, _caller()))
        with connection() as conn:
            yield conn

    monkeypatch.setattr(store, "_connection", spied)
    return taken


def _caller() -> str:
    """The innermost function of the bot's, outside the store, on the stack."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if "/bot/" in path and "/bot/store/" not in path:
            return frame.f_code.co_qualname
        frame = frame.f_back
    return "?"


async def test_a_stop_asked_confirmed_and_followed_takes_no_round_trip_on_the_loop(
    sims: SimulatorServer, pg_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`/stop dev-eu`, its Confirm, and the stop followed to Stopped through the public
    message, with housekeeping and the schedules' ticks every 50 ms beside them: every
    round trip to PostgreSQL is made in a thread of the store's lanes, none on the loop
    that answers Slack."""
    slack = Slack(sims, pg_location)
    try:
        assert isinstance(slack.store, PostgresStore)
        taken = spy_on_round_trips(slack.store, monkeypatch)
        await slack.command("dev-eu")
        await slack.reply()
        op_id, ts = slack.confirmation()
        assert (await slack.click(views.CONFIRM, op_id, ts)).status_code == 200
        final = await slack.final_message()
        monkeypatch.undo()

        assert final["text"].startswith("dev-eu: :white_check_mark: Stopped in ")
        op = slack.store.get_operation(op_id)
        assert op is not None and op.state == OpState.STOPPED
        assert len(taken) > 20  # the spy saw the stop's calls
        assert [(thread, call) for thread, call in taken if not thread.startswith(LANES)] == []
    finally:
        slack.close()
