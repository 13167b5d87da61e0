"""Who may stop what: a stop request judged as a whole, the decision given as data.

A :class:`StopRequest` says who asks, what (the resource, with its provider and tags), why,
when, whether through someone else's lock and from where (``source``: the face it
came through, or a schedule). :meth:`Policy.judge` answers with a :class:`Decision`:
allowed (on which grounds), allowed once approved (how many approvals, from whom, until
when), or refused (by which rule); :attr:`Decision.reason` is the sentence a face shows.

The rules, in this order:

* admins may stop anything; so may the terminal's user, with ``cli_is_admin``;
* a schedule's own stops (a fire: the schedule asks, no person) are allowed, since
  schedules are written by those who run the bot; a run started by someone is theirs,
  judged as any of their requests;
* else the resource's own ``allowed_users`` / ``allowed_groups``, else the global ones;
  with neither, anyone.

Stopping through someone else's lock (``override_lock``) is for admins, with a reason
(:meth:`Decision.override_refusal`); whether a lock stands in the way is the lock rule's
to say (``bot.locks.check_locks``). A user group is one the configuration lists as such
(``allowed_groups``, an approval's ``approver_groups``), never told by the look of its
id; its members are the face's to tell (:data:`GroupMembers`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from bot.config import ApprovalPolicy, StopbotConfig
from bot.models import CLI_ACTOR, LEASE_ACTOR, SCHEDULE_ACTOR
from bot.text import Command, Text, say
from providers.base import Resource

__all__ = [
    "PERSON",
    "ApprovalNeeded",
    "Decision",
    "Grounds",
    "GroupMembers",
    "Outcome",
    "OverrideRefused",
    "Policy",
    "StopRequest",
]

PERSON = "person"
"""The source of a request judged for the rights that come with stopping (see
:meth:`Policy.may_stop`): a person asks, through whichever face."""

# A user group's members' user ids, as the face knows them (Slack: usergroups.users.list).
GroupMembers = Callable[[str], Awaitable[frozenset[str]]]


@dataclass(frozen=True)
class StopRequest:
    """A request to stop ``resource``, as the policy judges it."""

    who: str
    """Who asks: a user's id, ``cli:<login>``, or ``schedule:<name>`` for a schedule's own stop."""
    resource: Resource
    source: str
    """Where it comes from: the face (``slack``, ``cli``) or ``schedule`` (its runs, fired
    or started by someone), as :attr:`bot.models.Operation.source`; :data:`PERSON` for a
    right that comes with stopping (to lock the resource, to keep it out of a run)."""
    reason: str | None = None
    at: dt.datetime | None = None
    """When it was asked (an approval it needs runs out from then)."""
    override_lock: bool = False
    """Stop even through someone else's lock (a provider's forced stop, Feldera's, is a
    mode of the stop that no rule judges: it is not part of the request)."""


class Outcome(StrEnum):
    ALLOWED = "allowed"
    NEEDS_APPROVAL = "needs_approval"
    REFUSED = "refused"


class OverrideRefused(StrEnum):
    """Why a request may not stop through someone else's lock."""

    NOT_ADMIN = "not_admin"
    NO_REASON = "no_reason"


class Grounds(StrEnum):
    """The rule that decided: what allowed the request, or what refused it."""

    ADMIN = "admin"
    SCHEDULE = "schedule"
    LEASE = "lease"
    OWN_RULE = "own_rule"
    GLOBAL_RULE = "global_rule"
    UNRESTRICTED = "unrestricted"


@dataclass(frozen=True)
class ApprovalNeeded:
    """Who must approve the stop before it goes: ``min_approvals`` of the ``approvers``
    (users) and the members of ``groups``, never the requester, before ``expires_at``."""

    min_approvals: int
    approvers: tuple[str, ...]
    groups: tuple[str, ...]
    expires_after: dt.timedelta
    expires_at: dt.datetime | None


