"""The stop workflow, the same for Slack, the scheduler and the CLI.

    prepare:  resolve → may this user stop it? → read status and locks → awaiting confirmation
    confirm:  the requester, once, before expiry → submitting
    run:      locks again → provider stop (202) → follow the status until final → audit

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

from pydantic import BaseModel

from bot.config import StopbotConfig, UnknownResourceError
from bot.locks import LockVerdict, check_locks
from bot.models import Actor, BotLock, Operation, OpState, Transition
from bot.policy import Policy
from bot.store import Store
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

__all__ = ["ActionResult", "Preview", "ProgressListener", "StopService"]

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
Sleep = Callable[[float], Awaitable[None]]
SYSTEM = "stopbot"


class Preview(BaseModel):
    """What a user is shown before confirming: the resource as it is now."""

    operation: Operation
    resource: Resource
    status: ResourceStatus | None = None
    status_error: str | None = None
    provider_lock: ProviderLock | None = None
    bot_lock: BotLock | None = None
    notes: list[str] = []
    supports_force: bool = False


class ActionResult(BaseModel):
    """The answer to a button press or command: did it act, and what to tell the user."""

    ok: bool
    message: str
    operation: Operation | None = None


class ProgressListener(Protocol):
    """A face that shows a stop's progress (a Slack message, a terminal)."""

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None: ...


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

    # -- prepare --------------------------------------------------------------------

    async def prepare(
        self,
        ref: str,
        actor: Actor,
        *,
        source: str,
        reason: str | None = None,
        force: bool = False,
        channel: str | None = None,
        response_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Preview:
        """Record a stop request and decide whether it may go to confirmation.

        The returned operation is awaiting confirmation, refused (``detail`` says why)
        or stopped already. Raises UnknownResourceError for a name not configured.
        """
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
            channel=channel,
            response_url=response_url,
            idempotency_key=idempotency_key,
        )
        preview = Preview(operation=op, resource=resource, supports_force=provider.supports_force)
        if not created:
            return preview  # a retry of a request already handled: show it again, do nothing

        decision = await self.policy.may_stop(actor.id, resource.name)
        if not decision.allowed:
            return self._decide(preview, OpState.REFUSED, actor, decision.reason)
        if force and not provider.supports_force:
            preview.notes.append(f"--force has no meaning for {resource.provider}: ignored")

        status_result, lock_result = await asyncio.gather(
            provider.status(resource), provider.lock(resource), return_exceptions=True
        )
        if isinstance(status_result, NotFoundError):
            return self._decide(
                preview,
                OpState.REFUSED,
                actor,
                f"{resource.provider} does not know {resource.name} (id {resource.id}): "
                f"{status_result.message}. Check the id in the configuration.",
            )
        if isinstance(status_result, ResourceStatus):
            preview.status = status_result
        elif isinstance(status_result, BaseException):
            preview.status_error = str(status_result)
        if isinstance(lock_result, ProviderLock):
            preview.provider_lock = lock_result
        elif isinstance(lock_result, BaseException) and preview.status_error is None:
            preview.status_error = f"could not read the provider lock: {lock_result}"
        preview.bot_lock = self.store.get_lock(resource.name)

        verdict = self._lock_verdict(actor, resource, preview.provider_lock, preview.bot_lock)
        preview.notes.extend(verdict.notes)
        if verdict.blocked:
            return self._decide(preview, OpState.REFUSED, actor, verdict.reason)
        if preview.status is not None and preview.status.phase == Phase.STOPPED:
            return self._decide(
                preview,
                OpState.STOPPED_ALREADY,
                actor,
                f"{resource.name} is already stopped ({preview.status.state}): nothing to do.",
            )
        return self._decide(
            preview,
            OpState.AWAITING_CONFIRMATION,
            actor,
            None,
            expires_at=self.clock() + self.settings.confirm_ttl,
        )

    def _decide(
        self,
        preview: Preview,
        state: OpState,
        actor: Actor,
        detail: str | None,
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
            return ActionResult(ok=False, message="This stop request no longer exists.")
        if op.requested_by != actor.id:
            return ActionResult(
                ok=False,
                operation=op,
                message=f"Only <@{op.requested_by}> can {verb} this stop of {op.resource}.",
            )
        if op.state != OpState.AWAITING_CONFIRMATION:
            return ActionResult(
                ok=False,
                operation=op,
                message=f"This stop of {op.resource} was already handled "
                f"(it is {op.state.value.replace('_', ' ')}). Nothing was changed.",
            )
        return op

    def confirm(self, op_id: str, actor: Actor) -> ActionResult:
        """The requester confirms, once, before expiry: the operation moves to submitting."""
        checked = self._check_pending(op_id, actor, "confirm")
        if isinstance(checked, ActionResult):
            return checked
        if checked.expires_at is not None and self.clock() >= checked.expires_at:
            expired = self.store.transition(
                op_id,
                OpState.CANCELLED,
                allowed_from=[OpState.AWAITING_CONFIRMATION],
                actor=SYSTEM,
                detail="the confirmation expired",
            )
            return ActionResult(
                ok=False,
                operation=expired or checked,
                message=f"This confirmation expired. Run `/stop {checked.resource}` again.",
            )
        op = self.store.transition(
            op_id,
            OpState.SUBMITTING,
            allowed_from=[OpState.AWAITING_CONFIRMATION],
            actor=actor.id,
            detail="confirmed",
        )
        if op is None:  # another click won the race
            return ActionResult(ok=False, message="This stop was already handled.")
        return ActionResult(ok=True, message=f"Stopping {op.resource}…", operation=op)

    def cancel(self, op_id: str, actor: Actor) -> ActionResult:
        checked = self._check_pending(op_id, actor, "cancel")
        if isinstance(checked, ActionResult):
            return checked
        op = self.store.transition(
            op_id,
            OpState.CANCELLED,
            allowed_from=[OpState.AWAITING_CONFIRMATION],
            actor=actor.id,
            detail=f"cancelled by <@{actor.id}>",
        )
        if op is None:
            return ActionResult(ok=False, message="This stop was already handled.")
        return ActionResult(
            ok=True, message=f"Cancelled: {op.resource} was not stopped.", operation=op
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

    async def run(self, op_id: str, listener: ProgressListener, actor: Actor) -> Operation:
        """Submit a confirmed stop and follow it to its end; returns the final operation."""
        op = self.store.get_operation(op_id)
        if op is None or op.state != OpState.SUBMITTING:
            raise ValueError(f"operation {op_id} is not waiting to be submitted")
        try:
            resource = self.config.resource(op.resource)
        except UnknownResourceError:
            return await self._end(
                op,
                OpState.FAILED,
                listener,
                None,
                f"{op.resource} is no longer in the configuration.",
            )
        provider = self.providers[resource.provider]
        provider_lock: ProviderLock | None = None
        try:
            provider_lock = await provider.lock(resource)
        except ProviderError as exc:
            log.warning(
                "lock read failed before stop", extra={"operation": op_id, "error": str(exc)}
            )
        verdict = self._lock_verdict(
            actor, resource, provider_lock, self.store.get_lock(resource.name)
        )
        if verdict.blocked:
            return await self._end(op, OpState.REFUSED, listener, None, verdict.reason)
        try:
            accepted = await provider.stop(resource, force=op.force)
        except AlreadyStoppedError as exc:
            return await self._end(
                op,
                OpState.STOPPED_ALREADY,
                listener,
                None,
                f"{resource.name} was already stopped ({exc.message}).",
            )
        except LockedError as exc:
            return await self._end(op, OpState.REFUSED, listener, None, str(exc))
        except UnsupportedError as exc:
            hint = (
                " Use `--force` to stop it without a checkpoint."
                if provider.supports_force and not op.force
                else ""
            )
            return await self._end(op, OpState.FAILED, listener, None, f"{exc}.{hint}")
        except ProviderTimeoutError as exc:
            return await self._end(
                op,
                OpState.FAILED,
                listener,
                None,
                f"{exc}. The stop may or may not have been taken: "
                f"check with `/stop status {resource.name}` before trying again.",
            )
        except ProviderError as exc:
            return await self._end(op, OpState.FAILED, listener, None, str(exc))
        moved = self.store.transition(
            op.id,
            OpState.ACCEPTED,
            allowed_from=[OpState.SUBMITTING],
            actor=SYSTEM,
            detail=accepted.message,
        )
        if moved is None:
            raise RuntimeError(f"operation {op.id} changed state while being submitted")
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

    async def follow(
        self, op: Operation, resource: Resource, listener: ProgressListener
    ) -> Operation:
        """Poll the provider with back-off until the stop ends, fails or times out."""
        provider = self.providers[resource.provider]
        deadline = self._accepted_at(op) + self.settings.timeout
        interval = self.settings.poll_initial.total_seconds()
        last: ResourceStatus | None = None
        while True:
            if self.clock() >= deadline:
                state = f" (last state: {last.state})" if last else ""
                return await self._end(
                    op,
                    OpState.TIMED_OUT,
                    listener,
                    last,
                    f"{resource.name} did not reach a stopped state within "
                    f"{self.settings.timeout}{state}.",
                )
            try:
                status = await provider.status(resource)
            except (NotFoundError, AuthError) as exc:
                return await self._end(op, OpState.FAILED, listener, last, str(exc))
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
                    message = status.message or f"the provider reports {status.state}"
                    return await self._end(op, OpState.FAILED, listener, status, message)
                if changed is not None:
                    await self._notify(listener, op, status)
            await self.sleep(interval)
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
        detail: str | None,
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
        try:
            resource = self.config.resource(op.resource)
        except UnknownResourceError:
            return await self._end(
                op,
                OpState.FAILED,
                listener,
                None,
                f"{op.resource} is no longer in the configuration.",
            )
        if op.state == OpState.SUBMITTING:
            # The process died around the provider call: whether the stop went out is
            # unknown. Following is safe; sending it again could stop twice.
            try:
                status = await self.providers[resource.provider].status(resource)
            except ProviderError as exc:
                return await self._end(
                    op,
                    OpState.FAILED,
                    listener,
                    None,
                    f"interrupted by a restart, and the status is unknown: {exc}",
                )
            if status.phase in {Phase.RUNNING, Phase.UNKNOWN}:
                return await self._end(
                    op,
                    OpState.FAILED,
                    listener,
                    status,
                    "interrupted by a restart before the provider confirmed the stop; "
                    f"{resource.name} is {status.state}. Run `/stop {resource.name}` again.",
                )
            op = (
                self.store.transition(
                    op.id,
                    OpState.ACCEPTED,
                    allowed_from=[OpState.SUBMITTING],
                    actor=SYSTEM,
                    detail="resumed after a restart",
                )
                or op
            )
        return await self.follow(op, resource, listener)

    def in_flight(self) -> list[str]:
        """Ids of the operations this process is following now."""
        return list(self._tasks)

    async def aclose(self) -> None:
        """Stop following (the store keeps the operations; the next start resumes them)."""
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
