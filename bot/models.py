"""The bot's own records: stop (and wake) operations, their transitions, audit entries, bot
locks, wake leases."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from bot.text import Text
from providers.lean import Lean

SYSTEM = "stopbot"
"""The actor of what the bot does by itself (an expiry, a takeover)."""
CLI_ACTOR = "cli:"
"""The prefix of a terminal user's actor id: ``cli:<login>``."""
SCHEDULE_ACTOR = "schedule:"
"""The prefix of a schedule's own actor id (a fire, no person): ``schedule:<name>``."""
LEASE_ACTOR = "lease:"
"""The prefix of the actor of a wake lease's own stop at its end: ``lease:<owner>``."""

__all__ = [
    "CLI_ACTOR",
    "LEASE_ACTOR",
    "SCHEDULE_ACTOR",
    "SYSTEM",
    "Action",
    "ActionResult",
    "Actor",
    "Approval",
    "AuditEntry",
    "BotLock",
    "EnvRunState",
    "EnvironmentRun",
    "KeepException",
    "Lease",
    "LeaseState",
    "OpState",
    "Operation",
    "Owed",
    "RunItem",
    "ScheduleRun",
    "ScheduleState",
    "Transition",
]


class Action(StrEnum):
    """What an operation asks of the provider: stop a resource, or start it again (a wake).
    Both go through the same workflow, rules and states."""

    STOP = "stop"
    START = "start"

    @property
    def verb(self) -> str:
        """The word users type for it (a start is a wake)."""
        return "stop" if self is Action.STOP else "wake"


class OpState(StrEnum):
    """Where an operation is. The last eight are final; a stop ends stopped (or stopped
    already), a wake started (or running already)."""

    REQUESTED = "requested"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    AWAITING_APPROVAL = "awaiting_approval"
    SUBMITTING = "submitting"
    ACCEPTED = "accepted"
    IN_PROGRESS = "in_progress"
    STOPPED = "stopped"
    STOPPED_ALREADY = "stopped_already"
    STARTED = "started"
    RUNNING_ALREADY = "running_already"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    REFUSED = "refused"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        OpState.STOPPED,
        OpState.STOPPED_ALREADY,
        OpState.STARTED,
        OpState.RUNNING_ALREADY,
        OpState.FAILED,
        OpState.TIMED_OUT,
        OpState.CANCELLED,
        OpState.REFUSED,
    }
)
# After the provider accepted a stop: the bot owes the user a follow-up, even across restarts.
TRACKED_STATES = frozenset({OpState.SUBMITTING, OpState.ACCEPTED, OpState.IN_PROGRESS})


# The final states in which a wake is up (and its lease, if it has one, opens).
UP_STATES = frozenset({OpState.STARTED, OpState.RUNNING_ALREADY})
# The final states in which an operation did what it asked.
DONE_STATES = frozenset({OpState.STOPPED, OpState.STOPPED_ALREADY}) | UP_STATES


class Operation(Lean):
    """One requested stop (or wake), from request to its final state."""

    id: str
    action: Action = Action.STOP
    lease_seconds: int | None = Field(
        default=None, description="A wake with a lease: how long it stays up before its stop."
    )
    resource: str
    provider: str
    resource_id: str
    requested_by: str
    source: str = Field(description="slack, cli or schedule")
    reason: str | None = None
    force: bool = False
    override_lock: bool = False
    state: OpState
    detail: Text | None = Field(default=None, description="Why it ended so, for the user.")
    provider_state: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    channel: str | None = None
    message_ts: str | None = None
    response_url: str | None = None
    idempotency_key: str | None = None
    owner: str | None = Field(
        default=None, description="The process driving it now (preparing, sending, following)."
    )
    send_claimed_at: dt.datetime | None = Field(
        default=None,
        description="When a process won the right to send the stop: from then on it may "
        "have left, and it is never sent again.",
    )
    sends: int = Field(default=0, description="Claims to send it taken so far.")
    joined: str | None = Field(
        default=None,
        description="The stop of the same resource already in flight that this one follows "
        "instead of sending its own.",
    )
    notify: bool = Field(
        default=False,
        description="A face shows its progress, owed durably (the outbox) from confirmation on.",
    )
    shown_in: str | None = Field(
        default=None, description="Where the face shows its progress (the face's own word)."
    )


class LeaseState(StrEnum):
    """Where a wake lease is: running (``active``; ``until_run``: kept until the next
    scheduled stop, which stops it), its end claimed (``ending``: its stop being made), or
    over."""

    ACTIVE = "active"
    UNTIL_RUN = "until_run"
    ENDING = "ending"
    ENDED = "ended"


class Lease(Lean):
    """A wake with a duration: the resource is kept out of scheduled stops until
    ``ends_at``, its owner warned before, and stopped at the end by a stop of its own."""

    id: str = Field(description="The wake operation's id: one lease per wake.")
    resource: str
    owner: str
    state: LeaseState
    created_at: dt.datetime
    ends_at: dt.datetime
    warned_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    ended_by: str | None = None
    end_reason: str | None = None
    end_operation_id: str | None = None

    @property
    def running(self) -> bool:
        return self.state in (LeaseState.ACTIVE, LeaseState.UNTIL_RUN)


class Transition(Lean):
    """One step of an operation: a bot state change or a new provider state."""

    operation_id: str
    at: dt.datetime
    state: str
    provider_state: str | None = None
    phase: str | None = None
    message: Text | None = None


