"""The SQLite store: schema, migrations, compare-and-set transitions, audit, locks, claims."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from pathlib import Path

import pytest

from bot.models import OpState
from bot.store import Store, StoreError
from bot.store.sqlite import SCHEMA_VERSION, SQLiteStore
from bot.text import Text

T0 = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Store:
    return SQLiteStore(tmp_path / "stopbot.db", clock=clock)


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


def test_fresh_database_is_at_current_schema_in_wal_mode(tmp_path: Path) -> None:
    """A new file gets every table, the current schema version and WAL journaling."""
    store = SQLiteStore(tmp_path / "a.db")
    assert store.schema_version() == SCHEMA_VERSION
    assert {
        "operations",
        "transitions",
        "audit",
        "bot_locks",
        "approvals",
        "schedules",
        "claims",
        "schema_version",
    } <= set(store.db.table_names())
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    """Opening an existing database keeps its rows and its schema version."""
    first = SQLiteStore(tmp_path / "a.db")
    op_id = new_op(first)
    first.close()
    second = SQLiteStore(tmp_path / "a.db")
    assert second.schema_version() == SCHEMA_VERSION
    op = second.get_operation(op_id)
    assert op is not None and op.resource == "dev-eu"


def test_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    """A database from a newer stopbot is refused, naming both versions."""
    SQLiteStore(tmp_path / "a.db").close()
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(
        StoreError, match=f"schema version 99, newer than this stopbot knows \\({SCHEMA_VERSION}\\)"
    ):
        SQLiteStore(tmp_path / "a.db")


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    """A file that is not SQLite gives a StoreError naming it, not a raw sqlite3 error."""
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"junk\.db"):
        SQLiteStore(path)


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


def test_concurrent_transitions_exactly_one_wins(tmp_path: Path) -> None:
    """Two connections racing to confirm the same operation: exactly one succeeds."""
    path = tmp_path / "race.db"
    op_id = new_op(SQLiteStore(path), state=OpState.AWAITING_CONFIRMATION)
    stores = [SQLiteStore(path) for _ in range(8)]
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


def test_audit_log_is_append_only(store: Store) -> None:
    """Updating or deleting audit rows is refused by the database itself."""
    store.audit("U1", "test.event", detail={"x": 1})
    for sql in ("UPDATE audit SET actor = 'evil'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.db.execute(sql)
    assert [e.actor for e in store.audit_log()] == ["U1"]


def test_audit_log_filters_and_limit(store: Store, clock: Clock) -> None:
    """The audit log filters by resource and time and keeps the last N in order."""
    for i in range(5):
        clock.now = T0 + dt.timedelta(minutes=i)
        store.audit("U1", f"e{i}", resource="a" if i % 2 else "b")
    assert [e.action for e in store.audit_log(resource="a")] == ["e1", "e3"]
    assert [e.action for e in store.audit_log(since=T0 + dt.timedelta(minutes=3))] == ["e3", "e4"]
    assert [e.action for e in store.audit_log(limit=2)] == ["e3", "e4"]


def test_failed_transaction_writes_nothing(store: Store) -> None:
    """An error inside a transaction rolls back every write of it."""
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute("INSERT INTO claims (key, claimed_at) VALUES ('k', 'now')")
        raise RuntimeError("boom")
    assert store.claim("k")


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


def undo_migration_6(conn: sqlite3.Connection) -> None:
    for index in ("one_stop_in_flight", "operations_owner"):
        conn.execute(f"DROP INDEX {index}")
    for table in ("processes", "outbox", "inbox"):
        conn.execute(f"DROP TABLE {table}")
    for column in ("owner", "send_claimed_at", "joined", "notify", "shown_in", "sends"):
        conn.execute(f"ALTER TABLE operations DROP COLUMN {column}")
    for column in ("owner", "announced_at"):
        conn.execute(f"ALTER TABLE schedule_runs DROP COLUMN {column}")
    conn.execute("UPDATE schema_version SET version = 5")


def test_migration_6_judges_old_submitting_stops_and_joins_doubles(tmp_path: Path) -> None:
    """A database of schema 5: a stop it left submitting may have been sent (never sent
    again: its claim is taken), and two stops of one resource in flight become one
    followed by the other; skipped and missed runs count as announced."""
    store = SQLiteStore(tmp_path / "a.db")
    first = new_op(store, state=OpState.SUBMITTING)
    store.close()
    conn = sqlite3.connect(tmp_path / "a.db")
    undo_migration_6(conn)
    conn.execute(
        "INSERT INTO operations (id, resource, provider, resource_id, requested_by, source, "
        "state, created_at, updated_at) VALUES ('second', 'dev-eu', 'qovery', 'c1', 'U2', "
        "'slack', 'in_progress', '2099-01-01T00:00:00+00:00', '2099-01-01T00:00:00+00:00')"
    )
    conn.execute(
        "INSERT INTO schedule_runs (id, schedule, fire_time, kind, status, started_at, "
        "finished_at) VALUES ('r1', 'nightly', '2026-11-26T19:00:00+00:00', 'cron', 'missed', "
        "'2026-11-26T20:00:00+00:00', '2026-11-26T20:00:00+00:00')"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path / "a.db")
    assert store.schema_version() == SCHEMA_VERSION
    op = store.get_operation(first)
    assert op is not None and op.send_claimed_at == op.updated_at and op.joined is None
    second = store.get_operation("second")
    assert second is not None and second.joined == first and second.send_claimed_at is None
    assert store.unannounced_runs() == []


def test_migration_moves_a_pending_skip_and_snooze(tmp_path: Path) -> None:
    """A database of schema 3 keeps its pending skip and snooze, now kept per fire."""
    SQLiteStore(tmp_path / "a.db").close()
    conn = sqlite3.connect(tmp_path / "a.db")
    undo_migration_6(conn)
    conn.execute("DROP TABLE schedule_skips")
    conn.execute("DROP TABLE schedule_snoozes")
    conn.execute("ALTER TABLE schedule_runs DROP COLUMN started_by")  # migration 5's
    conn.execute("UPDATE schema_version SET version = 3")
    conn.execute(
        "INSERT INTO schedule_state (name, skip_fire, skip_by, snooze_fire, snooze_until) "
        "VALUES ('nightly', '2026-11-26T19:00:00+00:00', 'U1', '2026-11-27T19:00:00+00:00', "
        "'2026-11-27T20:00:00+00:00')"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path / "a.db")
    assert store.schema_version() == SCHEMA_VERSION
    assert store.skips("nightly") == {FIRE: "U1"}
    assert store.snoozes("nightly") == {
        FIRE + dt.timedelta(days=1): (FIRE + dt.timedelta(days=1, hours=1), False)
    }
    assert store.tuples(
        "SELECT skip_fire, skip_by, snooze_fire, snooze_until FROM schedule_state"
    ) == [(None, None, None, None)]
