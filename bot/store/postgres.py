"""The PostgreSQL backend of the store: one database shared by several replicas of the bot.

Selected by a ``postgresql://`` (or ``postgres://``) location: ``STOPBOT_DATABASE_URL`` or
``database_url`` in ``stopbot.yaml``. Why these choices:

* **psycopg 3 and psycopg-pool, synchronous.** The bot calls the store as it calls SQLite:
  on its event loop, or, for what a run and an ack wait for, off it on the store's own
  threads (:meth:`Store.off_loop`, bot/store/background.py). A small pool (1 to 8
  connections, in autocommit mode) serves the loop and those threads. A connection is
  checked when borrowed (the pool's ``check``) unless it came back within the last second,
  so a server restarted meanwhile costs at most a call or two that fail as unavailable,
  and the pool reconnects by itself when the server is back; until then every call is a
  :class:`~bot.store.errors.StoreUnavailableError` after :attr:`PostgresStore.wait` seconds.
* **Writers take turns, as in SQLite.** Every write transaction begins with
  ``pg_advisory_xact_lock`` on one key of this store's schema, which the server releases at
  commit or rollback: the role of SQLite's ``BEGIN IMMEDIATE``. Single statements that are
  atomic on their own (``INSERT … ON CONFLICT DO NOTHING``, ``UPDATE … WHERE state = …``) do
  not cover the interface: several of its compare-and-sets read, then write, in one
  transaction (an idempotency key looked up before the insert, the approvals counted after a
  vote, the stop in flight a submission joins, a snooze compared with the one kept). Under
  READ COMMITTED two such transactions side by side each miss the other's row: two 2-of-2
  approvals count one each and neither reaches two; two submissions of one resource both
  find no stop in flight and the second breaks the one-stop-in-flight index. Taking turns,
  each statement of a transaction sees every write committed before it got the lock (READ
  COMMITTED reads a fresh snapshot per statement, and the lock is let go only once the
  commit is visible), so the SQLite module's reasoning holds as it is, and one contract
  (tests/test_store.py) tests both. The cost is one statement per write, sent with its
  ``BEGIN`` in one round trip, and the writes of all replicas one at a time, each a few
  statements long. Reads take no lock.
* **A paused replica holds nothing for long.** Sessions set
  ``idle_in_transaction_session_timeout`` (10 s): the server ends a session idle in a
  transaction, and the lock goes with it; a writer waits for the lock ``lock_timeout``
  (15 s), then the call is unavailable, as a busy SQLite file is after its busy timeout.
* **One schema per store**: the ``schema`` parameter of the URL, else the first schema of the
  search path (``options=-csearch_path%3D…`` in the URL, or the role's). Replicas starting
  together migrate it once (bot/store/postgres_schema.py).
* **Times** are ``timestamptz`` and the store's ``clock`` stamps them; comparisons with now
  (a lock or an approval expired) pass the clock's value, as on SQLite. By default the clock
  is the host's set to the database server's (its offset measured when the store opens, then
  every few minutes on a connection lent): every replica stamps in the database's time, with
  no round trip per call. A clock handed in (tests, the playground) is used as is:
  replicas given host clocks must agree on the time (NTP).
* **Sessions keep state** (their settings, the statements psycopg prepares): PgBouncer in
  transaction pooling mode between the bot and the database is not supported.
* **Errors** are the store's (bot/store/errors.py): a server refused or gone, a pool out of
  connections past the wait, a lock waited for too long are unavailable; a statement the
  database refuses is a plain StoreError. No message, and no :attr:`Store.location`,
  carries the URL's password.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, LiteralString, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from bot.leadership import Leadership
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
    StoreUnavailableError,
)
from bot.store.postgres_leadership import AdvisoryLeadership
from bot.store.postgres_loop import LoopConnection
from bot.store.postgres_schema import migrate, schema_version
from bot.text import Text
from providers.base import utcnow

__all__ = ["SCHEMES", "DatabaseClock", "PostgresLocation", "PostgresStore", "shown_location"]

SCHEMES = ("postgresql", "postgres")

# The class of the transaction advisory lock every write takes (with a key of the store's
# schema): 'stpw'. Leader election and the like use classes of their own.
WRITE_LOCK = int.from_bytes(b"stpw", "big")

# Per session: see the module's docstring.
SESSION_SETTINGS = {
    "idle_in_transaction_session_timeout": "10s",
    "lock_timeout": "15s",
    "TimeZone": "UTC",
}
CONNECT_TIMEOUT = 5  # seconds, unless the URL says otherwise
PROBE_INTERVAL = 0.5  # seconds between tries to reach a server that stopped answering
CHECK_IDLE = 1.0  # seconds a connection given back is lent again without a check
CLOCK_REFRESH = 300.0  # seconds between measures of the server's clock offset

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_BOOLEAN_COLUMNS = frozenset({"force", "override_lock", "notify", "urgent", "started"})
_IN_FLIGHT = [s.value for s in sorted(TRACKED_STATES)]
_OWNED_KEY = {
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
        elif isinstance(value, StrEnum):
            value = value.value
        stored[key] = value
    return stored


def _environment_run(row: dict[str, Any]) -> EnvironmentRun:
    return EnvironmentRun.model_validate(row | {"skipped": json.loads(row["skipped"] or "[]")})


def _iso(value: dt.datetime | None) -> str | None:
    """An instant in an audit entry's JSON detail, written as the SQLite store writes it."""
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


def _stored(text: Text | None) -> str | None:
    return text.stored() if text is not None else None


def _column_value(column: str, value: Any) -> Any:
    """A caller's value for ``column``: flags are booleans here (SQLite took 0 and 1)."""
    return bool(value) if column in _BOOLEAN_COLUMNS and value is not None else value


@dataclass(frozen=True)
class PostgresLocation:
    """A ``postgresql://`` URL, read: what to connect with, and what may be shown of it."""

    params: dict[str, str]
    """libpq's connection parameters (the password among them)."""
    shown: str
    """The URL without its password: what messages and ``Store.location`` print."""
    schema: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> PostgresLocation:
        """Read ``url``; a StoreLocationError that never repeats the password if it is no
        PostgreSQL URL libpq can use."""
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- raises ValueError for a port that is no number
        except ValueError as exc:
            raise StoreLocationError(
                f"the database URL is not a valid URL ({_scrub(str(exc), url)})"
            ) from None
        if parts.scheme.lower() not in SCHEMES:
            raise StoreLocationError(
                f"the database URL must start with postgresql:// (not {parts.scheme}://)"
            )
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = next((v for k, v in query if k == "schema"), None)
        password = parts.password or next((v for k, v in query if k == "password"), None)
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise StoreLocationError(
                f"the database URL's schema {schema!r} must be lowercase letters, digits and "
                "'_', starting with a letter or '_' (63 at most)"
            )
        shown = shown_location(url)
        libpq_url = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, urlencode(_without(query, "schema")), "")
        )
        try:
            params = {k: str(v) for k, v in conninfo_to_dict(libpq_url).items() if v is not None}
        except psycopg.Error as exc:
            raise StoreLocationError(
                f"the database URL {shown} cannot be used: {_scrub(str(exc), password)}"
            ) from None
        return cls(params=params, shown=shown, schema=schema, password=password)

    def connection_kwargs(self) -> dict[str, Any]:
        """What each connection of the pool is opened with: the URL's parameters and the
        session settings of this module (after the URL's own ``options``)."""
        settings = dict(SESSION_SETTINGS)
        if self.schema is not None:
            settings["search_path"] = self.schema
        options = " ".join(f"-c {name}={value}" for name, value in settings.items())
        own = self.params.get("options")
        return {
            "connect_timeout": str(CONNECT_TIMEOUT),
            **self.params,
            "application_name": "stopbot",
            "options": f"{own} {options}" if own else options,
            "autocommit": True,
        }


