"""The stop workflow, the same for Slack, the scheduler and the CLI, and for wakes.

An operation carries an action: stop, or start (a wake). Both go through
the same steps and rules below; only the provider call (:meth:`Provider.stop` or
:meth:`Provider.start`) and where the resource ends up (stopped, or up) differ.

    prepare:  resolve → may this user stop it? → read status and locks → awaiting confirmation
    confirm:  the requester, once, before expiry → submitting (joining a stop of the same
              resource already in flight, if any: one stop per resource is sent at a time),
              or awaiting approval for a protected resource (bot/approvals.py)
    run:      locks again (the provider's read reused when it is under a second old: a
              scheduled stop runs right after its preview) → claim the send → provider
              stop (202) → follow the status until final → audit

Every step is a compare-and-set transition in the store, so a double click, a Slack
retry or two bot processes can never submit one stop twice. The provider's stop is sent
only by the process that won the claim to send it (:meth:`Store.claim_send`): a stop
whose claim was never taken provably never left, and is sent after a restart; one whose
claim was taken may have left, and is judged by reading the provider, never sent again.

An operation is driven by one process at a time, its ``owner``; every later transition
is fenced by that ownership. When the owner dies, another process takes the operation
over (:meth:`StopService.resume`, run at start and every few seconds).

Nothing here knows about Slack: faces talk to the workflow through
:class:`ProgressListener`, and a face that shows progress durably (``notify``) is owed
each change through the outbox, in the same transaction as the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any, Protocol

from pydantic import BaseModel, Field

from bot.approvals import Approvals
from bot.config import ApprovalPolicy, StopbotConfig, UnknownResourceError
from bot.durations import format_duration
from bot.locks import LockVerdict, check_locks
from bot.models import (
    DONE_STATES,
    SYSTEM,
    Action,
    ActionResult,
    Actor,
    BotLock,
    Operation,
    OpState,
    Owed,
    Transition,
)
from bot.outbox import Outbox
from bot.policy import Policy, StopRequest
from bot.polling import StatusBatcher
from bot.processes import ProcessRegistry
from bot.store import Store, StoreUnavailableError
from bot.store.background import following as store_following
from bot.text import Command, Person, Text, check_length, say
from providers.base import (
    Phase,
    Provider,
    ProviderLock,
    Resource,
    ResourceStatus,
    StatusAndLock,
    utcnow,
)
from providers.errors import (
    AlreadyRunningError,
    AlreadyStoppedError,
    AnswerLostError,
    AuthError,
    LockedError,
    NotFoundError,
    NotSentError,
    ProviderError,
    UnsupportedError,
)
from providers.http import sending_until

__all__ = [
    "LOCK_READ_REUSE",
    "Confirmation",
    "Preview",
    "PriorRead",
    "ProgressListener",
    "ProgressNotifier",
    "StopService",
    "Unshown",
]

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Sleep = Callable[[float], Awaitable[None]]
# How old a provider lock read may be and still stand for the read right before a stop:
# about one provider round trip, the age a read made just before the stop has too.
LOCK_READ_REUSE = dt.timedelta(seconds=1)
# Added to a stop call's longest time before a restarted process judges its operation;
# after a call whose answer was lost, how long the provider has to show it took the call.
SUBMIT_MARGIN = 5.0
INTERRUPTED_PREPARING = Text(
    "interrupted by a restart while it was being prepared: nothing was stopped"
)
_STOPPED_STATES = DONE_STATES
OWNER_CHECK_EVERY = 5
"""Polls between a follower's checks that it still owns its operation (a process taken
for dead is fenced out of every write, and stops following at the next check)."""
MAX_SENDS = 2
"""Claims to send one stop at most: a claim whose call did not take (its process died
before the call left) is given back once."""


@dataclasses.dataclass(frozen=True)
class PriorRead:
    """A resource's status and provider lock, read before :meth:`StopService.prepare` (a
    scheduled run reads all its resources with one list call per provider account), to be
    used instead of reading them again.

    ``lock_stands_for`` is how long the lock read stands for the one right before the
    stop. A scheduled run's bulk read stands for the whole run: a lock taken since is the
    provider's to enforce, and its refusal (LockedError) is reported as skipped.
    """

    read: StatusAndLock
    at: dt.datetime
    lock_stands_for: dt.timedelta = LOCK_READ_REUSE


@dataclasses.dataclass(frozen=True)
class Confirmation:
    """A confirmation given with the request (a scheduled stop): by whom, and whether a
    protected resource then waits for approval (as :meth:`StopService.confirm`)."""

    by: Actor
    require_approval: bool = True


class Preview(BaseModel):
    """What a user is shown before confirming: the resource as it is now."""

    operation: Operation
    resource: Resource
    status: ResourceStatus | None = None
    status_error: str | None = None
    provider_lock: ProviderLock | None = None
    lock_error: str | None = Field(
        default=None,
        description="Why the provider lock is unknown (its read failed); ``provider_lock`` "
        "None without it means there is none.",
    )
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
    lock_read_reuse: dt.timedelta = Field(
        default=LOCK_READ_REUSE,
        description="How old ``provider_lock`` may be and still stand for the read right "
        "before the stop (see PriorRead).",
    )


class ProgressListener(Protocol):
    """A face that shows a stop's progress (a Slack message, a terminal).

    A listener that does not show the timeline says so with a class attribute
    ``shows_timeline = False``: it is then given an empty list, and the store is not read
    for it at every step of every stop.
    """

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None: ...


# The states in which an operation is followed by some process until it ends.
_FOLLOWED = frozenset({OpState.SUBMITTING, OpState.ACCEPTED, OpState.IN_PROGRESS})
# Where a process drives an operation: taken over when that process dies.
_DRIVEN = _FOLLOWED | {OpState.REQUESTED}
STORE_RETRY = 1.0  # seconds between tries of a database that stopped answering
PROGRESS = "progress"
"""The outbox kind of a stop's progress, owed to the face that shows it."""