class AuditEntry(Lean):
    """One line of the append-only audit log."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    resource: str | None = None
    operation_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Vote(BaseModel):
    approver: str
    vote: str
    reason: str | None = None
    at: dt.datetime


class Approval(BaseModel):
    """The approval request of a protected stop."""

    operation_id: str
    status: str = Field(description="pending, approved, denied or expired")
    requested_by: str
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    reason: str | None = None
    created_at: dt.datetime
    expires_at: dt.datetime
    min_approvals: int = 1
    votes: list[Vote] = Field(default_factory=list)


class BotLock(Lean):
    """A lock a user set from Slack: nobody else stops the resource until it expires."""

    resource: str
    owner: str
    reason: str | None = None
    created_at: dt.datetime
    expires_at: dt.datetime

    def is_expired(self, now: dt.datetime) -> bool:
        return self.expires_at <= now


class Actor(Lean):
    """Who asks: a Slack user id (or ``cli:<login>``, ``schedule:<name>``) and the names the
    providers may know them by (for provider lock ownership)."""

    id: str
    names: frozenset[str] = frozenset()
    identities: dict[str, str] = Field(
        default_factory=dict, description="provider name -> the name that provider knows them by"
    )
    mapped: frozenset[str] = Field(
        default=frozenset(),
        description="Providers the configuration maps identities for (for anyone): there, "
        "only a mapped name counts, never a Slack name the user may have set to anything.",
    )

    def known_as(self, provider: str) -> frozenset[str]:
        """The names a lock owner in ``provider`` may carry for this user."""
        mapped = self.identities.get(provider)
        if mapped:
            return frozenset({mapped})
        return frozenset() if provider in self.mapped else self.names


class ScheduleState(BaseModel):
    """What the scheduler remembers of a schedule between fires (and restarts)."""

    name: str
    checked_through: dt.datetime | None = None
    drift_checked_at: dt.datetime | None = None


class ScheduleRun(BaseModel):
    """One fire of a schedule: ran, skipped, missed; and where its summary is shown."""

    id: str
    schedule: str
    fire_time: dt.datetime
    kind: str = Field(description="cron, snooze or manual")
    status: str = Field(description="running, done, skipped or missed")
    reason: Text | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    channel: str | None = None
    message_ts: str | None = None
    started_by: str | None = Field(default=None, description="Who started a manual run.")
    owner: str | None = Field(default=None, description="The process executing it.")


class RunItem(Lean):
    """One resource of a run and what became of it."""

    run_id: str
    resource: str
    outcome: str | None = None
    detail: Text | None = None
    op_id: str | None = None


class KeepException(BaseModel):
    """'Keep <resource>': scheduled runs of ``schedule`` skip it until ``until``."""

    schedule: str
    resource: str
    until: dt.datetime
    created_by: str
    created_at: dt.datetime


class Owed(BaseModel):
    """A message owed to a face (a progress update, a run summary, an announcement), kept
    in the store until delivered: ``key`` names what it is about, and owing it again bumps
    ``version`` (the face shows the latest state, once, however many changes came)."""

    key: str
    kind: str
    payload: dict[str, Any] = Field(default_factory=dict)
    version: int = 0
    urgent: bool = Field(default=False, description="Deliver without waiting for its interval.")
    owner: str | None = None
    attempts: int = 0
    not_before: dt.datetime | None = None


class ActionResult(BaseModel):
    """The answer to a button press or command: did it act, and what to tell the user."""

    ok: bool
    message: Text
    operation: Operation | None = None
    needs_approval: bool = False
    run: bool = Field(default=False, description="True when the stop should now be submitted.")
    joined: str | None = Field(
        default=None, description="The stop in flight on the resource this one follows."
    )


class EnvRunState(StrEnum):
    """Where an environment's stop (or wake) is: previewed and awaiting its requester's
    confirmation, running tier after tier, or ended (every tier done, halted by a member
    that did not get there, or cancelled before it began)."""

    AWAITING_CONFIRMATION = "awaiting_confirmation"
    RUNNING = "running"
    DONE = "done"
    HALTED = "halted"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (EnvRunState.DONE, EnvRunState.HALTED, EnvRunState.CANCELLED)


class EnvironmentRun(BaseModel):
    """One stop (or wake) of an environment: its tiers are run in order (reversed for a
    wake), ``tier`` the one running now; each member's stop is an operation of its own,
    found again by its idempotency key (see bot/environments.py), so a restarted process
    goes on from ``tier`` and never sends a member's stop twice."""

    id: str
    environment: str
    action: Action = Action.STOP
    requested_by: str
    reason: str | None = None
    skipped: list[str] = Field(
        default=[], description="Members left alone: locked by someone else, the rest stopped."
    )
    tier: int = Field(default=0, description="The tier running now, in run order.")
    state: EnvRunState = EnvRunState.AWAITING_CONFIRMATION
    detail: Text | None = Field(default=None, description="Why it halted, for the user.")
    owner: str | None = None
    channel: str | None = None
    message_ts: str | None = Field(
        default=None, description="The face's one progress message for the whole run."
    )
    created_at: dt.datetime
    updated_at: dt.datetime


class InUseQuestion(BaseModel):
    """'Is anyone using it?': asked at a schedule's warning about one resource found in use
    before the run at ``fire``, with the signs found (each a
    :class:`~providers.base.UsageSignal` as data); answered once, ``keep`` or ``stop``, by
    ``answered_by`` (None: nobody yet)."""

    schedule: str
    fire: dt.datetime
    resource: str
    signals: list[dict[str, Any]]
    asked_at: dt.datetime
    answer: str | None = None
    answered_by: str | None = None
    answered_at: dt.datetime | None = None
