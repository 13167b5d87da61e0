"""The store's contract, on every backend: compare-and-set transitions, audit, locks, claims,
schedules, health and counts. Each test opens stores at ``location``, one per backend
(SQLite's own schema, migrations and errors: tests/test_store_sqlite.py)."""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.models import TRACKED_STATES, EnvironmentRun, EnvRunState, OpState
from bot.store import (
    Store,
    StoreError,
    StoreLocationError,
    StoreUnavailableError,
    open_store,
    store_exists,
)
from bot.text import Text, say

T0 = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh, empty store of each backend is: a SQLite file, a PostgreSQL schema of
    the test's own (tests/pg.py; skipped where no PostgreSQL can run)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_location"))
    return str(tmp_path / "stopbot.db")


@pytest.fixture
def opened(location: str) -> Iterator[Callable[..., Store]]:
    """Open a store at ``location`` (as many as a test wants: processes side by side),
    each closed after the test."""
    stores: list[Store] = []

    def open_one(clock: Callable[[], dt.datetime] | None = None) -> Store:
        stores.append(open_store(location, clock=clock or Clock()))
        return stores[-1]

    yield open_one
    for store in stores:
        store.close()


@pytest.fixture
def store(opened: Callable[..., Store], clock: Clock) -> Store:
    return opened(clock)


def new_op(store: Store, **kw: object) -> str:
    fields: dict = {
        "resource": "dev-eu",
        "provider": "qovery",
        "resource_id": "c1",
        "requested_by": "U1",
        "source": "slack",
        **kw,
    }
    op, created = store.create_operation(**fields)
    assert created
    return op.id


def test_reopening_keeps_data(location: str, opened: Callable[..., Store]) -> None:
    """A store opened again at its location has what was written there before."""
    assert not store_exists(location)
    first = opened()
    op_id = new_op(first)
    first.close()
    assert store_exists(location)
    op = opened().get_operation(op_id)
    assert op is not None and op.resource == "dev-eu"


def test_create_operation_writes_row_transition_and_audit(store: Store) -> None:
    """A new operation is recorded with its first transition and a stop.requested audit entry."""
    op_id = new_op(store, reason="night", force=True)
    op = store.get_operation(op_id)
    assert op is not None
    assert (op.state, op.reason, op.force, op.created_at) == (OpState.REQUESTED, "night", True, T0)
    assert [t.state for t in store.transitions(op_id)] == ["requested"]
    [entry] = store.audit_log()
    assert (entry.actor, entry.action, entry.resource, entry.operation_id) == (
        "U1",
        "stop.requested",
        "dev-eu",
        op_id,
    )
    assert entry.detail == {
        "force": True,
        "reason": "night",
        "source": "slack",
        "state": "requested",
    }