def shown_location(location: str) -> str:
    """``location`` as a message may print it: a URL without its password (in its user
    part or a ``password`` parameter); anything else as it is."""
    if "://" not in location:
        return location
    try:
        parts = urlsplit(location)
    except ValueError:
        return location.partition("://")[0] + "://…"
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}@{host}" if user else host
    query = _without(parse_qsl(parts.query, keep_blank_values=True), "password")
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


def _without(query: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in query if k != name]


def _scrub(message: str, *secrets: str | None) -> str:
    """``message`` with each secret in it (raw or as the URL wrote it) replaced."""
    for secret in secrets:
        if secret:
            for form in (secret, quote(secret, safe="")):
                message = message.replace(form, "***")
    return message


def _schema_key(schema: str) -> int:
    """A 32-bit key naming one schema in advisory locks (each store locks its own)."""
    return zlib.crc32(schema.encode()) - 2**31


class DatabaseClock:
    """The host's clock, set to the database server's: replicas stamp in one time.

    The offset is measured on a new connection and again every :data:`CLOCK_REFRESH`
    seconds, halfway through the round trip; a failed measure keeps the last one."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)
        self._measured_at = -CLOCK_REFRESH

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset

    def stale(self) -> bool:
        return time.monotonic() - self._measured_at >= CLOCK_REFRESH

    def measure(self, conn: psycopg.Connection[Any]) -> None:
        before = utcnow()
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        after = utcnow()
        if row:
            self.offset = row[0] - (before + (after - before) / 2)
            self._measured_at = time.monotonic()


# The server refused or went away, a lock or the pool waited too long (the pool's errors
# are OperationalErrors), a dead connection, a session the server ended after a pause.
_UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.IdleInTransactionSessionTimeout,
)


class _Errors:
    """Within it, psycopg's exceptions become the store's own (no caller catches a driver's
    error), with the password scrubbed from their words."""

    __slots__ = ("closed", "password", "where")

    def __init__(self, where: str, password: str | None, closed: Callable[[], bool]) -> None:
        self.where = where
        self.password = password
        self.closed = closed

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not isinstance(exc, psycopg.Error):
            return
        if self.closed():
            raise StoreUnavailableError(f"{self.where} is closed") from None
        words = _scrub(" ".join(str(exc).split()), self.password)
        # The driver's exception is not chained: its words may hold the password.
        if isinstance(exc, _UNAVAILABLE):
            raise StoreUnavailableError(f"{self.where} does not answer: {words}") from None
        raise StoreError(f"{self.where}: {words}") from None


# Requests recorded before they are answered (the inbox): one statement, committed on its
# own (the connections are in autocommit), so one round trip where BEGIN, the inserts and
# COMMIT were three or more. Each insert is a compare-and-set on its own (the id is
# unique): no write lock, and a recording waits for no other writer. The arrays go in
# binary (%b): as text, 200 bodies of 1 KB were quoted by psycopg and parsed by the server,
# 8.6 ms against 2.7 (4.2 as 200 pipelined inserts).
_RECEIVE = (
    "INSERT INTO inbox (id, received_at, body, content_type, owner) "
    "SELECT r.id, %s, r.body, r.content_type, %s "
    "FROM unnest(%b::text[], %b::text[], %b::text[]) WITH ORDINALITY "
    "AS r(id, body, content_type, n) ORDER BY r.n "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_DONE = "SELECT id FROM inbox WHERE id = ANY(%s) AND done_at IS NOT NULL"


def _seen(ids: list[str], inserted: set[str], done: set[str]) -> list[str]:
    """Each request's "new", or "done"/"open" for one seen before (a redelivery); the same
    request twice in one recording is new once."""
    seen = []
    for rid in ids:
        seen.append("new" if rid in inserted else "done" if rid in done else "open")
        inserted.discard(rid)
    return seen


class PostgresStore(Store):
    """All persistent state of the bot, in one schema of a PostgreSQL database.

    What each method promises is said once, in bot/store/base.py; here is how PostgreSQL
    keeps it (the module's docstring says why).
    """

    wait = 5.0
    """Seconds a call waits for a connection before the store is unavailable."""

    def __init__(
        self, location: str, *, clock: Clock | None = None, wait: float | None = None
    ) -> None:
        self.url = PostgresLocation.parse(location)
        self.password = self.url.password
        self.server_clock = DatabaseClock() if clock is None else None
        super().__init__(self.url.shown, clock=clock or self.server_clock or utcnow)
        if wait is not None:
            self.wait = wait
        self.closed = False
        self._down: str | None = None  # why the server does not answer, while it does not
        self._probe_lock = threading.Lock()
        self._batches = threading.local()  # per thread: the connection of its open batch
        self._errors = _Errors(f"the database {self.location}", self.password, self._closed)
        self._clock_lock = threading.Lock()
        self._returned_at: dict[int, float] = {}  # id of a connection: when it came back
        # The schema is found and migrated on a connection of its own, before the pool: a
        # server that refuses (a password, an option) says why at once.
        with self._errors, psycopg.connect(**self.url.connection_kwargs()) as conn:
            self.schema = self.url.schema or self._search_path_schema(conn)
            key = _schema_key(self.schema)
            migrate(conn, self.schema, key, f"the database {self.location}")
        self._begin = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK}, {key})".encode()
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            kwargs=self.url.connection_kwargs(),
            min_size=1,
            # The loop's calls, and the threads of off_loop's two lanes (and /healthz's).
            max_size=8,
            open=False,
            check=self._check,
            reset=self._returned,
            # Give up reconnecting in the background soon: the next call starts afresh at
            # once, so a server back after a long outage is found within seconds.
            reconnect_timeout=10.0,
            timeout=self.wait,
            name="stopbot",
        )
        with self._errors:
            self._pool.open()
        self._loop_connection = LoopConnection(self.url.connection_kwargs(), timeout=self.wait)

    def _closed(self) -> bool:
        return self.closed

    @staticmethod
    def _search_path_schema(conn: psycopg.Connection[Any]) -> str:
        """The schema this store is in when the URL names none: the first of the search
        path (the one new tables go to), created if missing."""
        row = conn.execute("SELECT current_schema()").fetchone()
        if row and row[0]:
            return str(row[0])
        path = conn.execute("SELECT current_setting('search_path')").fetchone()
        first = str(path[0] if path else "").split(",")[0].strip().strip('"')
        if not first or first == "$user":
            user = conn.execute("SELECT current_user").fetchone()
            first = str(user[0]) if user else "public"
        return first

    def _returned(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's reset of a connection given back: when, for :meth:`_check`."""
        self._returned_at[id(conn)] = time.monotonic()

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check of a connection lent: alive (an empty query) unless it was
        given back within the last ``CHECK_IDLE`` seconds (a round trip before each call
        was a tenth of a run's time on the loop; a connection broken since is the
        store's error, as a server lost mid-call is), and, every few minutes, the
        server's clock measured again on it."""
        if self.server_clock is not None and self.server_clock.stale():
            with self._clock_lock:
                self.server_clock.measure(conn)
            return
        if time.monotonic() - self._returned_at.pop(id(conn), -CHECK_IDLE) < CHECK_IDLE:
            return
        ConnectionPool.check_connection(conn)

    @classmethod
    def exists(cls, location: str) -> bool:
        url = PostgresLocation.parse(location)
        with (
            _Errors(f"the database {url.shown}", url.password, lambda: False),
            psycopg.connect(**url.connection_kwargs()) as conn,
        ):
            schema = url.schema or cls._search_path_schema(conn)
            found = conn.execute(
                "SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL",
                [schema],
            ).fetchone()
            return bool(found and found[0])

    def close(self) -> None:
        self.close_lanes()
        self.closed = True
        self._loop_connection.close()
        self._pool.close()

    def health(self) -> None:
        self.tuples("SELECT version FROM schema_version")

    def leadership(self, timeout: float) -> Leadership:
        """One leader among the replicas: an advisory lock held on a connection of its own
        (bot/store/postgres_leadership.py)."""
        connection = self.url.connection_kwargs()
        connection["options"] = f"{connection['options']} -c search_path={self.schema}"
        return AdvisoryLeadership(connection, self.schema, timeout=timeout)

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

    # -- plumbing (PostgreSQL's own: tests may use it, the rest of the bot never does) ----

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool; while the server is known not to answer, the store's
        error at once (see :meth:`_lost`)."""
        held: psycopg.Connection[Any] | None = getattr(self._batches, "conn", None)
        if held is not None:  # this thread's batch: its transaction's connection
            self._in_batch()
            with self._errors:
                yield held
            return
        with self._answering(), self._errors, self._pool.connection(timeout=self.wait) as conn:
            yield conn

    @contextmanager
    def _answering(self) -> Iterator[None]:
        """Around a call that reaches the server: while it is known not to answer, the
        store's error at once; a call that finds it gone says so (see :meth:`_lost`)."""
        if self._down is not None:
            raise StoreUnavailableError(
                f"the database {self.location} does not answer: {self._down}"
            )
        try:
            yield
        except StoreUnavailableError as exc:
            if not self.closed:
                self._lost(str(exc).rpartition("does not answer: ")[2] or str(exc))
            raise

    def _lost(self, why: str) -> None:
        """The server does not answer. The bot calls the store on its event loop: waiting
        ``wait`` seconds in each call while the server is away would stall every request
        (/healthz, Slack's, which must be answered within 3 s). So until a probe in a
        thread of its own reaches the server again, every call fails at once."""
        with self._probe_lock:
            if self._down is not None:
                return
            self._down = why
        threading.Thread(target=self._probe, name="stopbot-store-probe", daemon=True).start()

    def _probe(self) -> None:
        while not self.closed:
            try:
                with self._pool.connection(timeout=self.wait) as conn:
                    conn.execute("SELECT 1")
            except Exception:
                time.sleep(PROBE_INTERVAL)
                continue
            with self._probe_lock:
                self._down = None
            return

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One atomic unit of writes, after the store's write lock (see the docstring)."""
        with self._connection() as conn:
            if getattr(self._batches, "conn", None) is conn:
                # Inside a batch: a savepoint of its transaction, undone alone if it raises.
                # Never released: the commit ends them all, and a RELEASE was a round trip
                # per call made under the store's write lock (a night's limit). Named by
                # depth, a rollback goes to the newest of its depth: this call's own, with
                # whatever it nested since.
                depth = getattr(self._batches, "depth", 0) + 1
                savepoint = f"call_{depth}"
                self._batches.depth = depth
                conn.execute(f"SAVEPOINT {savepoint}")
                try:
                    yield conn
                except BaseException:
                    if not conn.closed:
                        with suppress(psycopg.Error):
                            conn.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
                    raise
                finally:
                    self._batches.depth = depth - 1
                return
            conn.execute(self._begin)
            try:
                yield conn
            except BaseException:
                if not conn.closed:
                    with suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _unlocked(self) -> Iterator[psycopg.Connection[Any]]:
        """A transaction without the store's write lock, for writes each of which is a
        compare-and-set on its own (a unique key inserted once)."""
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            except BaseException:
                if not conn.closed:
                    with suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def batch(self) -> Iterator[None]:
        # One connection of the pool is this thread's for the whole batch (the others go
        # on with the rest of the pool); the task that opened it is remembered, since the
        # tasks of one thread would share it.
        if getattr(self._batches, "conn", None) is not None:
            self._in_batch()
            yield
            return
        with self.transaction() as conn:
            self._batches.conn, self._batches.task = conn, calling_task()
            try:
                yield
            finally:
                self._batches.conn = self._batches.task = None

    def _in_batch(self) -> None:
        """A call inside this thread's batch: it must come from the task that opened it."""
        if calling_task() is not self._batches.task:
            raise StoreError(
                f"the database {self.location}: a batch of store calls spans an await "
                "(another task called the store inside it)"
            )

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a read (SQLite's ``?`` placeholders, so tests share queries) and return its
        rows as dicts."""
        with self._connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            return cursor.execute(_qmarks(query), list(params)).fetchall()

    def tuples(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Like :meth:`rows`, as plain tuples."""
        with self._connection() as conn:
            return conn.execute(_qmarks(query), list(params)).fetchall()

    def schema_version(self) -> int:
        with self._connection() as conn:
            return schema_version(conn)

    def _rows(
        self,
        conn: psycopg.Connection[Any],
        query: LiteralString | bytes | sql.Composed,
        params: Any = (),
    ) -> list[dict[str, Any]]:
        return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()

    def _audit(
        self,
        conn: psycopg.Connection[Any],
        actor: str,
        action: str,
        *,
        resource: str | None = None,
        operation_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        row = conn.execute(
            "INSERT INTO audit (at, actor, action, resource, operation_id, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            [
                self.clock(),
                actor,
                action,
                resource,
                operation_id,
                # default=str: a Text is kept as its neutral words ("denied by U0CAROL").
                json.dumps(detail or {}, sort_keys=True, default=str),
            ],
        ).fetchone()
        return int(row[0]) if row else 0

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
        where: list[sql.Composable] = []
        params: list[Any] = []
        if resource is not None:
            where.append(sql.SQL("resource = %s"))
            params.append(resource)
        if since is not None:
            where.append(sql.SQL("at >= %s"))
            params.append(since)
        query = sql.Composed([sql.SQL("SELECT * FROM audit")])
        if where:
            query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
        query += sql.SQL(" ORDER BY id DESC")
        if limit is not None:
            query += sql.SQL(" LIMIT {}").format(int(limit))
        with self._connection() as conn:
            rows = self._rows(conn, query, params)
        rows.reverse()
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        return [AuditEntry.model_validate(r) for r in rows]

    def audit_facts(self, actions: Sequence[str], *, since: dt.datetime) -> list[AuditEntry]:
        if not actions:
            return []
        query = (
            "SELECT * FROM audit WHERE id IN ("
            "SELECT MAX(id) FROM audit WHERE action = ANY(%s) AND at < %s "
            "AND resource IS NOT NULL GROUP BY resource) "
            "OR (action = ANY(%s) AND at >= %s AND resource IS NOT NULL) ORDER BY id"
        )
        with self._connection() as conn:
            rows = self._rows(conn, query, [list(actions), since, list(actions), since])
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
        op_id = operation_id()
        with self.transaction() as conn:
            inserted = conn.execute(
                "INSERT INTO operations (id, resource, provider, resource_id, requested_by, "
                "source, reason, force, override_lock, state, created_at, updated_at, expires_at,"
                " channel, response_url, idempotency_key, owner, notify, action, lease_seconds) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                [
                    op_id,
                    resource,
                    provider,
                    resource_id,
                    requested_by,
                    source,
                    reason,
                    force,
                    override_lock,
                    state.value,
                    now,
                    now,
                    expires_at,
                    channel,
                    response_url,
                    idempotency_key,
                    owner,
                    notify,
                    action.value,
                    lease_seconds,
                ],
            ).fetchone()
            if inserted is None:
                existing = conn.execute(
                    "SELECT id FROM operations WHERE idempotency_key = %s", [idempotency_key]
                ).fetchone()
                return self._get(conn, str(existing[0]) if existing else op_id), False
            conn.execute(
                "INSERT INTO transitions (operation_id, at, state) VALUES (%s, %s, %s)",
                [op_id, now, state.value],
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

    def _get(self, conn: psycopg.Connection[Any], op_id: str) -> Operation:
        rows = self._rows(conn, "SELECT * FROM operations WHERE id = %s", [op_id])
        if not rows:
            raise KeyError(op_id)
        return Operation.model_validate(rows[0])

    def _get_many(self, conn: psycopg.Connection[Any], ids: Iterable[str]) -> list[Operation]:
        return [self._get(conn, op_id) for op_id in ids]

    def operations(self, ids: Iterable[str]) -> dict[str, Operation]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        with self._connection() as conn:
            rows = self._rows(conn, "SELECT * FROM operations WHERE id = ANY(%s)", [wanted])
        return {op.id: op for op in (Operation.model_validate(row) for row in rows)}

    def get_operation(self, op_id: str) -> Operation | None:
        with self._connection() as conn:
            try:
                return self._get(conn, op_id)
            except KeyError:
                return None

    def _in_flight_on(self, conn: psycopg.Connection[Any], op_id: str) -> str | None:
        """The stop in flight on ``op_id``'s resource, other than itself (that ``op_id``
        then joins), if any."""
        row = conn.execute(
            "SELECT other.id FROM operations other JOIN operations me "
            "ON other.resource = me.resource "
            "WHERE me.id = %s AND other.id != me.id AND other.state = ANY(%s) "
            "AND other.joined IS NULL",
            [op_id, _IN_FLIGHT],
        ).fetchone()
        return str(row[0]) if row else None

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
            "updated_at": now,
            "detail": _stored(detail),
            **(fields or {}),
        }
        if to in FINAL_STATES:
            values["finished_at"] = now
        fence = sql.SQL("") if owner is None else sql.SQL(" AND owner IS NOT DISTINCT FROM %s")
        with self.transaction() as conn:
            if to == OpState.SUBMITTING:
                values["joined"] = self._in_flight_on(conn, op_id)
            cursor = conn.execute(
                sql.SQL("UPDATE operations SET {} WHERE id = %s AND state = ANY(%s){}").format(
                    _assignments(values), fence
                ),
                [
                    *(_column_value(k, v) for k, v in values.items()),
                    op_id,
                    allowed,
                    *([] if owner is None else [owner]),
                ],
            )
            if cursor.rowcount != 1:
                return None
            op = self._get(conn, op_id)
            if owe is not None:
                self._owe(conn, owe)
            conn.execute(
                "INSERT INTO transitions (operation_id, at, state, message) "
                "VALUES (%s, %s, %s, %s)",
                [op_id, now, to.value, _stored(detail)],
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
        with self.transaction() as conn:
            conn.execute(
                sql.SQL("UPDATE operations SET {} WHERE id = %s").format(_assignments(fields)),
                [*(_column_value(k, v) for k, v in fields.items()), op_id],
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
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT state, provider_state, owner FROM operations WHERE id = %s", [op_id]
            ).fetchone()
            if row is None or row[1] == provider_state:
                return None
            if owner is not None and row[2] != owner:
                return None
            if owe is not None:
                self._owe(conn, owe)
            conn.execute(
                "UPDATE operations SET provider_state = %s, updated_at = %s WHERE id = %s",
                [provider_state, now, op_id],
            )
            conn.execute(
                "INSERT INTO transitions (operation_id, at, state, provider_state, phase, message)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    op_id,
                    now,
                    row[0],
                    provider_state,
                    phase,
                    _stored(Text(message) if message else None),
                ],
            )
            return self._get(conn, op_id)

    def transitions(self, op_id: str) -> list[Transition]:
        with self._connection() as conn:
            rows = self._rows(
                conn,
                "SELECT operation_id, at, state, provider_state, phase, message FROM transitions "
                "WHERE operation_id = %s ORDER BY id",
                [op_id],
            )
        return [Transition.model_validate(r) for r in rows]

    def operations_in_flight(self) -> list[Operation]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id FROM operations WHERE state = ANY(%s) ORDER BY created_at, seq",
                [_IN_FLIGHT],
            ).fetchall()
            return self._get_many(conn, (r[0] for r in rows))

    def in_flight_ids(self, owner: str) -> list[str]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id FROM operations WHERE owner = %s AND state = ANY(%s) "
                "ORDER BY created_at, seq",
                [owner, _IN_FLIGHT],
            ).fetchall()
        return [r[0] for r in rows]

    def recent_operations(self, *, resource: str | None = None, limit: int = 10) -> list[Operation]:
        only = sql.SQL("") if resource is None else sql.SQL(" WHERE resource = %s")
        with self._connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT id FROM operations{} ORDER BY created_at DESC, seq DESC LIMIT {}"
                ).format(only, int(limit)),
                [] if resource is None else [resource],
            ).fetchall()
            return self._get_many(conn, (r[0] for r in rows))

    def operation_for_key(self, idempotency_key: str) -> Operation | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT id FROM operations WHERE idempotency_key = %s", [idempotency_key]
            ).fetchone()
            return self._get(conn, row[0]) if row else None

    def orphaned_operations(
        self, states: Iterable[OpState], live: Iterable[str]
    ) -> list[Operation]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id FROM operations WHERE state = ANY(%s) "
                "AND (owner IS NULL OR NOT owner = ANY(%s)) ORDER BY created_at, seq",
                [[s.value for s in states], list(live)],
            ).fetchall()
            return self._get_many(conn, (r[0] for r in rows))

    def claim_send(self, op_id: str, owner: str) -> Operation | None:
        if getattr(self._batches, "conn", None) is not None and not lane_batch():
            raise StoreError(CLAIM_IN_BATCH)
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE operations SET send_claimed_at = %s, owner = %s, sends = sends + 1 "
                "WHERE id = %s AND state = %s AND send_claimed_at IS NULL AND joined IS NULL",
                [self.clock(), owner, op_id, OpState.SUBMITTING.value],
            )
            return self._get(conn, op_id) if cursor.rowcount == 1 else None

    def release_claim(self, op_id: str, owner: str, sends: int) -> Operation | None:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE operations SET send_claimed_at = NULL WHERE id = %s AND owner = %s "
                "AND state = %s AND sends = %s AND send_claimed_at IS NOT NULL",
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

    # -- claims: at-most-once for anything keyed (Slack retries, button clicks) ---

    def claim(self, key: str, *, owe: Owed | None = None) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO claims (key, claimed_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [key, self.clock()],
            )
            if cursor.rowcount == 1 and owe is not None:
                self._owe(conn, owe)
            return cursor.rowcount == 1

    def unclaim(self, key: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM claims WHERE key = %s", [key])

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
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                [
                    op.id,
                    op.resource,
                    op.requested_by,
                    LeaseState.ACTIVE.value,
                    op.finished_at,
                    ends_at,
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

    def _lease(self, conn: psycopg.Connection[Any], lease_id: str) -> Lease | None:
        rows = self._rows(conn, "SELECT * FROM leases WHERE id = %s", [lease_id])
        return Lease.model_validate(rows[0]) if rows else None

    def unopened_leases(self) -> list[str]:
        rows = self.rows(
            "SELECT o.id FROM operations o LEFT JOIN leases l ON l.id = o.id "
            "WHERE o.action = 'start' AND o.lease_seconds IS NOT NULL AND o.state = ANY(?) "
            "AND l.id IS NULL",
            [[s.value for s in UP_STATES]],
        )
        return [str(r["id"]) for r in rows]

    def get_lease(self, lease_id: str) -> Lease | None:
        with self._connection() as conn:
            return self._lease(conn, lease_id)

    def leases(
        self, states: Iterable[LeaseState] = (LeaseState.ACTIVE, LeaseState.UNTIL_RUN)
    ) -> list[Lease]:
        rows = self.rows(
            "SELECT * FROM leases WHERE state = ANY(?) ORDER BY ends_at, id",
            [[s.value for s in states]],
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
        unwarned_sql = sql.SQL(" AND warned_at IS NULL" if unwarned else "")
        with self.transaction() as conn:
            cursor = conn.execute(
                sql.SQL("UPDATE leases SET {} WHERE id = %s AND state = ANY(%s){}").format(
                    _assignments(values), unwarned_sql
                ),
                [*values.values(), lease_id, [s.value for s in allowed_from]],
            )
            if cursor.rowcount != 1:
                return None
            lease = self._lease(conn, lease_id)
            if lease is None:
                return None
            if owe is not None:
                self._owe(conn, owe)
            detail = {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in values.items()}
            self._audit(
                conn, actor, audit, resource=lease.resource, operation_id=lease.id, detail=detail
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
                "UPDATE operations SET state = %s, updated_at = %s, detail = NULL "
                "WHERE id = %s AND state = %s",
                [
                    OpState.AWAITING_APPROVAL.value,
                    now,
                    op_id,
                    OpState.AWAITING_CONFIRMATION.value,
                ],
            )
            if cursor.rowcount != 1:
                return None
            op = self._get(conn, op_id)
            conn.execute(
                "INSERT INTO approvals (id, operation_id, status, requested_by, created_at, "
                "expires_at, min_approvals) VALUES (%s, %s, 'pending', %s, %s, %s, %s)",
                [op_id, op_id, op.requested_by, now, expires_at, min_approvals],
            )
            conn.execute(
                "INSERT INTO transitions (operation_id, at, state) VALUES (%s, %s, %s)",
                [op_id, now, OpState.AWAITING_APPROVAL.value],
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
        with self._connection() as conn:
            rows = self._rows(conn, "SELECT * FROM approvals WHERE operation_id = %s", [op_id])
            if not rows:
                return None
            votes = self._rows(
                conn,
                "SELECT approver, vote, reason, at FROM approval_votes WHERE operation_id = %s "
                "ORDER BY at, approver",
                [op_id],
            )
        return Approval.model_validate({**rows[0], "votes": votes})

    def vote(self, op_id: str, approver: str, vote: str, reason: str | None = None) -> int | None:
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO approval_votes (operation_id, approver, vote, reason, at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [op_id, approver, vote, reason, self.clock()],
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
                "SELECT COUNT(*) FROM approval_votes WHERE operation_id = %s AND vote = 'approve'",
                [op_id],
            ).fetchone()
            return int(row[0]) if row else 0

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
                "UPDATE approvals SET status = %s, decided_by = %s, decided_at = %s, reason = %s "
                "WHERE operation_id = %s AND status = 'pending'",
                [status, decided_by, now, reason, op_id],
            )
            if cursor.rowcount != 1:
                return None
            values: dict[str, Any] = {
                "state": to.value,
                "updated_at": now,
                "detail": _stored(detail),
            }
            if to in FINAL_STATES:
                values["finished_at"] = now
            if to == OpState.SUBMITTING:
                values["joined"] = self._in_flight_on(conn, op_id)
                values["owner"] = owner
            conn.execute(
                sql.SQL("UPDATE operations SET {} WHERE id = %s AND state = %s").format(
                    _assignments(values)
                ),
                [*values.values(), op_id, OpState.AWAITING_APPROVAL.value],
            )
            conn.execute(
                "INSERT INTO transitions (operation_id, at, state, message) "
                "VALUES (%s, %s, %s, %s)",
                [op_id, now, to.value, _stored(detail)],
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
            [self.clock()],
        )
        return [r[0] for r in rows]

    def pending_approvals(self) -> list[str]:
        rows = self.tuples(
            "SELECT operation_id FROM approvals WHERE status = 'pending' AND expires_at > ? "
            "ORDER BY created_at",
            [self.clock()],
        )
        return [r[0] for r in rows]

    def add_approval_message(self, op_id: str, channel: str, ts: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO approval_messages (operation_id, channel, ts) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [op_id, channel, ts],
            )

    def approval_messages(self, op_id: str) -> list[tuple[str, str]]:
        rows = self.tuples(
            "SELECT channel, ts FROM approval_messages WHERE operation_id = ? ORDER BY seq",
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
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (resource) DO UPDATE SET "
                "owner = excluded.owner, reason = excluded.reason, "
                "created_at = excluded.created_at, expires_at = excluded.expires_at "
                "WHERE bot_locks.owner = excluded.owner OR bot_locks.expires_at <= %s",
                [resource, owner, reason, now, expires_at, now],
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
        rows = self.rows(
            "SELECT * FROM bot_locks WHERE resource = ? AND expires_at > ?",
            [resource, self.clock()],
        )
        return BotLock.model_validate(rows[0]) if rows else None

    def delete_lock(self, resource: str, actor: str, *, forced: bool = False) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute("DELETE FROM bot_locks WHERE resource = %s", [resource])
            if cursor.rowcount:
                self._audit(
                    conn, actor, "lock.removed", resource=resource, detail={"forced": forced}
                )
            return bool(cursor.rowcount)

    def locks_expiring(self, within: dt.timedelta) -> list[BotLock]:
        now = self.clock()
        rows = self.rows(
            "SELECT * FROM bot_locks WHERE expires_at > ? AND expires_at <= ? ORDER BY expires_at",
            [now, now + within],
        )
        return [BotLock.model_validate(r) for r in rows]

    def active_locks(self) -> list[BotLock]:
        rows = self.rows(
            "SELECT * FROM bot_locks WHERE expires_at > ? ORDER BY expires_at", [self.clock()]
        )
        return [BotLock.model_validate(r) for r in rows]

    # -- schedules ----------------------------------------------------------------

    def save_schedule(
        self, name: str, definition: dict[str, Any], actor: str, *, source: str = "slack"
    ) -> None:
        now = self.clock()
        encoded = json.dumps(definition, sort_keys=True, default=str)
        with self.transaction() as conn:
            existing = conn.execute(
                "SELECT definition, source FROM schedules WHERE name = %s", [name]
            ).fetchone()
            if existing and existing[0] == encoded and existing[1] == source:
                return  # unchanged: no audit noise at every start
            conn.execute(
                "INSERT INTO schedules (name, definition, created_at, updated_at, source) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
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
            row = conn.execute(
                "DELETE FROM schedules WHERE name = %s RETURNING source", [name]
            ).fetchone()
            for table in ("schedule_skips", "schedule_snoozes", "schedule_exceptions"):
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE schedule = %s").format(sql.Identifier(table)),
                    [name],
                )
            conn.execute("DELETE FROM schedule_state WHERE name = %s", [name])
            if row is not None:
                self._audit(
                    conn, actor, "schedule.removed", detail={"name": name, "source": row[0]}
                )
            return row is not None

    def schedule_state(self, name: str) -> ScheduleState:
        rows = self.rows("SELECT * FROM schedule_state WHERE name = ?", [name])
        return ScheduleState.model_validate(rows[0]) if rows else ScheduleState(name=name)

    def update_schedule_state(self, name: str, **fields: Any) -> None:
        columns = sql.SQL(", ").join(sql.Identifier(k) for k in fields)
        marks = sql.SQL(", ").join(sql.Placeholder() for _ in fields)
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = excluded.{0}").format(sql.Identifier(k)) for k in fields
        )
        with self.transaction() as conn:
            conn.execute(
                sql.SQL(
                    "INSERT INTO schedule_state (name, {}) VALUES (%s, {}) "
                    "ON CONFLICT (name) DO UPDATE SET {}"
                ).format(columns, marks, updates),
                [name, *fields.values()],
            )

    def skip_fire(self, schedule: str, fire: dt.datetime, actor: str) -> str | None:
        with self.transaction() as conn:
            existing = conn.execute(
                "SELECT skipped_by FROM schedule_skips WHERE schedule = %s AND fire_time = %s",
                [schedule, fire],
            ).fetchone()
            if existing is not None:
                return str(existing[0])
            conn.execute(
                "INSERT INTO schedule_skips (schedule, fire_time, skipped_by, skipped_at) "
                "VALUES (%s, %s, %s, %s)",
                [schedule, fire, actor, self.clock()],
            )
            conn.execute(
                "DELETE FROM schedule_snoozes WHERE schedule = %s AND fire_time = %s "
                "AND NOT started",
                [schedule, fire],
            )
            self._audit(conn, actor, "schedule.skip", detail={"name": schedule, "fire": _iso(fire)})
            return None

    def skips(self, schedule: str) -> dict[dt.datetime, str]:
        rows = self.tuples(
            "SELECT fire_time, skipped_by FROM schedule_skips WHERE schedule = ?", [schedule]
        )
        return {fire: str(by) for fire, by in rows}

    def snooze_fire(
        self, schedule: str, fire: dt.datetime, until: dt.datetime, actor: str
    ) -> bool | None:
        with self.transaction() as conn:
            existing = conn.execute(
                "SELECT until, started FROM schedule_snoozes WHERE schedule = %s "
                "AND fire_time = %s",
                [schedule, fire],
            ).fetchone()
            if existing is not None and existing[1]:
                return None
            if existing is not None and existing[0] == until:
                return False
            conn.execute(
                "INSERT INTO schedule_snoozes (schedule, fire_time, until, snoozed_by, snoozed_at)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (schedule, fire_time) DO UPDATE SET "
                "until = excluded.until, snoozed_by = excluded.snoozed_by, "
                "snoozed_at = excluded.snoozed_at",
                [schedule, fire, until, actor, self.clock()],
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
        return {fire: (until, bool(started)) for fire, until, started in rows}

    def start_snooze(self, schedule: str, fire: dt.datetime) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE schedule_snoozes SET started = true "
                "WHERE schedule = %s AND fire_time = %s AND NOT started",
                [schedule, fire],
            )
            return cursor.rowcount == 1

    def add_exception(
        self, schedule: str, resource: str, until: dt.datetime, actor: str
    ) -> KeepException:
        now = self.clock()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO schedule_exceptions (schedule, resource, until, created_by, "
                "created_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (schedule, resource) "
                "DO UPDATE SET until = excluded.until, created_by = excluded.created_by, "
                "created_at = excluded.created_at",
                [schedule, resource, until, actor, now],
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
        query = "SELECT * FROM schedule_exceptions WHERE until > ?"
        params: list[Any] = [self.clock()]
        if schedule is not None:
            query += " AND schedule = ?"
            params.append(schedule)
        rows = self.rows(query + " ORDER BY until", params)
        return [KeepException.model_validate(r) for r in rows]

    # -- runs ---------------------------------------------------------------------

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
                "INSERT INTO schedule_runs (id, schedule, fire_time, kind, status, reason, "
                "started_at, finished_at, channel, started_by, owner) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                [
                    run_id,
                    schedule,
                    fire_time,
                    kind,
                    status,
                    _stored(reason),
                    now,
                    None if status == "running" else now,
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
        rows = self.rows("SELECT * FROM schedule_runs WHERE id = ?", [run_id])
        return ScheduleRun.model_validate(rows[0]) if rows else None

    def run_at(self, schedule: str, fire_time: dt.datetime) -> ScheduleRun | None:
        rows = self.rows(
            "SELECT * FROM schedule_runs WHERE schedule = ? AND fire_time = ?",
            [schedule, fire_time],
        )
        return ScheduleRun.model_validate(rows[0]) if rows else None

    def runs(
        self, *, status: str | None = None, schedule: str | None = None, limit: int = 50
    ) -> list[ScheduleRun]:
        where: list[sql.Composable] = []
        params: list[Any] = []
        if status is not None:
            where.append(sql.SQL("status = %s"))
            params.append(status)
        if schedule is not None:
            where.append(sql.SQL("schedule = %s"))
            params.append(schedule)
        query = sql.Composed([sql.SQL("SELECT * FROM schedule_runs")])
        if where:
            query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where)
        query += sql.SQL(" ORDER BY fire_time DESC, schedule LIMIT {}").format(int(limit))
        with self._connection() as conn:
            rows = self._rows(conn, query, params)
        return [ScheduleRun.model_validate(r) for r in rows]

    def finish_run(
        self,
        run_id: str,
        status: str = "done",
        *,
        owner: str | None = None,
        owe: Owed | None = None,
    ) -> bool:
        fence = sql.SQL("") if owner is None else sql.SQL(" AND owner IS NOT DISTINCT FROM %s")
        with self.transaction() as conn:
            row = conn.execute(
                sql.SQL(
                    "UPDATE schedule_runs SET status = %s, finished_at = %s "
                    "WHERE id = %s AND status = 'running'{} RETURNING schedule"
                ).format(fence),
                [status, self.clock(), run_id, *([] if owner is None else [owner])],
            ).fetchone()
            if row is None:
                return False
            self._audit(
                conn, f"schedule:{row[0]}", f"schedule.run.{status}", detail={"run": run_id}
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
        with self.transaction() as conn:
            conn.execute(
                "UPDATE schedule_runs SET announced_at = %s WHERE id = ANY(%s)",
                [self.clock(), list(run_ids)],
            )
            if owed is not None:
                self._owe(conn, owed)

    def set_run_message(self, run_id: str, channel: str, ts: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE schedule_runs SET channel = %s, message_ts = %s WHERE id = %s",
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
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (run_id, resource) DO UPDATE SET "
                "outcome = excluded.outcome, detail = excluded.detail, "
                "op_id = COALESCE(excluded.op_id, schedule_items.op_id)",
                [run_id, resource, outcome, _stored(detail), op_id],
            )

    def record_items(
        self, run_id: str, items: Sequence[tuple[str, str | None, Text | None]]
    ) -> None:
        with self.transaction() as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO schedule_items (run_id, resource, outcome, detail) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (run_id, resource) DO UPDATE SET "
                "outcome = excluded.outcome, detail = excluded.detail",
                [
                    [run_id, resource, outcome, _stored(detail)]
                    for resource, outcome, detail in items
                ],
            )

    def run_items(self, run_id: str) -> list[RunItem]:
        rows = self.rows(
            "SELECT run_id, resource, outcome, detail, op_id FROM schedule_items "
            "WHERE run_id = ? ORDER BY seq",
            [run_id],
        )
        return [RunItem.model_validate(r) for r in rows]

    def run_names(self, run_id: str, outcome: str | None) -> list[str]:
        rows = self.tuples(
            "SELECT resource FROM schedule_items "
            "WHERE run_id = ? AND outcome IS NOT DISTINCT FROM ? ORDER BY seq",
            [run_id, outcome],
        )
        return [name for (name,) in rows]

    def run_tally(self, run_id: str, listed: int) -> tuple[dict[str | None, int], list[RunItem]]:
        # One statement, so the counts and the items listed agree.
        rows = self.rows(
            "SELECT run_id, resource, outcome, detail, op_id, count FROM ("
            "  SELECT *, ROW_NUMBER() OVER (PARTITION BY outcome ORDER BY seq) AS place,"
            "  COUNT(*) OVER (PARTITION BY outcome) AS count"
            "  FROM schedule_items WHERE run_id = ?"
            ") AS numbered WHERE place <= ? ORDER BY seq",
            [run_id, listed],
        )
        return tally(rows)

    # -- processes and what they own ---------------------------------------------

    def register_process(self, process: Registration) -> None:
        now = self.clock()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO processes (id, host, pid, pid_start, started_at, heartbeat_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [process.id, process.host, process.pid, process.pid_start, now, now],
            )

    def heartbeat(self, process_id: str) -> bool:
        # One statement on the process's own row: no write lock, so a heartbeat never
        # waits behind a run's writes (nor, on the urgent lane, do the acks behind it).
        # A forgetting beside it deletes the row before or after: 0 rows, registered again.
        in_batch = getattr(self._batches, "conn", None) is not None
        with self.transaction() if in_batch else self._unlocked() as conn:
            cursor = conn.execute(
                "UPDATE processes SET heartbeat_at = %s WHERE id = %s", [self.clock(), process_id]
            )
            return cursor.rowcount == 1

    def retire_process(self, process_id: str) -> None:
        with self.transaction() as conn:
            for table in _OWNED_KEY:
                conn.execute(
                    sql.SQL("UPDATE {} SET owner = NULL WHERE owner = %s").format(
                        sql.Identifier(table)
                    ),
                    [process_id],
                )
            conn.execute(
                "UPDATE processes SET retired_at = %s WHERE id = %s", [self.clock(), process_id]
            )

    def processes(self) -> list[ProcessInfo]:
        rows = self.rows("SELECT id, host, pid, pid_start, heartbeat_at, retired_at FROM processes")
        return [
            ProcessInfo(
                id=r["id"],
                host=r["host"],
                pid=int(r["pid"]),
                pid_start=r["pid_start"],
                heartbeat_at=r["heartbeat_at"],
                retired=r["retired_at"] is not None,
            )
            for r in rows
        ]

    def forget_processes(self, ids: Iterable[str]) -> None:
        owns = sql.SQL(" OR ").join(
            sql.SQL("EXISTS (SELECT 1 FROM {} WHERE owner = processes.id)").format(
                sql.Identifier(table)
            )
            for table in _OWNED_KEY
        )
        with self.transaction() as conn:
            conn.execute(
                sql.SQL("DELETE FROM processes WHERE id = ANY(%s) AND NOT ({})").format(owns),
                [list(ids)],
            )

    # -- environments ---------------------------------------------------------------

    def create_environment_run(self, run: EnvironmentRun) -> None:
        values = _environment_fields(
            {name: getattr(run, name) for name in EnvironmentRun.model_fields}
        )
        with self.transaction() as conn:
            conn.execute(
                sql.SQL("INSERT INTO environment_runs ({}) VALUES ({})").format(
                    sql.SQL(", ").join(sql.Identifier(k) for k in values),
                    sql.SQL(", ").join(sql.Placeholder() for _ in values),
                ),
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
        rows = self.rows(
            "SELECT * FROM environment_runs WHERE state = ANY(?) ORDER BY created_at, id",
            [[s.value for s in states]],
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
        values = _environment_fields(fields) | {"updated_at": self.clock()}
        where: sql.Composable = sql.SQL("id = %s AND state = ANY(%s)")
        params: list[Any] = [run_id, [s.value for s in allowed_from]]
        if tier is not None:
            where += sql.SQL(" AND tier = %s")
            params.append(tier)
        if owner is not None:
            where += sql.SQL(" AND owner = %s")
            params.append(owner)
        with self.transaction() as conn:
            cursor = conn.execute(
                sql.SQL("UPDATE environment_runs SET {} WHERE {}").format(
                    _assignments(values), where
                ),
                [*values.values(), *params],
            )
            if cursor.rowcount != 1:
                return None
            row = (
                conn.cursor(row_factory=dict_row)
                .execute("SELECT * FROM environment_runs WHERE id = %s", [run_id])
                .fetchone()
            )
            if row is None:
                return None
            run = _environment_run(row)
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
        with self.transaction() as conn:
            cursor = conn.execute(
                sql.SQL(
                    "UPDATE {} SET owner = %s WHERE {} = %s AND owner IS NOT DISTINCT FROM %s"
                ).format(sql.Identifier(work), sql.Identifier(_OWNED_KEY[work])),
                [owner, key, previous],
            )
            return cursor.rowcount == 1

    # -- the outbox: messages owed to a face --------------------------------------

    def _owe(self, conn: psycopg.Connection[Any], owed: Owed) -> None:
        now = self.clock()
        conn.execute(
            "INSERT INTO outbox (key, kind, payload, version, urgent, owner, created_at, "
            "updated_at) VALUES (%s, %s, %s, 1, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
            "version = outbox.version + 1, payload = excluded.payload, "
            "urgent = excluded.urgent, owner = excluded.owner, updated_at = excluded.updated_at, "
            "attempts = 0, not_before = NULL",
            [
                owed.key,
                owed.kind,
                json.dumps(owed.payload, sort_keys=True, default=str),
                owed.urgent,
                owed.owner,
                now,
                now,
            ],
        )

    def owe(self, owed: Owed) -> None:
        with self.transaction() as conn:
            self._owe(conn, owed)

    def owed(self, limit: int = 500, *, key: str | None = None) -> list[Owed]:
        only = sql.SQL("") if key is None else sql.SQL(" AND key = %s")
        with self._connection() as conn:
            rows = self._rows(
                conn,
                sql.SQL(
                    "SELECT key, kind, payload, version, urgent, owner, attempts, not_before "
                    "FROM outbox WHERE sent_version < version{} ORDER BY updated_at, seq LIMIT %s"
                ).format(only),
                [*([] if key is None else [key]), limit],
            )
        return [Owed.model_validate({**r, "payload": json.loads(r["payload"])}) for r in rows]

    def delivered(self, key: str, version: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET sent_version = %s, attempts = 0, not_before = NULL, "
                "last_error = NULL WHERE key = %s AND sent_version < %s",
                [version, key, version],
            )

    def postpone(self, key: str, version: int, until: dt.datetime, error: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, not_before = %s, last_error = %s "
                "WHERE key = %s AND version = %s",
                [until, error[:500], key, version],
            )

    def purge_delivered(self, before: dt.datetime) -> int:
        with self.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE sent_version >= version AND updated_at < %s", [before]
            )
            return cursor.rowcount

    # -- the inbox: requests answered before they were handled --------------------

    def receive(self, requests: Sequence[tuple[str, str, str]], owner: str) -> list[str]:
        ids, params = self._received(requests, owner)
        in_batch = getattr(self._batches, "conn", None) is not None
        with self.transaction() if in_batch else self._connection() as conn:
            inserted = {row[0] for row in conn.execute(_RECEIVE, params).fetchall()}
            known = [rid for rid in ids if rid not in inserted]
            done = {row[0] for row in conn.execute(_DONE, [known]).fetchall()} if known else set()
        return _seen(ids, inserted, done)

    async def receive_now(self, requests: Sequence[tuple[str, str, str]], owner: str) -> list[str]:
        # On the loop's own connection: no thread, no hand-off of the GIL
        # (bot/store/postgres_loop.py).
        ids, params = self._received(requests, owner)

        async def record(conn: psycopg.AsyncConnection[Any]) -> tuple[set[str], set[str]]:
            inserted = {row[0] for row in await (await conn.execute(_RECEIVE, params)).fetchall()}
            known = [rid for rid in ids if rid not in inserted]
            if not known:
                return inserted, set()
            done = await (await conn.execute(_DONE, [known])).fetchall()
            return inserted, {row[0] for row in done}

        with self._answering(), self._errors:
            if self.closed:
                raise StoreUnavailableError(f"the database {self.location} is closed")
            inserted, done = await self._loop_connection.run(record)
        return _seen(ids, inserted, done)

    def _received(
        self, requests: Sequence[tuple[str, str, str]], owner: str
    ) -> tuple[list[str], list[Any]]:
        """The ids of ``requests``, and the parameters of :data:`_RECEIVE` recording them."""
        ids = [rid for rid, _, _ in requests]
        bodies = [body for _, body, _ in requests]
        return ids, [self.clock(), owner, ids, bodies, [kind for *_, kind in requests]]

    def handled(self, request_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE inbox SET done_at = %s, body = '' WHERE id = %s",
                [self.clock(), request_id],
            )

    def open_requests(self) -> list[OpenRequest]:
        rows = self.rows(
            "SELECT id, received_at, body, content_type, owner, attempts FROM inbox "
            "WHERE done_at IS NULL ORDER BY received_at, seq"
        )
        for row in rows:
            # As the SQLite store keeps it: OpenRequest's received_at is ISO 8601 text.
            row["received_at"] = _iso(row["received_at"])
        return cast(list[OpenRequest], rows)  # the columns OpenRequest names

    def retry_request(self, request_id: str) -> int:
        with self.transaction() as conn:
            row = conn.execute(
                "UPDATE inbox SET attempts = attempts + 1 WHERE id = %s RETURNING attempts",
                [request_id],
            ).fetchone()
            return int(row[0]) if row else 0

    def purge_handled(self, before: dt.datetime) -> int:
        with self.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at < %s", [before]
            )
            return cursor.rowcount

    # -- is anyone using it? -------------------------------------------------------

    def ask_in_use(
        self, schedule: str, fire: dt.datetime, resource: str, signals: list[dict[str, Any]]
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO in_use_questions (schedule, fire_time, resource, signals, "
                "asked_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [
                    schedule,
                    fire,
                    resource,
                    json.dumps(signals, sort_keys=True, default=str),
                    self.clock(),
                ],
            )

    def answer_in_use(
        self, schedule: str, fire: dt.datetime, resource: str, answer: str, actor: str
    ) -> tuple[InUseQuestion | None, bool]:
        with self.transaction() as conn:
            won = conn.execute(
                "UPDATE in_use_questions SET answer = %s, answered_by = %s, answered_at = %s "
                "WHERE schedule = %s AND fire_time = %s AND resource = %s AND answer IS NULL",
                [answer, actor, self.clock(), schedule, fire, resource],
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
            [schedule, fire],
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
                "INSERT INTO discovered (provider, refreshed_at, resources) VALUES (%s, %s, %s) "
                "ON CONFLICT (provider) DO UPDATE SET refreshed_at = excluded.refreshed_at, "
                "resources = excluded.resources",
                [provider, self.clock(), encoded],
            )

    def discovered(self) -> dict[str, tuple[dt.datetime, list[dict[str, Any]]]]:
        return {
            r["provider"]: (r["refreshed_at"], json.loads(r["resources"]))
            for r in self.rows("SELECT provider, refreshed_at, resources FROM discovered")
        }

    def discovered_at(self) -> dict[str, dt.datetime]:
        return {
            r["provider"]: r["refreshed_at"]
            for r in self.rows("SELECT provider, refreshed_at FROM discovered")
        }

    # -- costs ------------------------------------------------------------------------

    def save_costs(self, costs: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not costs:
            return
        at = self.clock()
        with self.transaction() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO costs (resource, read_at, cost) VALUES (%s, %s, %s) "
                "ON CONFLICT (resource) DO UPDATE SET read_at = excluded.read_at, "
                "cost = excluded.cost",
                [(name, at, json.dumps(cost, sort_keys=True)) for name, cost in costs],
            )

    def costs(self, names: Sequence[str]) -> dict[str, tuple[dt.datetime, dict[str, Any]]]:
        return {
            r["resource"]: (r["read_at"], json.loads(r["cost"]))
            for r in self.rows(
                "SELECT resource, read_at, cost FROM costs WHERE resource = ANY(?)",
                [list(dict.fromkeys(names))],
            )
        }


def _assignments(values: dict[str, Any]) -> sql.Composed:
    """``a = %s, b = %s`` for the columns of ``values`` (names the store chose, quoted)."""
    return sql.SQL(", ").join(
        sql.SQL("{} = %s").format(sql.Identifier(column)) for column in values
    )


def _qmarks(query: str) -> bytes:
    """A query written with SQLite's ``?`` placeholders, in psycopg's."""
    return query.replace("%", "%%").replace("?", "%s").encode()
