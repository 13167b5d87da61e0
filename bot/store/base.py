"""The store's interface: every record the bot keeps, by kind, whatever the database.

The rest of the bot talks to a :class:`Store` and runs no SQL of its own: a backend is one
module beside this one (:mod:`bot.store.sqlite`, :mod:`bot.store.postgres`) implementing
it, opened by :func:`bot.store.open_store` from its location (a file path, a URL). The
interface is split by kind of record (operations, approvals, locks, schedules, runs, audit,
claims, processes, outbox, inbox) so that each part reads on its own; one backend
implements them all in one class, because one call often writes several kinds at once (a
transition, its audit entry and the message it owes).

What every backend promises (the tests in tests/test_store.py hold any of them to it):

* **Each call is atomic.** What one method writes (the row, its transition, its audit entry,
  the message it makes ``owe``) commits together or not at all.
* **Every compare-and-set has one winner.** A method that moves a record "if" (a state, an
  owner, a pending approval, a key not yet claimed) is one statement or one transaction, so
  of concurrent callers (threads, processes, hosts) exactly one wins and the others see the
  winner's result. That is what makes a button act once and a stop be sent once.
* **"Now" is the store's.** ``clock`` stamps what is written; comparisons with the present
  (a lock or an approval that expired, a Keep exception in force) are made inside the store,
  never handed in by a caller, so a database shared by several hosts may use its own clock.
* **Facts, not markup.** Sentences are kept as :class:`~bot.text.Text` parts, datetimes as
  aware UTC instants; no face's syntax reaches the database.
* **Errors are the store's own** (:mod:`bot.store.errors`), never a driver's exception.
* **Several calls may share one transaction** (:meth:`Store.batch`): the writes of a few
  steps in a row cost one commit, and commit together or not at all. A claim to send a
  stop is never part of one: it must be committed before the call it claims leaves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypedDict, TypeVar

from bot.leadership import Leadership, Sole
from bot.models import (
    TRACKED_STATES,
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
from bot.store.background import Lane, LoopLane
from bot.text import Text
from providers.base import utcnow

__all__ = [
    "CLAIM_IN_BATCH",
    "ApprovalStore",
    "AuditStore",
    "ClaimStore",
    "Clock",
    "DiscoveryStore",
    "EnvironmentStore",
    "InUseStore",
    "InboxStore",
    "LeaseStore",
    "LockStore",
    "OpenRequest",
    "OperationStore",
    "OutboxStore",
    "OwnedWork",
    "ProcessStore",
    "RunStore",
    "ScheduleStore",
    "Store",
    "StoreCounts",
    "calling_task",
    "operation_id",
]

Clock = Callable[[], dt.datetime]
T = TypeVar("T")

_NO_TASK = object()


def calling_task() -> object:
    """Who calls the store now, to tell a batch's own calls from another task's: the
    asyncio task running, or one marker for any code outside a task."""
    try:
        return asyncio.current_task() or _NO_TASK
    except RuntimeError:  # no event loop in this thread
        return _NO_TASK


def operation_id() -> str:
    """A new operation's id: 32 hex digits laid out as a UUIDv7 (RFC 9562): the time in
    milliseconds first, then 74 random bits.

    Ids that grow with time keep each index on them (the operation's row, its transitions
    by operation) written at its end, where a run's next writes are, instead of at a
    random page each: with uuid4 ids, a run's writes of 10,000 stops took a third more CPU
    on SQLite (each commit writes every page it touched). Python 3.14's ``uuid.uuid7``
    makes the same; 3.11 has none."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC 4122 / 9562 variant
    return uuid.UUID(int=value).hex


def tally(rows: Iterable[dict[str, Any]]) -> tuple[dict[str | None, int], list[RunItem]]:
    """:meth:`ScheduleStore.run_tally` from the items listed, each with its outcome's
    ``count``: the counts in the order of each outcome's first item."""
    counts: dict[str | None, int] = {}
    items = []
    for row in rows:
        counts.setdefault(row["outcome"], int(row.pop("count")))
        items.append(RunItem.model_validate(row))
    return counts, items


