"""The PostgreSQL store's schema and its migrations, run once however many replicas start.

The version numbers are SQLite's (:data:`bot.store.sqlite.SCHEMA_VERSION`): a version names
the same records on both backends. No PostgreSQL store existed before version 6, so its
first migration creates version 6 whole; later versions are one step each, on both.

Types are PostgreSQL's own where SQLite had to make do: ``timestamptz`` for instants,
``boolean`` for flags, identity columns where SQLite's ``rowid`` kept the order things were
written in. Texts for the user stay their stored parts and details stay JSON text, as in
SQLite, so the store reads both the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from bot.models import TRACKED_STATES
from bot.store.errors import StoreSchemaError
from bot.store.sqlite import SCHEMA_VERSION

__all__ = ["MIGRATE_LOCK", "MIGRATIONS", "SCHEMA_VERSION", "migrate", "schema_version"]

log = logging.getLogger(__name__)

# The class of the session advisory lock taken to migrate one schema (with a key of the
# schema's): 'stpm'. Replicas starting together migrate once: the first holds it, the others
# wait, then find the schema at its version.
MIGRATE_LOCK = int.from_bytes(b"stpm", "big")

_IN_FLIGHT = ", ".join(f"'{s.value}'" for s in sorted(TRACKED_STATES))

_VERSION_6 = f"""
CREATE TABLE operations (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    resource text NOT NULL,
    provider text NOT NULL,
    resource_id text NOT NULL,
    requested_by text NOT NULL,
    source text NOT NULL,
    reason text,
    force boolean NOT NULL DEFAULT false,
    override_lock boolean NOT NULL DEFAULT false,
    state text NOT NULL,
    detail text,
    provider_state text,
    created_at timestamptz,
    updated_at timestamptz,
    finished_at timestamptz,
    expires_at timestamptz,
    channel text,
    message_ts text,
    response_url text,
    idempotency_key text UNIQUE,
    owner text,
    send_claimed_at timestamptz,
    joined text,
    notify boolean NOT NULL DEFAULT false,
    shown_in text,
    sends integer NOT NULL DEFAULT 0
);
CREATE INDEX operations_state ON operations (state);
CREATE INDEX operations_resource ON operations (resource, created_at);
CREATE INDEX operations_owner ON operations (owner, state);
CREATE UNIQUE INDEX one_stop_in_flight ON operations (resource)
    WHERE state IN ({_IN_FLIGHT}) AND joined IS NULL;

CREATE TABLE transitions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation_id text REFERENCES operations (id),
    at timestamptz,
    state text,
    provider_state text,
    phase text,
    message text
);
CREATE INDEX transitions_operation ON transitions (operation_id, id);

