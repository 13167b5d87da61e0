"""The SQLite backend's own: its schema and migrations, WAL, the audit log's triggers,
transactions, and sqlite3's errors turned into the store's (the contract every backend
keeps is tested in tests/test_store.py)."""

from __future__ import annotations

import datetime as dt
import gc
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.models import OpState
from bot.store import StoreError, StoreLocationError, StoreSchemaError, StoreUnavailableError
from bot.store.sqlite import _RUN_TALLY, SCHEMA_VERSION, SQLiteStore
from tests.test_store import FIRE, new_op


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "stopbot.db")
    yield store
    store.close()


def test_fresh_database_is_at_current_schema_in_wal_mode(tmp_path: Path) -> None:
    """A new file gets every table, the current schema version and WAL journaling; opened
    again, it is not migrated twice."""
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
    store.close()
    assert SQLiteStore(tmp_path / "a.db").schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    """A database from a newer stopbot is refused, naming both versions."""
    SQLiteStore(tmp_path / "a.db").close()
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(
        StoreSchemaError,
        match=f"schema version 99, newer than this stopbot knows \\({SCHEMA_VERSION}\\)",
    ):
        SQLiteStore(tmp_path / "a.db")


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    """A file that is not SQLite gives a StoreLocationError naming it, not a raw sqlite3
    error."""
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreLocationError, match=r"cannot open the database .*junk\.db"):
        SQLiteStore(path)


