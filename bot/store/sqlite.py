"""The SQLite backend of the store (the default): schema, migrations, one query per need.

Why these choices:

* WAL mode, so the audit export and the history commands read while a stop writes, with
  ``synchronous = NORMAL``: durable across a killed process, fsynced at checkpoints.
* The connection is in autocommit mode and every multi-row write runs in
  :meth:`SQLiteStore.transaction` (``BEGIN IMMEDIATE``): the write lock is taken up front,
  so two clicks racing on one button serialise here, and the loser sees the winner's
  state. That is how each compare-and-set of the interface (bot/store/base.py) has one
  winner across threads and processes. sqlite-utils (4.x) nests its own writes in
  savepoints, so its helpers are safe inside; the hot writes are plain SQL so each one
  reads as the query it is.
* The audit log is append-only, enforced by triggers rather than by good intentions.
* Several processes share one file on one host only (SQLite's locks are the kernel's).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import sqlite_utils

from bot.models import (
    FINAL_STATES,
    TRACKED_STATES,
    UP_STATES,
    Action,
    Approval,
    AuditEntry,
    BotLock,
    EnvironmentRun,
    EnvRunState,
    InUseQuestion,
    KeepException,
    Lease,
    LeaseState,
    Operation,
    OpState,
    Owed,
    RunItem,
    ScheduleRun,
    ScheduleState,
    Transition,
)
from bot.processes import ProcessInfo, Registration
from bot.store.background import lane_batch
from bot.store.base import (
    CLAIM_IN_BATCH,
    Clock,
    OpenRequest,
    OwnedWork,
    Store,
    StoreCounts,
    calling_task,
    operation_id,
    tally,
)
from bot.store.errors import (
    StoreError,
    StoreLocationError,
    StoreSchemaError,
    StoreUnavailableError,
)
from bot.store.sqlite_checkpoints import Checkpoints
from bot.text import Text
from providers.base import utcnow

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

log = logging.getLogger(__name__)


def _operation(names: Sequence[str], row: Sequence[Any]) -> Operation:
    data = dict(zip(names, row, strict=True))
    data["force"] = bool(data["force"])
    data["override_lock"] = bool(data["override_lock"])
    data["notify"] = bool(data["notify"])
    return Operation.model_validate(data)


def _returned(cursor: sqlite3.Cursor) -> Operation | None:
    """The one operation a ``SELECT *`` or an ``UPDATE … RETURNING *`` gave (the update's
    own row, with no second statement to read it back), or None when it gave none. Its
    rows are all read: the statement is then over, and a commit may follow."""
    rows = cursor.fetchall()
    if len(rows) != 1:
        return None
    return _operation([d[0] for d in cursor.description], rows[0])


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


# The states of a stop that is being sent or followed: one such stop per resource.
CHUNK = 500
"""Ids in one ``IN (…)`` (SQLite allows 32,766 parameters; smaller keeps each read short)."""
IN_FLIGHT_SQL = ", ".join(f"'{s.value}'" for s in sorted(TRACKED_STATES))
# The final states of a wake that is up (only wakes with a lease are looked for in them).
UP_SQL = ", ".join(f"'{s.value}'" for s in sorted(UP_STATES))


def _stored(text: Text | None) -> str | None:
    """A sentence for the user as its column keeps it: parts, never a face's markup."""
    return text.stored() if text is not None else None


def _migration_1(db: sqlite_utils.Database) -> None:
    db.table("operations").create(
        {
            "id": str,
            "resource": str,
            "provider": str,
            "resource_id": str,
            "requested_by": str,
            "source": str,
            "reason": str,
            "force": int,
            "state": str,
            "detail": str,
            "provider_state": str,
            "created_at": str,
            "updated_at": str,
            "finished_at": str,
            "expires_at": str,
            "channel": str,
            "message_ts": str,
            "response_url": str,
            "idempotency_key": str,
        },
        pk="id",
        not_null={"resource", "provider", "resource_id", "requested_by", "source", "state"},
    )
    db.table("operations").create_index(["idempotency_key"], unique=True)
    db.table("operations").create_index(["state"])
    db.table("operations").create_index(["resource", "created_at"])
    db.table("transitions").create(
        {
            "id": int,
            "operation_id": str,
            "at": str,
            "state": str,
            "provider_state": str,
            "phase": str,
            "message": str,
        },
        pk="id",
        foreign_keys=[("operation_id", "operations", "id")],
    )
    db.table("transitions").create_index(["operation_id", "id"])
    db.table("audit").create(
        {
            "id": int,
            "at": str,
            "actor": str,
            "action": str,
            "resource": str,
            "operation_id": str,
            "detail": str,
        },
        pk="id",
        not_null={"at", "actor", "action"},
    )
    db.table("audit").create_index(["at"])
    db.table("audit").create_index(["resource", "id"])
    for event in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER audit_no_{event.lower()} BEFORE {event} ON audit "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )
    db.table("bot_locks").create(
        {"resource": str, "owner": str, "reason": str, "created_at": str, "expires_at": str},
        pk="resource",
        not_null={"owner", "created_at", "expires_at"},
    )
    db.table("approvals").create(
        {
            "id": str,
            "operation_id": str,
            "status": str,
            "requested_by": str,
            "decided_by": str,
            "decided_at": str,
            "reason": str,
            "created_at": str,
            "expires_at": str,
        },
        pk="id",
        foreign_keys=[("operation_id", "operations", "id")],
    )
    db.table("schedules").create(
        {"name": str, "definition": str, "created_at": str, "updated_at": str}, pk="name"
    )
    db.table("claims").create({"key": str, "claimed_at": str}, pk="key")


def _migration_2(db: sqlite_utils.Database) -> None:
    """Lock overrides by admins, and approvals with several approvers."""
    db.table("operations").add_column("override_lock", int, not_null_default=0)
    db.table("approvals").add_column("min_approvals", int, not_null_default=1)
    db.table("approvals").create_index(["operation_id"], unique=True)
    db.table("approvals").create_index(["status", "expires_at"])
    db.table("approval_votes").create(
        {"operation_id": str, "approver": str, "vote": str, "reason": str, "at": str},
        pk=("operation_id", "approver"),
        foreign_keys=[("operation_id", "operations", "id")],
    )
    db.table("approval_messages").create(
        {"operation_id": str, "channel": str, "ts": str},
        pk=("operation_id", "channel", "ts"),
        foreign_keys=[("operation_id", "operations", "id")],
    )


def _migration_3(db: sqlite_utils.Database) -> None:
    """Scheduled runs: what each fire did, skips and snoozes, Keep exceptions."""
    db.table("schedules").add_column("source", str, not_null_default="slack")
    db.table("schedule_state").create(
        {
            "name": str,
            "checked_through": str,
            "skip_fire": str,
            "skip_by": str,
            "snooze_fire": str,
            "snooze_until": str,
            "drift_checked_at": str,
        },
        pk="name",
    )
    db.table("schedule_runs").create(
        {
            "id": str,
            "schedule": str,
            "fire_time": str,
            "kind": str,
            "status": str,
            "reason": str,
            "started_at": str,
            "finished_at": str,
            "channel": str,
            "message_ts": str,
        },
        pk="id",
        not_null={"schedule", "fire_time", "status"},
    )
    db.table("schedule_runs").create_index(["schedule", "fire_time"], unique=True)
    db.table("schedule_runs").create_index(["status"])
    db.table("schedule_items").create(
        {"run_id": str, "resource": str, "outcome": str, "detail": str, "op_id": str},
        pk=("run_id", "resource"),
        foreign_keys=[("run_id", "schedule_runs", "id")],
    )
    db.table("schedule_exceptions").create(
        {"schedule": str, "resource": str, "until": str, "created_by": str, "created_at": str},
        pk=("schedule", "resource"),
    )


def _migration_4(db: sqlite_utils.Database) -> None:
    """Skips and snoozes kept per fire, each button acting on the fire it was shown for
    (``schedule_state`` kept one of each, so a second click moved on to the next fire)."""
    db.table("schedule_skips").create(
        {"schedule": str, "fire_time": str, "skipped_by": str, "skipped_at": str},
        pk=("schedule", "fire_time"),
    )
    db.table("schedule_snoozes").create(
        {
            "schedule": str,
            "fire_time": str,
            "until": str,
            "snoozed_by": str,
            "snoozed_at": str,
            "started": int,
        },
        pk=("schedule", "fire_time"),
        not_null={"until", "started"},
        defaults={"started": 0},
    )
    db.execute(
        "INSERT INTO schedule_skips (schedule, fire_time, skipped_by) "
        "SELECT name, skip_fire, skip_by FROM schedule_state WHERE skip_fire IS NOT NULL"
    )
    db.execute(
        "INSERT INTO schedule_snoozes (schedule, fire_time, until) "
        "SELECT name, COALESCE(snooze_fire, snooze_until), snooze_until FROM schedule_state "
        "WHERE snooze_until IS NOT NULL"
    )
    db.execute(
        "UPDATE schedule_state SET skip_fire = NULL, skip_by = NULL, snooze_fire = NULL, "
        "snooze_until = NULL"
    )


