"""The PostgreSQL backend's own: its schema and migrations (once, whoever starts first), the
audit log's triggers, compare-and-sets raced by two stores, sessions that cannot hold the
write lock forever, a server that goes away and comes back, the password kept out of every
message and log line, and the database's clock (the contract every backend keeps is tested
in tests/test_store.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import time_machine

from bot.models import OpState
from bot.store import StoreError, StoreLocationError, StoreSchemaError, StoreUnavailableError
from bot.store import postgres as pg_module
from bot.store.postgres import PostgresLocation, PostgresStore, _schema_key
from bot.store.postgres_loop import LoopConnection
from bot.store.postgres_schema import MIGRATE_LOCK, MIGRATIONS, SCHEMA_VERSION
from bot.store.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from tests.pg import PostgresServer
from tests.test_store import T0, Clock, new_op

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "pa55-w0rd-never-shown"
Result = TypeVar("Result")


@pytest.fixture
def opened(pg_location: str) -> Iterator[Callable[..., PostgresStore]]:
    """Open stores on this test's schema (processes side by side), closed after the test."""
    stores: list[PostgresStore] = []

    def open_one(**kw: Any) -> PostgresStore:
        stores.append(PostgresStore(pg_location, clock=kw.pop("clock", Clock()), **kw))
        return stores[-1]

    yield open_one
    for store in stores:
        store.close()


@pytest.fixture
def store(opened: Callable[..., PostgresStore]) -> PostgresStore:
    return opened()


def raw(server: PostgresServer, schema: str) -> psycopg.Connection[Any]:
    """A connection of the test's own, outside any store, in ``schema``."""
    return psycopg.connect(
        server.url, autocommit=True, options=f"-c search_path={schema} -c TimeZone=UTC"
    )


def test_versions_are_sqlites() -> None:
    """The PostgreSQL schema's versions are SQLite's: its latest migration reaches
    SQLite's SCHEMA_VERSION."""
    assert MIGRATIONS[-1][0] == SCHEMA_VERSION == SQLITE_SCHEMA_VERSION


