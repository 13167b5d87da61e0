"""Approvals: a protected stop, once its requester confirms it, waits for its approvers.

Who decides: an approver of the resource (listed by id, or a member of a listed user
group), never the requester, each once, before the request expires (by time: after a
restart too). Enough approvals release the stop, once; one denial ends it. Every
decision is a compare-and-set in the store, so an Approve and a Deny racing in two
processes decide once.

The request to the approvers and the news of its end (approved, denied, expired) are owed
through the outbox in the same transaction as the confirmation or the decision, and shown
by the face's :class:`ApprovalNotifier`: a restart loses neither.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from bot.config import ApprovalPolicy
from bot.models import SYSTEM, Action, ActionResult, Actor, Approval, Operation, OpState, Owed
from bot.text import Command, Person, Text, say, too_long

if TYPE_CHECKING:
    from bot.workflow import StopService

__all__ = ["APPROVAL_OUTCOME", "APPROVAL_REQUEST", "ApprovalNotifier", "Approvals"]

log = logging.getLogger(__name__)

APPROVAL_REQUEST = "approval-request"
"""The outbox kind of the request to approvers of a confirmed, protected stop."""
APPROVAL_OUTCOME = "approval-outcome"
"""The outbox kind of an approval's end (approved, denied, expired), told to everyone."""


class ApprovalNotifier(Protocol):
    """A face that asks approvers and tells them, and the requester, how it ended. Each
    call is a delivery from the outbox: False means it could not be shown and is tried
    again later."""

    async def request(self, op: Operation, approval: Approval, policy: ApprovalPolicy) -> bool:
        """Ask ``policy``'s approvers to decide on ``op`` (pending, until
        ``approval.expires_at``): whether anyone was asked."""
        ...

    async def outcome(self, op: Operation, approval: Approval) -> bool:
        """Tell the requester and the approvers that ``approval`` ended (its ``status``:
        approved, denied or expired; by ``decided_by``, with its ``reason``)."""
        ...