CREATE TABLE audit (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    resource text,
    operation_id text,
    detail text
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_resource ON audit (resource, id);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

CREATE TABLE bot_locks (
    resource text PRIMARY KEY,
    owner text NOT NULL,
    reason text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE approvals (
    id text PRIMARY KEY,
    operation_id text UNIQUE REFERENCES operations (id),
    status text,
    requested_by text,
    decided_by text,
    decided_at timestamptz,
    reason text,
    created_at timestamptz,
    expires_at timestamptz,
    min_approvals integer NOT NULL DEFAULT 1
);
CREATE INDEX approvals_status ON approvals (status, expires_at);
CREATE TABLE approval_votes (
    operation_id text REFERENCES operations (id),
    approver text,
    vote text,
    reason text,
    at timestamptz,
    PRIMARY KEY (operation_id, approver)
);
CREATE TABLE approval_messages (
    operation_id text REFERENCES operations (id),
    channel text,
    ts text,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (operation_id, channel, ts)
);

CREATE TABLE schedules (
    name text PRIMARY KEY,
    definition text,
    created_at timestamptz,
    updated_at timestamptz,
    source text NOT NULL DEFAULT 'slack'
);
CREATE TABLE schedule_state (
    name text PRIMARY KEY,
    checked_through timestamptz,
    drift_checked_at timestamptz
);
CREATE TABLE schedule_runs (
    id text PRIMARY KEY,
    schedule text NOT NULL,
    fire_time timestamptz NOT NULL,
    kind text,
    status text NOT NULL,
    reason text,
    started_at timestamptz,
    finished_at timestamptz,
    channel text,
    message_ts text,
    started_by text,
    owner text,
    announced_at timestamptz,
    UNIQUE (schedule, fire_time)
);
CREATE INDEX schedule_runs_status ON schedule_runs (status);
CREATE TABLE schedule_items (
    run_id text REFERENCES schedule_runs (id),
    resource text,
    outcome text,
    detail text,
    op_id text,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (run_id, resource)
);
CREATE TABLE schedule_exceptions (
    schedule text,
    resource text,
    until timestamptz,
    created_by text,
    created_at timestamptz,
    PRIMARY KEY (schedule, resource)
);
CREATE TABLE schedule_skips (
    schedule text,
    fire_time timestamptz,
    skipped_by text,
    skipped_at timestamptz,
    PRIMARY KEY (schedule, fire_time)
);
CREATE TABLE schedule_snoozes (
    schedule text,
    fire_time timestamptz,
    until timestamptz NOT NULL,
    snoozed_by text,
    snoozed_at timestamptz,
    started boolean NOT NULL DEFAULT false,
    PRIMARY KEY (schedule, fire_time)
);

CREATE TABLE claims (key text PRIMARY KEY, claimed_at timestamptz);

CREATE TABLE processes (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    pid_start text NOT NULL,
    started_at timestamptz,
    heartbeat_at timestamptz NOT NULL,
    retired_at timestamptz
);

CREATE TABLE outbox (
    key text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    kind text NOT NULL,
    payload text NOT NULL,
    version integer NOT NULL,
    sent_version integer NOT NULL DEFAULT 0,
    urgent boolean NOT NULL DEFAULT false,
    owner text,
    created_at timestamptz,
    updated_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    not_before timestamptz,
    last_error text
);
CREATE INDEX outbox_owed ON outbox (updated_at, seq) WHERE sent_version < version;

CREATE TABLE inbox (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    received_at timestamptz NOT NULL,
    body text NOT NULL,
    content_type text,
    owner text,
    done_at timestamptz,
    attempts integer NOT NULL DEFAULT 0
);
CREATE INDEX inbox_open ON inbox (received_at, seq) WHERE done_at IS NULL;
CREATE INDEX inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL;
"""

# Wakes (an operation's action) and their leases.
_VERSION_7 = """
ALTER TABLE operations ADD COLUMN action text NOT NULL DEFAULT 'stop';
ALTER TABLE operations ADD COLUMN lease_seconds bigint;
CREATE TABLE leases (
    id text PRIMARY KEY,
    resource text NOT NULL,
    owner text NOT NULL,
    state text NOT NULL,
    created_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    warned_at timestamptz,
    ended_at timestamptz,
    ended_by text,
    end_reason text,
    end_operation_id text
);
CREATE INDEX leases_state ON leases (state, ends_at);
"""

# The audit by action and time: the savings read stops and starts from it.
_VERSION_8 = """
CREATE INDEX audit_action ON audit (action, at);
"""

# 'Is anyone using it?': a schedule warning's questions, one answer each.
_VERSION_9 = """
CREATE TABLE in_use_questions (
    schedule text NOT NULL,
    fire_time timestamptz NOT NULL,
    resource text NOT NULL,
    signals text NOT NULL,
    asked_at timestamptz NOT NULL,
    answer text,
    answered_by text,
    answered_at timestamptz,
    PRIMARY KEY (schedule, fire_time, resource)
);
"""

# Environments stopped tier after tier (bot/environments.py).
_VERSION_10 = """
CREATE TABLE environment_runs (
    id text PRIMARY KEY,
    environment text NOT NULL,
    action text NOT NULL,
    requested_by text NOT NULL,
    reason text,
    skipped text NOT NULL,
    tier integer NOT NULL,
    state text NOT NULL,
    detail text,
    owner text,
    channel text,
    message_ts text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX environment_runs_state ON environment_runs (state, created_at);
"""

# Discovery: each provider account's last list, one snapshot per account.
_VERSION_11 = """
CREATE TABLE discovered (
    provider text PRIMARY KEY,
    refreshed_at timestamptz NOT NULL,
    resources text NOT NULL
);
"""

# Costs: what providers last said each resource costs while it runs.
_VERSION_12 = """
CREATE TABLE costs (
    resource text PRIMARY KEY,
    read_at timestamptz NOT NULL,
    cost text NOT NULL
);
"""

# A run's items by outcome, as SQLite's 13 (its summary counts and lists them by outcome).
_VERSION_13 = """
CREATE INDEX schedule_items_outcome ON schedule_items (run_id, outcome, seq);
"""

# (version, the SQL that reaches it from the one before); the first creates it whole.
MIGRATIONS: Sequence[tuple[int, str]] = (
    (6, _VERSION_6),
    (7, _VERSION_7),
    (8, _VERSION_8),
    (9, _VERSION_9),
    (10, _VERSION_10),
    (11, _VERSION_11),
    (12, _VERSION_12),
    (13, _VERSION_13),
)


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The schema version in the connection's schema (0: no store there yet)."""
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: psycopg.Connection[Any], schema: str, key: int, where: str) -> None:
    """Bring ``schema`` to :data:`SCHEMA_VERSION` on ``conn`` (autocommit), once: under a
    session advisory lock, so a replica starting meanwhile waits, then finds it done. The
    server lets go of the lock if this process dies holding it."""
    conn.execute("SELECT pg_advisory_lock(%s, %s)", [MIGRATE_LOCK, key])
    try:
        with conn.transaction():
            # Only when missing: CREATE SCHEMA IF NOT EXISTS needs the right to create one
            # even where it exists, which a least-privileged role may not have.
            found = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", [schema]).fetchone()
            if not found or not found[0]:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            current = schema_version(conn)
            if current > SCHEMA_VERSION:
                raise StoreSchemaError(
                    f"{where} has schema version {current}, newer than this stopbot knows "
                    f"({SCHEMA_VERSION}): upgrade stopbot or use another database"
                )
            if current == SCHEMA_VERSION:
                return
            if current == 0:
                conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            for version, statements in MIGRATIONS:
                if version > current:
                    conn.execute(statements.encode())
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", [SCHEMA_VERSION])
        log.info("%s: schema migrated from version %d to %d", where, current, SCHEMA_VERSION)
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", [MIGRATE_LOCK, key])