def test_audit_log_is_append_only(store: SQLiteStore) -> None:
    """Updating or deleting audit rows is refused by the database itself."""
    store.audit("U1", "test.event", detail={"x": 1})
    for sql in ("UPDATE audit SET actor = 'evil'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.db.execute(sql)
    assert [e.actor for e in store.audit_log()] == ["U1"]


def test_failed_transaction_writes_nothing(store: SQLiteStore) -> None:
    """An error inside a transaction rolls back every write of it."""
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute("INSERT INTO claims (key, claimed_at) VALUES ('k', 'now')")
        raise RuntimeError("boom")
    assert store.claim("k")


def migrated_from(db: Path, undo: Callable[[sqlite3.Connection], None]) -> SQLiteStore:
    """The store at ``db``, taken back to an older schema by ``undo``, then opened again:
    migrated to the current one."""
    conn = sqlite3.connect(db)
    undo(conn)
    conn.commit()
    conn.close()
    store = SQLiteStore(db)
    assert store.schema_version() == SCHEMA_VERSION
    return store


def undo_migration_13(conn: sqlite3.Connection) -> None:
    conn.execute("DROP INDEX schedule_items_outcome")
    conn.execute("UPDATE schema_version SET version = 12")


def undo_migration_12(conn: sqlite3.Connection) -> None:
    undo_migration_13(conn)
    conn.execute("DROP TABLE costs")
    conn.execute("UPDATE schema_version SET version = 11")


def undo_migration_11(conn: sqlite3.Connection) -> None:
    undo_migration_12(conn)
    conn.execute("DROP TABLE discovered")
    conn.execute("UPDATE schema_version SET version = 10")


def undo_migration_10(conn: sqlite3.Connection) -> None:
    undo_migration_11(conn)
    conn.execute("DROP TABLE environment_runs")
    conn.execute("UPDATE schema_version SET version = 9")


def undo_migration_9(conn: sqlite3.Connection) -> None:
    undo_migration_10(conn)
    conn.execute("DROP TABLE in_use_questions")
    conn.execute("UPDATE schema_version SET version = 8")


def undo_migration_8(conn: sqlite3.Connection) -> None:
    undo_migration_9(conn)
    conn.execute("DROP INDEX audit_action")
    conn.execute("UPDATE schema_version SET version = 7")


def undo_migration_7(conn: sqlite3.Connection) -> None:
    undo_migration_8(conn)
    conn.execute("DROP TABLE leases")
    for column in ("action", "lease_seconds"):
        conn.execute(f"ALTER TABLE operations DROP COLUMN {column}")
    conn.execute("UPDATE schema_version SET version = 6")


def undo_migration_6(conn: sqlite3.Connection) -> None:
    undo_migration_7(conn)
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


def test_migration_9_adds_the_in_use_questions(tmp_path: Path) -> None:
    """A database of schema 8 can ask and answer 'is anyone using it?' once migrated."""
    SQLiteStore(tmp_path / "a.db").close()
    store = migrated_from(tmp_path / "a.db", undo_migration_9)
    fire = dt.datetime(2026, 12, 4, 19, tzinfo=dt.UTC)
    store.ask_in_use("nightly", fire, "dev-eu", [{"kind": "ingesting"}])
    assert [q.resource for q in store.in_use_questions("nightly", fire)] == ["dev-eu"]


def test_migration_7_keeps_old_operations_as_stops(tmp_path: Path) -> None:
    """A database of schema 6: its operations are stops, and leases can be kept."""
    store = SQLiteStore(tmp_path / "a.db")
    first = new_op(store)
    store.close()
    store = migrated_from(tmp_path / "a.db", undo_migration_7)
    op = store.get_operation(first)
    assert op is not None and op.action == "stop" and op.lease_seconds is None
    assert store.leases() == [] and store.unopened_leases() == []


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


def test_a_database_busy_past_the_wait_is_unavailable(store: SQLiteStore) -> None:
    """A write that cannot get SQLite's lock within the busy timeout (another process holds
    it) is a StoreUnavailableError, not sqlite3's; once the lock is free the same write
    goes through."""
    store.db.execute("PRAGMA busy_timeout = 0")  # the test does not wait out 5 s
    other = sqlite3.connect(store.location, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailableError, match="database is locked"):
        store.claim("k")
    other.execute("COMMIT")
    other.close()
    assert store.claim("k")


def test_a_write_the_database_refuses_is_a_store_error(store: SQLiteStore) -> None:
    """A write SQLite refuses (a bug: a required column set to nothing) is a plain
    StoreError with SQLite's words, and changes nothing."""
    op_id = new_op(store)
    with pytest.raises(
        StoreError, match=r"NOT NULL constraint failed: operations\.resource"
    ) as err:
        store.update_operation(op_id, resource=None, channel="C1")
    assert type(err.value) is StoreError
    op = store.get_operation(op_id)
    assert op is not None and (op.resource, op.channel) == ("dev-eu", None)


def test_migration_11_adds_the_discovery_snapshots(tmp_path: Path) -> None:
    """A database of schema 10 gets the table of discovery snapshots, empty."""
    SQLiteStore(tmp_path / "a.db").close()
    store = migrated_from(tmp_path / "a.db", undo_migration_11)
    assert store.discovered() == {}
    store.save_discovered("nova", [{"id": "a"}])
    assert store.discovered()["nova"][1] == [{"id": "a"}]
    store.close()


def test_migration_12_adds_the_kept_costs(tmp_path: Path) -> None:
    """A database of schema 11 gets the table of kept costs, empty."""
    SQLiteStore(tmp_path / "a.db").close()
    store = migrated_from(tmp_path / "a.db", undo_migration_12)
    assert store.costs(["dev-eu"]) == {}
    store.save_costs([("dev-eu", {"low": 1})])
    assert store.costs(["dev-eu"])["dev-eu"][1] == {"low": 1}
    store.close()


def test_migration_8_indexes_the_audit_by_action(tmp_path: Path) -> None:
    """A database of schema 7 gets the audit's index by action and time, which the
    savings' reads use."""
    SQLiteStore(tmp_path / "a.db").close()
    store = migrated_from(tmp_path / "a.db", undo_migration_8)
    plan = store.tuples(
        "EXPLAIN QUERY PLAN SELECT id FROM audit WHERE action IN ('stop.stopped') AND at >= ?",
        ["2026-01-01"],
    )
    assert any("audit_action" in str(row) for row in plan), plan


def test_migration_13_reads_a_runs_summary_from_an_index(tmp_path: Path) -> None:
    """A database of schema 12 gets the run items' index by outcome: a run's summary reads
    each outcome's count and first items from it, and sorts only the items it lists."""
    SQLiteStore(tmp_path / "a.db").close()
    store = migrated_from(tmp_path / "a.db", undo_migration_13)
    assert store.run_tally("R1", 5) == ({}, [])
    plan = str(store.tuples(f"EXPLAIN QUERY PLAN {_RUN_TALLY}", ["R1", 5]))
    assert plan.count("COVERING INDEX schedule_items_outcome") == 2, plan
    assert "SCAN schedule_items" not in plan, plan
    store.close()


# -- checkpoints on a thread of their own (bot/store/sqlite_checkpoints.py) -----------------


def _rows_in_the_file_alone(db: Path) -> int:
    """The test rows the database file holds by itself, without its log (read in a copy)."""
    copy = db.with_name("alone.db")
    shutil.copyfile(db, copy)
    conn = sqlite3.connect(copy)
    try:
        return int(
            conn.execute("SELECT COUNT(*) FROM audit WHERE action = 'test.row'").fetchone()[0]
        )
    finally:
        conn.close()
        copy.unlink()


def test_checkpoints_run_on_their_thread_not_in_the_commits(tmp_path: Path) -> None:
    """No commit runs a checkpoint (SQLite's own are off): the store's thread copies the
    log back into the database file moments after the commits."""
    db = tmp_path / "stopbot.db"
    store = SQLiteStore(db)
    checkpoints = store._checkpoints
    assert checkpoints is not None
    assert store.tuples("PRAGMA wal_autocheckpoint") == [(0,)]
    for n in range(200):
        store.audit("U1", "test.row", detail={"n": n, "pad": "x" * 500})
    for _ in range(20):  # the one running when the last commit came may have missed it
        assert checkpoints.wait_for(checkpoints.done + 1, timeout=10)
        if _rows_in_the_file_alone(db) == 200:
            break
    else:
        pytest.fail("the log was never copied back into the database file")
    pages, copied = checkpoints.last
    assert pages == copied > 0
    store.close()


def test_closing_the_store_stops_its_checkpoints_and_removes_the_log(tmp_path: Path) -> None:
    """The checkpoint thread's connection closes first: the store's, closing last,
    checkpoints what is left and removes the log."""
    db = tmp_path / "stopbot.db"
    store = SQLiteStore(db)
    store.audit("U1", "test.row")
    assert store._checkpoints is not None
    thread = store._checkpoints._thread
    store.close()
    assert not thread.is_alive()
    assert not db.with_name("stopbot.db-wal").exists()
    assert _rows_in_the_file_alone(db) == 1


def test_a_store_dropped_unclosed_stops_its_checkpoint_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "stopbot.db")
    assert store._checkpoints is not None
    thread = store._checkpoints._thread
    del store
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


