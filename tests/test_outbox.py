"""Messages owed to a face are delivered from the store: the latest state of each, at most
once per interval, tried again after a failure, and taken over from a dead process."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.models import Owed
from bot.outbox import MAX_ATTEMPTS, Outbox
from bot.processes import ProcessRegistry
from bot.store import Store, open_store

T0 = dt.datetime(2026, 12, 3, 20, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


class Face:
    """A face that records what it is given; it fails while ``failing`` says so."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []
        self.failing = 0

    async def deliver(self, owed: Owed) -> bool:
        if self.failing:
            self.failing -= 1
            return False
        self.seen.append((owed.key, owed.version))
        return True


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[Store]:
    store = open_store(tmp_path / "stopbot.db", clock=clock)
    yield store
    store.close()


def outbox_of(store: Store, face: Face, *, interval: float = 0.0) -> Outbox:
    registry = ProcessRegistry(store)
    registry.register()
    outbox = Outbox(store, registry)
    outbox.handle("progress", face.deliver, interval=interval)
    return outbox


def owed(outbox: Outbox, key: str = "progress:op1", *, urgent: bool = False) -> Owed:
    return Owed(key=key, kind="progress", urgent=urgent, owner=outbox.registry.id)


async def test_updates_within_the_interval_go_once_as_the_latest_and_urgent_ones_at_once(
    store: Store,
) -> None:
    """The first change goes at once; changes within the interval wait, and an urgent
    (final) change goes at once, as the latest version: two deliveries for four changes."""
    face = Face()
    outbox = outbox_of(store, face, interval=3600.0)
    store.owe(owed(outbox))
    await outbox.flush()
    store.owe(owed(outbox))
    store.owe(owed(outbox))
    await outbox.flush()
    assert face.seen == [("progress:op1", 1)]
    store.owe(owed(outbox, urgent=True))
    await outbox.flush()
    assert face.seen == [("progress:op1", 1), ("progress:op1", 4)]
    assert store.owed() == []
    await outbox.aclose()


async def test_a_failed_delivery_stays_owed_and_goes_after_its_back_off(
    store: Store, clock: Clock
) -> None:
    """A face that cannot deliver (Slack down) leaves the message owed: it is not tried
    again before its back-off on the store's clock, and then goes, once."""
    face = Face()
    face.failing = 1
    outbox = outbox_of(store, face)
    store.owe(owed(outbox, urgent=True))
    await outbox.flush()
    assert face.seen == []
    [waiting] = store.owed()
    assert waiting.attempts == 1 and waiting.not_before == T0 + dt.timedelta(seconds=1)
    await outbox.flush()
    assert face.seen == []
    clock.now += dt.timedelta(seconds=1)
    await outbox.flush()
    assert face.seen == [("progress:op1", 1)]
    assert store.owed() == []
    await outbox.aclose()


async def test_a_message_never_deliverable_is_given_up_after_its_attempts(
    store: Store, clock: Clock
) -> None:
    """A face that never manages to deliver stops being asked after MAX_ATTEMPTS."""
    face = Face()
    face.failing = MAX_ATTEMPTS + 5
    outbox = outbox_of(store, face)
    store.owe(owed(outbox, urgent=True))
    for _ in range(MAX_ATTEMPTS + 2):
        await outbox.flush()
        clock.now += dt.timedelta(minutes=2)
    assert face.failing == 5
    assert store.owed() == []
    await outbox.aclose()


async def test_what_a_dead_process_owed_is_delivered_by_another_and_a_live_ones_is_left(
    store: Store,
) -> None:
    """A message owed by a process that is alive is its own to deliver; once that process
    dies (killed between the change and the message), another delivers it."""
    first_face, second_face = Face(), Face()
    first = outbox_of(store, first_face)
    second = outbox_of(store, second_face)
    store.owe(owed(first, urgent=True))
    await second.flush()
    assert second_face.seen == []
    first.registry.me.abandon()
    await second.flush()
    assert second_face.seen == [("progress:op1", 1)]
    assert first_face.seen == []
    assert store.owed() == []
    for outbox in (first, second):
        await outbox.aclose()


async def test_a_kind_nobody_here_shows_is_left_owed(store: Store) -> None:
    """A message for a face this process does not have (another process's face) is not
    marked delivered here."""
    face = Face()
    outbox = outbox_of(store, face)
    store.owe(Owed(key="x:1", kind="elsewhere", urgent=True, owner=outbox.registry.id))
    await outbox.flush()
    assert [o.key for o in store.owed()] == ["x:1"]
    await outbox.aclose()
