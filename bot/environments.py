"""Environments, in order: ``environments: {staging: [{feldera: [...]}, {nova: [...]}]}``
stopped tier after tier (pipelines, then applications, then servers, then the cluster), and
woken in reverse.

    preview:  every member's status and locks read at once → one run recorded, awaiting
              its requester's confirmation; a member someone else holds (a Stopbot lock or
              the provider's) refuses the whole environment, naming the owner, unless the
              requester chooses to stop the rest (those members are left alone)
    confirm:  the requester, once (a compare-and-set) → running, owned by this process
    run:      tier by tier: each member's stop is an operation of the stop workflow
              (bot/workflow.py: its policy, locks, claim to send, following), recorded under
              the key ``environment:<run>:<member>``; the next tier is begun only once
              every member of this one is stopped; one that is not halts the run

Only the run's owner moves it on, each tier a compare-and-set on (tier, owner). A process
that dies leaves the run where it stood: another takes it over (:meth:`Environments.resume`,
one of the registry's sweeps) and goes on from the tier it was on, finding each member's
stop again by its key, so a stop that went out is followed, never sent again.

Nothing here knows about a face: the run's progress (one message for the environment) is
owed through the outbox to the face's :class:`EnvironmentNotifier`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable
from typing import Protocol

from bot import reads
from bot.config import StopbotConfig, UnknownEnvironmentError
from bot.locks import LockVerdict, check_locks
from bot.models import (
    DONE_STATES,
    Action,
    Actor,
    EnvironmentRun,
    EnvRunState,
    Operation,
    OpState,
    Owed,
    Transition,
)
from bot.policy import StopRequest
from bot.text import Command, Person, Text, say
from bot.workflow import Confirmation, ProgressListener, StopService
from providers.base import Resource, ResourceStatus

__all__ = [
    "ENVIRONMENT",
    "EnvironmentNotifier",
    "EnvironmentRefused",
    "Environments",
    "Member",
    "Plan",
    "Tier",
]

log = logging.getLogger(__name__)

ENVIRONMENT = "environment"
"""The outbox kind of an environment run's progress, and its members' operations' source."""
_APPROVAL_POLL = 5.0  # seconds between looks at a member's stop waiting for approval


class EnvironmentRefused(Exception):
    """A request about an environment run that cannot go on: the text says why."""

    def __init__(self, text: Text) -> None:
        super().__init__(str(text))
        self.text = text


@dataclasses.dataclass(frozen=True)
class Member:
    """One resource of a tier, as the preview read it or as its stop stands."""

    resource: Resource
    status: ResourceStatus | None = None
    status_error: str | None = None
    verdict: LockVerdict = dataclasses.field(default_factory=LockVerdict)
    lock_error: str | None = None
    operation: Operation | None = None
    skipped: bool = False

    @property
    def name(self) -> str:
        return self.resource.name


@dataclasses.dataclass(frozen=True)
class Tier:
    label: str
    members: list[Member]


@dataclasses.dataclass(frozen=True)
class Plan:
    """A run and its tiers in run order (reversed for a wake); ``refusal``: why it may not
    go at all (a member the requester may not stop)."""

    run: EnvironmentRun
    tiers: list[Tier]
    refusal: Text | None = None

    @property
    def blocked(self) -> list[Member]:
        """Members someone else holds: the whole environment is refused for them, unless the
        requester stops the rest."""
        return [m for t in self.tiers for m in t.members if m.verdict.blocked]

    @property
    def current(self) -> int:
        return self.run.tier


class EnvironmentNotifier(Protocol):
    """A face that shows an environment run's progress (one message, kept current);
    False: it could not be shown now, try again later."""

    async def show_environment(self, plan: Plan) -> bool: ...


class _MemberProgress:
    """Owes the run's progress when one of its members' stops moves."""

    shows_timeline = False

    def __init__(
        self, environments: Environments, run_id: str, watch: ProgressListener | None
    ) -> None:
        self.environments, self.run_id, self.watch = environments, run_id, watch
        self._shown: tuple[OpState, str | None] | None = None

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None:
        if (op.state, op.provider_state) != self._shown:
            self._shown = (op.state, op.provider_state)
            self.environments.owe(self.run_id)
        if self.watch is not None:
            await self.watch.progress(op, timeline, status)


TierStarted = Callable[[EnvironmentRun, Tier], None]