WRITER = """
import sys
from bot.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
n = 0
while True:
    with store.batch():
        for _ in range(5):
            store.audit("U1", "test.row", detail={"n": n, "pad": "x" * 2000})
            n += 1
    print(n, store._checkpoints.done, flush=True)
"""


def test_a_writer_killed_while_its_thread_checkpoints_loses_no_commit(tmp_path: Path) -> None:
    """SIGKILL at a random moment among commits and checkpoints, three times: every row
    committed (printed after its commit) is there when the file is opened again, whole."""
    db = tmp_path / "stopbot.db"
    chance = random.Random(7)
    root = Path(__file__).resolve().parent.parent
    for _ in range(3):
        writer = subprocess.Popen(  # noqa: S603 -- our own interpreter and script
            [sys.executable, "-c", WRITER, str(db)],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        wanted = chance.randint(2, 6)
        committed = 0
        for line in writer.stdout:
            committed, checkpoints = (int(word) for word in line.split())
            if checkpoints >= wanted:
                break
        writer.kill()
        writer.wait(10)
        writer.stdout.close()
        assert committed > 0
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            found = conn.execute("SELECT COUNT(*) FROM audit WHERE action = 'test.row'").fetchone()[
                0
            ]
        finally:
            conn.close()
        assert found >= committed
        db.unlink()
        for leftover in (db.with_name("stopbot.db-wal"), db.with_name("stopbot.db-shm")):
            leftover.unlink(missing_ok=True)


def test_without_its_thread_the_store_keeps_sqlites_own_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def cannot(location: str) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr("bot.store.sqlite.Checkpoints", cannot)
    store = SQLiteStore(tmp_path / "stopbot.db")
    assert store.tuples("PRAGMA wal_autocheckpoint") == [(1000,)]
    assert "SQLite checkpoints stay in the commits: can't start new thread" in caplog.text
    store.audit("U1", "test.row")
    store.close()
