"""Store calls off the event loop (bot/store/background.py), on every backend: in order,
grouped in one transaction, each failing alone, never settled before their commit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.models import OpState
from bot.store import Store, StoreError, StoreUnavailableError, open_store
from bot.store.background import GROUP, Lane, after_commit, following
from tests.test_store import Clock, _confirm, new_op

T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_location"))
    return str(tmp_path / "stopbot.db")


@pytest.fixture
def store(location: str) -> Iterator[Store]:
    """A store whose calls off the loop go through its lanes, the work lane with one thread
    (the tests below hold it to make groups): on SQLite too, where they run in line."""
    opened = open_store(location, clock=Clock())
    opened.off_loop_inline = False
    opened._lanes["work"] = Lane(opened, "work")
    yield opened
    opened.close()


def test_a_tasks_calls_run_in_its_order_as_the_store_is_configured(location: str) -> None:
    """With the store as it comes (a few threads on the work lane; SQLite in line), each
    task's calls run in the order it made them, and every one is committed."""
    store = open_store(location, clock=Clock())

    async def task(name: str) -> list[int]:
        return [await store.off_loop(partial(store.audit, name, f"{name}-{i}")) for i in range(10)]

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(task(f"U{n}") for n in range(10)))

    try:
        ids = asyncio.run(main())
        entries = store.audit_log()
    finally:
        store.close()
    assert all(mine == sorted(mine) for mine in ids)
    assert len(entries) == 100
    for n in range(10):
        assert [e.action for e in entries if e.actor == f"U{n}"] == [f"U{n}-{i}" for i in range(10)]


def _actions(store: Store) -> list[str]:
    return [entry.action for entry in store.audit_log()]


async def _held(store: Store) -> tuple[threading.Event, asyncio.Future[None]]:
    """The work lane held busy by a first call until the event is set, so that the calls
    queued meanwhile run as one group."""
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    held = asyncio.ensure_future(store.off_loop(hold))
    await asyncio.sleep(0)
    assert await asyncio.to_thread(started.wait, 10)
    return release, held


def _queued(*calls: Coroutine[Any, Any, T]) -> list[asyncio.Future[T]]:
    return [asyncio.ensure_future(call) for call in calls]


def test_calls_run_in_order_and_return_their_results(store: Store) -> None:
    """Calls from many tasks run in the order they were made; each gets its own result."""

    async def main() -> list[int]:
        calls = [store.off_loop(partial(store.audit, "U1", f"a{i}")) for i in range(100)]
        return await asyncio.gather(*calls)

    ids = asyncio.run(main())
    assert ids == sorted(ids) and len(set(ids)) == 100
    assert _actions(store) == [f"a{i}" for i in range(100)]


def test_a_failing_call_fails_alone_and_is_undone(store: Store) -> None:
    """In one group, a call that raises gets its exception, its writes undone, and the calls
    before and after it are committed with their results."""

    def half_then_fail() -> None:
        # Two writes, each a savepoint of its own inside the call's: both are undone.
        store.audit("U1", "half")
        store.audit("U1", "other half")
        raise ValueError("refused by the caller")

    async def main() -> list[object]:
        release, held = await _held(store)
        calls = _queued(
            store.off_loop(partial(store.audit, "U1", "before")),
            store.off_loop(half_then_fail),
            store.off_loop(partial(store.rows, "SELECT no_such_column FROM audit")),
            store.off_loop(partial(store.audit, "U1", "after")),
        )
        await asyncio.sleep(0)
        release.set()
        await held
        return await asyncio.gather(*calls, return_exceptions=True)

    before, failed, bad_read, after = asyncio.run(main())
    assert isinstance(before, int) and isinstance(after, int) and after > before
    assert isinstance(failed, ValueError) and str(failed) == "refused by the caller"
    assert isinstance(bad_read, StoreError)
    assert _actions(store) == ["before", "after"]


def test_a_group_shares_one_commit_and_settles_after_it(store: Store, location: str) -> None:
    """The calls queued while the lane works run in one transaction: none is visible to
    another connection, nor settled to its caller, before the group's commit."""
    other = open_store(location, clock=Clock())
    seen: list[list[str]] = []

    def look() -> None:  # inside the group, after the first write: what others see
        seen.append(_actions(other))

    async def main() -> None:
        release, held = await _held(store)
        calls = _queued(
            store.off_loop(partial(store.audit, "U1", "one")),
            store.off_loop(look),
            store.off_loop(partial(store.audit, "U1", "two")),
        )
        await asyncio.sleep(0)
        release.set()
        await held
        await asyncio.gather(*calls)
        assert _actions(other) == ["one", "two"]

    try:
        asyncio.run(main())
    finally:
        other.close()
    assert seen == [[]]