def _migration_5(db: sqlite_utils.Database) -> None:
    """Who started a manual run: its stops are theirs (approval, audit)."""
    db.table("schedule_runs").add_column("started_by", str)


def _migration_6(db: sqlite_utils.Database) -> None:
    """Work owned by a process (taken over when it dies), stops claimed before they are
    sent, one stop in flight per resource, and the messages and requests kept until they
    are delivered or handled (see bot/processes.py and bot/outbox.py)."""
    db.table("processes").create(
        {
            "id": str,
            "host": str,
            "pid": int,
            "pid_start": str,
            "started_at": str,
            "heartbeat_at": str,
            "retired_at": str,
        },
        pk="id",
        not_null={"host", "pid", "pid_start", "started_at", "heartbeat_at"},
    )
    operations = db.table("operations")
    operations.add_column("owner", str)
    operations.add_column("send_claimed_at", str)
    operations.add_column("joined", str)
    operations.add_column("notify", int, not_null_default=0)
    operations.add_column("shown_in", str)
    operations.add_column("sends", int, not_null_default=0)
    # Before this version a submitting stop may have been sent: judged, never sent again.
    db.execute("UPDATE operations SET send_claimed_at = updated_at WHERE state = 'submitting'")
    # Stops in flight on one resource before this version: the later ones follow the first.
    first = (
        "(SELECT first.id FROM operations first WHERE first.resource = operations.resource "  # noqa: S608
        f"AND first.state IN ({IN_FLIGHT_SQL}) ORDER BY first.created_at, first.rowid LIMIT 1)"
    )
    db.execute(
        f"UPDATE operations SET joined = {first} "  # noqa: S608
        f"WHERE state IN ({IN_FLIGHT_SQL}) AND id != {first}"
    )
    db.execute(
        "CREATE UNIQUE INDEX one_stop_in_flight ON operations (resource) "
        f"WHERE state IN ({IN_FLIGHT_SQL}) AND joined IS NULL"
    )
    db.execute("CREATE INDEX operations_owner ON operations (owner, state)")
    runs = db.table("schedule_runs")
    runs.add_column("owner", str)
    runs.add_column("announced_at", str)
    # Skipped and missed runs before this version were announced when recorded.
    db.execute(
        "UPDATE schedule_runs SET announced_at = COALESCE(finished_at, started_at) "
        "WHERE status IN ('skipped', 'missed')"
    )
    db.table("outbox").create(
        {
            "key": str,
            "kind": str,
            "payload": str,
            "version": int,
            "sent_version": int,
            "urgent": int,
            "owner": str,
            "created_at": str,
            "updated_at": str,
            "attempts": int,
            "not_before": str,
            "last_error": str,
        },
        pk="key",
        not_null={"kind", "payload", "version", "sent_version", "urgent", "attempts"},
        defaults={"sent_version": 0, "urgent": 0, "attempts": 0},
    )
    db.execute("CREATE INDEX outbox_owed ON outbox (updated_at) WHERE sent_version < version")
    db.table("inbox").create(
        {
            "id": str,
            "received_at": str,
            "body": str,
            "content_type": str,
            "owner": str,
            "done_at": str,
            "attempts": int,
        },
        pk="id",
        not_null={"received_at", "body", "attempts"},
        defaults={"attempts": 0},
    )
    db.execute("CREATE INDEX inbox_open ON inbox (received_at) WHERE done_at IS NULL")
    db.execute("CREATE INDEX inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL")


def _migration_7(db: sqlite_utils.Database) -> None:
    """Wakes (an operation's action) and their leases."""
    operations = db.table("operations")
    operations.add_column("action", str, not_null_default="stop")
    operations.add_column("lease_seconds", int)
    db.table("leases").create(
        {
            "id": str,
            "resource": str,
            "owner": str,
            "state": str,
            "created_at": str,
            "ends_at": str,
            "warned_at": str,
            "ended_at": str,
            "ended_by": str,
            "end_reason": str,
            "end_operation_id": str,
        },
        pk="id",
        not_null={"resource", "owner", "state", "created_at", "ends_at"},
    )
    db.execute("CREATE INDEX leases_state ON leases (state, ends_at)")


def _migration_8(db: sqlite_utils.Database) -> None:
    """The audit by action and time: the savings read stops and starts from it."""
    db.execute("CREATE INDEX audit_action ON audit (action, at)")


def _migration_9(db: sqlite_utils.Database) -> None:
    """'Is anyone using it?': a schedule warning's questions, one answer each."""
    db.table("in_use_questions").create(
        {
            "schedule": str,
            "fire_time": str,
            "resource": str,
            "signals": str,
            "asked_at": str,
            "answer": str,
            "answered_by": str,
            "answered_at": str,
        },
        pk=("schedule", "fire_time", "resource"),
        not_null={"signals", "asked_at"},
    )


def _migration_10(db: sqlite_utils.Database) -> None:
    """Environments stopped tier after tier (bot/environments.py)."""
    db.table("environment_runs").create(
        {
            "id": str,
            "environment": str,
            "action": str,
            "requested_by": str,
            "reason": str,
            "skipped": str,
            "tier": int,
            "state": str,
            "detail": str,
            "owner": str,
            "channel": str,
            "message_ts": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"environment", "action", "requested_by", "skipped", "tier", "state"},
    )
    db.execute("CREATE INDEX environment_runs_state ON environment_runs (state, created_at)")


def _migration_11(db: sqlite_utils.Database) -> None:
    """Discovery: each provider account's last list, one snapshot per account."""
    db.table("discovered").create(
        {"provider": str, "refreshed_at": str, "resources": str},
        pk="provider",
        not_null={"refreshed_at", "resources"},
    )


def _migration_12(db: sqlite_utils.Database) -> None:
    """Costs: what providers last said each resource costs while it runs."""
    db.table("costs").create(
        {"resource": str, "read_at": str, "cost": str},
        pk="resource",
        not_null={"read_at", "cost"},
    )


def _migration_13(db: sqlite_utils.Database) -> None:
    """A run's items by outcome: its summary reads each outcome's first items and counts
    from the index, where a window over all of them sorted the whole run (10,000 items:
    21-28 ms, holding the store's one connection, against 2.7)."""
    db.table("schedule_items").create_index(["run_id", "outcome"], "schedule_items_outcome")


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (
    _migration_1,
    _migration_2,
    _migration_3,
    _migration_4,
    _migration_5,
    _migration_6,
    _migration_7,
    _migration_8,
    _migration_9,
    _migration_10,
    _migration_11,
    _migration_12,
    _migration_13,
)
SCHEMA_VERSION = len(MIGRATIONS)


# The tables of work a process owns (taken over when it dies), by their key column.
_OWNED = {
    "operations": "id",
    "schedule_runs": "id",
    "outbox": "key",
    "inbox": "id",
    "environment_runs": "id",
}


def _environment_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """An environment run's fields as its columns keep them."""
    stored: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "skipped":
            value = json.dumps(list(value))
        elif isinstance(value, Text):
            value = value.stored()
        elif isinstance(value, dt.datetime):
            value = _iso(value)
        elif isinstance(value, StrEnum):
            value = value.value
        stored[key] = value
    return stored


def _environment_row(run: EnvironmentRun) -> dict[str, Any]:
    return _environment_fields({name: getattr(run, name) for name in EnvironmentRun.model_fields})


def _environment_run(row: dict[str, Any]) -> EnvironmentRun:
    return EnvironmentRun.model_validate(row | {"skipped": json.loads(row["skipped"] or "[]")})


# A run's counts by outcome and each outcome's first items (ScheduleStore.run_tally). One
# statement, so the counts and the items listed agree; both read from the index by outcome
# (migration 13), the items listed alone sorted.
_RUN_TALLY = (
    "SELECT i.run_id, i.resource, i.outcome, i.detail, i.op_id, c.count FROM ("
    "  SELECT outcome, COUNT(*) AS count FROM schedule_items WHERE run_id = ?1"
    "  GROUP BY outcome"
    ") AS c JOIN schedule_items AS i ON i.rowid IN ("
    "  SELECT rowid FROM schedule_items WHERE run_id = ?1 AND outcome IS c.outcome"
    "  ORDER BY rowid LIMIT ?2"
    ") ORDER BY i.rowid"
)

# SQLite's primary result codes, by the branch of bot/store/errors.py each one means.
_NOT_A_STORE = frozenset({"SQLITE_CANTOPEN", "SQLITE_NOTADB"})
_UNAVAILABLE = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PROTOCOL"}
)


class _Errors:
    """Within it, sqlite3's exceptions become the store's own, so that no caller catches
    ``sqlite3.Error`` (a second backend would raise something else)."""

    __slots__ = ("store", "where")

    def __init__(self, store: SQLiteStore, where: str) -> None:
        self.store = store
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not isinstance(exc, sqlite3.Error):
            return
        if self.store.closed:
            raise StoreUnavailableError(f"{self.where} is closed") from exc
        # Extended codes (SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT) share their primary's.
        code = "_".join(getattr(exc, "sqlite_errorname", "").split("_")[:2])
        error = (
            StoreLocationError
            if code in _NOT_A_STORE
            else StoreUnavailableError
            if code in _UNAVAILABLE
            else StoreError
        )
        raise error(f"{self.where}: {exc}") from exc


