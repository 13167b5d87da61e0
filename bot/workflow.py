"""The stop workflow, the same for Slack, the scheduler and the CLI.

    prepare:  resolve → may this user stop it? → read status and locks → awaiting confirmation
    confirm:  the requester, once, before expiry → submitting
    run:      locks again (the provider's read reused when it is under a second old: a
              scheduled stop runs right after its preview) → provider stop (202) → follow
              the status until final → audit

Every step is a compare-and-set transition in the store, so a double click, a Slack
retry or two bot processes can never submit one stop twice. Nothing here knows
about Slack: faces talk to the workflow through :class:`ProgressListener`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from pydantic import BaseModel, Field

from bot.config import ApprovalPolicy, StopbotConfig, UnknownResourceError
from bot.locks import LockVerdict, check_locks
from bot.models import Actor, BotLock, Operation, OpState, Transition
from bot.policy import Policy
from bot.polling import StatusBatcher
from bot.store import Store
from bot.text import Command, Person, Text, check_length, say, too_long
from providers.base import Phase, Provider, ProviderLock, Resource, ResourceStatus, utcnow
from providers.errors import (
    AlreadyStoppedError,
    AuthError,
    LockedError,
    NotFoundError,
    ProviderError,
    ProviderTimeoutError,
    UnsupportedError,
)

__all__ = ["LOCK_READ_REUSE", "ActionResult", "Preview", "ProgressListener", "StopService"]

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Sleep = Callable[[float], Awaitable[None]]
SYSTEM = "stopbot"
# How old a provider lock read may be and still stand for the read right before a stop:
# about one provider round trip, the age a read made just before the stop has too.
LOCK_READ_REUSE = dt.timedelta(seconds=1)
# Added to a stop call's longest time before a restarted process judges its operation.
SUBMIT_MARGIN = 5.0


class Preview(BaseModel):
    """What a user is shown before confirming: the resource as it is now."""

    operation: Operation
    resource: Resource
    status: ResourceStatus | None = None
    status_error: str | None = None
    provider_lock: ProviderLock | None = None
    bot_lock: BotLock | None = None
    notes: list[Text] = []
    supports_force: bool = False
    approval: ApprovalPolicy | None = None
    blocking_lock: LockVerdict | None = Field(
        default=None, description="When a lock refused the stop: whose, so they can be asked."
    )
    lock_read_at: dt.datetime | None = Field(
        default=None,
        description="When ``provider_lock`` was read (None: not read, or the read failed).",
    )


class ActionResult(BaseModel):
    """The answer to a button press or command: did it act, and what to tell the user."""

    ok: bool
    message: Text
    operation: Operation | None = None
    needs_approval: bool = False
    run: bool = Field(default=False, description="True when the stop should now be submitted.")


class ProgressListener(Protocol):
    """A face that shows a stop's progress (a Slack message, a terminal)."""

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None: ...


# The states in which an operation is followed by some process until it ends.
_FOLLOWED = frozenset({OpState.SUBMITTING, OpState.ACCEPTED, OpState.IN_PROGRESS})


class _Unshown:
    """A progress listener for an operation nobody is shown (the audit log has it all)."""

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None:
        return None