class ProgressNotifier(Protocol):
    """A face that shows the progress of the stops asked from it durably (``notify``):
    each change is owed through the outbox, and shown by a delivery."""

    async def show(self, op: Operation, timeline: list[Transition]) -> bool:
        """Show ``op`` as it stands; False: it could not be, try again later."""
        ...


class Unshown:
    """A progress listener for a stop followed with nothing shown live: its progress is
    owed to its face through the outbox, if it has one, and the audit log has it all."""

    shows_timeline = False

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
        registry: ProcessRegistry | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.config = config
        self.settings = config.stops
        self.store = store
        self.providers = providers
        self.policy = policy or Policy(config)
        self.clock = clock
        self.sleep = sleep
        self.registry = registry or ProcessRegistry(store, lease=config.recovery.lease)
        self.registry.register()
        self.outbox = outbox or Outbox(store, self.registry)
        self.approvals = Approvals(self)
        self._tasks: dict[str, asyncio.Task[Operation]] = {}
        # Operations a coroutine of this process drives now (:meth:`_through_outages`).
        self._driving: dict[str, int] = {}
        # Operations being prepared, by id: a retry of the request waits for the preview.
        self._preparing: dict[str, asyncio.Future[Preview | None]] = {}
        self._batchers = {
            name: StatusBatcher(
                p,
                self.settings.poll_batch_window.total_seconds(),
                every=self.settings.poll_initial.total_seconds(),
                clock=lambda: self.clock().timestamp(),
                # Late-bound, as the clock: the rounds pace by the service's sleep as it is
                # now (a test may replace it to hold every stop after its first look).
                sleep=lambda seconds: self.sleep(seconds),
            )
            for name, p in providers.items()
        }

    def show_progress_with(self, notifier: ProgressNotifier) -> None:
        """Show the progress owed to a face through ``notifier`` (until then it stays
        owed, for a process whose face shows it): one stop's changes at most every
        ``stops.progress_interval``, the latest state each time, a final state at once."""

        def read(op_id: str) -> tuple[Operation | None, list[Transition]]:
            op = self.store.get_operation(op_id)
            return op, self.store.transitions(op_id) if op is not None else []

        async def deliver(owed: Owed) -> bool:
            op, timeline = await self.store.off_loop(
                partial(read, str(owed.payload.get("operation")))
            )
            if op is None or not op.notify:
                return True
            return await notifier.show(op, timeline)

        self.outbox.handle(
            PROGRESS, deliver, interval=self.settings.progress_interval.total_seconds()
        )

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
        notify: bool = False,
        prior: PriorRead | None = None,
        confirm: Confirmation | None = None,
        action: Action = Action.STOP,
        lease: dt.timedelta | None = None,
    ) -> Preview:
        """Record a stop (or wake: ``action``) request and decide whether it may go to
        confirmation; ``lease``: a wake's lease (bot/leases.py).

        The returned operation is awaiting confirmation, refused (``detail`` says why)
        or stopped already; for a request recorded already (same ``idempotency_key``),
        as it stands (see :meth:`_again`). ``notify``: the face shows its progress from
        confirmation on, owed through the outbox. ``prior``: the resource's status and
        lock, read already. ``confirm``: confirmed at once when it may go to confirmation
        (a scheduled stop), in the same transaction as that decision. Raises
        UnknownResourceError for a name not configured,
        TooLongError for a reason longer than REASON_LIMIT (nothing recorded).
        """
        check_length("A reason", reason)
        resource = self.config.resource(ref)
        provider = self.providers[resource.provider]
        op, created = await self.store.off_loop(
            partial(
                self.store.create_operation,
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
                owner=self.registry.id,
                notify=notify,
                action=action,
                lease_seconds=int(lease.total_seconds()) if lease is not None else None,
            )
        )
        preview = Preview(
            operation=op,
            resource=resource,
            supports_force=provider.supports_force,
            approval=self.config.approval_for(resource.name),
        )
        if not created:
            return await self._again(preview, actor)
        return await self._prepare_once(preview, actor, prior, confirm)

    async def _prepare_once(
        self,
        preview: Preview,
        actor: Actor,
        prior: PriorRead | None = None,
        confirm: Confirmation | None = None,
    ) -> Preview:
        """Prepare an operation this process owns, its retries waiting for the preview."""
        op = preview.operation
        preparing: asyncio.Future[Preview | None] = asyncio.get_running_loop().create_future()
        self._preparing[op.id] = preparing
        try:
            decided = await self._prepare(
                preview, actor, op.reason, op.force, op.override_lock, prior, confirm
            )
        except BaseException:
            preparing.set_result(None)  # the retries read the resource for themselves
            raise
        finally:
            del self._preparing[op.id]
        preparing.set_result(decided)
        return decided

    async def _again(self, preview: Preview, actor: Actor) -> Preview:
        """A request recorded already: a retry (Slack redelivers a command it took for
        unanswered, or a restart handles a request its dead process had answered). It
        is shown as the first delivery left it, and nothing is decided: the first
        delivery's preview when it is still being prepared in this process, else the
        operation as it stands, the resource read again (read only) while it awaits
        confirmation, so that the confirmation shows its status and locks. One still
        being prepared by a process that died is prepared again, here."""
        preparing = self._preparing.get(preview.operation.id)
        if preparing is not None:
            first = await asyncio.shield(preparing)
            if first is not None:
                return first
        op = self.store.get_operation(preview.operation.id) or preview.operation
        preview.operation = op
        if (
            op.state == OpState.REQUESTED
            and op.id not in self._preparing
            and self.registry.orphaned(op.owner)
            and self.registry.take("operations", op.id, op.owner)
        ):
            preview.operation = self.store.get_operation(op.id) or op
            return await self._prepare_once(preview, actor)
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
        prior: PriorRead | None = None,
        confirm: Confirmation | None = None,
    ) -> Preview:
        resource = preview.resource
        provider = self.providers[resource.provider]
        op = preview.operation
        decision = await self.policy.judge(
            StopRequest(
                actor.id,
                resource,
                op.source,
                reason=reason,
                at=op.created_at,
                override_lock=override_lock,
            )
        )
        if not decision.allowed:
            return await self._decide(preview, OpState.REFUSED, actor, decision.reason)
        longest = self.config.leases.max_duration
        if op.lease_seconds and dt.timedelta(seconds=op.lease_seconds) > longest:
            return await self._decide(
                preview,
                OpState.REFUSED,
                actor,
                say(
                    "a lease of {} is longer than the maximum of {}: wake it for less, and "
                    "extend it later",
                    _duration(op.lease_seconds),
                    format_duration(longest),
                ),
            )
        if force and not provider.supports_force:
            preview.notes.append(say("--force has no meaning for {}: ignored", resource.provider))

        verdict = await self._read(preview, actor, prior)
        if isinstance(verdict, NotFoundError):
            return await self._decide(
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
            refusal = decision.override_refusal(verdict.reason)
            if refusal is not None:
                return await self._decide(preview, OpState.REFUSED, actor, refusal)
            preview.notes.append(say("overriding a lock as an admin: {}", verdict.reason or ""))
            await self.store.off_loop(
                partial(
                    self.store.audit,
                    actor.id,
                    "lock.override",
                    resource=resource.name,
                    operation_id=op.id,
                    detail={"lock": verdict.reason, "reason": reason},
                )
            )
        elif verdict.blocked:
            preview.blocking_lock = verdict
            return await self._decide(preview, OpState.REFUSED, actor, verdict.reason)
        self._note_approval(preview)
        if op.action is Action.START:
            if preview.status is not None and provider.is_up(preview.status):
                if op.lease_seconds:
                    preview.notes.append(
                        say(
                            "your lease of {} runs from now: it is kept out of scheduled "
                            "stops, and stopped when the lease ends",
                            _duration(op.lease_seconds),
                        )
                    )
                return await self._decide(
                    preview,
                    OpState.RUNNING_ALREADY,
                    actor,
                    say(
                        "{} is already running ({}): nothing to do.",
                        resource.name,
                        preview.status.state,
                    ),
                )
        elif preview.status is not None and preview.status.phase == Phase.STOPPED:
            return await self._decide(
                preview,
                OpState.STOPPED_ALREADY,
                actor,
                say(
                    "{} is already stopped ({}): nothing to do.",
                    resource.name,
                    preview.status.state,
                ),
            )
        fields: dict[str, Any] = {"expires_at": self.clock() + self.settings.confirm_ttl}
        if (
            op.action is not Action.START
            and provider.supports_force
            and not force
            and await self._forced_only(preview)
        ):
            fields["force"] = True

        def decide() -> None:
            with self.store.batch():  # the decision and its confirmation: one commit
                self._record_decision(
                    preview, OpState.AWAITING_CONFIRMATION, actor, None, fields=fields
                )
                if confirm is not None and preview.operation.state == OpState.AWAITING_CONFIRMATION:
                    confirmed = self.confirm(
                        preview.operation.id, confirm.by, require_approval=confirm.require_approval
                    )
                    preview.operation = confirmed.operation or preview.operation

        # Confirmed off the loop, then driven by the caller as soon as it has it: meanwhile
        # it counts as driven here, so no sweep takes it for stranded (and drives it twice).
        with self._driven(op.id):
            await self.store.off_loop(decide)
        return preview

    @contextlib.contextmanager
    def _driven(self, op_id: str) -> Iterator[None]:
        """``op_id`` counts as driven by this process while inside."""
        self._driving[op_id] = self._driving.get(op_id, 0) + 1
        try:
            yield
        finally:
            self._driving[op_id] -= 1
            if not self._driving[op_id]:
                del self._driving[op_id]

    async def _forced_only(self, preview: Preview) -> bool:
        """Whether the provider can only force this stop (Feldera's open-source edition):
        the preview then offers the forced stop and says what it means, rather than a
        gentle stop that would fail after Confirm. Unknown: said before Confirm too."""
        resource = preview.resource
        graceful = await self.providers[resource.provider].graceful_stop()
        if graceful.available is False:
            preview.notes.append(
                say(
                    "{} has no graceful stop ({}): this is a forced stop. The compute is "
                    "released at once, without a final checkpoint; the pipeline resumes from "
                    "its latest periodic checkpoint.",
                    resource.provider,
                    graceful.why or "not in this edition",
                )
            )
            return True
        if graceful.available is None:
            preview.notes.append(
                say(
                    "could not tell whether {} can stop gracefully ({}): if it refuses, "
                    "stop again with --force.",
                    resource.provider,
                    graceful.why or "no answer",
                )
            )
        return False

    async def _read(
        self, preview: Preview, actor: Actor, prior: PriorRead | None = None
    ) -> LockVerdict | NotFoundError:
        """Fill ``preview`` with the resource as it is now (status, provider lock, Stopbot
        lock), or as ``prior`` read it: the locks' verdict for ``actor``, its notes added,
        or the provider's not-found."""
        resource = preview.resource
        if prior is None:
            provider = self.providers[resource.provider]
            status_result, lock_result = await provider.status_and_lock(resource)
            read_at = self.clock()
        else:
            (status_result, lock_result), read_at = prior.read, prior.at
            preview.lock_read_reuse = prior.lock_stands_for
        if isinstance(status_result, NotFoundError):
            return status_result
        if isinstance(status_result, ResourceStatus):
            preview.status = status_result
        elif isinstance(status_result, BaseException):
            preview.status_error = str(status_result)
        if isinstance(lock_result, BaseException):
            preview.lock_error = str(lock_result)
        else:
            preview.provider_lock = lock_result
            preview.lock_read_at = read_at
        preview.bot_lock = await self.store.off_loop(partial(self.store.get_lock, resource.name))
        verdict = self._lock_verdict(actor, resource, preview.provider_lock, preview.bot_lock)
        preview.notes.extend(verdict.notes)
        return verdict

    @staticmethod
    def _note_approval(preview: Preview) -> None:
        if preview.approval is not None:
            preview.notes.append(
                say(
                    "needs {} approval{} from {} after you confirm",
                    preview.approval.min_approvals,
                    "s" if preview.approval.min_approvals > 1 else "",
                    Text(", ").join(Person(a) for a in preview.approval.everyone()),
                )
            )

    async def _decide(
        self, preview: Preview, state: OpState, actor: Actor, detail: Text | None
    ) -> Preview:
        """:meth:`_record_decision`, off the loop."""
        await self.store.off_loop(partial(self._record_decision, preview, state, actor, detail))
        return preview

    def _record_decision(
        self,
        preview: Preview,
        state: OpState,
        actor: Actor,
        detail: Text | None,
        *,
        fields: dict[str, Any] | None = None,
    ) -> Preview:
        op = self.store.transition(
            preview.operation.id,
            state,
            allowed_from=[OpState.REQUESTED],
            actor=actor.id,
            detail=detail,
            fields=fields,
            owner=self.registry.id,
        )
        if op is not None:
            preview.operation = op
            self._open_lease(op)
        return preview

    def _open_lease(self, op: Operation) -> None:
        """A wake with a lease that is up opens its lease (once, whoever gets here)."""
        if op.action is Action.START and op.lease_seconds and op.state in DONE_STATES:
            self.store.open_lease(op.id)

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
            return ActionResult(ok=False, message=Text("This request no longer exists."))
        if op.requested_by != actor.id:
            return ActionResult(
                ok=False,
                operation=op,
                message=say(
                    "Only {} can {} this {} of {}.",
                    Person(op.requested_by),
                    verb,
                    op.action.verb,
                    op.resource,
                ),
            )
        if op.state != OpState.AWAITING_CONFIRMATION:
            return ActionResult(
                ok=False,
                operation=op,
                message=say(
                    "This {} of {} was already handled (it is {}). Nothing was changed.",
                    op.action.verb,
                    op.resource,
                    op.state.value.replace("_", " "),
                ),
            )
        return op

    def confirm(
        self,
        op_id: str,
        actor: Actor,
        *,
        require_approval: bool = True,
        response_url: str | None = None,
    ) -> ActionResult:
        """The requester confirms, once, before expiry: the operation moves to submitting, or
        to awaiting approval for a protected resource (unless ``require_approval`` is False,
        as for scheduled runs not configured to ask). ``response_url``: where the face may
        show its progress from now on (the confirmed message)."""
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
                    "This confirmation expired. Run {} again.",
                    _ask_again(checked),
                ),
            )
        approval = self.approvals.policy_for(checked.resource) if require_approval else None
        if approval is not None:
            return self.approvals.ask(checked, actor, approval)
        op = self.store.transition(
            op_id,
            OpState.SUBMITTING,
            allowed_from=[OpState.AWAITING_CONFIRMATION],
            actor=actor.id,
            detail=Text("confirmed"),
            fields={"owner": self.registry.id}
            | ({"response_url": response_url} if response_url else {}),
            owe=self._progress(checked),
        )
        if op is None:  # another click won the race
            return ActionResult(
                ok=False, message=say("This {} was already handled.", checked.action.verb)
            )
        self.outbox.kick()
        return ActionResult(
            ok=True, message=self._submitted(op), operation=op, run=True, joined=op.joined
        )

    def _submitted(self, op: Operation) -> Text:
        if op.joined is None:
            return say("{} {}…", "Waking" if op.action is Action.START else "Stopping", op.resource)
        leader = self.store.get_operation(op.joined)
        by = say(" by {}", Person(leader.requested_by)) if leader is not None else None
        return say(
            "{} is already being stopped{}: this request follows that stop instead of "
            "sending another.",
            op.resource,
            by,
        )

    def _progress(self, op: Operation, *, urgent: bool = False) -> Owed | None:
        """The progress message owed for ``op``'s next change, if a face shows it."""
        if not op.notify:
            return None
        return self.outbox.message(PROGRESS, op.id, {"operation": op.id}, urgent=urgent)

    def owe_progress(self, op: Operation) -> None:
        """Owe ``op``'s progress as it stands now (a change made outside this service: an
        approval that released the stop)."""
        owed = self._progress(op, urgent=op.state.final)
        if owed is not None:
            self.store.owe(owed)
        self.outbox.kick()

    async def show_progress_now(self, op_id: str) -> bool:
        """Deliver the progress owed for ``op_id`` now (a face that shows the stop confirmed
        before it is sent); whether it is."""
        return await self.outbox.deliver_now(f"{PROGRESS}:{op_id}")

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
            return ActionResult(
                ok=False, message=say("This {} was already handled.", checked.action.verb)
            )
        return ActionResult(
            ok=True,
            message=say(
                "Cancelled: {} was not {}.",
                op.resource,
                "woken" if op.action is Action.START else "stopped",
            ),
            operation=op,
        )

    # -- run and follow -------------------------------------------------------------

    def start(
        self, op_id: str, listener: ProgressListener, actor: Actor
    ) -> asyncio.Task[Operation]:
        """Run a submitted operation in the background (once per process)."""
        task = self._tasks.get(op_id)
        if task is None or task.done():
            task = asyncio.create_task(self.drive(op_id, listener, actor), name=f"stop-{op_id}")
            self._track(op_id, task)
        return task

    async def drive(
        self,
        op_id: str,
        listener: ProgressListener,
        actor: Actor,
        *,
        prepared: Preview | None = None,
    ) -> Operation:
        """:meth:`run`, carried through a database that stops answering."""
        work = self.run(op_id, listener, actor, prepared=prepared)
        del prepared  # (held by the run only as long as it needs it)
        return await self._through_outages(op_id, work, listener)

    async def _through_outages(
        self, op_id: str, work: Awaitable[Operation], listener: ProgressListener
    ) -> Operation:
        """``work`` on ``op_id``; if the database stops answering meanwhile, the stop goes
        on from what the database says once it answers again (its provider call, if it
        left, judged by reading the provider), instead of being dropped by a live process
        that nobody would take it over from."""
        with self._driven(op_id):
            try:
                return await work
            except StoreUnavailableError as exc:
                log.warning(
                    "the database does not answer (%s): stop %s goes on once it does", exc, op_id
                )
            while True:
                await self.sleep(STORE_RETRY)
                try:
                    op = self.store.get_operation(op_id)
                    if op is None:
                        raise ValueError(f"operation {op_id} is gone from the database")
                    if op.state.final:
                        return op
                    if op.owner != self.registry.id:  # taken over meanwhile: followed there
                        return await self.until_final(op_id, listener)
                    return await self._resume_one(op, listener)
                except StoreUnavailableError:
                    continue

    def _track(self, op_id: str, task: asyncio.Task[Operation]) -> None:
        self._tasks[op_id] = task

        def forget(_: asyncio.Task[Operation]) -> None:
            if self._tasks.get(op_id) is task:
                del self._tasks[op_id]

        task.add_done_callback(forget)

    def _move(
        self,
        op: Operation,
        to: OpState,
        allowed_from: list[OpState],
        detail: Text | None = None,
        *,
        audit_detail: dict[str, Any] | None = None,
        shown: bool = True,
    ) -> Operation | None:
        """A transition of an operation this process drives: fenced by its ownership, the
        progress it makes owed in the same transaction (unless not ``shown`` by itself:
        the provider's state that comes with it is)."""
        owed = self._progress(op, urgent=to.final) if shown else None
        moved = self.store.transition(
            op.id,
            to,
            allowed_from=allowed_from,
            actor=SYSTEM,
            detail=detail,
            audit_detail=audit_detail,
            owner=self.registry.id,
            owe=owed,
        )
        if moved is not None and owed is not None:
            self.outbox.kick()
        return moved

    def _observe(
        self, op: Operation, status: ResourceStatus, *, shown: bool = True
    ) -> Operation | None:
        """Record a new provider state of an operation this process drives; not ``shown``
        by itself when the move it ends with is (a final state)."""
        owed = self._progress(op) if shown else None
        changed = self.store.record_provider_state(
            op.id,
            status.state,
            status.phase.value,
            status.message,
            owner=self.registry.id,
            owe=owed,
        )
        if changed is not None and owed is not None:
            self.outbox.kick()
        return changed

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
        most its ``lock_read_reuse`` old (``LOCK_READ_REUSE``, so no more recent than a
        read made here would be, unless a PriorRead said otherwise).

        The stop is sent only after winning the claim to send it. An operation another
        live process drives, or whose claim another process won, is waited for instead;
        one that joined a stop in flight follows that stop.
        """
        submitting = self._submit(op_id, listener, actor, prepared)
        # A run of 10,000 follows thousands of stops at once, for minutes: each holds only
        # what following needs, not its preview and every version of its operation.
        del prepared
        sent = await submitting
        if isinstance(sent, Operation):
            return sent
        accepted, resource = sent
        following = self.follow(accepted, resource, listener, accepted_at=accepted.updated_at)
        del sent, accepted  # (the follower holds the operation as it changes)
        return await following

    async def _submit(
        self,
        op_id: str,
        listener: ProgressListener,
        actor: Actor,
        prepared: Preview | None,
    ) -> Operation | tuple[Operation, Resource]:
        """:meth:`run` up to the provider's acceptance of the stop: the operation moved to
        accepted and its resource, to follow; or the operation as it ended (or as it is,
        followed elsewhere), when it was not accepted here."""
        op = await self.store.off_loop(partial(self.store.get_operation, op_id))
        if op is not None and (op.state.final or op.state in _FOLLOWED - {OpState.SUBMITTING}):
            # Sent meanwhile (between its confirmation and this start, a sweep here or
            # another process that took this one for dead took it over): waited for.
            return op if op.state.final else await self.until_final(op_id, listener)
        if op is None or op.state != OpState.SUBMITTING:
            raise ValueError(f"operation {op_id} is not waiting to be submitted")
        if op.owner != self.registry.id:
            if not (
                self.registry.orphaned(op.owner)
                and self.registry.take("operations", op.id, op.owner)
            ):
                return await self.until_final(op_id, listener)
            op = self.store.get_operation(op_id) or op
        resource = await self._configured(op, listener)
        if isinstance(resource, Operation):
            return resource
        if op.joined is not None:
            return await self._follow_joined(op, resource, listener)
        if op.send_claimed_at is not None:  # its sender died: did the call leave?
            op = await self._judge_submitting(op, resource, listener)
            if op.state.final or op.owner != self.registry.id:
                return op
            if op.state != OpState.SUBMITTING:
                return await self.follow(op, resource, listener)
        provider = self.providers[resource.provider]
        provider_lock: ProviderLock | None = None
        if (
            prepared is not None
            and prepared.operation.id == op_id
            and prepared.lock_read_at is not None
            and self.clock() - prepared.lock_read_at <= prepared.lock_read_reuse
        ):
            provider_lock = prepared.provider_lock
        else:
            try:
                provider_lock = await provider.lock(resource)
            except ProviderError as exc:
                log.warning(
                    "lock read failed before stop", extra={"operation": op_id, "error": str(exc)}
                )
        bot_lock = await self.store.off_loop(partial(self.store.get_lock, resource.name))
        verdict = self._lock_verdict(actor, resource, provider_lock, bot_lock)
        # An admin's override was decided and audited at request time; anyone else is
        # checked again, since a lock may have been taken since the preview.
        if verdict.blocked and not (op.override_lock and self.policy.is_admin(op.requested_by)):
            return await self._end(op, OpState.REFUSED, listener, None, verdict.reason)
        while True:
            began = self.clock()  # before the claim: the claim's own time is later
            # Committed before the store answers (with the others of its group, if any),
            # so before the call it claims leaves.
            claimed = await self.store.off_loop(
                partial(self.store.claim_send, op.id, self.registry.id)
            )
            if claimed is None:  # lost to another process: it sends, and is followed there
                return await self.until_final(op_id, listener)
            op = claimed
            # The call leaves within the retry budget of the claim, or not at all: past
            # that, a process taking this one for dead may judge the stop lost and send it.
            send_by = began + dt.timedelta(seconds=self.config.http.retry_budget)

            def in_time(by: dt.datetime = send_by) -> bool:
                return self.clock() < by

            try:
                with sending_until(in_time):
                    if op.action is Action.START:
                        accepted = await provider.start(resource)
                    else:
                        accepted = await provider.stop(resource, force=op.force)
            except NotSentError as exc:
                # Held up past its time (waiting for its place, or the process paused):
                # nothing left. Claimed again, unless another process took it meanwhile.
                again = self.store.release_claim(op.id, self.registry.id, op.sends)
                if again is None:
                    return await self.until_final(op_id, listener)
                log.warning(
                    "a stop held back past its time to be sent: claimed again",
                    extra={"operation": op.id, "error": str(exc)},
                )
                op = again
                continue
            except (AlreadyRunningError, AlreadyStoppedError) as exc:
                running = isinstance(exc, AlreadyRunningError)
                return await self._end(
                    op,
                    OpState.RUNNING_ALREADY if running else OpState.STOPPED_ALREADY,
                    listener,
                    None,
                    say(
                        "{} was already {} ({}).",
                        resource.name,
                        Text("running" if running else "stopped"),
                        exc.message,
                    ),
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
            except AnswerLostError as exc:
                # The call left and its answer was lost: the provider's state says whether it
                # took it. Never sent again: the provider may yet act on the first.
                op = await self._judge_submitting(op, resource, listener, lost=exc)
                if op.state.final or op.owner != self.registry.id:
                    return op
                return await self.follow(op, resource, listener)
            except ProviderError as exc:
                return await self._end(op, OpState.FAILED, listener, None, Text(str(exc)))
            break

        def accept(op: Operation = op) -> Operation | None:
            with self.store.batch():  # the move and the state that came with it: one commit
                moved = self._move(
                    op, OpState.ACCEPTED, [OpState.SUBMITTING], Text(accepted.message)
                )
                if moved is not None and accepted.status is not None:
                    moved = self._observe(moved, accepted.status) or moved
                return moved

        moved = await self.store.off_loop(accept)
        if moved is None:
            current = self.store.get_operation(op.id) or op
            if not current.state.final:
                return current  # another process took it over (it took this one for dead)
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
        await self._notify(listener, moved, accepted.status)
        return moved, resource

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

    async def _follow_joined(
        self, op: Operation, resource: Resource, listener: ProgressListener
    ) -> Operation:
        """A stop that joined another one of the same resource: no call of its own, it
        follows the resource until it stops, or ends as that stop ended. One that found the
        opposite under way (a wake while it is being stopped, or the reverse) does nothing:
        it ends failed, saying so, to be asked again once that is over."""
        leader = (
            await self.store.off_loop(partial(self.store.get_operation, op.joined))
            if op.joined
            else None
        )
        if leader is not None and leader.action is not op.action:
            doing = "stopped" if leader.action is Action.STOP else "woken"
            return await self._end(
                op,
                OpState.FAILED,
                listener,
                None,
                say(
                    "{} is being {} right now (by {}): nothing was sent. Run {} again once "
                    "that is over.",
                    op.resource,
                    doing,
                    Person(leader.requested_by),
                    _ask_again(op),
                ),
            )
        moved = await self.store.off_loop(
            partial(
                self._move,
                op,
                OpState.IN_PROGRESS,
                [OpState.SUBMITTING],
                Text("following the stop already in flight"),
            )
        )
        if moved is None:
            return await self.store.off_loop(partial(self.store.get_operation, op.id)) or op
        await self._notify(listener, moved, None)
        return await self.follow(moved, resource, listener, accepted_at=moved.updated_at)

    def _leader_ended(self, op: Operation) -> Text | None:
        """For a stop that joined another: why that one ended without stopping, if it did."""
        if op.joined is None:
            return None
        leader = self.store.get_operation(op.joined)
        if leader is None or not leader.state.final or leader.state in _STOPPED_STATES:
            return None
        said = say(": {}", leader.detail) if leader.detail else None
        return say("the stop it followed ended {}{}", leader.state.value.replace("_", " "), said)

    async def follow(
        self,
        op: Operation,
        resource: Resource,
        listener: ProgressListener,
        *,
        accepted_at: dt.datetime | None = None,
    ) -> Operation:
        """Follow the provider's state until the stop ends, fails or times out.

        The stop waits in its account's follower (:meth:`StatusBatcher.change`) until a
        polling round finds its provider state changed, or until it is time to look up:
        whether it timed out, and every ``OWNER_CHECK_EVERY`` poll intervals (the interval
        growing from ``poll_initial`` to ``poll_max``) whether it is still this process's
        (another may have taken it for dead) and still going. A stop that joined another
        looks up every round, for that stop's end. Ends quietly when another process took
        the operation over. ``accepted_at``: when the provider accepted it, if known.
        """
        # Its store calls make room for those of stops being sent (bot/store/background.py),
        # wherever the following started: a run, a restart. The loop's coroutine is made
        # first, so that this frame does not hold ``op`` for the stop's whole life.
        following = self._follow(op, resource, listener, accepted_at)
        del op
        with store_following():
            return await following

    async def _follow(
        self,
        op: Operation,
        resource: Resource,
        listener: ProgressListener,
        accepted_at: dt.datetime | None,
    ) -> Operation:
        """:meth:`follow`'s loop."""
        deadline = (accepted_at or self._accepted_at(op)) + self.settings.timeout
        interval = self.settings.poll_initial.total_seconds()
        last: ResourceStatus | None = None
        batcher = self._batchers[resource.provider]
        check_at = self.clock() + dt.timedelta(seconds=interval * OWNER_CHECK_EVERY)
        while True:
            now = self.clock()
            if now >= deadline:
                state = f" (last state: {last.state})" if last else ""
                return await self._end(
                    op,
                    OpState.TIMED_OUT,
                    listener,
                    last,
                    say(
                        "{} did not reach a {} state within {}{}.",
                        resource.name,
                        "running" if op.action is Action.START else "stopped",
                        self.settings.timeout,
                        state,
                    ),
                )
            # First look: moved to in progress. Then at the next change, or to look up.
            look_up = (
                now
                if op.state == OpState.ACCEPTED or op.joined is not None
                else min(deadline, check_at)
            )
            try:
                status = await batcher.change(resource, op.provider_state, look_up.timestamp())
            except (NotFoundError, AuthError) as exc:
                return await self._end(op, OpState.FAILED, listener, last, Text(str(exc)))
            except ProviderError as exc:
                log.warning(
                    "status read failed, will retry", extra={"operation": op.id, "error": str(exc)}
                )
            else:
                last = status
                changed: Operation | None = None
                if op.state == OpState.ACCEPTED or status.state != op.provider_state:
                    # The last state is shown with the end that follows it, not on its own.
                    up = self.providers[resource.provider].is_up(status)
                    final = status.phase == Phase.FAILED or (
                        up if op.action is Action.START else status.phase == Phase.STOPPED
                    )
                    op, changed = await self.store.off_loop(
                        partial(self._look, op, status, shown=not final)
                    )
                if op.action is Action.START and self.providers[resource.provider].is_up(status):
                    return await self._end(op, OpState.STARTED, listener, status, None)
                if op.action is Action.STOP and status.phase == Phase.STOPPED:
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
            ended = (
                await self.store.off_loop(partial(self._leader_ended, op)) if op.joined else None
            )
            if ended is not None:
                return await self._end(op, OpState.FAILED, listener, last, ended)
            if self.clock() >= check_at:  # (a write fenced out says so too)
                current = await self.store.off_loop(partial(self.store.get_operation, op.id))
                if current is None or current.owner != self.registry.id or current.state.final:
                    return current or op  # taken over by another process, or ended there
                interval = min(interval * 1.5, self.settings.poll_max.total_seconds())
                check_at = self.clock() + dt.timedelta(seconds=interval * OWNER_CHECK_EVERY)

    def _look(
        self, op: Operation, status: ResourceStatus, *, shown: bool = True
    ) -> tuple[Operation, Operation | None]:
        """A followed stop's first look (moved to in progress) and a new provider state, in
        one transaction: the operation as it is now, and whether its state changed."""
        changed: Operation | None = None
        with self.store.batch():
            if op.state == OpState.ACCEPTED:
                op = self._move(op, OpState.IN_PROGRESS, [OpState.ACCEPTED], shown=False) or op
            # Only a change is written (a run of 10,000 stops reads them all).
            if status.state != op.provider_state:
                changed = self._observe(op, status, shown=shown)
        return changed or op, changed

    def _accepted_at(self, op: Operation) -> dt.datetime:
        for t in self.store.transitions(op.id):
            if t.state in {OpState.ACCEPTED.value, OpState.IN_PROGRESS.value}:
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

        def end() -> Operation:
            final = self._move(op, state, [*_FOLLOWED], detail)
            final = final or self.store.get_operation(op.id) or op
            self._open_lease(final)
            return final

        final = await self.store.off_loop(end)
        await self._notify(listener, final, status)
        return final

    async def _notify(
        self, listener: ProgressListener, op: Operation, status: ResourceStatus | None
    ) -> None:
        try:
            timeline = (
                self.store.transitions(op.id) if getattr(listener, "shows_timeline", True) else []
            )
            await listener.progress(op, timeline, status)
        except Exception:  # a face that cannot show progress must not stop the stop
            log.exception("progress listener failed", extra={"operation": op.id})

    # -- restart and takeover -----------------------------------------------------

    async def resume(
        self, listener_for: Callable[[Operation], ProgressListener]
    ) -> list[asyncio.Task[Operation]]:
        """Take over the operations that processes now dead were driving, and carry each
        on: one being prepared is ended (nobody is there to confirm it) and its requester
        told; a submitted one is sent if its claim was never taken, judged by reading the
        provider if it was; one under way is followed to its end."""
        tasks = []
        me, registry = self.registry.id, self.registry
        # Ids only, read off the loop: during a run, thousands of this process's stops are
        # in flight (read whole on the loop every sweep, 10,000 held it 0.2 s on SQLite,
        # 1.8 s on PostgreSQL: every request it answers, every stop it sends, waited).
        orphans, own = await self.store.off_loop(
            lambda: (
                self.store.orphaned_operations(_DRIVEN, registry.live()),
                self.store.in_flight_ids(me),
            )
        )
        # This process's own are driven where they started (a click, a run), unless that
        # driver ended without ending them (the database stopped answering between a
        # confirmation and its start): those are carried on here too. Driven is read
        # after the read above, with no await from here to the tasks made.
        stranded = [(op_id, me) for op_id in own if op_id not in self._driving]
        for op_id, owner in [*((op.id, op.owner) for op in orphans), *stranded]:
            if owner != me and not self.registry.take("operations", op_id, owner):
                continue
            op = self.store.get_operation(op_id)
            if op is None or op.state not in _DRIVEN:  # ended since the read
                continue
            if op.state == OpState.REQUESTED:
                self.end_unprepared(op)
                continue
            listener = listener_for(op)
            task = asyncio.create_task(
                self._through_outages(op.id, self._resume_one(op, listener), listener),
                name=f"resume-{op.id}",
            )
            self._track(op.id, task)
            tasks.append(task)
        return tasks

    def end_unprepared(self, op: Operation) -> Operation | None:
        """End an operation whose preparation died with its process (taken over from it
        first): nothing was sent. None when it is still another live process's, or was
        decided meanwhile."""
        if op.owner != self.registry.id and not (
            self.registry.orphaned(op.owner) and self.registry.take("operations", op.id, op.owner)
        ):
            return None
        ended = self.store.transition(
            op.id,
            OpState.FAILED,
            allowed_from=[OpState.REQUESTED],
            actor=SYSTEM,
            detail=INTERRUPTED_PREPARING,
            owner=self.registry.id,
            owe=self._progress(op, urgent=True),
        )
        if ended is not None:
            self.outbox.kick()
        return ended

    async def _resume_one(self, op: Operation, listener: ProgressListener) -> Operation:
        if op.state == OpState.SUBMITTING:
            return await self.run(op.id, listener, self.config.actor(op.requested_by))
        resource = await self._configured(op, listener)
        if isinstance(resource, Operation):
            return resource
        return await self.follow(op, resource, listener)

    async def _judge_submitting(
        self,
        op: Operation,
        resource: Resource,
        listener: ProgressListener,
        *,
        lost: AnswerLostError | None = None,
    ) -> Operation:
        """An operation whose claim to send was taken by a process that died, or whose
        call's answer was ``lost``: whether its stop went out is unknown. Following is
        safe; sending it again could stop twice.

        The provider's status decides: a stop under way (or done) means it went out, and
        it is followed. A resource still running may yet get it (a request on the wire
        when its sender died), so that is the verdict only once the stop call, every
        retry included, would be over; meanwhile the status is read again every poll
        interval (after a lost answer, the call is over: for ``SUBMIT_MARGIN`` seconds).
        Still running then, the stop did not take. After a dead sender (which
        most often died before the call left) its claim is given back, once
        (``MAX_SENDS``), and the operation returned submitting, to be claimed and sent
        again; after a lost answer it fails, saying the provider did not take it.
        """
        deadline = (
            (op.send_claimed_at or op.updated_at) + self._submit_window()
            if lost is None
            # The call is over: the provider shows a stop it took within the margin.
            else self.clock() + dt.timedelta(seconds=SUBMIT_MARGIN)
        )
        while True:
            try:
                status: ResourceStatus | None = await self.providers[resource.provider].status(
                    resource
                )
            except ProviderError as exc:
                status, unknown = None, exc
            current = self.store.get_operation(op.id) or op
            if current.state != OpState.SUBMITTING or current.owner != self.registry.id:
                return current  # moved on, or taken over, elsewhere
            if status is not None and _left(op, status):
                moved = self._move(
                    op,
                    OpState.ACCEPTED,
                    [OpState.SUBMITTING],
                    Text("resumed after a restart")
                    if lost is None
                    else say("{}; the provider took it all the same", lost),
                )
                return moved or self.store.get_operation(op.id) or op
            if self.clock() >= deadline:
                break
            await self.sleep(self.settings.poll_initial.total_seconds())
        if lost is None and status is not None and op.sends < MAX_SENDS:
            again = self.store.release_claim(op.id, self.registry.id, op.sends)
            if again is not None:
                log.warning(
                    "a stop its dead sender had claimed did not take: sent again",
                    extra={"operation": op.id, "state": status.state},
                )
                return again
        why = (
            say("interrupted by a restart while the {} was being sent", op.action.verb)
            if lost is None
            else Text(str(lost))
        )
        if status is None:
            return await self._end(
                op,
                OpState.FAILED,
                listener,
                None,
                say(
                    "{}, and the status is unknown: {}. The {} may or may not have been "
                    "taken: check with {} before trying again.",
                    why,
                    unknown,
                    op.action.verb,
                    Command("status", resource.name),
                ),
            )
        return await self._end(
            op,
            OpState.FAILED,
            listener,
            status,
            say(
                "{}; the provider did not take it: {} is {}. Run {} again.",
                why,
                resource.name,
                status.state,
                _ask_again(op),
            ),
        )

    def _submit_window(self) -> dt.timedelta:
        """The longest a provider's stop call may take, every retry included."""
        http = self.config.http
        return dt.timedelta(seconds=http.retry_budget + http.timeout + SUBMIT_MARGIN)

    async def until_final(self, op_id: str, listener: ProgressListener | None = None) -> Operation:
        """Wait for an operation driven elsewhere to end. One whose process died is
        taken over, shown to ``listener``: waiting for nobody would never end."""
        while True:
            task = self._tasks.get(op_id)
            if task is asyncio.current_task():
                # Called from the very task this process tracks for it (a start() whose
                # stop is driven elsewhere): waiting for itself would never end.
                task = None
            if task is None:
                op = self.store.get_operation(op_id)
                if (
                    op is not None
                    and op.state in _FOLLOWED
                    and self.registry.orphaned(op.owner)
                    and self.registry.take("operations", op.id, op.owner)
                ):
                    task = asyncio.create_task(
                        self._resume_one(op, listener or Unshown()), name=f"adopt-{op_id}"
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

    async def until_decided(self, op_id: str) -> Operation:
        """Wait for a preparation another live process is making; one whose process dies
        meanwhile is ended (see :meth:`end_unprepared`)."""
        while True:
            op = self.store.get_operation(op_id)
            if op is None:
                raise KeyError(op_id)
            if op.state != OpState.REQUESTED:
                return op
            if self.registry.orphaned(op.owner):
                return self.end_unprepared(op) or self.store.get_operation(op_id) or op
            await self.sleep(self.settings.poll_initial.total_seconds())

    def in_flight(self) -> list[str]:
        """Ids of the operations this process is following now."""
        return list(self._tasks)

    def following(self) -> bool:
        """Whether this process prepares, sends or follows any operation now."""
        return bool(self._driving or self._tasks)

    async def aclose(self) -> None:
        """Stop following (the store keeps the operations; the next start resumes them)."""
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.outbox.aclose()


def _ask_again(op: Operation) -> Command:
    """The command that asks ``op`` again: ``stop <resource>``, or ``wake <resource>``."""
    return Command("stop" if op.action is Action.STOP else "wake", op.resource)


def _left(op: Operation, status: ResourceStatus) -> bool:
    """Whether ``status`` shows that ``op``'s call went out: a stop under way or done, a
    start under way (a resource whose phase is running once more)."""
    if op.action is Action.START:
        return status.phase is Phase.RUNNING
    return status.phase not in {Phase.RUNNING, Phase.UNKNOWN}


def _duration(seconds: int) -> str:
    return format_duration(dt.timedelta(seconds=seconds))