def test_operation_ids_grow_with_time(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operation's id is a UUIDv7 as 32 hex digits: ids made later sort after, so the
    indexes on them are written at their end (see bot.store.base.operation_id)."""
    ns = [1_796_000_000_000_000_000]
    monkeypatch.setattr("bot.store.base.time.time_ns", lambda: ns[0])
    made = []
    for _ in range(3):
        made.append(new_op(store, resource="dev-eu"))
        ns[0] += 1_000_000  # a millisecond later
    assert made == sorted(made)
    assert len(set(made)) == 3
    for at_ms, op_id in enumerate(made, start=1_796_000_000_000):
        parsed = uuid.UUID(op_id)
        assert (parsed.hex, parsed.version, parsed.variant) == (op_id, 7, uuid.RFC_4122)
        assert parsed.int >> 80 == at_ms  # milliseconds first


def test_idempotency_key_returns_existing_operation(store: Store) -> None:
    """A retried request with the same key creates nothing and returns the first operation."""
    op_id = new_op(store, idempotency_key="slack:trigger-1")
    again, created = store.create_operation(
        resource="dev-eu",
        provider="qovery",
        resource_id="c1",
        requested_by="U1",
        source="slack",
        idempotency_key="slack:trigger-1",
    )
    assert (again.id, created) == (op_id, False)
    assert len(store.recent_operations()) == 1
    assert len(store.audit_log()) == 1


def test_transition_is_compare_and_set(store: Store, clock: Clock) -> None:
    """A transition applies only from an allowed state; the loser of a race gets None."""
    op_id = new_op(store, state=OpState.AWAITING_CONFIRMATION)
    clock.now = T0 + dt.timedelta(seconds=5)
    moved = store.transition(
        op_id, OpState.SUBMITTING, allowed_from=[OpState.AWAITING_CONFIRMATION], actor="U1"
    )
    assert moved is not None and moved.state == OpState.SUBMITTING
    assert moved.updated_at == T0 + dt.timedelta(seconds=5)
    again = store.transition(
        op_id, OpState.SUBMITTING, allowed_from=[OpState.AWAITING_CONFIRMATION], actor="U1"
    )
    assert again is None
    assert [t.state for t in store.transitions(op_id)] == ["awaiting_confirmation", "submitting"]
    assert [e.action for e in store.audit_log()] == ["stop.requested", "stop.submitting"]


def test_concurrent_transitions_exactly_one_wins(opened: Callable[..., Store]) -> None:
    """Eight stores (connections) racing to confirm the same operation: exactly one wins."""
    op_id = new_op(opened(), state=OpState.AWAITING_CONFIRMATION)
    stores = [opened() for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    results: list[bool] = []

    def click(s: Store) -> None:
        barrier.wait()
        results.append(
            s.transition(
                op_id, OpState.SUBMITTING, allowed_from=[OpState.AWAITING_CONFIRMATION], actor="U1"
            )
            is not None
        )

    threads = [threading.Thread(target=click, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


class _Boom(Exception):
    pass


def _confirm(store: Store, op_id: str) -> object:
    return store.transition(
        op_id, OpState.SUBMITTING, allowed_from=[OpState.AWAITING_CONFIRMATION], actor="U1"
    )


def test_a_batch_commits_its_writes_together(opened: Callable[..., Store]) -> None:
    """A batch's writes are seen by another connection only once the batch ends, all of
    them; inside it, its own reads see them."""
    store, other = opened(), opened()
    op_id = new_op(store, state=OpState.AWAITING_CONFIRMATION)
    with store.batch():
        assert _confirm(store, op_id) is not None
        store.record_provider_state(op_id, "STOPPING", "stopping")
        store.audit("U1", "note", operation_id=op_id)
        assert store.get_operation(op_id).provider_state == "STOPPING"  # type: ignore[union-attr]
    op = other.get_operation(op_id)
    assert op is not None and (op.state, op.provider_state) == (OpState.SUBMITTING, "STOPPING")
    assert [t.state for t in other.transitions(op_id)] == [
        "awaiting_confirmation",
        "submitting",
        "submitting",
    ]
    assert [e.action for e in other.audit_log()] == ["stop.requested", "stop.submitting", "note"]


def test_a_batch_that_raises_writes_nothing(store: Store) -> None:
    """An exception out of a batch rolls back every write made in it."""
    op_id = new_op(store, state=OpState.AWAITING_CONFIRMATION)
    with pytest.raises(_Boom), store.batch():
        assert _confirm(store, op_id) is not None
        store.audit("U1", "note", operation_id=op_id)
        raise _Boom
    op = store.get_operation(op_id)
    assert op is not None and op.state == OpState.AWAITING_CONFIRMATION
    assert [t.state for t in store.transitions(op_id)] == ["awaiting_confirmation"]
    assert [e.action for e in store.audit_log()] == ["stop.requested"]


def test_a_call_that_fails_in_a_batch_is_undone_alone(store: Store) -> None:
    """A call that raises inside a batch is undone alone (PostgreSQL would otherwise refuse
    every later statement of the transaction), and the batch's other writes commit."""
    op_id = new_op(store, state=OpState.AWAITING_CONFIRMATION)
    with store.batch():
        assert _confirm(store, op_id) is not None
        with pytest.raises(StoreError):
            store.transition(
                op_id,
                OpState.CANCELLED,
                allowed_from=[OpState.SUBMITTING],
                actor="U1",
                fields={"no_such_column": 1},
            )
        store.audit("U1", "after", operation_id=op_id)
    op = store.get_operation(op_id)
    assert op is not None and op.state == OpState.SUBMITTING
    assert [e.action for e in store.audit_log()] == ["stop.requested", "stop.submitting", "after"]


def test_batches_nest_into_the_outer_one(store: Store) -> None:
    """A batch inside a batch is part of it: the outer one's exception undoes both."""
    op_id = new_op(store, state=OpState.AWAITING_CONFIRMATION)
    with pytest.raises(_Boom), store.batch():
        with store.batch():
            assert _confirm(store, op_id) is not None
        raise _Boom
    assert [t.state for t in store.transitions(op_id)] == ["awaiting_confirmation"]


def test_a_claim_to_send_is_never_part_of_a_batch(store: Store) -> None:
    """claim_send refuses inside a batch (it must be committed before its call leaves),
    and the batch's own writes still commit."""
    op_id = new_op(store, state=OpState.AWAITING_CONFIRMATION)
    with store.batch():
        assert _confirm(store, op_id) is not None
        with pytest.raises(StoreError, match="committed before the call"):
            store.claim_send(op_id, "p1")
    op = store.get_operation(op_id)
    assert op is not None and op.state == OpState.SUBMITTING and op.send_claimed_at is None
    assert store.claim_send(op_id, "p1") is not None


def test_a_batch_that_spans_an_await_is_refused(store: Store) -> None:
    """Another task calling the store while a batch is open (its body awaited) is refused,
    rather than joined to a transaction it knows nothing of."""
    op_id = new_op(store, state=OpState.AWAITING_CONFIRMATION)
    refused: list[BaseException] = []

    async def other() -> None:
        try:
            store.audit("U2", "other", operation_id=op_id)
        except StoreError as exc:
            refused.append(exc)

    async def main() -> None:
        with store.batch():
            _confirm(store, op_id)
            await asyncio.create_task(other())

    asyncio.run(main())
    assert [str(e).split(": ", 1)[1] for e in refused] == [
        "a batch of store calls spans an await (another task called the store inside it)"
    ]
    assert [e.action for e in store.audit_log()] == ["stop.requested", "stop.submitting"]


def test_final_state_sets_finished_at_and_detail(store: Store, clock: Clock) -> None:
    """Reaching a final state records when, and why, for the user."""
    op_id = new_op(store, state=OpState.IN_PROGRESS)
    clock.now = T0 + dt.timedelta(minutes=3)
    op = store.transition(
        op_id,
        OpState.FAILED,
        allowed_from=[OpState.IN_PROGRESS],
        actor="stopbot",
        detail=Text("STOP_ERROR: nodes did not drain"),
    )
    assert op is not None
    assert (op.finished_at, op.detail) == (
        T0 + dt.timedelta(minutes=3),
        Text("STOP_ERROR: nodes did not drain"),
    )


def test_provider_state_recorded_only_when_changed(store: Store) -> None:
    """The same provider state twice is one transition, not two."""
    op_id = new_op(store, state=OpState.IN_PROGRESS)
    first = store.record_provider_state(op_id, "STOP_QUEUED", "stopping")
    assert first is not None and first.provider_state == "STOP_QUEUED"
    assert store.record_provider_state(op_id, "STOP_QUEUED", "stopping") is None
    assert store.record_provider_state(op_id, "STOPPING", "stopping") is not None
    assert [(t.state, t.provider_state) for t in store.transitions(op_id)] == [
        ("in_progress", None),
        ("in_progress", "STOP_QUEUED"),
        ("in_progress", "STOPPING"),
    ]


def test_operations_in_flight_are_the_tracked_ones(store: Store) -> None:
    """Only submitted, accepted and in-progress operations are resumed at start."""
    ids = {state: new_op(store, state=state, resource=f"r-{state.value}") for state in OpState}
    assert {op.id for op in store.operations_in_flight()} == {
        ids[OpState.SUBMITTING],
        ids[OpState.ACCEPTED],
        ids[OpState.IN_PROGRESS],
    }


def test_counts_say_how_many_are_in_flight(store: Store) -> None:
    """counts().in_flight() counts what operations_in_flight() reads, in one statement."""
    for state in OpState:
        new_op(store, state=state, resource=f"r-{state.value}")
    new_op(store, state=OpState.ACCEPTED, resource="another", provider="nova")
    assert store.counts().in_flight() == len(store.operations_in_flight()) == 4


def test_in_flight_ids_are_an_owners_tracked_ones_oldest_first(store: Store, clock: Clock) -> None:
    """An owner's operations in flight, by id, oldest first: none of another owner's, none
    that is not in flight."""
    mine = []
    for minute, state in enumerate(OpState):
        clock.now = T0 + dt.timedelta(minutes=minute)
        op_id = new_op(store, state=state, resource=f"r-{state.value}", owner="P1")
        if state in TRACKED_STATES:
            mine.append(op_id)
    clock.now = T0 + dt.timedelta(hours=1)
    new_op(store, state=OpState.IN_PROGRESS, resource="theirs", owner="P2")
    new_op(store, state=OpState.ACCEPTED, resource="nobodys")
    assert len(mine) == 3
    assert store.in_flight_ids("P1") == mine
    assert store.in_flight_ids("P3") == []


def test_audit_log_filters_and_limit(store: Store, clock: Clock) -> None:
    """The audit log filters by resource and time and keeps the last N in order."""
    for i in range(5):
        clock.now = T0 + dt.timedelta(minutes=i)
        store.audit("U1", f"e{i}", resource="a" if i % 2 else "b")
    assert [e.action for e in store.audit_log(resource="a")] == ["e1", "e3"]
    assert [e.action for e in store.audit_log(since=T0 + dt.timedelta(minutes=3))] == ["e3", "e4"]
    assert [e.action for e in store.audit_log(limit=2)] == ["e3", "e4"]


def test_audit_facts_give_what_held_at_the_start(store: Store, clock: Clock) -> None:
    """Savings' facts: the chosen actions from ``since`` on, after each resource's last
    one before it (what held then); other actions and resources with none left out."""
    facts = [
        (0, "stop.stopped", "a"),
        (1, "resource.running", "a"),
        (2, "stop.stopped", "a"),
        (3, "stop.stopped", "b"),
        (4, "lock.set", "c"),
        (5, "wake.started", "a"),
        (6, "stop.requested", "b"),
        (7, "stop.stopped", "c"),
    ]
    for minute, action, resource in facts:
        clock.now = T0 + dt.timedelta(minutes=minute)
        store.audit("U1", action, resource=resource)
    store.audit("U1", "stop.stopped")  # no resource: not a fact about one
    wanted = ("stop.stopped", "resource.running", "wake.started")
    found = store.audit_facts(wanted, since=T0 + dt.timedelta(minutes=4))
    assert [(e.action, e.resource, e.at) for e in found] == [
        ("stop.stopped", "a", T0 + dt.timedelta(minutes=2)),
        ("stop.stopped", "b", T0 + dt.timedelta(minutes=3)),
        ("wake.started", "a", T0 + dt.timedelta(minutes=5)),
        ("stop.stopped", "c", T0 + dt.timedelta(minutes=7)),
    ]
    assert store.audit_facts((), since=T0) == []


def test_pending_approvals_are_the_undecided_unexpired_ones(store: Store, clock: Clock) -> None:
    """Pending approvals oldest first; one decided or past its expiry is not pending."""
    ids = []
    for i in range(3):
        clock.now = T0 + dt.timedelta(minutes=i)
        op, _ = store.create_operation(
            resource=f"r{i}",
            provider="nova",
            resource_id=f"s{i}",
            requested_by="U1",
            source="slack",
            state=OpState.AWAITING_CONFIRMATION,
        )
        expires = T0 + dt.timedelta(minutes=30 if i else 5)
        assert store.await_approval(op.id, "U1", expires_at=expires, min_approvals=1)
        ids.append(op.id)
    clock.now = T0 + dt.timedelta(minutes=3)
    assert store.pending_approvals() == ids
    store.decide_approval(
        ids[2], "denied", decided_by="U2", to=OpState.REFUSED, detail=None, reason="no"
    )
    clock.now = T0 + dt.timedelta(minutes=6)
    assert store.pending_approvals() == [ids[1]]


def test_operations_are_read_at_once_by_id(store: Store) -> None:
    """Operations by id, in one read: unknown ids left out, repeated ids read once."""
    made = [
        store.create_operation(
            resource=f"r{i}", provider="nova", resource_id=f"s{i}", requested_by="U1", source="cli"
        )[0]
        for i in range(3)
    ]
    found = store.operations([made[0].id, made[2].id, made[2].id, "nope"])
    assert found == {made[0].id: made[0], made[2].id: made[2]}
    assert store.operations([]) == {}


def test_claim_is_true_once(store: Store) -> None:
    """A claim key is granted once only (Slack retries, repeated clicks)."""
    assert [store.claim("x"), store.claim("x"), store.claim("y")] == [True, False, True]


def test_bot_locks_expire_by_time(store: Store, clock: Clock) -> None:
    """A lock is in force until its expiry, then ignored without any cleanup job."""
    store.set_lock("dev-eu", "U1", T0 + dt.timedelta(hours=1), reason="demo")
    lock = store.get_lock("dev-eu")
    assert lock is not None and (lock.owner, lock.reason) == ("U1", "demo")
    assert [lk.resource for lk in store.active_locks()] == ["dev-eu"]
    clock.now = T0 + dt.timedelta(hours=1)
    assert store.get_lock("dev-eu") is None
    assert store.active_locks() == []


def test_a_lock_in_force_is_its_owners_alone(store: Store, clock: Clock) -> None:
    """Locking a resource someone else holds writes nothing (None, no audit); its owner
    replaces it, and anyone locks it once it has expired."""
    store.set_lock("dev-eu", "U1", T0 + dt.timedelta(hours=1), reason="demo")
    assert store.set_lock("dev-eu", "U2", T0 + dt.timedelta(hours=2)) is None
    renewed = store.set_lock("dev-eu", "U1", T0 + dt.timedelta(hours=3), reason="longer demo")
    assert renewed is not None and renewed.expires_at == T0 + dt.timedelta(hours=3)
    clock.now = T0 + dt.timedelta(hours=3)
    taken = store.set_lock("dev-eu", "U2", T0 + dt.timedelta(hours=4))
    assert taken is not None
    lock = store.get_lock("dev-eu")
    assert lock is not None and (lock.owner, lock.reason) == ("U2", None)
    assert [(e.actor, e.action) for e in store.audit_log()] == [
        ("U1", "lock.set"),
        ("U1", "lock.set"),
        ("U2", "lock.set"),
    ]


def test_delete_lock_is_audited(store: Store) -> None:
    """Removing a lock says so in the audit log, and removing none records nothing."""
    store.set_lock("dev-eu", "U1", T0 + dt.timedelta(hours=1))
    assert store.delete_lock("dev-eu", "U2", forced=True)
    assert not store.delete_lock("dev-eu", "U2")
    assert [(e.actor, e.action, e.detail) for e in store.audit_log()][-1] == (
        "U2",
        "lock.removed",
        {"forced": True},
    )


def test_schedules_round_trip(store: Store) -> None:
    """Schedules are saved, replaced by name, listed and removed."""
    store.save_schedule("nightly", {"cron": "0 20 * * 1-5", "timezone": "Europe/Paris"}, "U1")
    store.save_schedule("nightly", {"cron": "0 21 * * 1-5", "timezone": "Europe/Paris"}, "U1")
    assert store.schedules() == {"nightly": {"cron": "0 21 * * 1-5", "timezone": "Europe/Paris"}}
    assert store.delete_schedule("nightly", "U1")
    assert store.schedules() == {}


FIRE = dt.datetime(2026, 11, 26, 19, 0, tzinfo=dt.UTC)


def test_a_fire_is_skipped_once(store: Store) -> None:
    """Skipping one fire twice records it once, audited once, and names the first skipper."""
    assert store.skip_fire("nightly", FIRE, "U1") is None
    assert store.skip_fire("nightly", FIRE, "U2") == "U1"
    assert store.skips("nightly") == {FIRE: "U1"}
    assert [(e.actor, e.detail) for e in store.audit_log() if e.action == "schedule.skip"] == [
        ("U1", {"name": "nightly", "fire": "2026-11-26T19:00:00+00:00"})
    ]


def test_a_snooze_is_set_once_and_frozen_once_started(store: Store) -> None:
    """The same snooze again changes nothing; another time replaces it; once its run
    started it is not changed; a skip replaces a snooze not started."""
    later = FIRE + dt.timedelta(hours=1)
    assert store.snooze_fire("nightly", FIRE, later, "U1") is True
    assert store.snooze_fire("nightly", FIRE, later, "U2") is False
    assert store.snooze_fire("nightly", FIRE, later + dt.timedelta(hours=1), "U2") is True
    assert store.start_snooze("nightly", FIRE)
    assert not store.start_snooze("nightly", FIRE)
    assert store.snooze_fire("nightly", FIRE, later, "U1") is None
    assert store.snoozes("nightly") == {FIRE: (later + dt.timedelta(hours=1), True)}
    tomorrow = FIRE + dt.timedelta(days=1)
    store.snooze_fire("nightly", tomorrow, tomorrow + dt.timedelta(hours=1), "U1")
    store.skip_fire("nightly", tomorrow, "U1")
    assert list(store.snoozes("nightly")) == [FIRE]


def test_removing_a_schedule_forgets_its_state(store: Store) -> None:
    """A removed schedule leaves no state, skip, snooze or Keep exception behind; its runs
    stay as history."""
    store.save_schedule("nightly", {"cron": "0 20 * * *"}, "U1", source="config")
    store.update_schedule_state("nightly", checked_through=T0)
    store.skip_fire("nightly", FIRE, "U1")
    store.snooze_fire("nightly", FIRE + dt.timedelta(days=1), FIRE + dt.timedelta(days=2), "U1")
    store.add_exception("nightly", "dev-eu", T0 + dt.timedelta(days=1), "U1")
    store.create_run("nightly", T0, kind="cron", status="missed")
    assert store.delete_schedule("nightly", "stopbot.yaml")
    assert store.schedule_state("nightly").checked_through is None
    assert (store.skips("nightly"), store.snoozes("nightly")) == ({}, {})
    assert store.active_exceptions("nightly") == []
    assert [r.status for r in store.runs(schedule="nightly")] == ["missed"]
    assert [(e.actor, e.detail) for e in store.audit_log() if e.action == "schedule.removed"] == [
        ("stopbot.yaml", {"name": "nightly", "source": "config"})
    ]
    assert not store.delete_schedule("nightly", "stopbot.yaml")


def test_health_and_counts_answer_until_the_store_is_closed(store: Store) -> None:
    """health() passes and counts() counts operations by provider and state and runs by
    schedule and status; once closed, both (and any write) raise StoreUnavailableError."""
    for resource, provider, state in [
        ("a", "qovery", OpState.STOPPED),
        ("b", "qovery", OpState.STOPPED),
        ("c", "nova", OpState.IN_PROGRESS),
    ]:
        new_op(store, resource=resource, provider=provider, state=state)
    store.create_run("nightly", FIRE, kind="cron")
    store.create_run("nightly", FIRE + dt.timedelta(days=1), kind="cron", status="missed")
    store.create_run("weekly", FIRE, kind="cron", status="missed")
    store.health()
    counts = store.counts()
    assert counts.operations == {("qovery", "stopped"): 2, ("nova", "in_progress"): 1}
    assert counts.runs == {
        ("nightly", "running"): 1,
        ("nightly", "missed"): 1,
        ("weekly", "missed"): 1,
    }
    store.close()
    for call in (store.health, store.counts, lambda: store.claim("k")):
        with pytest.raises(StoreUnavailableError, match="closed"):
            call()


def test_a_location_no_backend_serves_is_refused_without_its_secret() -> None:
    """A URL whose scheme no backend serves is a StoreLocationError naming the scheme,
    never the rest of the URL (it may carry a password)."""
    for call in (open_store, store_exists):
        with pytest.raises(StoreLocationError, match="no store for mysql:// locations") as err:
            call("mysql://stopbot:s3cret@db.internal/stopbot")
        assert "s3cret" not in str(err.value)


ROOT = Path(__file__).resolve().parent.parent
SQL = re.compile(
    r"^\s*(SELECT\s|INSERT\s.*INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|CREATE\s.*"
    r"(TABLE|INDEX|TRIGGER)\s|PRAGMA\s|BEGIN\s+(IMMEDIATE|DEFERRED|EXCLUSIVE))"
)
DRIVERS = {"sqlite3", "sqlite_utils", "psycopg", "psycopg2", "asyncpg", "sqlalchemy"}


def test_no_sql_outside_the_store() -> None:
    """No module of bot/ but bot/store/ imports a database driver or holds a SQL statement:
    a second backend changes nothing outside bot/store/. (providers/ is not searched:
    Feldera's pipelines are SQL programs.)"""
    found = []
    for path in sorted(ROOT.glob("bot/**/*.py")):
        if path.is_relative_to(ROOT / "bot" / "store"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                modules = []
            if any(m.split(".")[0] in DRIVERS for m in modules):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {modules}")
            if isinstance(node, ast.Constant) and SQL.match(str(node.value)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value[:40]!r}")
    assert found == []


def test_a_wake_s_lease_opens_once_and_moves_by_compare_and_set(store: Store, clock: Clock) -> None:
    """A wake that is up opens its lease once (whoever asks), ending its duration after
    the wake; a lease moves only from the states allowed, warned only once."""
    from bot.models import Action, LeaseState

    op_id = new_op(store, action=Action.START, lease_seconds=7200)
    assert store.open_lease(op_id) is None  # not up yet
    store.transition(op_id, OpState.STARTED, allowed_from=[OpState.REQUESTED], actor="U1")
    assert store.unopened_leases() == [op_id]
    lease = store.open_lease(op_id)
    assert lease is not None and store.open_lease(op_id) == lease
    assert (lease.resource, lease.owner, lease.state) == ("dev-eu", "U1", LeaseState.ACTIVE)
    assert lease.ends_at == T0 + dt.timedelta(hours=2)
    assert store.unopened_leases() == []
    assert store.leases() == [lease]
    warned = store.move_lease(
        op_id,
        LeaseState.ACTIVE,
        allowed_from=[LeaseState.ACTIVE],
        actor="stopbot",
        audit="lease.warned",
        unwarned=True,
        fields={"warned_at": T0},
    )
    assert warned is not None and warned.warned_at == T0
    assert (
        store.move_lease(
            op_id,
            LeaseState.ACTIVE,
            allowed_from=[LeaseState.ACTIVE],
            actor="stopbot",
            audit="lease.warned",
            unwarned=True,
            fields={"warned_at": T0},
        )
        is None
    )
    ending = store.move_lease(
        op_id, LeaseState.ENDING, allowed_from=[LeaseState.ACTIVE], actor="U1", audit="lease.end"
    )
    assert ending is not None
    assert (
        store.move_lease(
            op_id,
            LeaseState.ENDING,
            allowed_from=[LeaseState.ACTIVE],
            actor="U2",
            audit="lease.end",
        )
        is None
    )
    ended = store.move_lease(
        op_id,
        LeaseState.ENDED,
        allowed_from=[LeaseState.ENDING],
        actor="stopbot",
        audit="lease.ended",
        fields={"end_operation_id": "x"},
    )
    assert ended is not None and ended.ended_at == T0 and ended.end_operation_id == "x"
    assert store.leases() == []
    actions = [e.action for e in store.audit_log(resource="dev-eu")]
    assert "wake.requested" in actions and "lease.opened" in actions and "lease.ended" in actions


def test_a_process_taken_for_dead_registers_again_and_its_work_stays_taken(
    opened: Callable[..., Store], clock: Clock
) -> None:
    """A process on another host silent past the lease is dead to the others, which take
    its work and forget it; its next heartbeat registers it again (so what it starts from
    then is a live process's), and the work taken stays with the taker."""
    from bot.processes import ProcessRegistry, Registration

    lease = dt.timedelta(seconds=30)
    far = ProcessRegistry(opened(clock), lease=lease, registration=Registration(host="far"))
    near = ProcessRegistry(opened(clock), lease=lease)
    far.register()
    near.register()
    op_id = new_op(far.store, owner=far.id)
    clock.now += lease + dt.timedelta(seconds=1)
    assert near.dead() == {far.id}
    assert near.take("operations", op_id, far.id)
    near.store.forget_processes(near.dead())
    assert far.id not in {p.id for p in near.store.processes()}

    far.beat()

    assert near.live() == {near.id, far.id}
    assert near.store.get_operation(op_id).owner == near.id  # type: ignore[union-attr]
    far.beat()  # known again: a heartbeat, no second registration
    assert [p.id for p in near.store.processes()].count(far.id) == 1


def test_orphaned_operations_are_those_no_live_process_owns(store: Store) -> None:
    """Owned by a dead process, or by nobody: orphaned; by a live one: not. With nobody
    alive at all, every owner is dead."""
    dead, alive, nobody = (
        new_op(store, owner="dead"),
        new_op(store, owner="alive"),
        new_op(store),
    )
    states = [OpState.REQUESTED]
    assert {op.id for op in store.orphaned_operations(states, ["alive"])} == {dead, nobody}
    assert {op.id for op in store.orphaned_operations(states, [])} == {dead, alive, nobody}


def test_environment_runs_move_by_compare_and_set(store: Store, clock: Clock) -> None:
    """An environment run is recorded, moved only from the state, tier and owner it is
    expected at (a stale owner or tier changes nothing), taken over from a dead owner,
    found by state, and audited."""
    run = EnvironmentRun(
        id="e1",
        environment="staging",
        requested_by="U1",
        reason="night",
        skipped=["web-1"],
        created_at=T0,
        updated_at=T0,
    )
    store.create_environment_run(run)
    assert store.get_environment_run("e1") == run
    running = store.move_environment_run(
        "e1",
        allowed_from=[EnvRunState.AWAITING_CONFIRMATION],
        actor="U1",
        fields={"state": EnvRunState.RUNNING, "owner": "p1"},
    )
    assert running is not None and (running.state, running.owner) == (EnvRunState.RUNNING, "p1")
    again = store.move_environment_run(
        "e1",
        allowed_from=[EnvRunState.AWAITING_CONFIRMATION],
        actor="U1",
        fields={"state": EnvRunState.RUNNING, "owner": "p2"},
    )
    assert again is None
    step = {"allowed_from": [EnvRunState.RUNNING], "actor": "U1", "fields": {"tier": 1}}
    assert store.move_environment_run("e1", tier=0, owner="p2", **step) is None  # type: ignore[arg-type]
    assert store.move_environment_run("e1", tier=1, owner="p1", **step) is None  # type: ignore[arg-type]
    clock.now = T0 + dt.timedelta(minutes=1)
    moved = store.move_environment_run("e1", tier=0, owner="p1", **step)  # type: ignore[arg-type]
    assert moved is not None and (moved.tier, moved.updated_at) == (1, clock.now)
    assert store.take_over("environment_runs", "e1", "p2", "p1")
    assert not store.take_over("environment_runs", "e1", "p3", "p1")
    halted = store.move_environment_run(
        "e1",
        allowed_from=[EnvRunState.RUNNING],
        actor="stopbot",
        tier=1,
        owner="p2",
        fields={"state": EnvRunState.HALTED, "detail": say("{} failed", "spark")},
    )
    assert halted is not None and str(halted.detail) == "spark failed"
    assert halted.skipped == ["web-1"] and halted.reason == "night"
    assert store.environment_runs([EnvRunState.RUNNING]) == []
    assert [r.id for r in store.environment_runs([EnvRunState.HALTED])] == ["e1"]
    assert [e.action for e in store.audit_log(resource="staging")] == [
        "environment.requested",
        "environment.running",
        "environment.running",
        "environment.halted",
    ]


def test_a_runs_items_recorded_at_once_keep_their_order_and_update(store: Store) -> None:
    """record_items records a run's plan in order, as record_item would one by one; an item
    recorded again is updated in place, and its operation kept."""
    run = store.create_run("nightly", T0, kind="cron")
    assert run is not None
    store.record_items(run.id, [("b", None, None), ("a", "opted_out", Text("tagged"))])
    store.record_item(run.id, "b", None, Text("stopping"), "op-b")
    store.record_items(run.id, [("c", None, None), ("b", "stopped", None)])
    items = store.run_items(run.id)
    assert [(i.resource, i.outcome, i.op_id) for i in items] == [
        ("b", "stopped", "op-b"),
        ("a", "opted_out", None),
        ("c", None, None),
    ]
    assert items[1].detail == Text("tagged")


def test_a_runs_tally_counts_every_outcome_and_lists_the_first_of_each(store: Store) -> None:
    """run_tally counts each outcome (None: none yet) in the order first recorded and lists
    at most ``listed`` items of each, in order; run_names reads one outcome's names."""
    run = store.create_run("nightly", T0, kind="cron")
    assert run is not None
    store.record_items(
        run.id,
        [
            ("a", "stopped", None),
            ("b", None, None),
            ("c", "failed", Text("boom")),
            ("d", "stopped", None),
            ("e", None, None),
            ("f", "stopped", None),
            ("g", None, None),
        ],
    )
    counts, listed = store.run_tally(run.id, 2)
    assert counts == {"stopped": 3, None: 3, "failed": 1}
    assert list(counts) == ["stopped", None, "failed"]
    assert [(i.resource, i.outcome) for i in listed] == [
        ("a", "stopped"),
        ("b", None),
        ("c", "failed"),
        ("d", "stopped"),
        ("e", None),
    ]
    assert listed[2].detail == Text("boom")
    assert store.run_names(run.id, "stopped") == ["a", "d", "f"]
    assert store.run_names(run.id, None) == ["b", "e", "g"]
    assert store.run_names(run.id, "missed") == []
    assert store.run_tally("no-such-run", 2) == ({}, [])


def test_requests_received_at_once_say_whether_each_is_new_open_or_done(store: Store) -> None:
    """receive records a burst in one call: each request new, or seen before and open or
    handled; the same request twice in one burst is new once."""
    burst = [("r1", "body 1", "form"), ("r2", "body 2", "form"), ("r1", "body 1", "form")]
    assert store.receive(burst, "P1") == ["new", "new", "open"]
    store.handled("r2")
    assert store.receive([("r3", "3", "form"), ("r2", "2", "form"), ("r1", "1", "form")], "P1") == [
        "new",
        "done",
        "open",
    ]
    assert [r["id"] for r in store.open_requests()] == ["r1", "r3"]


async def test_a_recording_an_ack_awaits_says_the_same(store: Store) -> None:
    """receive_now (what an ack awaits on the event loop) records as receive does."""
    burst = [("r1", "body 1", "form"), ("r2", "body 2", "form"), ("r1", "body 1", "form")]
    assert await store.receive_now(burst, "P1") == ["new", "new", "open"]
    store.handled("r2")
    assert await store.receive_now([("r3", "3", "form"), ("r2", "2", "form")], "P1") == [
        "new",
        "done",
    ]
    assert store.receive([("r1", "1", "form")], "P1") == ["open"]
    assert [(r["id"], r["owner"]) for r in store.open_requests()] == [("r1", "P1"), ("r3", "P1")]


# -- discovery ---------------------------------------------------------------------------


def test_discovery_snapshot_replaced_whole_and_shared(
    opened: Callable[..., Store], clock: Clock
) -> None:
    """Each account's snapshot is replaced whole, stamped with the store's now, and read
    by another process on the same store; other accounts' snapshots are left alone."""
    first, second = opened(clock), opened(clock)
    assert first.discovered() == {}
    first.save_discovered("nova", [{"id": "a", "name": "web", "tags": {"env": "dev"}}])
    first.save_discovered("qovery", [{"id": "c", "name": "dev-eu"}])
    clock.now = T0 + dt.timedelta(minutes=10)
    first.save_discovered("nova", [{"id": "b", "name": "api"}, {"id": "a", "name": "web"}])
    assert second.discovered() == {
        "nova": (
            T0 + dt.timedelta(minutes=10),
            [{"id": "b", "name": "api"}, {"id": "a", "name": "web"}],
        ),
        "qovery": (T0, [{"id": "c", "name": "dev-eu"}]),
    }
    assert second.discovered_at() == {"nova": T0 + dt.timedelta(minutes=10), "qovery": T0}
    first.save_discovered("nova", [])
    assert second.discovered()["nova"][1] == []


# -- costs -------------------------------------------------------------------------------


def test_costs_kept_replaced_and_shared(opened: Callable[..., Store], clock: Clock) -> None:
    """A resource's cost is replaced by the next answer, stamped with the store's now, and
    read by another process on the same store; names without one are left out."""
    first, second = opened(clock), opened(clock)
    assert first.costs(["dev-eu"]) == {}
    cheap = {"low": 1.0, "high": 2.0, "currency": "USD", "hours": 730.0, "source": "s"}
    first.save_costs([("dev-eu", cheap), ("prod-us", cheap)])
    clock.now = T0 + dt.timedelta(hours=7)
    dear = {**cheap, "high": 9.5}
    first.save_costs([("dev-eu", dear)])
    first.save_costs([])
    assert second.costs(["dev-eu", "prod-us", "gone", "dev-eu"]) == {
        "dev-eu": (T0 + dt.timedelta(hours=7), dear),
        "prod-us": (T0, cheap),
    }
    many = [f"r{i}" for i in range(1200)]
    first.save_costs([(name, cheap) for name in many])
    assert len(second.costs(many)) == 1200


def test_sqlite_closing_waits_for_another_threads_transaction(tmp_path: Path) -> None:
    """Closing while another thread is inside a transaction (a bot's loop on its own
    thread, a test closing its store under it) waits for that transaction to commit,
    then closes: the connection is never closed under a running statement (sqlite3 then
    crashed the interpreter), and the next call finds the store closed."""
    store = open_store(str(tmp_path / "stopbot.db"))
    inside, release, closed = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:
        with store.batch():  # one transaction, open until released
            store.audit("U1", "kept")
            inside.set()
            release.wait(30)

    def closer() -> None:
        store.close()
        closed.set()

    writing = threading.Thread(target=writer)
    writing.start()
    assert inside.wait(30)
    closing = threading.Thread(target=closer)
    closing.start()
    assert not closed.wait(0.2)  # waits for the writer's transaction
    release.set()
    writing.join(30)
    closing.join(30)
    assert closed.is_set()
    with pytest.raises(StoreUnavailableError):
        store.audit("U1", "after")
    reopened = open_store(str(tmp_path / "stopbot.db"))
    try:
        assert [entry.action for entry in reopened.audit_log()] == ["kept"]
    finally:
        reopened.close()