class StopService:
    def __init__(
        self,
        config: StopbotConfig,
        store: Store,
        providers: dict[str, Provider],
        *,
        policy: Policy | None = None,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.config = config
        self.settings = config.stops
        self.store = store
        self.providers = providers
        self.policy = policy or Policy(config)
        self.clock = clock
        self.sleep = sleep
        self._tasks: dict[str, asyncio.Task[Operation]] = {}
        # Operations being prepared, by id: a retry of the request waits for the preview.
        self._preparing: dict[str, asyncio.Future[Preview | None]] = {}
        self._batchers = {
            name: StatusBatcher(p, self.settings.poll_batch_window.total_seconds())
            for name, p in providers.items()
        }

    # -- prepare --------------------------------------------------------------------

    async def prepare(
        self,
        ref: str,
        actor: Actor,
        *,
        source: str,
        reason: str | None = None,
        force: bool = False,
        override_lock: bool = False,
        channel: str | None = None,
        response_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Preview:
        """Record a stop request and decide whether it may go to confirmation.

        The returned operation is awaiting confirmation, refused (``detail`` says why)
        or stopped already; for a request recorded already (same ``idempotency_key``),
        as it stands (see :meth:`_again`). Raises UnknownResourceError for a name not
        configured, TooLongError for a reason longer than REASON_LIMIT (nothing recorded).
        """
        check_length("A reason", reason)
        resource = self.config.resource(ref)
        provider = self.providers[resource.provider]
        op, created = self.store.create_operation(
            resource=resource.name,
            provider=resource.provider,
            resource_id=resource.id,
            requested_by=actor.id,
            source=source,
            reason=reason,
            force=force,
            override_lock=override_lock,
            channel=channel,
            response_url=response_url,
            idempotency_key=idempotency_key,
        )
        preview = Preview(
            operation=op,
            resource=resource,
            supports_force=provider.supports_force,
            approval=self.config.approval_for(resource.name),
        )
        if not created:
            return await self._again(preview, actor)
        preparing: asyncio.Future[Preview | None] = asyncio.get_running_loop().create_future()
        self._preparing[op.id] = preparing
        try:
            decided = await self._prepare(preview, actor, reason, force, override_lock)
        except BaseException:
            preparing.set_result(None)  # the retries read the resource for themselves
            raise
        finally:
            del self._preparing[op.id]
        preparing.set_result(decided)
        return decided

    async def _again(self, preview: Preview, actor: Actor) -> Preview:
        """A request recorded already: a retry (Slack redelivers a command it took for
        unanswered). It is shown as the first delivery left it, and nothing is decided:
        the first delivery's preview when it is still being prepared in this process,
        else the operation as it stands, the resource read again (read only) while it
        awaits confirmation, so that the confirmation shows its status and locks."""
        preparing = self._preparing.get(preview.operation.id)
        if preparing is not None:
            first = await asyncio.shield(preparing)
            if first is not None:
                return first
        preview.operation = self.store.get_operation(preview.operation.id) or preview.operation
        if preview.operation.state == OpState.AWAITING_CONFIRMATION:
            await self._read(preview, actor)
            self._note_approval(preview)
        return preview

    async def _prepare(
        self,
        preview: Preview,
        actor: Actor,
        reason: str | None,
        force: bool,
        override_lock: bool,
    ) -> Preview:
        resource = preview.resource
        provider = self.providers[resource.provider]
        op = preview.operation
        decision = await self.policy.may_stop(actor.id, resource.name)
        if not decision.allowed:
            return self._decide(preview, OpState.REFUSED, actor, Text(decision.reason))
        if force and not provider.supports_force:
            preview.notes.append(say("--force has no meaning for {}: ignored", resource.provider))

        verdict = await self._read(preview, actor)
        if isinstance(verdict, NotFoundError):
            return self._decide(
                preview,
                OpState.REFUSED,
                actor,
                say(
                    "{} does not know {} (id {}): {}. Check the id in the configuration.",
                    resource.provider,
                    resource.name,
                    resource.id,
                    verdict.message,
                ),
            )
        if verdict.blocked and override_lock:
            if not self.policy.is_admin(actor.id):
                return self._decide(
                    preview,
                    OpState.REFUSED,
                    actor,
                    say("only admins can use --override-lock. {}", verdict.reason or ""),
                )
            if not reason:
                return self._decide(
                    preview,
                    OpState.REFUSED,
                    actor,
                    say(
                        "--override-lock needs a reason, e.g. {}.",
                        Command(
                            "stop",
                            f"{resource.name} --override-lock runaway costs, owner unreachable",
                        ),
                    ),
                )
            preview.notes.append(say("overriding a lock as an admin: {}", verdict.reason or ""))
            self.store.audit(
                actor.id,
                "lock.override",
                resource=resource.name,
                operation_id=op.id,
                detail={"lock": verdict.reason, "reason": reason},
            )
        elif verdict.blocked:
            preview.blocking_lock = verdict
            return self._decide(preview, OpState.REFUSED, actor, verdict.reason)
        self._note_approval(preview)
        if preview.status is not None and preview.status.phase == Phase.STOPPED:
            return self._decide(
                preview,
                OpState.STOPPED_ALREADY,
                actor,
                say(
                    "{} is already stopped ({}): nothing to do.",
                    resource.name,
                    preview.status.state,
                ),
            )
        return self._decide(
            preview,
            OpState.AWAITING_CONFIRMATION,
            actor,
            None,
            expires_at=self.clock() + self.settings.confirm_ttl,
        )

    async def _read(self, preview: Preview, actor: Actor) -> LockVerdict | NotFoundError:
        """Fill ``preview`` with the resource as it is now (status, provider lock, Stopbot
        lock): the locks' verdict for ``actor``, its notes added, or the provider's
        not-found."""
        resource = preview.resource
        provider = self.providers[resource.provider]
        status_result, lock_result = await provider.status_and_lock(resource)
        if isinstance(status_result, NotFoundError):
            return status_result
        if isinstance(status_result, ResourceStatus):
            preview.status = status_result
        elif isinstance(status_result, BaseException):
            preview.status_error = str(status_result)
        if isinstance(lock_result, BaseException):
            if preview.status_error is None:
                preview.status_error = f"could not read the provider lock: {lock_result}"
        else:
            preview.provider_lock = lock_result
            preview.lock_read_at = self.clock()
        preview.bot_lock = self.store.get_lock(resource.name)
        verdict = self._lock_verdict(actor, resource, preview.provider_lock, preview.bot_lock)
        preview.notes.extend(verdict.notes)
        return verdict

    @staticmethod
    def _note_approval(preview: Preview) -> None:
        if preview.approval is not None:
            preview.notes.append(
                say(
                    "needs {} approval(s) from {} after you confirm",
                    preview.approval.min_approvals,
                    Text(", ").join(Person(a) for a in preview.approval.approvers),
                )
            )

    def _decide(
        self,
        preview: Preview,
        state: OpState,
        actor: Actor,
        detail: Text | None,
        *,
        expires_at: dt.datetime | None = None,
    ) -> Preview:
        op = self.store.transition(
            preview.operation.id,
            state,
            allowed_from=[OpState.REQUESTED],
            actor=actor.id,
            detail=detail,
            fields={"expires_at": expires_at} if expires_at else None,
        )
        if op is not None:
            preview.operation = op
        return preview

    def _lock_verdict(
        self,
        actor: Actor,
        resource: Resource,
        provider_lock: ProviderLock | None,
        bot_lock: BotLock | None,
    ) -> LockVerdict:
        return check_locks(
            actor,
            resource.name,
            resource.provider,
            provider_lock,
            bot_lock,
            is_admin=self.policy.is_admin(actor.id),
            now=self.clock(),
        )

    # -- buttons --------------------------------------------------------------------

    def _check_pending(self, op_id: str, actor: Actor, verb: str) -> ActionResult | Operation:
        op = self.store.get_operation(op_id)
        if op is None:
            return ActionResult(ok=False, message=Text("This stop request no longer exists."))
        if op.requested_by != actor.id:
            return ActionResult(
                ok=False,
                operation=op,
                message=say(
                    "Only {} can {} this stop of {}.", Person(op.requested_by), verb, op.resource
                ),
            )
        if op.state != OpState.AWAITING_CONFIRMATION:
            return ActionResult(
                ok=False,
                operation=op,
                message=say(
                    "This stop of {} was already handled (it is {}). Nothing was changed.",
                    op.resource,
                    op.state.value.replace("_", " "),
                ),
            )
        return op

    def confirm(self, op_id: str, actor: Actor, *, require_approval: bool = True) -> ActionResult:
        """The requester confirms, once, before expiry: the operation moves to submitting, or
        to awaiting approval for a protected resource (unless ``require_approval`` is False,
        as for scheduled runs not configured to ask)."""
        checked = self._check_pending(op_id, actor, "confirm")
        if isinstance(checked, ActionResult):
            return checked
        if checked.expires_at is not None and self.clock() >= checked.expires_at:
            expired = self.store.transition(
                op_id,
                OpState.CANCELLED,
                allowed_from=[OpState.AWAITING_CONFIRMATION],
                actor=SYSTEM,
                detail=Text("the confirmation expired"),
            )
            return ActionResult(
                ok=False,
                operation=expired or checked,
                message=say(
                    "This confirmation expired. Run {} again.", Command("stop", checked.resource)
                ),
            )
        approval = self._approval_policy(checked.resource) if require_approval else None
        if approval is not None:
            waiting = self.store.await_approval(
                op_id,
                actor.id,
                expires_at=self.clock() + approval.expires_after,
                min_approvals=approval.min_approvals,
            )
            if waiting is None:
                return ActionResult(ok=False, message=Text("This stop was already handled."))
            return ActionResult(
                ok=True,
                operation=waiting,
                needs_approval=True,
                message=say(
                    "Asked for approval to stop {}. You will be told when an approver decides.",
                    waiting.resource,
                ),
            )
        op = self.store.transition(
            op_id,
            OpState.SUBMITTING,
            allowed_from=[OpState.AWAITING_CONFIRMATION],
            actor=actor.id,
            detail=Text("confirmed"),
        )
        if op is None:  # another click won the race
            return ActionResult(ok=False, message=Text("This stop was already handled."))
        return ActionResult(
            ok=True, message=say("Stopping {}…", op.resource), operation=op, run=True
        )

    def _approval_policy(self, resource: str) -> ApprovalPolicy | None:
        try:
            return self.config.approval_for(resource)
        except KeyError:  # no longer configured: run() will say so
            return None

    # -- approvals ------------------------------------------------------------------

    async def _check_approvable(self, op_id: str, actor: Actor) -> ActionResult | Operation:
        op = self.store.get_operation(op_id)
        if op is None:
            return ActionResult(ok=False, message=Text("This approval request no longer exists."))
        if op.state != OpState.AWAITING_APPROVAL:
            return ActionResult(
                ok=False,
                operation=op,
                message=say(
                    "This request to stop {} was already decided (it is {}). Nothing was changed.",
                    op.resource,
                    op.state.value.replace("_", " "),
                ),
            )
        if op.requested_by == actor.id:
            return ActionResult(
                ok=False,
                operation=op,
                message=Text(
                    "You cannot approve or deny your own stop request: "
                    "another approver has to decide."
                ),
            )
        policy = self._approval_policy(op.resource)
        if policy is None or not await self.policy.is_approver(actor.id, policy.approvers):
            who = Text(", ").join(Person(a) for a in policy.approvers) if policy else "nobody"
            return ActionResult(
                ok=False,
                operation=op,
                message=say(
                    "Only the approvers of {} ({}) can decide this request.", op.resource, who
                ),
            )
        approval = self.store.approval(op_id)
        if approval is not None and self.clock() >= approval.expires_at:
            expired = self.store.decide_approval(
                op_id,
                "expired",
                decided_by=SYSTEM,
                to=OpState.CANCELLED,
                detail=Text("the approval request expired"),
            )
            return ActionResult(
                ok=False,
                operation=expired or op,
                message=say(
                    "This approval request expired. {} can run {} again.",
                    Person(op.requested_by),
                    Command("stop", op.resource),
                ),
            )
        return op

    async def can_decide(self, op_id: str, actor: Actor) -> ActionResult:
        """Whether ``actor`` may approve or deny now (before a deny modal is opened)."""
        checked = await self._check_approvable(op_id, actor)
        if isinstance(checked, ActionResult):
            return checked
        return ActionResult(ok=True, operation=checked, message=Text())

    async def approve(self, op_id: str, actor: Actor) -> ActionResult:
        """An approver approves; with enough approvals the stop is released, once."""
        checked = await self._check_approvable(op_id, actor)
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
        )
        if op is None:
            return ActionResult(ok=False, message=Text("This request was already decided."))
        return ActionResult(
            ok=True,
            operation=op,
            run=True,
            message=say("Approved by {}: stopping {}.", Person(actor.id), op.resource),
        )

    async def deny(self, op_id: str, actor: Actor, reason: str | None = None) -> ActionResult:
        """An approver denies: the request ends, refused, once."""
        refused = too_long("A reason", reason)
        if refused is not None:
            return ActionResult(ok=False, message=refused)
        checked = await self._check_approvable(op_id, actor)
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
        )
        if op is None:
            return ActionResult(ok=False, message=Text("This request was already decided."))
        return ActionResult(
            ok=True,
            operation=op,
            message=say("Denied by {}{}. {} keeps running.", Person(actor.id), why, op.resource),
        )

    def expire_approvals(self) -> list[Operation]:
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
            )
            if op is not None:
                expired.append(op)
        return expired

    def cancel(self, op_id: str, actor: Actor) -> ActionResult:
        checked = self._check_pending(op_id, actor, "cancel")
        if isinstance(checked, ActionResult):
            return checked
        op = self.store.transition(
            op_id,
            OpState.CANCELLED,
            allowed_from=[OpState.AWAITING_CONFIRMATION],
            actor=actor.id,
            detail=say("cancelled by {}", Person(actor.id)),
        )
        if op is None:
            return ActionResult(ok=False, message=Text("This stop was already handled."))
        return ActionResult(
            ok=True, message=say("Cancelled: {} was not stopped.", op.resource), operation=op
        )

    # -- run and follow -------------------------------------------------------------

    def start(
        self, op_id: str, listener: ProgressListener, actor: Actor
    ) -> asyncio.Task[Operation]:
        """Run a submitted operation in the background (once per process)."""
        task = self._tasks.get(op_id)
        if task is None or task.done():
            task = asyncio.create_task(self.run(op_id, listener, actor), name=f"stop-{op_id}")
            self._track(op_id, task)
        return task

    def _track(self, op_id: str, task: asyncio.Task[Operation]) -> None:
        self._tasks[op_id] = task

        def forget(_: asyncio.Task[Operation]) -> None:
            if self._tasks.get(op_id) is task:
                del self._tasks[op_id]

        task.add_done_callback(forget)

    async def run(
        self,
        op_id: str,
        listener: ProgressListener,
        actor: Actor,
        *,
        prepared: Preview | None = None,
    ) -> Operation:
        """Submit a confirmed stop and follow it to its end; returns the final operation.

        The provider lock is read right before the stop. ``prepared``, the preview of this
        operation when the stop follows its preparation at once (a scheduled stop that
        needs no approval), saves that read: its lock read is used instead if it is at
        most ``LOCK_READ_REUSE`` old, so no more recent than a read made here would be.
        """
        op = self.store.get_operation(op_id)
        if op is None or op.state != OpState.SUBMITTING:
            raise ValueError(f"operation {op_id} is not waiting to be submitted")
        resource = await self._configured(op, listener)
        if isinstance(resource, Operation):
            return resource
        provider = self.providers[resource.provider]
        provider_lock: ProviderLock | None = None
        if (
            prepared is not None
            and prepared.operation.id == op_id
            and prepared.lock_read_at is not None
            and self.clock() - prepared.lock_read_at <= LOCK_READ_REUSE
        ):
            provider_lock = prepared.provider_lock
        else:
            try:
                provider_lock = await provider.lock(resource)
            except ProviderError as exc:
                log.warning(
                    "lock read failed before stop", extra={"operation": op_id, "error": str(exc)}
                )
        verdict = self._lock_verdict(
            actor, resource, provider_lock, self.store.get_lock(resource.name)
        )
        # An admin's override was decided and audited at request time; anyone else is
        # checked again, since a lock may have been taken since the preview.
        if verdict.blocked and not (op.override_lock and self.policy.is_admin(op.requested_by)):
            return await self._end(op, OpState.REFUSED, listener, None, verdict.reason)
        try:
            accepted = await provider.stop(resource, force=op.force)
        except AlreadyStoppedError as exc:
            return await self._end(
                op,
                OpState.STOPPED_ALREADY,
                listener,
                None,
                say("{} was already stopped ({}).", resource.name, exc.message),
            )
        except LockedError as exc:
            return await self._end(op, OpState.REFUSED, listener, None, Text(str(exc)))
        except UnsupportedError as exc:
            hint = (
                " Use `--force` to stop it without a checkpoint."
                if provider.supports_force and not op.force
                else ""
            )
            said = str(exc)
            stop = "" if said.endswith((".", "!", "?")) else "."
            return await self._end(op, OpState.FAILED, listener, None, Text(said, stop, hint))
        except ProviderTimeoutError as exc:
            return await self._end(
                op,
                OpState.FAILED,
                listener,
                None,
                say(
                    "{}. The stop may or may not have been taken: check with {} before trying "
                    "again.",
                    exc,
                    Command("status", resource.name),
                ),
            )
        except ProviderError as exc:
            return await self._end(op, OpState.FAILED, listener, None, Text(str(exc)))
        moved = self.store.transition(
            op.id,
            OpState.ACCEPTED,
            allowed_from=[OpState.SUBMITTING],
            actor=SYSTEM,
            detail=Text(accepted.message),
        )
        if moved is None:
            current = self.store.get_operation(op.id) or op
            if not current.state.final:
                return current  # another process saw the stop under way and follows it
            # Judged meanwhile by another process (it took the stop for lost): the provider
            # has the stop all the same. Say so where it will be read.
            log.error(
                "stop accepted by the provider after its operation changed state",
                extra={"operation": op.id, "state": current.state.value},
            )
            self.store.audit(
                SYSTEM,
                "stop.accepted_late",
                resource=op.resource,
                operation_id=op.id,
                detail={"state": current.state.value, "provider": accepted.message},
            )
            return current
        if accepted.status is not None:
            moved = (
                self.store.record_provider_state(
                    op.id,
                    accepted.status.state,
                    accepted.status.phase.value,
                    accepted.status.message,
                )
                or moved
            )
        await self._notify(listener, moved, accepted.status)
        return await self.follow(moved, resource, listener)

    async def _configured(self, op: Operation, listener: ProgressListener) -> Resource | Operation:
        """The operation's resource, or the operation failed because the config lost it."""
        try:
            return self.config.resource(op.resource)
        except UnknownResourceError:
            return await self._end(
                op,
                OpState.FAILED,
                listener,
                None,
                say("{} is no longer in the configuration.", op.resource),
            )

    async def follow(
        self, op: Operation, resource: Resource, listener: ProgressListener
    ) -> Operation:
        """Poll the provider with back-off until the stop ends, fails or times out.

        Reads start ``interval`` apart, counted from the start of the previous read: the
        time a read takes (the batch window, the provider's latency) is not added to it.
        """
        deadline = self._accepted_at(op) + self.settings.timeout
        interval = self.settings.poll_initial.total_seconds()
        last: ResourceStatus | None = None
        while True:
            read_at = self.clock()
            if read_at >= deadline:
                state = f" (last state: {last.state})" if last else ""
                return await self._end(
                    op,
                    OpState.TIMED_OUT,
                    listener,
                    last,
                    say(
                        "{} did not reach a stopped state within {}{}.",
                        resource.name,
                        self.settings.timeout,
                        state,
                    ),
                )
            try:
                status = await self._batchers[resource.provider].status(resource)
            except (NotFoundError, AuthError) as exc:
                return await self._end(op, OpState.FAILED, listener, last, Text(str(exc)))
            except ProviderError as exc:
                log.warning(
                    "status read failed, will retry", extra={"operation": op.id, "error": str(exc)}
                )
            else:
                last = status
                if op.state == OpState.ACCEPTED:
                    op = (
                        self.store.transition(
                            op.id,
                            OpState.IN_PROGRESS,
                            allowed_from=[OpState.ACCEPTED],
                            actor=SYSTEM,
                        )
                        or op
                    )
                changed = self.store.record_provider_state(
                    op.id, status.state, status.phase.value, status.message
                )
                op = changed or op
                if status.phase == Phase.STOPPED:
                    return await self._end(op, OpState.STOPPED, listener, status, None)
                if status.phase == Phase.FAILED:
                    message = say(
                        "{} reports {}{}",
                        resource.provider,
                        status.state,
                        f": {status.message}" if status.message else "",
                    )
                    return await self._end(op, OpState.FAILED, listener, status, message)
                if changed is not None:
                    await self._notify(listener, op, status)
            spent = (self.clock() - read_at).total_seconds()
            await self.sleep(max(interval - spent, 0.0))
            interval = min(interval * 1.5, self.settings.poll_max.total_seconds())

    def _accepted_at(self, op: Operation) -> dt.datetime:
        for t in self.store.transitions(op.id):
            if t.state == OpState.ACCEPTED.value:
                return t.at
        return op.updated_at

    async def _end(
        self,
        op: Operation,
        state: OpState,
        listener: ProgressListener,
        status: ResourceStatus | None,
        detail: Text | None,
    ) -> Operation:
        final = self.store.transition(
            op.id,
            state,
            allowed_from=[OpState.SUBMITTING, OpState.ACCEPTED, OpState.IN_PROGRESS],
            actor=SYSTEM,
            detail=detail,
        )
        final = final or self.store.get_operation(op.id) or op
        await self._notify(listener, final, status)
        return final

    async def _notify(
        self, listener: ProgressListener, op: Operation, status: ResourceStatus | None
    ) -> None:
        try:
            await listener.progress(op, self.store.transitions(op.id), status)
        except Exception:  # a face that cannot show progress must not stop the stop
            log.exception("progress listener failed", extra={"operation": op.id})

    # -- restart --------------------------------------------------------------------

    async def resume(
        self, listener_for: Callable[[Operation], ProgressListener]
    ) -> list[asyncio.Task[Operation]]:
        """Pick up the operations a previous process left in flight."""
        tasks = []
        for op in self.store.operations_in_flight():
            if op.id in self._tasks:
                continue
            task = asyncio.create_task(
                self._resume_one(op, listener_for(op)), name=f"resume-{op.id}"
            )
            self._track(op.id, task)
            tasks.append(task)
        return tasks

    async def _resume_one(self, op: Operation, listener: ProgressListener) -> Operation:
        resource = await self._configured(op, listener)
        if isinstance(resource, Operation):
            return resource
        if op.state == OpState.SUBMITTING:
            op = await self._judge_submitting(op, resource, listener)
            if op.state.final or op.state == OpState.AWAITING_APPROVAL:
                return op
        return await self.follow(op, resource, listener)

    async def _judge_submitting(
        self, op: Operation, resource: Resource, listener: ProgressListener
    ) -> Operation:
        """An operation a previous process left SUBMITTING: whether its stop went out is
        unknown. Following is safe; sending it again could stop twice.

        The provider's status decides: a stop under way (or done) means it went out, and
        it is followed. A resource still running may yet get it from another process
        still submitting (a rolling deploy starts the new process before the old one
        ends), so that is the verdict only once the stop call, every retry included,
        would be over; meanwhile the status is read again every poll interval.
        """
        deadline = op.updated_at + self._submit_window()
        while True:
            try:
                status: ResourceStatus | None = await self.providers[resource.provider].status(
                    resource
                )
            except ProviderError as exc:
                status, unknown = None, exc
            current = self.store.get_operation(op.id) or op
            if current.state != OpState.SUBMITTING:  # another process moved it on
                return current
            if status is not None and status.phase not in {Phase.RUNNING, Phase.UNKNOWN}:
                moved = self.store.transition(
                    op.id,
                    OpState.ACCEPTED,
                    allowed_from=[OpState.SUBMITTING],
                    actor=SYSTEM,
                    detail=Text("resumed after a restart"),
                )
                return moved or self.store.get_operation(op.id) or op
            if self.clock() >= deadline:
                break
            await self.sleep(self.settings.poll_initial.total_seconds())
        if status is None:
            return await self._end(
                op,
                OpState.FAILED,
                listener,
                None,
                say("interrupted by a restart, and the status is unknown: {}", unknown),
            )
        return await self._end(
            op,
            OpState.FAILED,
            listener,
            status,
            say(
                "interrupted by a restart before the provider confirmed the stop; {} is {}. "
                "Run {} again.",
                resource.name,
                status.state,
                Command("stop", resource.name),
            ),
        )

    def _submit_window(self) -> dt.timedelta:
        """The longest a provider's stop call may take, every retry included."""
        http = self.config.http
        return dt.timedelta(seconds=http.retry_budget + http.timeout + SUBMIT_MARGIN)

    async def until_final(self, op_id: str, listener: ProgressListener | None = None) -> Operation:
        """Wait for an operation followed elsewhere (in this process) to end. One this
        process does not follow (its follower died with another process) is taken over,
        shown to ``listener``: waiting for nobody would never end."""
        while True:
            task = self._tasks.get(op_id)
            if task is None:
                op = self.store.get_operation(op_id)
                if op is not None and op.state in _FOLLOWED:
                    task = asyncio.create_task(
                        self._resume_one(op, listener or _Unshown()), name=f"adopt-{op_id}"
                    )
                    self._track(op_id, task)
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
            op = self.store.get_operation(op_id)
            if op is None:
                raise KeyError(op_id)
            if op.state.final or op.state == OpState.AWAITING_APPROVAL:
                return op
            await self.sleep(self.settings.poll_initial.total_seconds())

    def in_flight(self) -> list[str]:
        """Ids of the operations this process is following now."""
        return list(self._tasks)

    async def aclose(self) -> None:
        """Stop following (the store keeps the operations; the next start resumes them)."""
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