@dataclass(frozen=True)
class Decision:
    """The policy's answer to a :class:`StopRequest` (see the module's docstring)."""

    outcome: Outcome
    grounds: Grounds
    resource: str
    approval: ApprovalNeeded | None = None
    """What the resource's approval rule asks (a schedule's run asks it only when the
    schedule says ``approval: true``)."""
    override_refused: OverrideRefused | None = None
    """Why this request may not stop through someone else's lock, when it asks to."""

    @property
    def allowed(self) -> bool:
        """Whether the requester may stop it (once approved, where approval is needed)."""
        return self.outcome != Outcome.REFUSED

    @property
    def reason(self) -> Text:
        """The decision in words, for the person who asked."""
        if self.outcome == Outcome.REFUSED:
            return say(
                "you are not allowed to stop {} ({}); ask an admin to add you",
                self.resource,
                self._rule(),
            )
        if self.grounds == Grounds.ADMIN:
            return Text("admin")
        if self.grounds == Grounds.SCHEDULE:
            return Text("a configured schedule")
        if self.grounds == Grounds.LEASE:
            return Text("the end of a wake lease")
        if self.grounds == Grounds.UNRESTRICTED:
            return Text("no restriction configured")
        return say("allowed by {}", self._rule())

    def override_refusal(self, lock: Text | None) -> Text | None:
        """Why the stop may not go through ``lock`` (the lock rule's words), in words; None
        when it may, or did not ask to."""
        if self.override_refused == OverrideRefused.NOT_ADMIN:
            return say("only admins can use --override-lock. {}", lock or "")
        if self.override_refused == OverrideRefused.NO_REASON:
            return say(
                "--override-lock needs a reason, e.g. {}.",
                Command(
                    "stop", f"{self.resource} --override-lock runaway costs, owner unreachable"
                ),
            )
        return None

    def _rule(self) -> str:
        if self.grounds == Grounds.OWN_RULE:
            return f"{self.resource}'s own rule"
        return "the global rule"


class Policy:
    def __init__(self, config: StopbotConfig, group_members: GroupMembers | None = None) -> None:
        self.config = config
        self.group_members = group_members

    def is_admin(self, user_id: str) -> bool:
        if user_id.startswith(CLI_ACTOR) and self.config.cli_is_admin:
            return True
        return user_id in self.config.admins

    async def _in_groups(self, user_id: str, groups: list[str]) -> bool:
        if not groups or self.group_members is None:
            return False
        for group in groups:
            if user_id in await self.group_members(group):
                return True
        return False

    async def is_approver(self, user_id: str, approval: ApprovalPolicy) -> bool:
        """Whether ``user_id`` is among ``approval``'s approvers, or in one of its groups."""
        if user_id in approval.approvers:
            return True
        return await self._in_groups(user_id, approval.approver_groups)

    async def judge(self, request: StopRequest) -> Decision:
        """Whether ``request`` may go on, and what it needs (see the module's docstring)."""
        grounds = await self._grounds(request)
        name = request.resource.name
        if grounds is None:
            scope = self._scope(name)[2]
            return Decision(Outcome.REFUSED, scope, name)
        approval = self._approval(request)
        return Decision(
            Outcome.NEEDS_APPROVAL if approval else Outcome.ALLOWED,
            grounds,
            name,
            approval=approval,
            override_refused=self._override_refused(request),
        )

    async def may_stop(self, who: str, resource: Resource) -> Decision:
        """Whether ``who`` may stop ``resource`` themselves: the right to lock it, to keep
        it out of a run, to leave it running, to act on a schedule that stops it."""
        return await self.judge(StopRequest(who, resource, PERSON))

    async def _grounds(self, request: StopRequest) -> Grounds | None:
        """What allows ``request``, or None: nothing does."""
        if self.is_admin(request.who):
            return Grounds.ADMIN
        if request.source == "schedule" and request.who.startswith(SCHEDULE_ACTOR):
            return Grounds.SCHEDULE
        if request.source == "lease" and request.who.startswith(LEASE_ACTOR):
            return Grounds.LEASE  # the end of a wake that was allowed
        users, groups, scope = self._scope(request.resource.name)
        if scope == Grounds.UNRESTRICTED:
            return scope
        if request.who in users or await self._in_groups(request.who, groups):
            return scope
        return None

    def _scope(self, name: str) -> tuple[list[str], list[str], Grounds]:
        """The users and groups that may stop ``name``, and the rule that lists them."""
        rc = self.config.resource_config(name)
        if rc.allowed_users or rc.allowed_groups:
            return rc.allowed_users, rc.allowed_groups, Grounds.OWN_RULE
        if self.config.allowed_users or self.config.allowed_groups:
            return self.config.allowed_users, self.config.allowed_groups, Grounds.GLOBAL_RULE
        return [], [], Grounds.UNRESTRICTED

    def _approval(self, request: StopRequest) -> ApprovalNeeded | None:
        rule = self.config.approval_for(request.resource.name)
        if rule is None:
            return None
        return ApprovalNeeded(
            min_approvals=rule.min_approvals,
            approvers=tuple(rule.approvers),
            groups=tuple(rule.approver_groups),
            expires_after=rule.expires_after,
            expires_at=request.at + rule.expires_after if request.at else None,
        )

    def _override_refused(self, request: StopRequest) -> OverrideRefused | None:
        if not request.override_lock:
            return None
        if not self.is_admin(request.who):
            return OverrideRefused.NOT_ADMIN
        if not request.reason:
            return OverrideRefused.NO_REASON
        return None