class SQLiteStore(Store):
    """All persistent state of the bot, in one SQLite file (``:memory:`` in some tests).

    What each method promises is said once, in bot/store/base.py; here is how SQLite keeps it.
    """

    # A call costs tens of microseconds of CPU and waits for no server: off the loop, it
    # would hold the GIL against the loop (acks during a run of 10,000 measured p99 188 /
    # 327 ms with the store's thread, 56 / 147 without).
    off_loop_inline = True

    def __init__(self, location: str | os.PathLike[str], *, clock: Clock = utcnow) -> None:
        super().__init__(os.fspath(location), clock=clock)
        self.closed = False
        self._lock = threading.RLock()
        self._batch: object = None  # who opened the batch open now (calling_task), if any
        self._errors = _Errors(self, f"the database {self.location}")
        self._checkpoints: Checkpoints | None = None
        with _Errors(self, f"cannot open the database {self.location}"):
            conn = sqlite3.connect(self.location, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 5000")
            self.db = sqlite_utils.Database(conn)
            if self.location != ":memory:":
                self.db.enable_wal()
                # With WAL, a commit survives the process being killed at any instant
                # without an fsync each (which cost 0.2-0.5 ms on the event loop, a dozen
                # times per stop): only an OS crash or a power loss can roll back the last
                # commits, never corrupt the file (SQLite's advice for WAL mode). Acks
                # record their request before answering, so this is on their path too.
                conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        if self.location != ":memory:":
            self._checkpoints = self._checkpoint_aside()

    def _checkpoint_aside(self) -> Checkpoints | None:
        """SQLite's checkpoints moved out of the commits, to a thread of their own
        (bot/store/sqlite_checkpoints.py); SQLite's own kept if it cannot be started."""
        try:
            checkpoints = Checkpoints(self.location)
        except (sqlite3.Error, RuntimeError) as exc:
            log.warning("SQLite checkpoints stay in the commits: %s", exc)
            return None
        with self._lock, self._errors:
            self.db.conn.execute("PRAGMA wal_autocheckpoint = 0")
        # A store dropped without close() stops its thread all the same.
        weakref.finalize(self, checkpoints.stop)
        return checkpoints

    @classmethod
    def exists(cls, location: str) -> bool:
        return Path(location).exists()

    def close(self) -> None:
        self.close_lanes()
        # Under the store's lock: another thread's call (a server's loop, a lane's heavy
        # call) may be inside a transaction on this connection, and sqlite3 closing a
        # connection while a statement of it runs crashed the interpreter (a segfault,
        # seen in the test suite: /healthz's test closing the store under a running bot).
        # That call ends first; the next one finds the store closed.
        with self._lock:
            if self._checkpoints is not None:
                # First: the store's connection, closing last, checkpoints what is left
                # and removes the log.
                self._checkpoints.close()
            self.closed = True
            self.db.conn.close()

    def health(self) -> None:
        self.tuples("SELECT version FROM schema_version")

    def counts(self) -> StoreCounts:
        # One statement, so both counts are of one instant.
        rows = self.tuples(
            "SELECT 'operations', provider, state, COUNT(*) FROM operations "
            "GROUP BY provider, state UNION ALL "
            "SELECT 'runs', schedule, status, COUNT(*) FROM schedule_runs GROUP BY schedule, status"
        )
        counted: dict[str, dict[tuple[str, str], int]] = {"operations": {}, "runs": {}}
        for kind, key, value, count in rows:
            counted[kind][(key, value)] = int(count)
        return StoreCounts(operations=counted["operations"], runs=counted["runs"])

    # -- plumbing (SQLite's own: tests may use it, the rest of the bot never does) ----

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of writes; takes SQLite's write lock at once. Inside a
        :meth:`batch`, a savepoint of the batch's transaction: undone alone if it raises."""
        with self._lock, self._errors:
            conn = self.db.conn
            if self._batch is not None:
                self._in_batch()
                conn.execute("SAVEPOINT call")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK TO call")
                    conn.execute("RELEASE call")
                    raise
                conn.execute("RELEASE call")
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if self._checkpoints is not None:
                self._checkpoints.committed()

    @contextmanager
    def batch(self) -> Iterator[None]:
        # The store's lock is the thread's for the whole batch (other threads wait); the
        # task that opened it is remembered, since tasks of one thread share the lock.
        with self._lock:
            if self._batch is not None:
                self._in_batch()
                yield
                return
            with self.transaction():
                self._batch = calling_task()
                try:
                    yield
                finally:
                    self._batch = None

    def _in_batch(self) -> None:
        """A call inside the batch: it must come from the task that opened it."""
        if calling_task() is not self._batch:
            raise StoreError(
                f"the database {self.location}: a batch of store calls spans an await "
                "(another task called the store inside it)"
            )

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads, under the store's lock.

        One connection serves every thread (the bot's loop, a test's): a read must not
        interleave with another thread's open transaction on it.
        """
        with self._lock, self._errors:
            if self._batch is not None:
                self._in_batch()
            yield self.db.conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a read and return its rows as dicts."""
        with self._reading() as conn:
            cursor = conn.execute(sql, list(params))
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Like :meth:`rows`, as plain tuples."""
        with self._reading() as conn:
            return list(conn.execute(sql, list(params)).fetchall())

    def schema_version(self) -> int:
        if not self.db["schema_version"].exists():
            return 0
        rows = self.tuples("SELECT version FROM schema_version")
        return int(rows[0][0]) if rows else 0

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise StoreSchemaError(
                    f"the database {self.location} has schema version {current}, newer than this "
                    f"stopbot knows ({SCHEMA_VERSION}): upgrade stopbot or use another STOPBOT_DB"
                )
            for migration in MIGRATIONS[current:]:
                migration(self.db)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION])

    def _audit(
        self,
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        *,
        resource: str | None = None,
        operation_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        cursor = conn.execute(
            "INSERT INTO audit (at, actor, action, resource, operation_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                _iso(self.clock()),
                actor,
                action,
                resource,
                operation_id,
                # default=str: a Text is kept as its neutral words ("denied by U0CAROL").
                json.dumps(detail or {}, sort_keys=True, default=str),
            ],
        )
        return int(cursor.lastrowid or 0)

    # -- audit --------------------------------------------------------------------

    def audit(
        self,
        actor: str,
        action: str,
        *,
        resource: str | None = None,
        operation_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        with self.transaction() as conn:
            return self._audit(
                conn, actor, action, resource=resource, operation_id=operation_id, detail=detail
            )

    def audit_log(
        self,
        *,
        resource: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        where: list[str] = []
        params: list[Any] = []
        if resource is not None:
            where.append("resource = ?")
            params.append(resource)
        if since is not None:
            where.append("at >= ?")
            params.append(_iso(since))
        sql = "SELECT * FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = [dict(r) for r in self.rows(sql, params)]
        rows.reverse()
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        return [AuditEntry.model_validate(r) for r in rows]

    def audit_facts(self, actions: Sequence[str], *, since: dt.datetime) -> list[AuditEntry]:
        if not actions:
            return []
        marks = ", ".join("?" for _ in actions)
        rows = [
            dict(r)
            for r in self.rows(
                "SELECT * FROM audit WHERE id IN ("  # noqa: S608 -- only placeholders
                f"SELECT MAX(id) FROM audit WHERE action IN ({marks}) AND at < ? "
                "AND resource IS NOT NULL GROUP BY resource) "
                f"OR (action IN ({marks}) AND at >= ? AND resource IS NOT NULL) ORDER BY id",
                [*actions, _iso(since), *actions, _iso(since)],
            )
        ]
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        return [AuditEntry.model_validate(r) for r in rows]

    # -- operations ---------------------------------------------------------------

    def create_operation(
        self,
        *,
        resource: str,
        provider: str,
        resource_id: str,
        requested_by: str,
        source: str,
        state: OpState = OpState.REQUESTED,
        reason: str | None = None,
        force: bool = False,
        override_lock: bool = False,
        expires_at: dt.datetime | None = None,
        channel: str | None = None,
        response_url: str | None = None,
        idempotency_key: str | None = None,
        owner: str | None = None,
        notify: bool = False,
        action: Action = Action.STOP,
        lease_seconds: int | None = None,
    ) -> tuple[Operation, bool]:
        now = self.clock()
        with self.transaction() as conn:
            if idempotency_key is not None:
                existing = conn.execute(
                    "SELECT id FROM operations WHERE idempotency_key = ?", [idempotency_key]
                ).fetchone()
                if existing:
                    return self._get(conn, existing[0]), False
            op_id = operation_id()
            conn.execute(
                "INSERT INTO operations (id, resource, provider, resource_id, requested_by, "
                "source, reason, force, override_lock, state, created_at, updated_at, expires_at,"
                " channel, response_url, idempotency_key, owner, notify, action, lease_seconds) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    op_id,
                    resource,
                    provider,
                    resource_id,
                    requested_by,
                    source,
                    reason,
                    int(force),
                    int(override_lock),
                    state.value,
                    _iso(now),
                    _iso(now),
                    _iso(expires_at),
                    channel,
                    response_url,
                    idempotency_key,
                    owner,
                    int(notify),
                    action.value,
                    lease_seconds,
                ],
            )
            conn.execute(
                "INSERT INTO transitions (operation_id, at, state) VALUES (?, ?, ?)",
                [op_id, _iso(now), state.value],
            )
            self._audit(
                conn,
                requested_by,
                f"{action.verb}.requested",
                resource=resource,
                operation_id=op_id,
                detail={
                    "source": source,
                    "reason": reason,
                    "force": force,
                    "state": state.value,
                    **({"override_lock": True} if override_lock else {}),
                    **({"lease_seconds": lease_seconds} if lease_seconds else {}),
                },
            )
            return self._get(conn, op_id), True

    def _get(self, conn: sqlite3.Connection, op_id: str) -> Operation:
        op = _returned(conn.execute("SELECT * FROM operations WHERE id = ?", [op_id]))
        if op is None:
            raise KeyError(op_id)
        return op

    def operations(self, ids: Iterable[str]) -> dict[str, Operation]:
        wanted = sorted(set(ids))
        found: dict[str, Operation] = {}
        with self._reading() as conn:
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                marks = ", ".join("?" for _ in chunk)
                cursor = conn.execute(
                    f"SELECT * FROM operations WHERE id IN ({marks})",  # noqa: S608
                    chunk,
                )
                names = [d[0] for d in cursor.description]
                for row in cursor.fetchall():
                    op = _operation(names, row)
                    found[op.id] = op
        return found

    def get_operation(self, op_id: str) -> Operation | None:
        with self._reading() as conn:
            try:
                return self._get(conn, op_id)
            except KeyError:
                return None

    def transition(
        self,
        op_id: str,
        to: OpState,
        *,
        allowed_from: Iterable[OpState],
        actor: str,
        detail: Text | None = None,
        audit_detail: dict[str, Any] | None = None,
        fields: dict[str, Any] | None = None,
        owe: Owed | None = None,
        owner: str | None = None,
    ) -> Operation | None:
        now = self.clock()
        allowed = [s.value for s in allowed_from]
        values: dict[str, Any] = {
            "state": to.value,
            "updated_at": _iso(now),
            "detail": _stored(detail),
            **(fields or {}),
        }
        if to in FINAL_STATES:
            values["finished_at"] = _iso(now)
        for key, value in list(values.items()):
            if isinstance(value, dt.datetime):
                values[key] = _iso(value)
        marks = ", ".join("?" for _ in allowed)
        fence, fenced = ("", []) if owner is None else (" AND owner IS ?", [owner])
        with self.transaction() as conn:
            if to == OpState.SUBMITTING:
                values["joined"] = self._in_flight_on(conn, op_id)
            assignments = ", ".join(f"{key} = ?" for key in values)
            op = _returned(
                conn.execute(
                    f"UPDATE operations SET {assignments} "  # noqa: S608 -- keys are ours
                    f"WHERE id = ? AND state IN ({marks}){fence} RETURNING *",
                    [*values.values(), op_id, *allowed, *fenced],
                )
            )
            if op is None:
                return None
            if owe is not None:
                self._owe(conn, owe)
            conn.execute(
                "INSERT INTO transitions (operation_id, at, state, message) VALUES (?, ?, ?, ?)",
                [op_id, _iso(now), to.value, _stored(detail)],
            )
            self._audit(
                conn,
                actor,
                f"{op.action.verb}.{to.value}",
                resource=op.resource,
                operation_id=op_id,
                detail={"detail": detail, **(audit_detail or {})},
            )
            return op

    def update_operation(self, op_id: str, **fields: Any) -> None:
        values = {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in fields.items()}
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self.transaction() as conn:
            conn.execute(
                f"UPDATE operations SET {assignments} WHERE id = ?",  # noqa: S608 -- keys are ours
                [*values.values(), op_id],
            )

    def record_provider_state(
        self,
        op_id: str,
        provider_state: str,
        phase: str,
        message: str | None = None,
        *,
        owner: str | None = None,
        owe: Owed | None = None,
    ) -> Operation | None:
        now = self.clock()
        fence, fenced = ("", []) if owner is None else (" AND owner IS ?", [owner])
        with self.transaction() as conn:
            op = _returned(
                conn.execute(
                    "UPDATE operations SET provider_state = ?, updated_at = ? "  # noqa: S608
                    f"WHERE id = ? AND provider_state IS NOT ?{fence} RETURNING *",
                    [provider_state, _iso(now), op_id, provider_state, *fenced],
                )
            )
            if op is None:  # gone, no change, or not this owner's
                return None
            if owe is not None:
                self._owe(conn, owe)
            conn.execute(
                "INSERT INTO transitions (operation_id, at, state, provider_state, phase, message)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    op_id,
                    _iso(now),
                    op.state.value,
                    provider_state,
                    phase,
                    _stored(Text(message) if message else None),
                ],
            )
            return op

    def transitions(self, op_id: str) -> list[Transition]:
        rows = self.rows(
            "SELECT operation_id, at, state, provider_state, phase, message FROM transitions "
            "WHERE operation_id = ? ORDER BY id",
            [op_id],
        )
        return [Transition.model_validate(r) for r in rows]

    def operations_in_flight(self) -> list[Operation]:
        marks = ", ".join("?" for _ in TRACKED_STATES)
        with self._reading() as conn:
            ids = [
                r[0]
                for r in self.tuples(
                    f"SELECT id FROM operations WHERE state IN ({marks}) ORDER BY created_at",  # noqa: S608
                    [s.value for s in TRACKED_STATES],
                )
            ]
            return [self._get(conn, i) for i in ids]

    def in_flight_ids(self, owner: str) -> list[str]:
        marks = ", ".join("?" for _ in TRACKED_STATES)
        rows = self.tuples(
            f"SELECT id FROM operations WHERE owner = ? AND state IN ({marks}) "  # noqa: S608
            "ORDER BY created_at",
            [owner, *(s.value for s in TRACKED_STATES)],
        )
        return [r[0] for r in rows]

    def recent_operations(self, *, resource: str | None = None, limit: int = 10) -> list[Operation]:
        sql = "SELECT id FROM operations"
        params: list[Any] = []
        if resource is not None:
            sql += " WHERE resource = ?"
            params.append(resource)
        sql += f" ORDER BY created_at DESC, rowid DESC LIMIT {int(limit)}"
        with self._reading() as conn:
            ids = [r[0] for r in self.tuples(sql, params)]
            return [self._get(conn, i) for i in ids]

    # -- claims: at-most-once for anything keyed (Slack retries, button clicks) ---

    def claim(self, key: str, *, owe: Owed | None = None) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO claims (key, claimed_at) VALUES (?, ?)",
                [key, _iso(self.clock())],
            )
            if cursor.rowcount == 1 and owe is not None:
                self._owe(conn, owe)
            return cursor.rowcount == 1

    # -- leases -----------------------------------------------------------------------

    def open_lease(self, op_id: str) -> Lease | None:
        with self.transaction() as conn:
            try:
                op = self._get(conn, op_id)
            except KeyError:
                return None
            if (
                op.action is not Action.START
                or not op.lease_seconds
                or op.state not in UP_STATES
                or op.finished_at is None
            ):
                return None
            ends_at = op.finished_at + dt.timedelta(seconds=op.lease_seconds)
            cursor = conn.execute(
                "INSERT INTO leases (id, resource, owner, state, created_at, ends_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
                [
                    op.id,
                    op.resource,
                    op.requested_by,
                    LeaseState.ACTIVE.value,
                    _iso(op.finished_at),
                    _iso(ends_at),
                ],
            )
            if cursor.rowcount == 1:
                self._audit(
                    conn,
                    op.requested_by,
                    "lease.opened",
                    resource=op.resource,
                    operation_id=op.id,
                    detail={"ends_at": _iso(ends_at)},
                )
            return self._lease(conn, op.id)

    def _lease(self, conn: sqlite3.Connection, lease_id: str) -> Lease | None:
        cursor = conn.execute("SELECT * FROM leases WHERE id = ?", [lease_id])
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
        return Lease.model_validate(dict(zip(names, row, strict=True))) if row else None

    def unopened_leases(self) -> list[str]:
        rows = self.rows(
            "SELECT o.id FROM operations o LEFT JOIN leases l ON l.id = o.id "  # noqa: S608
            f"WHERE o.action = 'start' AND o.lease_seconds IS NOT NULL AND o.state IN ({UP_SQL}) "
            "AND l.id IS NULL"
        )
        return [str(r["id"]) for r in rows]

    def get_lease(self, lease_id: str) -> Lease | None:
        with self._reading() as conn:
            return self._lease(conn, lease_id)

    def leases(
        self, states: Iterable[LeaseState] = (LeaseState.ACTIVE, LeaseState.UNTIL_RUN)
    ) -> list[Lease]:
        wanted = [s.value for s in states]
        marks = ", ".join("?" for _ in wanted)
        rows = self.rows(
            f"SELECT * FROM leases WHERE state IN ({marks}) ORDER BY ends_at, id",  # noqa: S608
            wanted,
        )
        return [Lease.model_validate(r) for r in rows]

    def move_lease(
        self,
        lease_id: str,
        to: LeaseState,
        *,
        allowed_from: Iterable[LeaseState],
        actor: str,
        audit: str,
        unwarned: bool = False,
        fields: dict[str, Any] | None = None,
        owe: Owed | None = None,
    ) -> Lease | None:
        values: dict[str, Any] = {"state": to.value, **(fields or {})}
        if to is LeaseState.ENDED:
            values["ended_at"] = self.clock()
        values = {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in values.items()}
        allowed = [s.value for s in allowed_from]
        marks = ", ".join("?" for _ in allowed)
        unwarned_sql = " AND warned_at IS NULL" if unwarned else ""
        with self.transaction() as conn:
            assignments = ", ".join(f"{key} = ?" for key in values)
            cursor = conn.execute(
                f"UPDATE leases SET {assignments} "  # noqa: S608 -- keys are ours
                f"WHERE id = ? AND state IN ({marks}){unwarned_sql}",
                [*values.values(), lease_id, *allowed],
            )
            if cursor.rowcount != 1:
                return None
            lease = self._lease(conn, lease_id)
            if lease is None:
                return None
            if owe is not None:
                self._owe(conn, owe)
            self._audit(
                conn, actor, audit, resource=lease.resource, operation_id=lease.id, detail=values
            )
            return lease

    # -- approvals ------------------------------------------------------------------

    def await_approval(
        self,
        op_id: str,
        actor: str,
        *,
        expires_at: dt.datetime,
        min_approvals: int,
        owe: Owed | None = None,
    ) -> Operation | None:
        now = self.clock()
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE operations SET state = ?, updated_at = ?, detail = NULL "
                "WHERE id = ? AND state = ?",
                [
                    OpState.AWAITING_APPROVAL.value,
                    _iso(now),
                    op_id,
                    OpState.AWAITING_CONFIRMATION.value,
                ],
            )
            if cursor.rowcount != 1:
                return None
            op = self._get(conn, op_id)
            conn.execute(
                "INSERT INTO approvals (id, operation_id, status, requested_by, created_at, "
                "expires_at, min_approvals) VALUES (?, ?, 'pending', ?, ?, ?, ?)",
                [op_id, op_id, op.requested_by, _iso(now), _iso(expires_at), min_approvals],
            )
            conn.execute(
                "INSERT INTO transitions (operation_id, at, state) VALUES (?, ?, ?)",
                [op_id, _iso(now), OpState.AWAITING_APPROVAL.value],
            )
            self._audit(
                conn,
                actor,
                "approval.requested",
                resource=op.resource,
                operation_id=op_id,
                detail={"expires_at": _iso(expires_at), "min_approvals": min_approvals},
            )
            if owe is not None:
                self._owe(conn, owe)
            return op

    def approval(self, op_id: str) -> Approval | None:
        rows = list(self.rows("SELECT * FROM approvals WHERE operation_id = ?", [op_id]))
        if not rows:
            return None
        votes = self.rows(
            "SELECT approver, vote, reason, at FROM approval_votes WHERE operation_id = ? "
            "ORDER BY at, approver",
            [op_id],
        )
        return Approval.model_validate({**rows[0], "votes": list(votes)})

    def vote(self, op_id: str, approver: str, vote: str, reason: str | None = None) -> int | None:
        now = self.clock()
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO approval_votes (operation_id, approver, vote, reason, at) "
                "VALUES (?, ?, ?, ?, ?)",
                [op_id, approver, vote, reason, _iso(now)],
            )
            if cursor.rowcount != 1:
                return None
            op = self._get(conn, op_id)
            self._audit(
                conn,
                approver,
                f"approval.{vote}",
                resource=op.resource,
                operation_id=op_id,
                detail={"reason": reason},
            )
            row = conn.execute(
                "SELECT COUNT(*) FROM approval_votes WHERE operation_id = ? AND vote = 'approve'",
                [op_id],
            ).fetchone()
            return int(row[0])

    def decide_approval(
        self,
        op_id: str,
        status: str,
        *,
        decided_by: str,
        to: OpState,
        detail: Text | None,
        reason: str | None = None,
        owner: str | None = None,
        owe: Owed | None = None,
    ) -> Operation | None:
        now = self.clock()
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, reason = ? "
                "WHERE operation_id = ? AND status = 'pending'",
                [status, decided_by, _iso(now), reason, op_id],
            )
            if cursor.rowcount != 1:
                return None
            values: dict[str, Any] = {
                "state": to.value,
                "updated_at": _iso(now),
                "detail": _stored(detail),
            }
            if to in FINAL_STATES:
                values["finished_at"] = _iso(now)
            if to == OpState.SUBMITTING:
                values["joined"] = self._in_flight_on(conn, op_id)
                values["owner"] = owner
            assignments = ", ".join(f"{key} = ?" for key in values)
            conn.execute(
                f"UPDATE operations SET {assignments} WHERE id = ? AND state = ?",  # noqa: S608
                [*values.values(), op_id, OpState.AWAITING_APPROVAL.value],
            )
            conn.execute(
                "INSERT INTO transitions (operation_id, at, state, message) VALUES (?, ?, ?, ?)",
                [op_id, _iso(now), to.value, _stored(detail)],
            )
            op = self._get(conn, op_id)
            self._audit(
                conn,
                decided_by,
                f"approval.{status}",
                resource=op.resource,
                operation_id=op_id,
                detail={"reason": reason, "state": to.value},
            )
            if owe is not None:
                self._owe(conn, owe)
            return op

    def expired_approvals(self) -> list[str]:
        rows = self.tuples(
            "SELECT operation_id FROM approvals WHERE status = 'pending' AND expires_at <= ?",
            [_iso(self.clock())],
        )
        return [r[0] for r in rows]

    def pending_approvals(self) -> list[str]:
        rows = self.tuples(
            "SELECT operation_id FROM approvals WHERE status = 'pending' AND expires_at > ? "
            "ORDER BY created_at",
            [_iso(self.clock())],
        )
        return [r[0] for r in rows]

    def add_approval_message(self, op_id: str, channel: str, ts: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO approval_messages (operation_id, channel, ts) "
                "VALUES (?, ?, ?)",
                [op_id, channel, ts],
            )

    def approval_messages(self, op_id: str) -> list[tuple[str, str]]:
        rows = self.tuples(
            "SELECT channel, ts FROM approval_messages WHERE operation_id = ? ORDER BY rowid",
            [op_id],
        )
        return [(r[0], r[1]) for r in rows]

    # -- bot locks ----------------------------------------------------------------

    def set_lock(
        self, resource: str, owner: str, expires_at: dt.datetime, reason: str | None = None
    ) -> BotLock | None:
        now = self.clock()
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO bot_locks (resource, owner, reason, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(resource) DO UPDATE SET "
                "owner = excluded.owner, reason = excluded.reason, "
                "created_at = excluded.created_at, expires_at = excluded.expires_at "
                "WHERE bot_locks.owner = excluded.owner OR bot_locks.expires_at <= ?",
                [resource, owner, reason, _iso(now), _iso(expires_at), _iso(now)],
            )
            if cursor.rowcount != 1:
                return None
            self._audit(
                conn,
                owner,
                "lock.set",
                resource=resource,
                detail={"reason": reason, "expires_at": _iso(expires_at)},
            )
        return BotLock(
            resource=resource, owner=owner, reason=reason, created_at=now, expires_at=expires_at
        )

    def get_lock(self, resource: str) -> BotLock | None:
        rows = list(
            self.rows(
                "SELECT * FROM bot_locks WHERE resource = ? AND expires_at > ?",
                [resource, _iso(self.clock())],
            )
        )
        return BotLock.model_validate(rows[0]) if rows else None

    def delete_lock(self, resource: str, actor: str, *, forced: bool = False) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute("DELETE FROM bot_locks WHERE resource = ?", [resource])
            if cursor.rowcount:
                self._audit(
                    conn, actor, "lock.removed", resource=resource, detail={"forced": forced}
                )
            return bool(cursor.rowcount)

    def locks_expiring(self, within: dt.timedelta) -> list[BotLock]:
        now = self.clock()
        rows = self.rows(
            "SELECT * FROM bot_locks WHERE expires_at > ? AND expires_at <= ? ORDER BY expires_at",
            [_iso(now), _iso(now + within)],
        )
        return [BotLock.model_validate(r) for r in rows]

    def active_locks(self) -> list[BotLock]:
        rows = self.rows(
            "SELECT * FROM bot_locks WHERE expires_at > ? ORDER BY expires_at",
            [_iso(self.clock())],
        )
        return [BotLock.model_validate(r) for r in rows]

    # -- schedules ----------------------------------------------------------------

    def save_schedule(
        self, name: str, definition: dict[str, Any], actor: str, *, source: str = "slack"
    ) -> None:
        now = _iso(self.clock())
        with self.transaction() as conn:
            existing = conn.execute(
                "SELECT definition, source FROM schedules WHERE name = ?", [name]
            ).fetchone()
            encoded = json.dumps(definition, sort_keys=True, default=str)
            if existing and existing[0] == encoded and existing[1] == source:
                return  # unchanged: no audit noise at every start
            conn.execute(
                "INSERT INTO schedules (name, definition, created_at, updated_at, source) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "definition = excluded.definition, updated_at = excluded.updated_at, "
                "source = excluded.source",
                [name, encoded, now, now, source],
            )
            self._audit(
                conn, actor, "schedule.saved", detail={"name": name, "source": source, **definition}
            )

    def schedules(self) -> dict[str, dict[str, Any]]:
        return {
            r["name"]: json.loads(r["definition"])
            for r in self.rows("SELECT name, definition FROM schedules ORDER BY name")
        }

    def schedule_sources(self) -> dict[str, str]:
        return {r["name"]: r["source"] for r in self.rows("SELECT name, source FROM schedules")}

    def delete_schedule(self, name: str, actor: str) -> bool:
        with self.transaction() as conn:
            row = conn.execute("SELECT source FROM schedules WHERE name = ?", [name]).fetchone()
            conn.execute("DELETE FROM schedules WHERE name = ?", [name])
            for table in ("schedule_skips", "schedule_snoozes", "schedule_exceptions"):
                conn.execute(f"DELETE FROM {table} WHERE schedule = ?", [name])  # noqa: S608
            conn.execute("DELETE FROM schedule_state WHERE name = ?", [name])
            if row is not None:
                self._audit(
                    conn, actor, "schedule.removed", detail={"name": name, "source": row[0]}
                )
            return row is not None

    def schedule_state(self, name: str) -> ScheduleState:
        rows = list(self.rows("SELECT * FROM schedule_state WHERE name = ?", [name]))
        return ScheduleState.model_validate(rows[0]) if rows else ScheduleState(name=name)

    def update_schedule_state(self, name: str, **fields: Any) -> None:
        values = {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in fields.items()}
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        updates = ", ".join(f"{k} = excluded.{k}" for k in values)
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO schedule_state (name, {columns}) VALUES (?, {marks}) "  # noqa: S608
                f"ON CONFLICT(name) DO UPDATE SET {updates}",
                [name, *values.values()],
            )

    def skip_fire(self, schedule: str, fire: dt.datetime, actor: str) -> str | None:
        with self.transaction() as conn:
            existing = conn.execute(
                "SELECT skipped_by FROM schedule_skips WHERE schedule = ? AND fire_time = ?",
                [schedule, _iso(fire)],
            ).fetchone()
            if existing is not None:
                return str(existing[0])
            conn.execute(
                "INSERT INTO schedule_skips (schedule, fire_time, skipped_by, skipped_at) "
                "VALUES (?, ?, ?, ?)",
                [schedule, _iso(fire), actor, _iso(self.clock())],
            )
            conn.execute(
                "DELETE FROM schedule_snoozes WHERE schedule = ? AND fire_time = ? AND started = 0",
                [schedule, _iso(fire)],
            )
            self._audit(conn, actor, "schedule.skip", detail={"name": schedule, "fire": _iso(fire)})
            return None

    def skips(self, schedule: str) -> dict[dt.datetime, str]:
        rows = self.tuples(
            "SELECT fire_time, skipped_by FROM schedule_skips WHERE schedule = ?", [schedule]
        )
        return {dt.datetime.fromisoformat(fire): str(by) for fire, by in rows}

    def snooze_fire(
        self, schedule: str, fire: dt.datetime, until: dt.datetime, actor: str
    ) -> bool | None:
        with self.transaction() as conn:
            existing = conn.execute(
                "SELECT until, started FROM schedule_snoozes WHERE schedule = ? AND fire_time = ?",
                [schedule, _iso(fire)],
            ).fetchone()
            if existing is not None and existing[1]:
                return None
            if existing is not None and existing[0] == _iso(until):
                return False
            conn.execute(
                "INSERT INTO schedule_snoozes (schedule, fire_time, until, snoozed_by, snoozed_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(schedule, fire_time) DO UPDATE SET "
                "until = excluded.until, snoozed_by = excluded.snoozed_by, "
                "snoozed_at = excluded.snoozed_at",
                [schedule, _iso(fire), _iso(until), actor, _iso(self.clock())],
            )
            self._audit(
                conn,
                actor,
                "schedule.snooze",
                detail={"name": schedule, "fire": _iso(fire), "until": _iso(until)},
            )
            return True

    def snoozes(self, schedule: str) -> dict[dt.datetime, tuple[dt.datetime, bool]]:
        rows = self.tuples(
            "SELECT fire_time, until, started FROM schedule_snoozes WHERE schedule = ?",
            [schedule],
        )
        return {
            dt.datetime.fromisoformat(fire): (dt.datetime.fromisoformat(until), bool(started))
            for fire, until, started in rows
        }

    def start_snooze(self, schedule: str, fire: dt.datetime) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE schedule_snoozes SET started = 1 "
                "WHERE schedule = ? AND fire_time = ? AND started = 0",
                [schedule, _iso(fire)],
            )
            return cursor.rowcount == 1

    def unclaim(self, key: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM claims WHERE key = ?", [key])

    def operation_for_key(self, idempotency_key: str) -> Operation | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT id FROM operations WHERE idempotency_key = ?", [idempotency_key]
            ).fetchone()
            return self._get(conn, row[0]) if row else None

    def create_run(
        self,
        schedule: str,
        fire_time: dt.datetime,
        *,
        kind: str,
        status: str = "running",
        reason: Text | None = None,
        channel: str | None = None,
        started_by: str | None = None,
        owner: str | None = None,
    ) -> ScheduleRun | None:
        now = self.clock()
        run_id = uuid.uuid4().hex
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO schedule_runs (id, schedule, fire_time, kind, status, "
                "reason, started_at, finished_at, channel, started_by, owner) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    run_id,
                    schedule,
                    _iso(fire_time),
                    kind,
                    status,
                    _stored(reason),
                    _iso(now),
                    None if status == "running" else _iso(now),
                    channel,
                    started_by,
                    owner,
                ],
            )
            if cursor.rowcount != 1:
                return None
            self._audit(
                conn,
                f"schedule:{schedule}",
                f"schedule.run.{status}",
                detail={
                    "run": run_id,
                    "fire_time": _iso(fire_time),
                    "kind": kind,
                    "reason": reason,
                },
            )
        return self.run(run_id)

    def run(self, run_id: str) -> ScheduleRun | None:
        rows = list(self.rows("SELECT * FROM schedule_runs WHERE id = ?", [run_id]))
        return ScheduleRun.model_validate(rows[0]) if rows else None

    def run_at(self, schedule: str, fire_time: dt.datetime) -> ScheduleRun | None:
        rows = self.rows(
            "SELECT * FROM schedule_runs WHERE schedule = ? AND fire_time = ?",
            [schedule, _iso(fire_time)],
        )
        return ScheduleRun.model_validate(rows[0]) if rows else None

    def runs(
        self, *, status: str | None = None, schedule: str | None = None, limit: int = 50
    ) -> list[ScheduleRun]:
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if schedule is not None:
            where.append("schedule = ?")
            params.append(schedule)
        sql = "SELECT * FROM schedule_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY fire_time DESC LIMIT {int(limit)}"
        return [ScheduleRun.model_validate(r) for r in self.rows(sql, params)]

    def finish_run(
        self,
        run_id: str,
        status: str = "done",
        *,
        owner: str | None = None,
        owe: Owed | None = None,
    ) -> bool:
        fence, fenced = ("", []) if owner is None else (" AND owner IS ?", [owner])
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE schedule_runs SET status = ?, finished_at = ? "  # noqa: S608
                f"WHERE id = ? AND status = 'running'{fence}",
                [status, _iso(self.clock()), run_id, *fenced],
            )
            if cursor.rowcount != 1:
                return False
            row = conn.execute(
                "SELECT schedule FROM schedule_runs WHERE id = ?", [run_id]
            ).fetchone()
            self._audit(
                conn,
                f"schedule:{row[0] if row else '?'}",
                f"schedule.run.{status}",
                detail={"run": run_id},
            )
            if owe is not None:
                self._owe(conn, owe)
            return True

    def unannounced_runs(self) -> list[ScheduleRun]:
        rows = self.rows(
            "SELECT * FROM schedule_runs WHERE status IN ('skipped', 'missed') "
            "AND announced_at IS NULL ORDER BY schedule, fire_time"
        )
        return [ScheduleRun.model_validate(r) for r in rows]

    def announce_runs(self, run_ids: Sequence[str], owed: Owed | None) -> None:
        now = _iso(self.clock())
        with self.transaction() as conn:
            for run_id in run_ids:
                conn.execute(
                    "UPDATE schedule_runs SET announced_at = ? WHERE id = ?", [now, run_id]
                )
            if owed is not None:
                self._owe(conn, owed)

    def set_run_message(self, run_id: str, channel: str, ts: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE schedule_runs SET channel = ?, message_ts = ? WHERE id = ?",
                [channel, ts, run_id],
            )

    def record_item(
        self,
        run_id: str,
        resource: str,
        outcome: str | None,
        detail: Text | None = None,
        op_id: str | None = None,
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO schedule_items (run_id, resource, outcome, detail, op_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(run_id, resource) DO UPDATE SET "
                "outcome = excluded.outcome, detail = excluded.detail, "
                "op_id = COALESCE(excluded.op_id, schedule_items.op_id)",
                [run_id, resource, outcome, _stored(detail), op_id],
            )

    def record_items(
        self, run_id: str, items: Sequence[tuple[str, str | None, Text | None]]
    ) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO schedule_items (run_id, resource, outcome, detail) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(run_id, resource) DO UPDATE SET "
                "outcome = excluded.outcome, detail = excluded.detail",
                [
                    [run_id, resource, outcome, _stored(detail)]
                    for resource, outcome, detail in items
                ],
            )

    def run_items(self, run_id: str) -> list[RunItem]:
        rows = self.rows("SELECT * FROM schedule_items WHERE run_id = ? ORDER BY rowid", [run_id])
        return [RunItem.model_validate(r) for r in rows]

    def run_names(self, run_id: str, outcome: str | None) -> list[str]:
        rows = self.tuples(
            "SELECT resource FROM schedule_items WHERE run_id = ? AND outcome IS ? ORDER BY rowid",
            [run_id, outcome],
        )
        return [name for (name,) in rows]

    def run_tally(self, run_id: str, listed: int) -> tuple[dict[str | None, int], list[RunItem]]:
        return tally(self.rows(_RUN_TALLY, [run_id, listed]))

    def add_exception(
        self, schedule: str, resource: str, until: dt.datetime, actor: str
    ) -> KeepException:
        now = self.clock()
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO schedule_exceptions "
                "(schedule, resource, until, created_by, created_at) VALUES (?, ?, ?, ?, ?)",
                [schedule, resource, _iso(until), actor, _iso(now)],
            )
            self._audit(
                conn,
                actor,
                "schedule.keep",
                resource=resource,
                detail={"schedule": schedule, "until": _iso(until)},
            )
        return KeepException(
            schedule=schedule, resource=resource, until=until, created_by=actor, created_at=now
        )

    def active_exceptions(self, schedule: str | None = None) -> list[KeepException]:
        sql = "SELECT * FROM schedule_exceptions WHERE until > ?"
        params: list[Any] = [_iso(self.clock())]
        if schedule is not None:
            sql += " AND schedule = ?"
            params.append(schedule)
        rows = self.rows(sql + " ORDER BY until", params)
        return [KeepException.model_validate(r) for r in rows]

    # -- stops in flight: claims and joins -----------------------------------------

    def _in_flight_on(self, conn: sqlite3.Connection, op_id: str) -> str | None:
        """The stop in flight on ``op_id``'s resource, other than itself (that ``op_id``
        then joins), if any."""
        row = conn.execute(
            "SELECT other.id FROM operations other JOIN operations me "  # noqa: S608
            "ON other.resource = me.resource "
            f"WHERE me.id = ? AND other.id != me.id AND other.state IN ({IN_FLIGHT_SQL}) "
            "AND other.joined IS NULL",
            [op_id],
        ).fetchone()
        return str(row[0]) if row else None

    def claim_send(self, op_id: str, owner: str) -> Operation | None:
        if self._batch is not None and not lane_batch():
            raise StoreError(CLAIM_IN_BATCH)
        with self.transaction() as conn:
            return _returned(
                conn.execute(
                    "UPDATE operations SET send_claimed_at = ?, owner = ?, sends = sends + 1 "
                    "WHERE id = ? AND state = ? AND send_claimed_at IS NULL AND joined IS NULL "
                    "RETURNING *",
                    [_iso(self.clock()), owner, op_id, OpState.SUBMITTING.value],
                )
            )

    def release_claim(self, op_id: str, owner: str, sends: int) -> Operation | None:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE operations SET send_claimed_at = NULL WHERE id = ? AND owner = ? "
                "AND state = ? AND sends = ? AND send_claimed_at IS NOT NULL",
                [op_id, owner, OpState.SUBMITTING.value, sends],
            )
            if cursor.rowcount != 1:
                return None
            op = self._get(conn, op_id)
            self._audit(
                conn,
                "stopbot",
                "stop.not_taken",
                resource=op.resource,
                operation_id=op_id,
                detail={"sends": sends},
            )
            return op

    # -- processes and what they own ---------------------------------------------

    def register_process(self, process: Registration) -> None:
        now = _iso(self.clock())
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO processes (id, host, pid, pid_start, started_at, heartbeat_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [process.id, process.host, process.pid, process.pid_start, now, now],
            )

    def heartbeat(self, process_id: str) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE processes SET heartbeat_at = ? WHERE id = ?",
                [_iso(self.clock()), process_id],
            )
            return cursor.rowcount == 1

    def retire_process(self, process_id: str) -> None:
        with self.transaction() as conn:
            for table in _OWNED:
                conn.execute(
                    f"UPDATE {table} SET owner = NULL WHERE owner = ?",  # noqa: S608
                    [process_id],
                )
            conn.execute(
                "UPDATE processes SET retired_at = ? WHERE id = ?",
                [_iso(self.clock()), process_id],
            )

    def processes(self) -> list[ProcessInfo]:
        rows = self.rows("SELECT id, host, pid, pid_start, heartbeat_at, retired_at FROM processes")
        return [
            ProcessInfo(
                id=r["id"],
                host=r["host"],
                pid=int(r["pid"]),
                pid_start=r["pid_start"],
                heartbeat_at=dt.datetime.fromisoformat(r["heartbeat_at"]),
                retired=r["retired_at"] is not None,
            )
            for r in rows
        ]

    def forget_processes(self, ids: Iterable[str]) -> None:
        with self.transaction() as conn:
            for process_id in ids:
                owns = any(
                    conn.execute(
                        f"SELECT 1 FROM {table} WHERE owner = ? LIMIT 1",  # noqa: S608
                        [process_id],
                    ).fetchone()
                    for table in _OWNED
                )
                if not owns:
                    conn.execute("DELETE FROM processes WHERE id = ?", [process_id])

    # -- environments ---------------------------------------------------------------

    def create_environment_run(self, run: EnvironmentRun) -> None:
        values = _environment_row(run)
        with self.transaction() as conn:
            conn.execute(
                f"INSERT INTO environment_runs ({', '.join(values)}) "  # noqa: S608
                f"VALUES ({', '.join('?' for _ in values)})",
                list(values.values()),
            )
            self._audit(
                conn,
                run.requested_by,
                "environment.requested",
                resource=run.environment,
                operation_id=run.id,
                detail={"action": run.action.value, "reason": run.reason},
            )

    def get_environment_run(self, run_id: str) -> EnvironmentRun | None:
        rows = self.rows("SELECT * FROM environment_runs WHERE id = ?", [run_id])
        return _environment_run(rows[0]) if rows else None

    def environment_runs(self, states: Iterable[EnvRunState]) -> list[EnvironmentRun]:
        wanted = [s.value for s in states]
        marks = ", ".join("?" for _ in wanted)
        rows = self.rows(
            f"SELECT * FROM environment_runs WHERE state IN ({marks}) "  # noqa: S608
            "ORDER BY created_at, id",
            wanted,
        )
        return [_environment_run(r) for r in rows]

    def move_environment_run(
        self,
        run_id: str,
        *,
        allowed_from: Iterable[EnvRunState],
        actor: str,
        tier: int | None = None,
        owner: str | None = None,
        fields: dict[str, Any],
    ) -> EnvironmentRun | None:
        values = _environment_fields(fields) | {"updated_at": _iso(self.clock())}
        allowed = [s.value for s in allowed_from]
        where = f"id = ? AND state IN ({', '.join('?' for _ in allowed)})"
        params: list[Any] = [run_id, *allowed]
        if tier is not None:
            where += " AND tier = ?"
            params.append(tier)
        if owner is not None:
            where += " AND owner = ?"
            params.append(owner)
        with self.transaction() as conn:
            assignments = ", ".join(f"{key} = ?" for key in values)
            cursor = conn.execute(
                f"UPDATE environment_runs SET {assignments} WHERE {where}",  # noqa: S608
                [*values.values(), *params],
            )
            if cursor.rowcount != 1:
                return None
            cursor = conn.execute("SELECT * FROM environment_runs WHERE id = ?", [run_id])
            names = [d[0] for d in cursor.description]
            run = _environment_run(dict(zip(names, cursor.fetchone(), strict=True)))
            if "state" in fields or "tier" in fields:
                self._audit(
                    conn,
                    actor,
                    f"environment.{run.state.value}",
                    resource=run.environment,
                    operation_id=run.id,
                    detail={"tier": run.tier, "skipped": run.skipped, "detail": run.detail},
                )
            return run

    def take_over(self, work: OwnedWork, key: str, owner: str, previous: str | None) -> bool:
        # Each kind of owned work is the table of that name.
        column = _OWNED
        with self.transaction() as conn:
            cursor = conn.execute(
                f"UPDATE {work} SET owner = ? WHERE {column[work]} = ? AND owner IS ?",  # noqa: S608
                [owner, key, previous],
            )
            return cursor.rowcount == 1

    def orphaned_operations(
        self, states: Iterable[OpState], live: Iterable[str]
    ) -> list[Operation]:
        wanted = [s.value for s in states]
        alive = list(live)
        marks = ", ".join("?" for _ in wanted)
        # With nobody alive, every owner is dead (NOT IN (NULL) would match none).
        owners = ", ".join("?" for _ in alive)
        unowned = f"owner IS NULL OR owner NOT IN ({owners})" if alive else "1"
        with self._reading() as conn:
            ids = [
                r[0]
                for r in self.tuples(
                    f"SELECT id FROM operations WHERE state IN ({marks}) "  # noqa: S608
                    f"AND ({unowned}) ORDER BY created_at",
                    [*wanted, *alive],
                )
            ]
            return [self._get(conn, i) for i in ids]

    # -- the outbox: messages owed to a face --------------------------------------

    def _owe(self, conn: sqlite3.Connection, owed: Owed) -> None:
        now = _iso(self.clock())
        conn.execute(
            "INSERT INTO outbox (key, kind, payload, version, urgent, owner, created_at, "
            "updated_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
            "version = version + 1, payload = excluded.payload, urgent = excluded.urgent, "
            "owner = excluded.owner, updated_at = excluded.updated_at, attempts = 0, "
            "not_before = NULL",
            [
                owed.key,
                owed.kind,
                json.dumps(owed.payload, sort_keys=True, default=str),
                int(owed.urgent),
                owed.owner,
                now,
                now,
            ],
        )

    def owe(self, owed: Owed) -> None:
        with self.transaction() as conn:
            self._owe(conn, owed)

    def owed(self, limit: int = 500, *, key: str | None = None) -> list[Owed]:
        only, params = ("", []) if key is None else (" AND key = ?", [key])
        rows = self.rows(
            "SELECT key, kind, payload, version, urgent, owner, attempts, not_before "  # noqa: S608
            f"FROM outbox WHERE sent_version < version{only} ORDER BY updated_at LIMIT ?",
            [*params, limit],
        )
        return [
            Owed.model_validate(
                {**r, "payload": json.loads(r["payload"]), "urgent": bool(r["urgent"])}
            )
            for r in rows
        ]

    def delivered(self, key: str, version: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET sent_version = ?, attempts = 0, not_before = NULL, "
                "last_error = NULL WHERE key = ? AND sent_version < ?",
                [version, key, version],
            )

    def postpone(self, key: str, version: int, until: dt.datetime, error: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, not_before = ?, last_error = ? "
                "WHERE key = ? AND version = ?",
                [_iso(until), error[:500], key, version],
            )

    def purge_delivered(self, before: dt.datetime) -> int:
        with self.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE sent_version >= version AND updated_at < ?",
                [_iso(before)],
            )
            return cursor.rowcount

    # -- the inbox: requests answered before they were handled --------------------

    def receive(self, requests: Sequence[tuple[str, str, str]], owner: str) -> list[str]:
        now = _iso(self.clock())
        seen = []
        with self.transaction() as conn:
            for request_id, body, content_type in requests:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO inbox (id, received_at, body, content_type, owner) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [request_id, now, body, content_type, owner],
                )
                if cursor.rowcount == 1:
                    seen.append("new")
                    continue
                row = conn.execute(
                    "SELECT done_at FROM inbox WHERE id = ?", [request_id]
                ).fetchone()
                seen.append("done" if row and row[0] else "open")
        return seen

    def handled(self, request_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE inbox SET done_at = ?, body = '' WHERE id = ?",
                [_iso(self.clock()), request_id],
            )

    def open_requests(self) -> list[OpenRequest]:
        rows = self.rows(
            "SELECT id, received_at, body, content_type, owner, attempts FROM inbox "
            "WHERE done_at IS NULL ORDER BY received_at"
        )
        return cast(list[OpenRequest], rows)  # the columns OpenRequest names

    def retry_request(self, request_id: str) -> int:
        with self.transaction() as conn:
            conn.execute("UPDATE inbox SET attempts = attempts + 1 WHERE id = ?", [request_id])
            row = conn.execute("SELECT attempts FROM inbox WHERE id = ?", [request_id]).fetchone()
            return int(row[0]) if row else 0

    def purge_handled(self, before: dt.datetime) -> int:
        with self.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at < ?", [_iso(before)]
            )
            return cursor.rowcount

    # -- is anyone using it? -------------------------------------------------------

    def ask_in_use(
        self, schedule: str, fire: dt.datetime, resource: str, signals: list[dict[str, Any]]
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO in_use_questions (schedule, fire_time, resource, signals, "
                "asked_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    schedule,
                    _iso(fire),
                    resource,
                    json.dumps(signals, sort_keys=True, default=str),
                    _iso(self.clock()),
                ],
            )

    def answer_in_use(
        self, schedule: str, fire: dt.datetime, resource: str, answer: str, actor: str
    ) -> tuple[InUseQuestion | None, bool]:
        with self.transaction() as conn:
            won = conn.execute(
                "UPDATE in_use_questions SET answer = ?, answered_by = ?, answered_at = ? "
                "WHERE schedule = ? AND fire_time = ? AND resource = ? AND answer IS NULL",
                [answer, actor, _iso(self.clock()), schedule, _iso(fire), resource],
            ).rowcount
            if won:
                self._audit(
                    conn,
                    actor,
                    "schedule.in_use_answer",
                    resource=resource,
                    detail={"schedule": schedule, "fire": _iso(fire), "answer": answer},
                )
        found = [q for q in self.in_use_questions(schedule, fire) if q.resource == resource]
        return (found[0] if found else None), bool(won)

    def in_use_questions(self, schedule: str, fire: dt.datetime) -> list[InUseQuestion]:
        rows = self.rows(
            "SELECT * FROM in_use_questions WHERE schedule = ? AND fire_time = ? ORDER BY resource",
            [schedule, _iso(fire)],
        )
        return [
            InUseQuestion.model_validate(
                {**r, "fire": r["fire_time"], "signals": json.loads(r["signals"])}
            )
            for r in rows
        ]

    # -- discovery --------------------------------------------------------------------

    def save_discovered(self, provider: str, resources: Sequence[dict[str, Any]]) -> None:
        encoded = json.dumps(list(resources), sort_keys=True, default=str)
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO discovered (provider, refreshed_at, resources) VALUES (?, ?, ?) "
                "ON CONFLICT (provider) DO UPDATE SET refreshed_at = excluded.refreshed_at, "
                "resources = excluded.resources",
                [provider, _iso(self.clock()), encoded],
            )

    def discovered(self) -> dict[str, tuple[dt.datetime, list[dict[str, Any]]]]:
        return {
            r["provider"]: (
                dt.datetime.fromisoformat(r["refreshed_at"]),
                json.loads(r["resources"]),
            )
            for r in self.rows("SELECT provider, refreshed_at, resources FROM discovered")
        }

    def discovered_at(self) -> dict[str, dt.datetime]:
        return {
            r["provider"]: dt.datetime.fromisoformat(r["refreshed_at"])
            for r in self.rows("SELECT provider, refreshed_at FROM discovered")
        }

    # -- costs ------------------------------------------------------------------------

    def save_costs(self, costs: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not costs:
            return
        at = _iso(self.clock())
        with self.transaction() as conn:
            conn.executemany(
                "INSERT INTO costs (resource, read_at, cost) VALUES (?, ?, ?) "
                "ON CONFLICT (resource) DO UPDATE SET read_at = excluded.read_at, "
                "cost = excluded.cost",
                [(name, at, json.dumps(cost, sort_keys=True)) for name, cost in costs],
            )

    def costs(self, names: Sequence[str]) -> dict[str, tuple[dt.datetime, dict[str, Any]]]:
        found: dict[str, tuple[dt.datetime, dict[str, Any]]] = {}
        wanted = list(dict.fromkeys(names))
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start : start + CHUNK]
            marks = ", ".join("?" for _ in chunk)
            query = f"SELECT resource, read_at, cost FROM costs WHERE resource IN ({marks})"  # noqa: S608 -- only placeholders
            for r in self.rows(query, chunk):
                found[r["resource"]] = (
                    dt.datetime.fromisoformat(r["read_at"]),
                    json.loads(r["cost"]),
                )
        return found