class Environments:
    """Environments stopped and woken tier after tier through the stop workflow."""

    def __init__(self, config: StopbotConfig, service: StopService) -> None:
        self.config = config
        self.service = service
        self.store = service.store
        self.registry = service.registry
        self.outbox = service.outbox
        self._runs: dict[str, asyncio.Task[EnvironmentRun]] = {}
        self._actors: dict[str, Actor] = {}

    def notify_with(self, notifier: EnvironmentNotifier) -> None:
        """Show the progress owed to a face through ``notifier``."""

        async def deliver(owed: Owed) -> bool:
            run = self.store.get_environment_run(str(owed.payload.get("run")))
            if run is None or run.environment not in self.config.environments:
                return True  # (gone from the configuration: its run says so when it ends)
            return await notifier.show_environment(self.plan_of(run))

        self.outbox.handle(
            ENVIRONMENT, deliver, interval=self.service.settings.progress_interval.total_seconds()
        )

    def owe(self, run_id: str, *, urgent: bool = False) -> None:
        """Owe the run's progress as it stands (shown at most every progress interval)."""
        self.store.owe(self.outbox.message(ENVIRONMENT, run_id, {"run": run_id}, urgent=urgent))
        self.outbox.kick()

    # -- the plan -------------------------------------------------------------------

    def tiers_of(self, name: str, action: Action) -> list[tuple[str, list[Resource]]]:
        """The environment's tiers in run order: as configured to stop, reversed to wake.
        Raises UnknownEnvironmentError."""
        tiers = [
            (label, [self.config.resource(m) for m in members])
            for label, members in self.config.environment(name)
        ]
        return tiers if action is Action.STOP else tiers[::-1]

    async def preview(
        self,
        name: str,
        actor: Actor,
        *,
        action: Action = Action.STOP,
        reason: str | None = None,
        channel: str | None = None,
    ) -> Plan:
        """Read every member's status and locks, and record the run, awaiting the
        requester's confirmation. Raises UnknownEnvironmentError."""
        name = name.strip()
        tiers = self.tiers_of(name, action)
        resources = [r for _, members in tiers for r in members]
        readings = await reads.read(self.service.providers, resources)
        now = self.service.clock()
        is_admin = self.service.policy.is_admin(actor.id)
        refusals: list[Text] = []
        shown: list[Tier] = []
        for label, members in tiers:
            found: list[Member] = []
            for resource in members:
                reading = readings[resource.name]
                decision = await self.service.policy.judge(
                    StopRequest(actor.id, resource, ENVIRONMENT, reason=reason, at=now)
                )
                if not decision.allowed:
                    refusals.append(
                        decision.reason or say("{} is not yours to stop", resource.name)
                    )
                verdict = check_locks(
                    actor,
                    resource.name,
                    resource.provider,
                    reading.lock,
                    self.store.get_lock(resource.name),
                    is_admin=is_admin,
                    now=now,
                )
                found.append(
                    Member(
                        resource,
                        status=reading.status,
                        status_error=reading.status_error,
                        verdict=verdict,
                        lock_error=reading.lock_error,
                    )
                )
            shown.append(Tier(label, found))
        run = EnvironmentRun(
            id=uuid.uuid4().hex,
            environment=name,
            action=action,
            requested_by=actor.id,
            reason=reason,
            skipped=[m.name for t in shown for m in t.members if m.verdict.blocked],
            state=EnvRunState.CANCELLED if refusals else EnvRunState.AWAITING_CONFIRMATION,
            detail=refusals[0] if refusals else None,
            channel=channel,
            created_at=now,
            updated_at=now,
        )
        self.store.create_environment_run(run)
        self._actors[run.id] = actor
        return Plan(run, shown, refusal=refusals[0] if refusals else None)

    def plan_of(self, run: EnvironmentRun) -> Plan:
        """The run's tiers with each member's stop as it stands (no provider read)."""
        shown: list[Tier] = []
        for label, members in self.tiers_of(run.environment, run.action):
            shown.append(
                Tier(
                    label,
                    [
                        Member(
                            r,
                            operation=self.store.operation_for_key(_key(run, r.name)),
                            skipped=r.name in run.skipped and run.state != EnvRunState.CANCELLED,
                        )
                        for r in members
                    ],
                )
            )
        return Plan(run, shown)

    # -- confirm, cancel ------------------------------------------------------------

    def confirm(self, run_id: str, actor: Actor, *, skip_locked: bool = False) -> EnvironmentRun:
        """The requester confirms, once: the run is this process's to run. Raises
        EnvironmentRefused when it may not go (someone else's lock and no ``skip_locked``,
        someone else's run, handled already)."""
        run = self._pending(run_id, actor)
        if self.service.clock() >= run.created_at + self.service.settings.confirm_ttl:
            self.store.move_environment_run(
                run_id,
                allowed_from=[EnvRunState.AWAITING_CONFIRMATION],
                actor=actor.id,
                fields={"state": EnvRunState.CANCELLED, "detail": Text("the confirmation expired")},
            )
            raise EnvironmentRefused(say("This confirmation expired. Run {} again.", _again(run)))
        if run.skipped and not skip_locked:
            raise EnvironmentRefused(self.locked_text(run))
        moved = self.store.move_environment_run(
            run_id,
            allowed_from=[EnvRunState.AWAITING_CONFIRMATION],
            actor=actor.id,
            fields={"state": EnvRunState.RUNNING, "owner": self.registry.id},
        )
        if moved is None:
            raise EnvironmentRefused(say("This {} was already handled.", _what(run)))
        self._actors[run_id] = actor
        self.owe(run_id, urgent=True)
        return moved

    def cancel(self, run_id: str, actor: Actor) -> EnvironmentRun:
        run = self._pending(run_id, actor)
        moved = self.store.move_environment_run(
            run_id,
            allowed_from=[EnvRunState.AWAITING_CONFIRMATION],
            actor=actor.id,
            fields={
                "state": EnvRunState.CANCELLED,
                "detail": say("cancelled by {}", Person(actor.id)),
            },
        )
        if moved is None:
            raise EnvironmentRefused(say("This {} was already handled.", _what(run)))
        return moved

    def _pending(self, run_id: str, actor: Actor) -> EnvironmentRun:
        run = self.store.get_environment_run(run_id)
        if run is None:
            raise EnvironmentRefused(Text("This environment request no longer exists."))
        if run.requested_by != actor.id:
            raise EnvironmentRefused(
                say("Only {} can confirm or cancel this {}.", Person(run.requested_by), _what(run))
            )
        if run.state != EnvRunState.AWAITING_CONFIRMATION:
            raise EnvironmentRefused(
                say("This {} was already handled (it is {}).", _what(run), run.state.value)
            )
        return run

    def locked_text(self, run: EnvironmentRun) -> Text:
        """Why the whole environment is refused: the members someone else holds, and by
        whom (read again from the preview's verdicts: the store keeps the names)."""
        return say(
            "{} is not {}: {} {} held by someone else. Ask the owner, or stop the rest.",
            run.environment,
            "stopped" if run.action is Action.STOP else "woken",
            ", ".join(run.skipped),
            "is" if len(run.skipped) == 1 else "are",
        )

    # -- run ------------------------------------------------------------------------

    def start(
        self, run_id: str, *, on_tier: TierStarted | None = None
    ) -> asyncio.Task[EnvironmentRun]:
        """Run a confirmed run in the background (once per process)."""
        task = self._runs.get(run_id)
        if task is None or task.done():
            task = asyncio.create_task(self.run(run_id, on_tier=on_tier), name=f"env-{run_id}")
            self._runs[run_id] = task
            task.add_done_callback(lambda done: self._ended(run_id, done))
        return task

    def _ended(self, run_id: str, task: asyncio.Task[EnvironmentRun]) -> None:
        if self._runs.get(run_id) is task:
            del self._runs[run_id]
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "environment run %s stopped on an error; the next sweep runs it again",
                run_id,
                exc_info=task.exception(),
            )

    async def run(
        self,
        run_id: str,
        *,
        on_tier: TierStarted | None = None,
        watch: ProgressListener | None = None,
    ) -> EnvironmentRun:
        """Tier after tier, from the one the run is on, while this process owns it;
        ``on_tier`` told as each tier begins, ``watch`` of each member's progress (a
        terminal's)."""
        me = self.registry.id
        while True:
            run = self.store.get_environment_run(run_id)
            if run is None:
                raise KeyError(run_id)
            if run.state != EnvRunState.RUNNING or run.owner != me:
                return run
            try:
                tiers = self.tiers_of(run.environment, run.action)
            except UnknownEnvironmentError:
                gone = say("{} is no longer in the configuration", run.environment)
                return self._end(run, EnvRunState.HALTED, gone)
            if run.tier >= len(tiers):
                return self._end(run, EnvRunState.DONE, None)
            label, members = tiers[run.tier]
            wanted = [r for r in members if r.name not in run.skipped]
            if on_tier is not None:
                on_tier(run, Tier(label, [Member(r, skipped=r not in wanted) for r in members]))
            ops = await asyncio.gather(*(self._member(run, r, watch) for r in wanted))
            short = [op for op in ops if op.state not in DONE_STATES]
            if short:
                return self._end(run, EnvRunState.HALTED, self._halt_text(run, short, len(tiers)))
            moved = self.store.move_environment_run(
                run_id,
                allowed_from=[EnvRunState.RUNNING],
                actor=run.requested_by,
                tier=run.tier,
                owner=me,
                fields={"tier": run.tier + 1},
            )
            if moved is None:  # taken over meanwhile: the new owner goes on
                return self.store.get_environment_run(run_id) or run
            self.owe(run_id)

    def _halt_text(self, run: EnvironmentRun, short: list[Operation], tiers: int) -> Text:
        parts = [
            say(
                "{} {}{}",
                op.resource,
                op.state.value.replace("_", " "),
                say(" ({})", op.detail) if op.detail else "",
            )
            for op in short
        ]
        later = tiers - run.tier - 1
        return say(
            "tier {} ({}) did not get there: {}. {}",
            run.tier + 1,
            ", ".join(op.resource for op in short),
            Text("; ").join(parts),
            say(
                "The {} later tier(s) were not {}.",
                later,
                "stopped" if run.action is Action.STOP else "woken",
            )
            if later
            else Text("It was the last tier."),
        )

    def _end(self, run: EnvironmentRun, state: EnvRunState, detail: Text | None) -> EnvironmentRun:
        moved = self.store.move_environment_run(
            run.id,
            allowed_from=[EnvRunState.RUNNING],
            actor=run.requested_by,
            tier=run.tier,
            owner=self.registry.id,
            fields={"state": state, "detail": detail},
        )
        self.owe(run.id, urgent=True)
        return moved or self.store.get_environment_run(run.id) or run

    def _actor(self, run: EnvironmentRun) -> Actor:
        return self._actors.get(run.id) or self.config.actor(run.requested_by)

    async def _member(
        self, run: EnvironmentRun, resource: Resource, watch: ProgressListener | None = None
    ) -> Operation:
        """One member's stop, from wherever it is (new, or found again after a restart)
        to its end, through the stop workflow."""
        actor = self._actor(run)
        listener = _MemberProgress(self, run.id, watch)
        service = self.service
        preview = await service.prepare(
            resource.name,
            actor,
            source=ENVIRONMENT,
            reason=run.reason or f"environment {run.environment}",
            channel=run.channel,
            idempotency_key=_key(run, resource.name),
            action=run.action,
            confirm=Confirmation(actor),
        )
        op = preview.operation
        self.owe(run.id)
        if op.state == OpState.REQUESTED:
            op = await service.until_decided(op.id)
        if op.state == OpState.AWAITING_CONFIRMATION:  # found again: confirmed as asked
            result = service.confirm(op.id, actor)
            op = result.operation or service.store.get_operation(op.id) or op
        while True:
            if op.state == OpState.SUBMITTING and op.id not in service.in_flight():
                op = await service.drive(op.id, listener, actor, prepared=preview)
            elif not op.state.final and op.state != OpState.AWAITING_APPROVAL:
                op = await service.until_final(op.id, listener)
            if op.state != OpState.AWAITING_APPROVAL:
                return op
            await service.sleep(_APPROVAL_POLL)  # approvers are asked by the workflow
            op = service.store.get_operation(op.id) or op

    # -- takeover -------------------------------------------------------------------

    async def resume(self) -> None:
        """Take over the runs whose process died, and go on from the tier they were on;
        run again one of this process's own that nothing runs any more (its task failed:
        a database that stopped answering)."""
        me, registry, store = self.registry.id, self.registry, self.store
        # Read in the store's lane: every replica sweeps every few seconds, and on
        # PostgreSQL each read is a round trip the loop (answering Slack) would wait for.
        live, running = await store.off_loop(
            lambda: (registry.live(), store.environment_runs([EnvRunState.RUNNING]))
        )
        for run in running:
            if run.id in self._runs:
                continue
            if run.owner != me and not self.registry.orphaned(run.owner, live):
                continue
            if self.registry.take("environment_runs", run.id, run.owner):
                log.info("took over environment run %s (%s)", run.id, run.environment)
                self.start(run.id)

    async def wait(self) -> None:
        """Until every run this process started has ended (tests, shutdown)."""
        while self._runs:
            await asyncio.gather(*list(self._runs.values()), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop running (the runs stay running in the store: another process resumes)."""
        for task in list(self._runs.values()):
            task.cancel()
        await asyncio.gather(*self._runs.values(), return_exceptions=True)


def _key(run: EnvironmentRun, member: str) -> str:
    return f"{ENVIRONMENT}:{run.id}:{member}"


def _again(run: EnvironmentRun) -> Command:
    return Command("wake env" if run.action is Action.START else "env", run.environment)


def _what(run: EnvironmentRun) -> str:
    return f"{run.action.verb} of {run.environment}"