def test_what_a_call_does_after_its_commit_sees_the_commit(store: Store, location: str) -> None:
    """An action a call asks for after its commit (the outbox's kick) runs once the
    call's group is committed: another connection then sees the call's writes, alone or
    in a group. Outside a lane it runs at once."""
    other = open_store(location, clock=Clock())
    seen: list[list[str]] = []

    def write(action: str) -> None:
        store.audit("U1", action)
        after_commit(lambda: seen.append(_actions(other)))

    async def main() -> None:
        await store.off_loop(partial(write, "alone"))
        release, held = await _held(store)
        calls = _queued(
            store.off_loop(partial(write, "one")), store.off_loop(partial(write, "two"))
        )
        await asyncio.sleep(0)
        release.set()
        await held
        await asyncio.gather(*calls)

    try:
        asyncio.run(main())
        after_commit(lambda: seen.append(["at once"]))
    finally:
        other.close()
    assert seen == [["alone"], ["alone", "one", "two"], ["alone", "one", "two"], ["at once"]]


def test_at_most_a_group_of_calls_share_a_transaction(store: Store) -> None:
    """GROUP calls to a transaction at most: twice GROUP queued calls take two commits."""
    commits: list[int] = []
    batch = store.batch

    def counted() -> object:
        commits.append(1)
        return batch()

    store.batch = counted  # type: ignore[method-assign]

    async def main() -> None:
        release, held = await _held(store)
        calls = _queued(
            *(store.off_loop(partial(store.audit, "U1", f"a{i}")) for i in range(GROUP * 2))
        )
        await asyncio.sleep(0)
        release.set()
        await held
        await asyncio.gather(*calls)

    asyncio.run(main())
    assert _actions(store) == [f"a{i}" for i in range(GROUP * 2)]
    assert len(commits) == 2  # (the held call ran alone, in a transaction of its own)


def test_a_claim_joins_its_group_and_is_committed_before_it_returns(
    store: Store, location: str
) -> None:
    """A claim to send made off the loop shares its group's transaction, and its caller
    hears back once that is committed (another connection sees the claim then); inside a
    caller's own batch, whose commit would come after the call leaves, it is refused."""
    op_id = new_op(store, state=OpState.AWAITING_CONFIRMATION)
    assert _confirm(store, op_id) is not None
    other = open_store(location, clock=Clock())
    owner = "P1"
    with pytest.raises(StoreError, match="committed before the call"), store.batch():
        store.claim_send(op_id, owner)

    async def main() -> tuple[object, object]:
        release, held = await _held(store)
        audit, claimed = _queued(
            store.off_loop(partial(store.audit, "U1", "beside")),
            store.off_loop(partial(store.claim_send, op_id, owner)),
        )
        await asyncio.sleep(0)
        release.set()
        await held
        results = await asyncio.gather(audit, claimed)
        # committed: another connection sees the claim at once
        fresh = other.get_operation(op_id)
        assert fresh is not None and fresh.sends == 1
        return tuple(results)  # type: ignore[return-value]

    try:
        audit, claimed = asyncio.run(main())
    finally:
        other.close()
    assert isinstance(audit, int)
    assert claimed is not None and getattr(claimed, "sends", None) == 1


def test_the_urgent_lane_does_not_wait_for_the_work_lane(store: Store) -> None:
    """An urgent call runs while the work lane is held (PostgreSQL: another connection;
    SQLite: the same file, once no transaction holds it)."""

    async def main() -> int:
        release, held = await _held(store)
        try:
            return await asyncio.wait_for(
                store.off_loop(partial(store.audit, "U1", "urgent"), urgent=True), 10
            )
        finally:
            release.set()
            await held

    assert asyncio.run(main()) > 0


def test_a_closed_store_refuses_calls_off_the_loop(store: Store) -> None:
    """After close, a call off the loop is refused with the store's error, not queued."""

    async def main(call: Callable[[], object]) -> object:
        return await store.off_loop(call)

    asyncio.run(main(partial(store.audit, "U1", "open")))
    store.close()
    with pytest.raises(StoreUnavailableError):
        asyncio.run(main(partial(store.audit, "U1", "closed")))


def _sqlite_as_configured(tmp_path: Path) -> tuple[Store, list[str]]:
    """SQLite as it comes (its calls off the loop grouped on the loop), and the statements
    its connection runs."""
    store = open_store(str(tmp_path / "stopbot.db"), clock=Clock())
    assert store.off_loop_inline
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]
    return store, statements


def test_sqlite_groups_the_calls_of_one_turn_of_the_loop_in_one_commit(tmp_path: Path) -> None:
    """On SQLite, the calls made during one turn of the event loop run in the next, a
    group at a time, each group one commit; each caller gets its own result, in order."""
    store, statements = _sqlite_as_configured(tmp_path)

    async def main() -> list[int]:
        calls = [store.off_loop(partial(store.audit, "U1", f"a{i}")) for i in range(GROUP + 3)]
        return await asyncio.gather(*calls)

    try:
        ids = asyncio.run(main())
        assert statements.count("COMMIT") == 2  # GROUP calls, then the 3 others
        assert ids == sorted(ids) and len(set(ids)) == GROUP + 3
        assert _actions(store) == [f"a{i}" for i in range(GROUP + 3)]
    finally:
        store.close()