class Approvals:
    """The approval rule of one stop service (see the module's docstring)."""

    def __init__(self, service: StopService) -> None:
        self.service = service
        self.config = service.config
        self.store = service.store
        self.outbox = service.outbox
        self.policy = service.policy

    def notify_with(self, notifier: ApprovalNotifier) -> None:
        """Ask and tell through ``notifier`` (until then requests and outcomes stay owed,
        for a process whose face shows them)."""

        async def request(owed: Owed) -> bool:
            op = self.store.get_operation(str(owed.payload.get("operation")))
            approval = self.store.approval(op.id) if op is not None else None
            if op is None or approval is None or approval.status != "pending":
                return True
            policy = self.policy_for(op.resource)
            if policy is None:
                return False
            return await notifier.request(op, approval, policy)

        async def outcome(owed: Owed) -> bool:
            op = self.store.get_operation(str(owed.payload.get("operation")))
            approval = self.store.approval(op.id) if op is not None else None
            if op is None or approval is None or approval.status == "pending":
                return True
            return await notifier.outcome(op, approval)

        self.outbox.handle(APPROVAL_REQUEST, request)
        self.outbox.handle(APPROVAL_OUTCOME, outcome)

    def policy_for(self, resource: str) -> ApprovalPolicy | None:
        """The approval ``resource`` needs, if any (none for a resource no longer
        configured: the stop's run says so)."""
        try:
            return self.config.approval_for(resource)
        except KeyError:
            return None

    def ask(self, op: Operation, actor: Actor, policy: ApprovalPolicy) -> ActionResult:
        """``op``, confirmed by its requester, waits for approval; the request to
        approvers is owed."""
        waiting = self.store.await_approval(
            op.id,
            actor.id,
            expires_at=self.service.clock() + policy.expires_after,
            min_approvals=policy.min_approvals,
            owe=self.outbox.message(APPROVAL_REQUEST, op.id, {"operation": op.id}),
        )
        if waiting is None:
            return ActionResult(ok=False, message=Text("This stop was already handled."))
        self.outbox.kick()
        return ActionResult(
            ok=True,
            operation=waiting,
            needs_approval=True,
            message=say(
                "Asked for approval to {} {}. You will be told when an approver decides.",
                waiting.action.verb,
                waiting.resource,
            ),
        )

    async def ask_now(self, op_id: str) -> bool:
        """Deliver the request to approvers of ``op_id`` now (a face that answers the
        requester once it is out); whether it is."""
        return await self.outbox.deliver_now(f"{APPROVAL_REQUEST}:{op_id}")

    async def _check(self, op_id: str, actor: Actor) -> ActionResult | Operation:
        op = self.store.get_operation(op_id)
        if op is None:
            return ActionResult(ok=False, message=Text("This approval request no longer exists."))
        if op.state != OpState.AWAITING_APPROVAL:
            return ActionResult(
                ok=False,
                operation=op,
                message=say(
                    "This request to {} {} was already decided (it is {}). Nothing was changed.",
                    op.action.verb,
                    op.resource,
                    op.state.value.replace("_", " "),
                ),
            )
        if op.requested_by == actor.id:
            return ActionResult(
                ok=False,
                operation=op,
                message=say(
                    "You cannot approve or deny your own {} request: "
                    "another approver has to decide.",
                    op.action.verb,
                ),
            )
        policy = self.policy_for(op.resource)
        if policy is None or not await self.policy.is_approver(actor.id, policy):
            who = Text(", ").join(Person(a) for a in policy.everyone()) if policy else "nobody"
            return ActionResult(
                ok=False,
                operation=op,
                message=say(
                    "Only the approvers of {} ({}) can decide this request.", op.resource, who
                ),
            )
        approval = self.store.approval(op_id)
        if approval is not None and self.service.clock() >= approval.expires_at:
            expired = self.store.decide_approval(
                op_id,
                "expired",
                decided_by=SYSTEM,
                to=OpState.CANCELLED,
                detail=Text("the approval request expired"),
                owe=self._outcome(op_id),
            )
            self.outbox.kick()
            return ActionResult(
                ok=False,
                operation=expired or op,
                message=say(
                    "This approval request expired. {} can run {} again.",
                    Person(op.requested_by),
                    Command("stop" if op.action is Action.STOP else "wake", op.resource),
                ),
            )
        return op

    async def can_decide(self, op_id: str, actor: Actor) -> ActionResult:
        """Whether ``actor`` may approve or deny now (before a deny form is opened)."""
        checked = await self._check(op_id, actor)
        if isinstance(checked, ActionResult):
            return checked
        return ActionResult(ok=True, operation=checked, message=Text())

    async def approve(self, op_id: str, actor: Actor) -> ActionResult:
        """An approver approves; with enough approvals the stop is released (``run``), once."""
        checked = await self._check(op_id, actor)
        if isinstance(checked, ActionResult):
            return checked
        count = self.store.vote(op_id, actor.id, "approve")
        if count is None:
            return ActionResult(
                ok=False,
                operation=checked,
                message=Text("You have already approved this request."),
            )
        approval = self.store.approval(op_id)
        needed = approval.min_approvals if approval else 1
        if count < needed:
            return ActionResult(
                ok=True,
                operation=checked,
                message=say(
                    "Approved by {} ({} of {}); waiting for more approvers.",
                    Person(actor.id),
                    count,
                    needed,
                ),
            )
        op = self.store.decide_approval(
            op_id,
            "approved",
            decided_by=actor.id,
            to=OpState.SUBMITTING,
            detail=say("approved by {}", Person(actor.id)),
            owner=self.service.registry.id,
            owe=self._outcome(op_id),
        )
        if op is None:
            return ActionResult(ok=False, message=Text("This request was already decided."))
        self.service.owe_progress(op)
        return ActionResult(
            ok=True,
            operation=op,
            run=True,
            joined=op.joined,
            message=say(
                "Approved by {}: {} {}.",
                Person(actor.id),
                "stopping" if op.action is Action.STOP else "waking",
                op.resource,
            ),
        )

    async def deny(self, op_id: str, actor: Actor, reason: str | None = None) -> ActionResult:
        """An approver denies: the request ends, refused, once."""
        refused = too_long("A reason", reason)
        if refused is not None:
            return ActionResult(ok=False, message=refused)
        checked = await self._check(op_id, actor)
        if isinstance(checked, ActionResult):
            return checked
        why = f": {reason}" if reason else ""
        op = self.store.decide_approval(
            op_id,
            "denied",
            decided_by=actor.id,
            to=OpState.REFUSED,
            detail=say("denied by {}{}", Person(actor.id), why),
            reason=reason,
            owe=self._outcome(op_id),
        )
        if op is None:
            return ActionResult(ok=False, message=Text("This request was already decided."))
        self.outbox.kick()
        return ActionResult(
            ok=True,
            operation=op,
            message=say(
                "Denied by {}{}. {} {}.",
                Person(actor.id),
                why,
                op.resource,
                "keeps running" if op.action is Action.STOP else "stays as it is",
            ),
        )

    def expire(self) -> list[Operation]:
        """End the approval requests past their expiry (enforced by time, so after a restart
        too); returns the operations that expired now."""
        expired = []
        for op_id in self.store.expired_approvals():
            op = self.store.decide_approval(
                op_id,
                "expired",
                decided_by=SYSTEM,
                to=OpState.CANCELLED,
                detail=Text("the approval request expired"),
                owe=self._outcome(op_id),
            )
            if op is not None:
                expired.append(op)
        if expired:
            self.outbox.kick()
        return expired

    def _outcome(self, op_id: str) -> Owed:
        """An approval's end owed to its requester and to every copy of its request."""
        return self.outbox.message(APPROVAL_OUTCOME, op_id, {"operation": op_id})