def test_fresh_schema_is_created_at_the_current_version(
    store: PostgresStore, postgres_server: PostgresServer, pg_schema: str
) -> None:
    """A store on a schema that does not exist creates it, with every table, at the current
    version; opened again, it is not migrated again."""
    assert store.schema_version() == SCHEMA_VERSION
    assert store.schema == pg_schema
    with raw(postgres_server, pg_schema) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                [pg_schema],
            )
        }
    assert {
        "operations",
        "transitions",
        "audit",
        "bot_locks",
        "approvals",
        "schedules",
        "claims",
        "schedule_runs",
        "outbox",
        "inbox",
        "processes",
        "schema_version",
    } <= tables
    again = PostgresStore(store.url.shown, clock=Clock())
    assert again.tuples("SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    again.close()


def test_newer_schema_is_refused_with_advice(
    store: PostgresStore, postgres_server: PostgresServer, pg_schema: str, pg_location: str
) -> None:
    """A schema written by a newer stopbot is refused, naming both versions."""
    with raw(postgres_server, pg_schema) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(
        StoreSchemaError,
        match=f"schema version 99, newer than this stopbot knows \\({SCHEMA_VERSION}\\)",
    ):
        PostgresStore(pg_location)


def test_audit_log_is_append_only(
    store: PostgresStore, postgres_server: PostgresServer, pg_schema: str
) -> None:
    """Updating, deleting or truncating audit rows is refused by the database itself."""
    store.audit("U1", "test.event", detail={"x": 1})
    with raw(postgres_server, pg_schema) as conn:
        for statement in ("UPDATE audit SET actor = 'evil'", "DELETE FROM audit", "TRUNCATE audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
    assert [e.actor for e in store.audit_log()] == ["U1"]


def test_failed_transaction_writes_nothing(store: PostgresStore) -> None:
    """An error inside a transaction rolls back every write of it, and lets go of the
    write lock (the next write goes through)."""
    with pytest.raises(RuntimeError), store.transaction() as conn:
        conn.execute("INSERT INTO claims (key, claimed_at) VALUES ('k', now())")
        raise RuntimeError("boom")
    assert store.claim("k")


def test_a_write_the_database_refuses_is_a_store_error(store: PostgresStore) -> None:
    """A write PostgreSQL refuses (a bug: a required column set to nothing) is a plain
    StoreError with PostgreSQL's words, and changes nothing."""
    op_id = new_op(store)
    with pytest.raises(StoreError, match=r'null value in column "resource"') as err:
        store.update_operation(op_id, resource=None, channel="C1")
    assert type(err.value) is StoreError
    op = store.get_operation(op_id)
    assert op is not None and (op.resource, op.channel) == ("dev-eu", None)


MIGRATE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from bot.store import open_store
store = open_store(sys.argv[1])
print(store.schema_version())
store.close()
"""


def test_three_processes_starting_together_migrate_once(
    postgres_server: PostgresServer, pg_schema: str, pg_location: str
) -> None:
    """Three processes opening one new schema at once (all waiting on the migration lock,
    then let go together): one migrates, the other two wait and find it done."""
    with raw(postgres_server, "public") as gate:
        gate.execute("SELECT pg_advisory_lock(%s, %s)", [MIGRATE_LOCK, _schema_key(pg_schema)])
        processes = [
            subprocess.Popen(  # noqa: S603 -- our own interpreter and code
                [sys.executable, "-c", MIGRATE, pg_location],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        deadline = time.monotonic() + 30
        while True:
            waiting = gate.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND classid = %s",
                [MIGRATE_LOCK & 0xFFFFFFFF],
            ).fetchone()
            if waiting and waiting[0] == 3:
                break
            assert time.monotonic() < deadline, "the processes never reached the migration"
            assert all(p.poll() is None for p in processes), "a process ended before migrating"
            time.sleep(0.05)  # the processes start in their own time: poll the server
        gate.execute("SELECT pg_advisory_unlock(%s, %s)", [MIGRATE_LOCK, _schema_key(pg_schema)])
    outputs = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(SCHEMA_VERSION)] * 3
    migrated = [err for _, err in outputs if "schema migrated from version 0" in err]
    assert len(migrated) == 1, outputs
    with raw(postgres_server, pg_schema) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def race(first: Callable[[], Result], second: Callable[[], Result]) -> tuple[Result, Result]:
    """Run two calls at the same instant on two threads; their results."""
    barrier = threading.Barrier(2)
    results: list[Any] = [None, None]

    def run(i: int, call: Callable[[], Result]) -> None:
        barrier.wait()
        results[i] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results[0], results[1]


ROUNDS = 200
CONFIRMING = [OpState.AWAITING_CONFIRMATION]


def test_two_stores_racing_claim_send_have_one_winner(
    opened: Callable[..., PostgresStore],
) -> None:
    """Two stores (two replicas) claiming the same stop at the same instant, 200 times:
    exactly one wins each time, and the stop counts one send."""
    a, b = opened(), opened()
    for i in range(ROUNDS):
        op_id = new_op(a, resource=f"r{i}", state=OpState.SUBMITTING)
        won = race(partial(a.claim_send, op_id, "A"), partial(b.claim_send, op_id, "B"))
        assert sum(w is not None for w in won) == 1
        op = a.get_operation(op_id)
        assert op is not None and op.sends == 1


def test_two_approvers_racing_always_reach_two_of_two(
    opened: Callable[..., PostgresStore],
) -> None:
    """Two approvers voting at the same instant on a 2-of-2 approval, 200 times: one of
    them always sees two approvals (never both one), and a decision racing a decision
    has one winner."""
    a, b = opened(), opened()
    for i in range(ROUNDS):
        op_id = new_op(a, resource=f"r{i}", state=OpState.AWAITING_CONFIRMATION)
        a.await_approval(op_id, "U1", expires_at=T0 + dt.timedelta(hours=1), min_approvals=2)
        counts = race(
            partial(a.vote, op_id, "U2", "approve"), partial(b.vote, op_id, "U3", "approve")
        )
        assert sorted(c or 0 for c in counts) == [1, 2]
        decided = race(
            partial(
                a.decide_approval,
                op_id,
                "approved",
                decided_by="U2",
                to=OpState.SUBMITTING,
                detail=None,
            ),
            partial(
                b.decide_approval,
                op_id,
                "approved",
                decided_by="U3",
                to=OpState.SUBMITTING,
                detail=None,
            ),
        )
        assert sum(d is not None for d in decided) == 1


def test_two_users_locking_at_once_one_holds_it(opened: Callable[..., PostgresStore]) -> None:
    """Two users locking one resource at the same instant, 200 times: exactly one gets the
    lock, and it is that one's."""
    a, b = opened(), opened()
    for i in range(ROUNDS):
        until = T0 + dt.timedelta(hours=1)
        got = race(
            partial(a.set_lock, f"r{i}", "U1", until), partial(b.set_lock, f"r{i}", "U2", until)
        )
        winners = [lock.owner for lock in got if lock is not None]
        assert len(winners) == 1
        held = a.get_lock(f"r{i}")
        assert held is not None and held.owner == winners[0]


def test_two_submissions_of_one_resource_send_one_stop(
    opened: Callable[..., PostgresStore],
) -> None:
    """Two stops of one resource confirmed at the same instant on two stores, 200 times:
    one is in flight, the other joins it (never two in flight, never an error)."""
    a, b = opened(), opened()
    for i in range(ROUNDS):
        first = new_op(a, resource=f"r{i}", state=OpState.AWAITING_CONFIRMATION)
        second = new_op(b, resource=f"r{i}", state=OpState.AWAITING_CONFIRMATION)
        moved = race(
            partial(a.transition, first, OpState.SUBMITTING, allowed_from=CONFIRMING, actor="U1"),
            partial(b.transition, second, OpState.SUBMITTING, allowed_from=CONFIRMING, actor="U2"),
        )
        assert all(op is not None for op in moved)
        assert sorted(op.joined is None for op in moved if op is not None) == [False, True]


def test_a_session_idle_in_a_transaction_loses_the_write_lock(
    store: PostgresStore, pg_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica paused in a write transaction (holding the write lock) is ended by the
    server after idle_in_transaction_session_timeout, and the other replicas write again."""
    monkeypatch.setitem(pg_module.SESSION_SETTINGS, "idle_in_transaction_session_timeout", "1s")
    paused = psycopg.connect(**PostgresLocation.parse(pg_location).connection_kwargs())
    paused.execute(store._begin)
    started = time.monotonic()
    assert store.claim("after the pause")
    assert 0.5 < time.monotonic() - started < 10
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
        paused.execute("SELECT 1")
    paused.close()


def test_a_heartbeat_and_a_recording_wait_for_no_writer(
    store: PostgresStore, pg_location: str
) -> None:
    """With another session holding the store's write lock (a run's batch, a replica
    paused mid-write), a heartbeat and an ack's recording go through at once: neither is
    queued behind the writers (the heartbeat shares the urgent lane with the acks)."""
    from bot.processes import Registration

    me = Registration()
    store.register_process(me)
    writer = psycopg.connect(**PostgresLocation.parse(pg_location).connection_kwargs())
    try:
        writer.execute(store._begin)
        started = time.monotonic()
        assert store.heartbeat(me.id)
        assert store.receive([("r1", "body", "text/plain")], me.id) == ["new"]
        assert time.monotonic() - started < 2.0  # (the lock is held until the rollback)
        assert not store.heartbeat("nobody")
    finally:
        writer.rollback()
        writer.close()


async def test_an_acks_recording_waits_for_no_thread_of_the_store(store: PostgresStore) -> None:
    """An ack's recording runs on the event loop's own connection: with every thread of
    the store's lanes busy (a run's writes), it goes through at once."""
    release = threading.Event()
    busy = [store.submit(release.wait, urgent=True)]
    busy += [store.submit(release.wait) for _ in range(3)]
    try:
        recorded = store.receive_now([("r1", "body", "text/plain")], "P1")
        assert await asyncio.wait_for(recorded, 5.0) == ["new"]
        assert not any(future.done() for future in busy)
    finally:
        release.set()
        await asyncio.gather(*busy)
    assert [r["id"] for r in store.open_requests()] == ["r1"]


async def test_the_loops_connection_is_dropped_when_a_call_on_it_is_cut(
    store: PostgresStore,
) -> None:
    """A call past the timeout is the store's unavailability, and the next call opens a
    new connection; a statement the server refuses leaves it as it was."""
    connection = LoopConnection(store.url.connection_kwargs(), timeout=0.3)

    async def pid(conn: psycopg.AsyncConnection[Any]) -> int:
        row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        return int(row[0])

    async def sleep(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SELECT pg_sleep(5)")

    async def refused(conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SELECT 1/0")

    try:
        first = await connection.run(pid)
        with pytest.raises(psycopg.errors.DivisionByZero):
            await connection.run(refused)
        assert await connection.run(pid) == first
        with pytest.raises(psycopg.OperationalError, match=r"no answer within 0\.3 s"):
            await connection.run(sleep)
        assert await connection.run(pid) != first
    finally:
        connection.close()


def test_sessions_name_stopbot_and_time_out_idle_transactions(store: PostgresStore) -> None:
    """Every session says it is stopbot's, in UTC, and is ended when idle in a transaction
    for 10 s."""
    assert store.tuples(
        "SELECT current_setting('application_name'), "
        "current_setting('idle_in_transaction_session_timeout'), current_setting('TimeZone')"
    ) == [("stopbot", "10s", "UTC")]


def test_a_schema_from_the_search_path(postgres_server: PostgresServer, pg_schema: str) -> None:
    """Without ``schema=``, the store lives in the first schema of the URL's search path,
    created if missing."""
    url = f"{postgres_server.url}{'&' if '?' in postgres_server.url else '?'}"
    url += f"options=-csearch_path%3D{pg_schema}"
    assert not PostgresStore.exists(url)
    store = PostgresStore(url, clock=Clock())
    store.claim("k")
    store.close()
    assert PostgresStore.exists(url)
    with raw(postgres_server, pg_schema) as conn:
        assert conn.execute("SELECT key FROM claims").fetchall() == [("k",)]


def test_a_stopped_server_is_unavailable_then_found_again(
    postgres_server: PostgresServer, pg_location: str
) -> None:
    """The server stopped: health() and writes raise StoreUnavailableError (not psycopg's
    error); started again, the same store object works again by itself."""
    if not postgres_server.ours:
        pytest.skip("STOPBOT_TEST_DATABASE_URL is a server these tests may not stop")
    store = PostgresStore(pg_location, clock=Clock(), wait=1.0)
    try:
        store.claim("before")
        postgres_server.stop()
        try:
            recording = [("while down", "body", "text/plain")]
            for call in (
                store.health,
                lambda: store.claim("meanwhile"),
                lambda: asyncio.run(store.receive_now(recording, "P1")),
            ):
                with pytest.raises(StoreUnavailableError, match="does not answer"):
                    call()
        finally:
            postgres_server.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                store.health()
                break
            except StoreUnavailableError:
                # The pool reconnects in the background, backing off: poll it.
                assert time.monotonic() < deadline, "the store never found the server again"
        assert store.claim("after")
        assert not store.claim("before")
        assert asyncio.run(store.receive_now([("after", "body", "text/plain")], "P1")) == ["new"]
    finally:
        store.close()


def test_the_password_is_never_shown(
    postgres_server: PostgresServer, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A URL's password is in no store location, no error message (a server that refuses,
    a URL libpq rejects) and no log line, whoever writes it (the store, the pool, psycopg)."""
    caplog.set_level(logging.DEBUG)
    good = postgres_server.with_schema(pg_schema).replace(
        "://postgres@", f"://postgres:{PASSWORD}@"
    )
    store = PostgresStore(good, clock=Clock())
    assert PASSWORD not in store.location
    assert store.location == postgres_server.with_schema(pg_schema)
    store.close()
    with pytest.raises(StoreUnavailableError) as closed:
        store.health()
    refused = f"postgresql://stopbot:{PASSWORD}@127.0.0.1:1/stopbot?schema=x"
    with pytest.raises(StoreUnavailableError) as down:
        PostgresStore(refused, wait=0.5)
    with pytest.raises(StoreUnavailableError) as down_exists:
        PostgresStore.exists(refused)
    bad = f"postgresql://stopbot:{PASSWORD}@127.0.0.1:1/stopbot?sslmode=sometimes"
    with pytest.raises(StoreError, match="sslmode") as rejected:
        PostgresStore(bad)
    unknown = f"postgresql://stopbot:{PASSWORD}@db/stopbot?nonsense=1"
    with pytest.raises(StoreLocationError) as unknown_param:
        PostgresStore(unknown)
    errors = [closed, down, down_exists, rejected, unknown_param]
    assert "does not answer" in str(down.value) and "127.0.0.1" in str(down.value)
    for error in errors:
        text = str(error.value)
        assert PASSWORD not in text
        cause = error.value.__cause__ or error.value.__context__
        assert cause is None or PASSWORD not in str(cause)
    assert any("schema migrated" in r.getMessage() for r in caplog.records)  # names the URL
    assert not [r for r in caplog.records if PASSWORD in r.getMessage()]


def test_a_bad_url_is_a_location_error() -> None:
    """A URL that is no usable PostgreSQL URL is a StoreLocationError that says why."""
    for url, reason in [
        ("postgresql://db:port/x", "not a valid URL"),
        ("postgresql://db/x?schema=Bad-Name", "schema 'Bad-Name' must be lowercase"),
        ("postgresql://db/x?nonsense=1", "invalid URI query parameter"),
    ]:
        with pytest.raises(StoreLocationError, match=reason):
            PostgresStore(url)


def test_the_default_clock_is_the_database_servers(pg_location: str) -> None:
    """Without a clock handed in, the store stamps in the database server's time, even
    when the host's clock is a day off."""
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=1), tick=True):
        store = PostgresStore(pg_location)
        try:
            store.claim("k")
            [(stamped, server_now)] = store.tuples(
                "SELECT claimed_at, now() FROM claims WHERE key = 'k'"
            )
            assert abs(store.clock() - server_now) < dt.timedelta(seconds=5)
            assert abs(stamped - server_now) < dt.timedelta(seconds=5)
        finally:
            store.close()