CLAIM_IN_BATCH = (
    "a claim to send a stop cannot be part of a batch: it must be committed before the "
    "call it claims leaves"
)

# The kinds of work a process owns, and takes over from a dead one.
OwnedWork = Literal["operations", "schedule_runs", "outbox", "inbox", "environment_runs"]


class OpenRequest(TypedDict):
    """A request answered before it was handled, and not handled to the end yet."""

    id: str
    received_at: str
    body: str
    content_type: str | None
    owner: str | None
    attempts: int


@dataclass(frozen=True)
class StoreCounts:
    """What the metrics read at each scrape, in one read: the store's rows, counted."""

    operations: dict[tuple[str, str], int]
    """(provider, state) -> operations in that state."""
    runs: dict[tuple[str, str], int]
    """(schedule, status) -> runs with that status."""

    def in_flight(self) -> int:
        """Operations submitted and not yet ended, whoever follows them."""
        tracked = {state.value for state in TRACKED_STATES}
        return sum(n for (_, state), n in self.operations.items() if state in tracked)


class AuditStore(ABC):
    """The audit log: append-only (no method changes or removes an entry, and a backend
    makes the database itself refuse to)."""

    @abstractmethod
    def audit(
        self,
        actor: str,
        action: str,
        *,
        resource: str | None = None,
        operation_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Append one entry to the audit log; returns its id (ids grow with time)."""

    @abstractmethod
    def audit_log(
        self,
        *,
        resource: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Audit entries, oldest first (the last ``limit`` of them when a limit is given)."""

    @abstractmethod
    def audit_facts(self, actions: Sequence[str], *, since: dt.datetime) -> list[AuditEntry]:
        """The entries of resources whose action is one of ``actions``, from ``since`` on,
        preceded by each resource's last such entry before ``since`` (what held then):
        oldest first. What savings are counted from (a stop that reached stopped, a
        resource seen running again)."""


class OperationStore(ABC):
    """Stops (operations), their transitions, and the claim to send each one once."""

    @abstractmethod
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
        """Record a new stop (or wake: ``action``) request with its first transition and
        audit it, at once. ``lease_seconds``: a wake's lease, opened when it is up.

        With an ``idempotency_key`` already used (a Slack retry), nothing is written
        and the existing operation is returned. Returns (operation, created).
        """

    @abstractmethod
    def get_operation(self, op_id: str) -> Operation | None: ...

    @abstractmethod
    def operations(self, ids: Iterable[str]) -> dict[str, Operation]:
        """The operations of ``ids`` that exist, by id, read at once (a savings report
        names the stop behind each of thousands of stretches)."""

    @abstractmethod
    def operation_for_key(self, idempotency_key: str) -> Operation | None:
        """The operation recorded under ``idempotency_key`` (a scheduled run's stop of one
        resource, one attempt), if any."""

    @abstractmethod
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
        """Move an operation to ``to`` if it is in one of ``allowed_from``; None if not.

        This compare-and-set is what makes a button act once: of two concurrent
        clicks, one moves the row and the other gets None. The transition, any
        extra :class:`~bot.models.Operation` field in ``fields``, the audit entry
        (``stop.<state>``) and the message it makes ``owe`` are written together. A final
        state sets ``finished_at``. With ``owner``, only while that process owns it (a
        process that lost it to another says nothing more about it).

        A move to SUBMITTING while another stop of the resource is in flight (a tracked
        state, not joined itself) joins that stop (``joined``): one stop is sent per
        resource at a time.
        """

    @abstractmethod
    def update_operation(self, op_id: str, **fields: Any) -> None:
        """Set bookkeeping fields of an operation (message ts, ...) that are no state change."""

    @abstractmethod
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
        """Add a transition when the provider's state changed; the updated operation if it
        did. With ``owner``, only while that process owns it; ``owe`` is owed with it."""

    @abstractmethod
    def transitions(self, op_id: str) -> list[Transition]:
        """An operation's transitions, in the order they happened."""

    @abstractmethod
    def operations_in_flight(self) -> list[Operation]:
        """Operations the provider accepted (or may have) that have not ended, oldest first:
        resumed at start."""

    @abstractmethod
    def in_flight_ids(self, owner: str) -> list[str]:
        """The ids of the operations in flight (as :meth:`operations_in_flight`) that
        ``owner`` drives, oldest first: a process's sweep reads them every few seconds,
        thousands during a run, to find those it stopped driving."""

    @abstractmethod
    def recent_operations(self, *, resource: str | None = None, limit: int = 10) -> list[Operation]:
        """The latest operations, newest first."""

    @abstractmethod
    def orphaned_operations(
        self, states: Iterable[OpState], live: Iterable[str]
    ) -> list[Operation]:
        """Operations in ``states`` that no live process owns (``live``: the live ones'
        ids), oldest first."""

    @abstractmethod
    def claim_send(self, op_id: str, owner: str) -> Operation | None:
        """Win the right to send a submitted stop (not joined to another), once: from now
        on it may have left, and it is never sent again; ``sends`` counts the claims. None
        when another process won it first."""

    @abstractmethod
    def release_claim(self, op_id: str, owner: str, sends: int) -> Operation | None:
        """Give back the claim to send a stop that provably did not take (the provider
        shows the resource running once the call could be over), audited
        (``stop.not_taken``); the operation, to be claimed and sent again, or None when it
        moved on meanwhile (another state, owner or claim)."""


class LeaseStore(ABC):
    """Wake leases: one per wake asked ``for`` a duration, opened once the wake is up."""

    @abstractmethod
    def open_lease(self, op_id: str) -> Lease | None:
        """The lease of the wake ``op_id``, opened now if it is up (started or running
        already) with a lease and has none yet: ending ``lease_seconds`` after the wake
        ended, audited ``lease.opened``. None for any other operation. Once per wake,
        whoever calls it."""

    @abstractmethod
    def unopened_leases(self) -> list[str]:
        """The wakes that are up with a lease and have none yet (their process died between
        the two): for :meth:`open_lease`."""

    @abstractmethod
    def get_lease(self, lease_id: str) -> Lease | None: ...

    @abstractmethod
    def leases(
        self, states: Iterable[LeaseState] = (LeaseState.ACTIVE, LeaseState.UNTIL_RUN)
    ) -> list[Lease]:
        """The leases in ``states`` (default: those running), soonest end first."""

    @abstractmethod
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
        """Compare-and-set: move the lease to ``to`` (with ``fields``: ``ends_at``,
        ``warned_at``, ``ended_by``, ``end_reason``, ``end_operation_id``) if it is in one of
        ``allowed_from`` (and, ``unwarned``, not warned yet), audited as ``audit``, the
        message ``owe`` owed in the same transaction. None: another change won."""


class ApprovalStore(ABC):
    """Approval requests of protected stops, their votes, and the messages showing them."""

    @abstractmethod
    def await_approval(
        self,
        op_id: str,
        actor: str,
        *,
        expires_at: dt.datetime,
        min_approvals: int,
        owe: Owed | None = None,
    ) -> Operation | None:
        """Confirmed, but protected: the operation (awaiting confirmation) waits for
        approvers, and the request to them is owed, at once; None if it was not awaiting
        confirmation."""

    @abstractmethod
    def approval(self, op_id: str) -> Approval | None: ...

    @abstractmethod
    def vote(self, op_id: str, approver: str, vote: str, reason: str | None = None) -> int | None:
        """Record one approver's vote, audited; None if they had voted already, else the
        number of approvals so far."""

    @abstractmethod
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
        """End a pending approval (approved, denied, expired) and move the operation, once
        (to SUBMITTING: owned by ``owner``, joining a stop of it in flight), with the
        message it makes ``owe``; None when it was no longer pending.

        Of an approve and a deny racing, exactly one finds the approval pending.
        """

    @abstractmethod
    def expired_approvals(self) -> list[str]:
        """Operations whose approval request is still pending past its expiry (now)."""

    @abstractmethod
    def pending_approvals(self) -> list[str]:
        """Operations whose approval request is pending and not past its expiry, oldest
        first (what approvers have waiting)."""

    @abstractmethod
    def add_approval_message(self, op_id: str, channel: str, ts: str) -> None:
        """Remember a message showing the approval request (once per channel and ts)."""

    @abstractmethod
    def approval_messages(self, op_id: str) -> list[tuple[str, str]]:
        """The (channel, ts) of the messages showing the request, in the order added."""


class LockStore(ABC):
    """Stopbot's own locks: one per resource, in force until it expires (by time alone)."""

    @abstractmethod
    def set_lock(
        self, resource: str, owner: str, expires_at: dt.datetime, reason: str | None = None
    ) -> BotLock | None:
        """Lock ``resource`` for ``owner`` (replacing their own lock, or one expired),
        audited; None, and nothing written, while someone else's lock is in force: of two
        users locking at once, one holds it."""

    @abstractmethod
    def get_lock(self, resource: str) -> BotLock | None:
        """The lock on ``resource`` if one is in force now (expired ones are ignored)."""

    @abstractmethod
    def delete_lock(self, resource: str, actor: str, *, forced: bool = False) -> bool:
        """Remove the lock on ``resource``, audited; False (and no audit) when there was none."""

    @abstractmethod
    def locks_expiring(self, within: dt.timedelta) -> list[BotLock]:
        """Locks in force that expire within ``within`` from now, soonest first."""

    @abstractmethod
    def active_locks(self) -> list[BotLock]:
        """Locks in force now, soonest to expire first."""


class ScheduleStore(ABC):
    """Schedules: their definitions, what the scheduler remembers of each, skips and
    snoozes of one fire, and Keep exceptions."""

    @abstractmethod
    def save_schedule(
        self, name: str, definition: dict[str, Any], actor: str, *, source: str = "slack"
    ) -> None:
        """Create or replace a schedule, audited unless it is unchanged (no audit noise at
        every start for those in the configuration)."""

    @abstractmethod
    def schedules(self) -> dict[str, dict[str, Any]]:
        """Every schedule's definition, by name."""

    @abstractmethod
    def schedule_sources(self) -> dict[str, str]:
        """Where each schedule comes from (``slack``, ``config``), by name."""

    @abstractmethod
    def delete_schedule(self, name: str, actor: str) -> bool:
        """Remove a schedule with what the scheduler remembers of it (state, skips, snoozes,
        Keep exceptions), so a schedule added again under its name starts afresh; audited.
        Its runs stay, as history. False when there was none."""

    @abstractmethod
    def schedule_state(self, name: str) -> ScheduleState:
        """What the scheduler remembers of ``name`` (empty for one it never saw)."""

    @abstractmethod
    def update_schedule_state(self, name: str, **fields: Any) -> None:
        """Set some fields of a schedule's state (None clears one)."""

    @abstractmethod
    def skip_fire(self, schedule: str, fire: dt.datetime, actor: str) -> str | None:
        """Skip one fire of ``schedule`` (replacing a snooze of it not started), audited;
        None when this call skipped it, else who had skipped it already (a second click
        changes nothing)."""

    @abstractmethod
    def skips(self, schedule: str) -> dict[dt.datetime, str]:
        """The skipped fires of ``schedule`` and who skipped each."""

    @abstractmethod
    def snooze_fire(
        self, schedule: str, fire: dt.datetime, until: dt.datetime, actor: str
    ) -> bool | None:
        """Run one fire of ``schedule`` at ``until`` instead, audited. True when this changed
        it, False when it was so already, None when that snoozed run has started."""

    @abstractmethod
    def snoozes(self, schedule: str) -> dict[dt.datetime, tuple[dt.datetime, bool]]:
        """The snoozed fires of ``schedule``: when each runs instead, and whether that run
        has started."""

    @abstractmethod
    def start_snooze(self, schedule: str, fire: dt.datetime) -> bool:
        """Mark a snoozed fire's run as started; False if it was already."""

    @abstractmethod
    def add_exception(
        self, schedule: str, resource: str, until: dt.datetime, actor: str
    ) -> KeepException:
        """Keep ``resource`` out of ``schedule``'s runs until ``until`` (replacing an
        earlier one), audited."""

    @abstractmethod
    def active_exceptions(self, schedule: str | None = None) -> list[KeepException]:
        """Keep exceptions in force now (of ``schedule``, or all), soonest to end first."""


class RunStore(ABC):
    """Scheduled runs: one record per fire of a schedule, and what each did."""

    @abstractmethod
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
        """Record one fire of a schedule, audited; None if that fire was recorded already,
        which is what keeps a run from happening twice (restarts, overlapping ticks,
        processes side by side). A running run is executed by ``owner``; a skipped or
        missed one is owed an announcement (:meth:`unannounced_runs`)."""

    @abstractmethod
    def run(self, run_id: str) -> ScheduleRun | None: ...

    @abstractmethod
    def run_at(self, schedule: str, fire_time: dt.datetime) -> ScheduleRun | None:
        """The run recorded for one fire of ``schedule``, if any."""

    @abstractmethod
    def runs(
        self, *, status: str | None = None, schedule: str | None = None, limit: int = 50
    ) -> list[ScheduleRun]:
        """Runs, newest fire first."""

    def running_runs(self) -> list[ScheduleRun]:
        return self.runs(status="running", limit=10_000)

    @abstractmethod
    def finish_run(
        self,
        run_id: str,
        status: str = "done",
        *,
        owner: str | None = None,
        owe: Owed | None = None,
    ) -> bool:
        """End a running run, once (with ``owner``: only while that process owns it),
        audited, its summary owed with it; False when it was not running (or not owned)."""

    @abstractmethod
    def unannounced_runs(self) -> list[ScheduleRun]:
        """Skipped and missed runs nobody was told of yet, by schedule, oldest fire first."""

    @abstractmethod
    def announce_runs(self, run_ids: Sequence[str], owed: Owed | None) -> None:
        """Owe the announcement of ``run_ids`` (and mark them announced), at once (None:
        they were told some other way)."""

    @abstractmethod
    def set_run_message(self, run_id: str, channel: str, ts: str) -> None:
        """Where a run's summary is shown."""

    @abstractmethod
    def record_item(
        self,
        run_id: str,
        resource: str,
        outcome: str | None,
        detail: Text | None = None,
        op_id: str | None = None,
    ) -> None:
        """Record (or update) what became of one resource of a run; an ``op_id`` once set
        stays when a later update gives none."""

    @abstractmethod
    def record_items(
        self, run_id: str, items: Sequence[tuple[str, str | None, Text | None]]
    ) -> None:
        """:meth:`record_item` for each (resource, outcome, detail) of ``items``, in order,
        at once: a run's plan of 10,000 resources in one statement sent many times (one
        round trip on PostgreSQL's pipeline), not 10,000 round trips."""

    @abstractmethod
    def run_items(self, run_id: str) -> list[RunItem]:
        """A run's resources, in the order first recorded."""

    @abstractmethod
    def run_names(self, run_id: str, outcome: str | None) -> list[str]:
        """The names of a run's resources with ``outcome`` (None: those without one yet),
        in the order first recorded: a run of 10,000 read as names, not as models."""

    @abstractmethod
    def run_tally(self, run_id: str, listed: int) -> tuple[dict[str | None, int], list[RunItem]]:
        """How many of a run's resources have each outcome (None: none yet), the outcomes
        in the order first recorded, and the first ``listed`` items of each outcome in
        that order: what a summary shows, without reading every item of a large run."""


class EnvironmentStore(ABC):
    """Environments stopped (or woken) tier after tier: where each run stands."""

    @abstractmethod
    def create_environment_run(self, run: EnvironmentRun) -> None:
        """Record a new run (awaiting confirmation), audited ``environment.requested``."""

    @abstractmethod
    def get_environment_run(self, run_id: str) -> EnvironmentRun | None: ...

    @abstractmethod
    def environment_runs(self, states: Iterable[EnvRunState]) -> list[EnvironmentRun]:
        """The runs in ``states``, oldest first."""

    @abstractmethod
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
        """Compare-and-set: write ``fields`` (``state``, ``tier``, ``owner``, ``skipped``,
        ``detail``, ``message_ts``…) if the run is in one of ``allowed_from`` and, when
        given, still at ``tier`` and owned by ``owner``; audited ``environment.<state>``.
        None when it was not (someone else moved it first)."""


class ClaimStore(ABC):
    """At-most-once for anything keyed (Slack retries, button clicks, warnings)."""

    @abstractmethod
    def claim(self, key: str, *, owe: Owed | None = None) -> bool:
        """True the first time ``key`` is claimed, False ever after; the message the claim
        is for, ``owe``, is owed with it."""

    @abstractmethod
    def unclaim(self, key: str) -> None:
        """Give a claim back: a schedule warning whose post failed is tried again."""


class ProcessStore(ABC):
    """The bot processes sharing the store, and who owns which work (bot/processes.py)."""

    @abstractmethod
    def register_process(self, process: Registration) -> None:
        """A process starting: registered, its heartbeat now."""

    @abstractmethod
    def heartbeat(self, process_id: str) -> bool:
        """A process still alive (now); False when the store no longer knows it (another
        took it for dead and forgot it: it must register again)."""

    @abstractmethod
    def retire_process(self, process_id: str) -> None:
        """A process ending cleanly: what it owned is anyone's at once, and it is dead."""

    @abstractmethod
    def processes(self) -> list[ProcessInfo]:
        """Every registered process, retired ones included."""

    @abstractmethod
    def forget_processes(self, ids: Iterable[str]) -> None:
        """Drop dead processes that own nothing any more."""

    @abstractmethod
    def take_over(self, work: OwnedWork, key: str, owner: str, previous: str | None) -> bool:
        """Make ``owner`` the owner of one piece of ``work`` (an operation's or a run's id,
        an outbox key, a request's id) if ``previous`` (None: nobody) still owns it: of two
        processes taking over the same work, one wins."""


class OutboxStore(ABC):
    """Messages owed to a face, kept until delivered in their latest version."""

    @abstractmethod
    def owe(self, owed: Owed) -> None:
        """Owe a message (again: the face shows the latest state of ``owed.key``; a new
        version restarts its attempts)."""

    @abstractmethod
    def owed(self, limit: int = 500, *, key: str | None = None) -> list[Owed]:
        """Messages not delivered in their latest version, oldest change first (``key``:
        that one only)."""

    @abstractmethod
    def delivered(self, key: str, version: int) -> None:
        """``version`` of ``key`` is shown (a later version stays owed)."""

    @abstractmethod
    def postpone(self, key: str, version: int, until: dt.datetime, error: str) -> None:
        """Try ``key`` again at ``until`` (unless a new version is owed meanwhile), counting
        one more attempt."""

    @abstractmethod
    def purge_delivered(self, before: dt.datetime) -> int:
        """Forget messages delivered and unchanged since before ``before``; how many."""


class InboxStore(ABC):
    """Requests recorded before they were answered, kept until handled."""

    @abstractmethod
    def receive(self, requests: Sequence[tuple[str, str, str]], owner: str) -> list[str]:
        """Record requests (id, body, content type) before they are answered, in one
        transaction: for each, "new", or "open"/"done" for one seen already (a redelivery
        of the very same body)."""

    @abstractmethod
    def handled(self, request_id: str) -> None:
        """A request handled to its end (its body is not kept)."""

    @abstractmethod
    def open_requests(self) -> list[OpenRequest]:
        """Requests answered but not handled to the end, oldest first."""

    @abstractmethod
    def retry_request(self, request_id: str) -> int:
        """Count one more attempt at handling a request; the attempts so far."""

    @abstractmethod
    def purge_handled(self, before: dt.datetime) -> int:
        """Forget requests handled before ``before``; how many."""


class InUseStore(ABC):
    """'Is anyone using it?' questions of a schedule's warning, and their one answer each."""

    @abstractmethod
    def ask_in_use(
        self, schedule: str, fire: dt.datetime, resource: str, signals: list[dict[str, Any]]
    ) -> None:
        """Record the question about ``resource`` before ``schedule``'s run at ``fire``; one
        asked already stays as it was (a warning delivered again asks nothing new)."""

    @abstractmethod
    def answer_in_use(
        self, schedule: str, fire: dt.datetime, resource: str, answer: str, actor: str
    ) -> tuple[InUseQuestion | None, bool]:
        """Answer the question, once: a compare-and-set on it being unanswered, audited.
        Returns the question as it stands (None: never asked) and whether this call
        answered it (False: it was answered already, by the one it names)."""

    @abstractmethod
    def in_use_questions(self, schedule: str, fire: dt.datetime) -> list[InUseQuestion]:
        """The questions asked before ``schedule``'s run at ``fire``, by resource name."""


class DiscoveryStore(ABC):
    """What discovery last found at each provider account: one snapshot per account,
    shared by every replica and kept across restarts (bot/discovery.py)."""

    @abstractmethod
    def save_discovered(self, provider: str, resources: Sequence[dict[str, Any]]) -> None:
        """Replace ``provider``'s snapshot with ``resources`` (facts as JSON-able dicts),
        stamped with the store's now, in one transaction: a reader sees the old one or the
        new one, never half."""

    @abstractmethod
    def discovered(self) -> dict[str, tuple[dt.datetime, list[dict[str, Any]]]]:
        """Every account's snapshot: provider name -> (when it was taken, its resources in
        the order they were saved)."""

    @abstractmethod
    def discovered_at(self) -> dict[str, dt.datetime]:
        """When each account's snapshot was taken, without reading the snapshots (a cheap
        read, to tell whether they changed)."""


class CostStore(ABC):
    """What providers last said each resource costs while it runs (bot/rates.py): read by
    the leader out of a run's way, shared by every replica and kept across restarts."""

    @abstractmethod
    def save_costs(self, costs: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Keep each (resource name, cost as a JSON-able dict), stamped with the store's
        now, replacing what that resource had; one transaction."""

    @abstractmethod
    def costs(self, names: Sequence[str]) -> dict[str, tuple[dt.datetime, dict[str, Any]]]:
        """The kept cost of each of ``names`` that has one: name -> (when it was read, the
        cost)."""


class Store(
    AuditStore,
    OperationStore,
    LeaseStore,
    ApprovalStore,
    LockStore,
    ScheduleStore,
    RunStore,
    EnvironmentStore,
    ClaimStore,
    ProcessStore,
    OutboxStore,
    InboxStore,
    InUseStore,
    DiscoveryStore,
    CostStore,
):
    """All persistent state of the bot, in one database (see the module's docstring for
    what every backend promises).

    ``location`` is where it is, as given (a backend whose locations carry a secret keeps
    it out of this attribute, which messages print); ``clock`` is the store's now.
    """

    off_loop_inline = False
    """Whether :meth:`off_loop` runs its calls on the loop (grouped, see LoopLane): for a
    backend whose calls wait for nothing (no server round trip), where a thread would only
    add hand-offs of the GIL between it and the loop."""

    def __init__(self, location: str, *, clock: Clock = utcnow) -> None:
        self.location = location
        self.clock = clock
        # The urgent lane groups nothing: its callers group their own (an ack's burst).
        # The work lane has a few threads: on PostgreSQL, one's reads and round trips
        # overlap another's (writers still take turns at the store's write lock).
        self._lanes: dict[str, Lane | LoopLane] = {
            "work": Lane(self, "work", threads=3),
            "urgent": Lane(self, "urgent", group=1),
            "loop": LoopLane(self),
        }

    async def off_loop(
        self,
        call: Callable[[], T],
        *,
        urgent: bool = False,
        heavy: bool = False,
    ) -> T:
        """Run ``call`` (store calls: a method with its arguments bound, or a few in a
        row) on a thread of the store's, and return its result once it is committed
        (bot/store/background.py): the event loop goes on meanwhile.

        Calls queued together share one transaction, committed before any of them
        returns (so a claim to send may be one); each fails alone, its exception raised
        here. ``urgent``: on the lane that no run's writes queue on (what an
        ack waits for). With :attr:`off_loop_inline` (SQLite), ``call`` runs on the loop,
        grouped with the calls made in the same turn of it (LoopLane); an ``urgent`` one
        runs here, now, in a transaction of its own; a ``heavy`` one (many rows read or
        written: a run's plan and items, its report) in a thread, where it takes turns
        with the loop every few milliseconds instead of holding it for its whole length."""
        if self.off_loop_inline and not heavy and urgent:
            return call()  # now: nothing else is waited for before an ack's answer
        result: T = await self.submit(call, urgent=urgent, heavy=heavy)
        return result

    def submit(
        self, call: Callable[[], T], *, urgent: bool = False, heavy: bool = False
    ) -> asyncio.Future[T]:
        """:meth:`off_loop`'s call, queued now (its lane runs what is queued before the
        store closes), for a caller that cannot wait for it: a future of the running loop,
        settled once it is committed."""
        if self.off_loop_inline and not heavy:
            lane = self._lanes["loop"]
        else:
            lane = self._lanes["urgent" if urgent else "work"]
        return lane.submit(call)

    async def receive_now(self, requests: Sequence[tuple[str, str, str]], owner: str) -> list[str]:
        """:meth:`receive`, for an ack that waits for it on the event loop: at once, on the
        urgent lane (a backend may do better: PostgreSQL records on the loop's own
        connection)."""
        return await self.off_loop(partial(self.receive, requests, owner), urgent=True)

    def close_lanes(self) -> None:
        """Run the calls queued off the loop, then stop their threads (at close)."""
        for lane in self._lanes.values():
            lane.close()

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Any]:
        """One atomic unit of writes (a backend's connection inside); within a
        :meth:`batch`, a savepoint of it, undone alone if it raises."""

    @abstractmethod
    def batch(self) -> AbstractContextManager[None]:
        """A context in which the calls of this thread share one transaction, committed at
        its end, all or nothing (an exception out of it rolls every write back; a call that
        raises inside it is undone alone, as it would be on its own). Nested, it is part of
        the outer one. One commit for several writes is what it is for: a stop's steps made
        in a row (a move and the provider state that came with it).

        Its body must not ``await``: the store is called on the event loop, and another
        task would find itself inside the batch (a backend refuses such a call).
        :meth:`claim_send` refuses to run inside one (StoreError): a claim must be
        committed before the call it claims leaves. (A lane's batch, whose callers hear
        back only after its commit, takes claims: bot/store/background.py.)"""

    @classmethod
    @abstractmethod
    def exists(cls, location: str) -> bool:
        """Whether a store is at ``location`` already (a read command must not create one)."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the database; any later call raises StoreUnavailableError."""

    @abstractmethod
    def health(self) -> None:
        """Check that the database answers now; StoreUnavailableError when it does not."""

    @abstractmethod
    def counts(self) -> StoreCounts:
        """Operations and runs counted by what the metrics report, in one read;
        StoreUnavailableError when the database does not answer."""

    def leadership(self, timeout: float) -> Leadership:
        """Who among the processes sharing this store does the time-driven duties
        (bot/leadership.py): every one, unless a backend shared by replicas elects one
        (``timeout``: how long a silent leader keeps the lead)."""
        return Sole()