def test_sqlite_a_failing_call_of_a_turn_fails_alone(tmp_path: Path) -> None:
    """On SQLite, a call of a group that raises is undone alone, the others of its group
    committed together; the urgent one (an ack's) runs at once, before the turn."""
    store, statements = _sqlite_as_configured(tmp_path)

    def half_then_fail() -> None:
        store.audit("U1", "half")
        raise ValueError("refused by the caller")

    async def main() -> list[object]:
        calls = [
            asyncio.ensure_future(store.off_loop(partial(store.audit, "U1", "before"))),
            asyncio.ensure_future(store.off_loop(half_then_fail)),
            asyncio.ensure_future(store.off_loop(partial(store.audit, "U1", "beside"))),
            asyncio.ensure_future(store.off_loop(partial(store.audit, "U1", "after"))),
        ]
        urgent = await store.off_loop(partial(store.audit, "U1", "urgent"), urgent=True)
        return [urgent, *await asyncio.gather(*calls, return_exceptions=True)]

    try:
        urgent, before, failed, beside, after = asyncio.run(main())
        assert isinstance(failed, ValueError) and str(failed) == "refused by the caller"
        assert isinstance(before, int) and isinstance(beside, int) and isinstance(after, int)
        assert urgent < before < beside < after
        assert _actions(store) == ["urgent", "before", "beside", "after"]
        # The urgent call, then the group (the failed call undone alone within it).
        assert statements.count("COMMIT") == 2
    finally:
        store.close()


def test_sqlite_claims_share_their_turns_commit(tmp_path: Path) -> None:
    """On SQLite, the claims to send made in one turn share one commit with the other calls
    of that turn, and each caller hears back after it: three claims among moves, one
    commit; a second claim of one stop finds it claimed."""
    store, statements = _sqlite_as_configured(tmp_path)
    ops = [
        new_op(store, resource=f"dev-{i}", state=OpState.AWAITING_CONFIRMATION) for i in range(3)
    ]
    for op_id in ops:
        assert _confirm(store, op_id) is not None
    statements.clear()

    async def main() -> list[object]:
        calls = [
            store.off_loop(partial(store.audit, "U1", "before")),
            *(store.off_loop(partial(store.claim_send, op_id, "P1")) for op_id in ops),
            store.off_loop(partial(store.claim_send, ops[0], "P2")),
            store.off_loop(partial(store.audit, "U1", "after")),
        ]
        return await asyncio.gather(*calls)

    try:
        before, *claims, again, after = asyncio.run(main())
        assert [getattr(c, "sends", None) for c in claims] == [1, 1, 1]
        assert [getattr(c, "owner", None) for c in claims] == ["P1", "P1", "P1"]
        assert again is None  # claimed already, in the same transaction
        assert isinstance(before, int) and isinstance(after, int)
        assert statements.count("COMMIT") == 1
    finally:
        store.close()


def test_sqlite_a_followed_stops_calls_take_the_room_the_others_leave(tmp_path: Path) -> None:
    """On SQLite, the calls made while following (a polling round's thousands) wait behind
    the others of the loop's lane, however long they have queued: a group is first the
    others' calls, in their order, then the followers', in theirs."""
    store, statements = _sqlite_as_configured(tmp_path)

    async def follower(i: int) -> int:
        with following():
            return await store.off_loop(partial(store.audit, "U1", f"follow{i}"))

    async def main() -> list[int]:
        # The followers' calls are queued first, all before the lane's next turn.
        followers = [asyncio.ensure_future(follower(i)) for i in range(GROUP)]
        senders = [
            asyncio.ensure_future(store.off_loop(partial(store.audit, "U1", f"send{i}")))
            for i in range(3)
        ]
        return await asyncio.gather(*senders, *followers)

    try:
        asyncio.run(main())
        sent = [f"send{i}" for i in range(3)]
        followed = [f"follow{i}" for i in range(GROUP)]
        assert _actions(store) == sent + followed
        assert statements.count("COMMIT") == 2  # a group of 32, then the 3 left
    finally:
        store.close()


def test_sqlite_sends_never_starve_the_followed_stops_calls(tmp_path: Path) -> None:
    """However many calls of stops being sent wait, each group takes one followers' call at
    least: a whole group of the others' and one of theirs, then the rest."""
    store, statements = _sqlite_as_configured(tmp_path)

    async def follower(i: int) -> int:
        with following():
            return await store.off_loop(partial(store.audit, "U1", f"follow{i}"))

    async def main() -> None:
        followers = [asyncio.ensure_future(follower(i)) for i in range(3)]
        senders = [
            asyncio.ensure_future(store.off_loop(partial(store.audit, "U1", f"send{i}")))
            for i in range(GROUP + 1)
        ]
        await asyncio.gather(*senders, *followers)

    try:
        asyncio.run(main())
        first = [f"send{i}" for i in range(GROUP)] + ["follow0"]
        assert _actions(store) == [*first, f"send{GROUP}", "follow1", "follow2"]
        assert statements.count("COMMIT") == 2
    finally:
        store.close()
