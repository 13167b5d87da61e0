"""A schedule's run: started once per fire (the store's run row is unique per schedule and
fire), its stops sent at the providers' pace (:mod:`bot.run_pace`) through the same workflow
as a person's, each resource on its own, tried again after a failure unless the stop may have
gone out; taken over from a process that died; its summary owed as it goes, at most every
``summary_interval``."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from bot.config import ScheduleConfig
from bot.durations import format_duration
from bot.models import Action, Actor, Operation, OpState, Owed, ScheduleRun, Transition
from bot.run_pace import RunPace
from bot.savings import Savings
from bot.schedules.announcements import Announcements
from bot.schedules.definitions import Definitions
from bot.schedules.facts import (
    IN_PROGRESS,
    LISTED,
    START_KINDS,
    SUMMARY,
    Outcome,
    RunReport,
    ScheduleError,
    ScheduleNotifier,
    Sleep,
    local,
    starts,
)
from bot.schedules.in_use import InUse
from bot.text import Command, Person, Text, say
from bot.workflow import INTERRUPTED_PREPARING, Confirmation, Preview, PriorRead
from providers.base import Resource, ResourceStatus

log = logging.getLogger(__name__)

# States in which the provider has a stop: following it holds no place in a run's window.
_SENT = frozenset({OpState.ACCEPTED, OpState.IN_PROGRESS})
# Outcomes of a member of an environment that let its next tier begin.
_REACHED = frozenset({Outcome.STOPPED, Outcome.ALREADY, Outcome.STARTED, Outcome.ALREADY_RUNNING})

# How the workflow words a failure after which the stop may have gone out (a timeout of
# the stop call, a restart around it): trying again could stop twice.
_UNCERTAIN = ("may or may not have been taken", "the status is unknown")


class _ItemListener:
    """Keeps a run's summary current while one of its stops progresses, and tells when the
    provider has the stop (``sent``): it then holds no place in the window of stops being
    sent."""

    shows_timeline = False  # (the summary shows states, not timelines)

    def __init__(self, runs: Runs, run_id: str, resource: str) -> None:
        self.runs, self.run_id, self.resource = runs, run_id, resource
        # A future, not an Event: thousands are held at once, and an Event's deque of
        # waiters is 600 bytes before anyone waits.
        self.sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._shown: str | None = None

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None:
        if (op.state in _SENT or op.state.final) and not self.sent.done():
            self.sent.set_result(None)
        shown = op.provider_state or op.state.value.replace("_", " ")
        if not op.state.final and shown != self._shown:
            # Only a change is written: a night of thousands of stops polls them all each
            # round, and the store's writes are most of a run's own work.
            self._shown = shown
            detail = Text(shown)
            store = self.runs.store
            await store.off_loop(
                partial(store.record_item, self.run_id, self.resource, None, detail, op.id)
            )
            await self.runs.publish_soon(self.run_id)


class Runs:
    """The runs this process executes, and the summaries they owe."""

    def __init__(
        self,
        definitions: Definitions,
        announcements: Announcements,
        sleep: Sleep,
        notifier: Callable[[], ScheduleNotifier],
    ) -> None:
        self.definitions = definitions
        self.announcements = announcements
        self.config = definitions.config
        self.settings = definitions.settings
        self.store = definitions.store
        self.service = definitions.service
        self.clock = definitions.clock
        self.registry = self.service.registry
        self.outbox = self.service.outbox
        self.sleep = sleep
        self.savings: Savings | None = None
        """What a finished run's summary says it is expected to save (when set)."""
        self.notifier = notifier
        self.in_use = InUse(definitions)
        """The warning's questions: answered, or the default, they decide at the run."""
        self.before_start: Callable[[], Awaitable[None]] | None = None
        """Brings what runs select up to date before a run is planned (discovery; set by
        the assembled bot). It must not raise."""
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._summary_owed: set[str] = set()

    async def run_now(self, name: str, actor: str) -> ScheduleRun:
        """A manual run, after the user confirmed it."""
        schedule = self.definitions.schedule(name)
        now = self.clock()
        run = await self.start(schedule, now, "manual", now, started_by=actor)
        if run is None:
            raise ScheduleError(Text(f"`{name}` is running already."))
        return run

    async def start(
        self,
        schedule: ScheduleConfig,
        fire: dt.datetime,
        kind: str,
        now: dt.datetime,
        *,
        started_by: str | None = None,
    ) -> ScheduleRun | None:
        if self.before_start is not None:
            await self.before_start()

        def create() -> ScheduleRun | None:
            # Off the loop: on PostgreSQL a run of 10,000 held Slack's acks for seconds. The
            # plan is read first (reads take no write lock), then the run and its items
            # written in one transaction, the items in one statement (they were 10,000
            # commits, holding every other writer meanwhile).
            if kind in START_KINDS:
                plan = self.definitions.start_plan(schedule, now)
            else:
                plan = self.definitions.plan(schedule, now)
                self.in_use.decide(schedule, fire, plan)
            with self.store.batch():
                run = self.store.create_run(
                    schedule.name,
                    fire,
                    kind=kind,
                    channel=schedule.channel,
                    reason=say("started by {}", Person(started_by)) if started_by else None,
                    started_by=started_by,
                    owner=self.registry.id,
                )
                if run is None:
                    return None  # this fire was handled already
                self.store.record_items(
                    run.id, [(item.resource, item.outcome, item.detail) for item in plan]
                )
                return run

        run = await self.store.off_loop(create, heavy=True)
        if run is not None:
            self._spawn(run, schedule=schedule)
        return run

    def _spawn(
        self,
        run: ScheduleRun,
        late: str | None = None,
        *,
        schedule: ScheduleConfig | None = None,
    ) -> None:
        task = asyncio.create_task(
            self._execute(run.id, late, schedule), name=f"schedule-run-{run.id}"
        )
        self._runs[run.id] = task
        task.add_done_callback(lambda _: self._runs.pop(run.id, None))

    def resume(self) -> int:
        """Take over the runs that processes now dead were executing; returns how many.

        Within the grace time of when that process last ticked (about when it stopped),
        a run goes on as it would have. Later, only what it had already sent to a provider
        is followed to its end; the rest is recorded as missed, and announced.
        """
        count = 0
        now = self.clock()
        live = self.registry.live()
        for run in self.store.running_runs():
            if run.id in self._runs or not self.registry.orphaned(run.owner, live):
                continue
            if self.registry.take("schedule_runs", run.id, run.owner):
                self._spawn(run, self._lateness(run, now))
                count += 1
        return count

    def _lateness(self, run: ScheduleRun, now: dt.datetime) -> str | None:
        """Why ``run``, resumed at ``now``, is too late to start more stops; None if it is
        not."""
        checked = self.store.schedule_state(run.schedule).checked_through
        since = max(run.fire_time, checked or run.fire_time)
        if now - since <= self.settings.grace_time:
            return None
        return (
            f"Stopbot was down for {format_duration(now - since)}, past the grace time of "
            f"{format_duration(self.settings.grace_time)}"
        )

    async def cancel(self) -> None:
        """Stop working on runs (they stay running in the store; the next start resumes)."""
        for task in self._runs.values():
            task.cancel()
        await asyncio.gather(*self._runs.values(), return_exceptions=True)

    async def wait(self) -> None:
        """Until every run this engine started has finished and what it owes is delivered
        (tests, shutdown)."""
        while self._runs:
            await asyncio.gather(*list(self._runs.values()), return_exceptions=True)
        await self.outbox.flush()

    async def _execute(
        self, run_id: str, late: str | None = None, started: ScheduleConfig | None = None
    ) -> None:
        """Stop what the run selected, each resource on its own: one that raises is
        recorded as failed and the others go on; the run always ends with its summary
        (unless this process is shutting down: the next one resumes it). ``started``, the
        definition the run started with, still shows its summary if it is removed."""
        run = self.store.run(run_id)
        if run is None:
            return
        schedule = self.definitions.schedules().get(run.schedule) or started
        if schedule is None:
            self.store.finish_run(run_id, "done", owner=self.registry.id)
            return
        # Names, not items: a run of 10,000 holds its pending resources for its whole time.
        pending = self.store.run_names(run_id, None)
        # As configured: each becomes a provider's Resource only for its own stop.
        configured = {r.name: r for r in self.config.resources}
        selected = [configured[name] for name in pending if name in configured]
        pace = RunPace(self.config, self.service.providers, selected, self.clock)
        actor = self._actor_of(run, schedule)  # one for the run's thousands of stops

        async def one(name: str, admitted: Callable[[], None]) -> None:
            try:
                found = configured.get(name)
                if found is None:
                    gone = Text("no longer in the configuration")
                    await self.store.off_loop(
                        partial(self.store.record_item, run_id, name, Outcome.FAILED, gone)
                    )
                    return
                resource = found.to_resource()
                async with pace.in_progress(resource.provider):
                    await self._stop_one(run, schedule, resource, actor, late, pace, admitted)
            except Exception as exc:
                reference = uuid.uuid4().hex[:8]
                log.exception(
                    "scheduled stop failed",
                    extra={"run": run_id, "resource": name, "reference": reference},
                )
                failed = say(
                    "unexpected error ({}); Stopbot's log has the details under reference {}",
                    type(exc).__name__,
                    reference,
                )
                await self.store.off_loop(
                    partial(self.store.record_item, run_id, name, Outcome.FAILED, failed)
                )
            finally:
                admitted()
            await self.publish_soon(run_id)

        async def feed(provider: str, names: list[str]) -> None:
            """Start the stops of one provider as they get a place among its stops not
            yet sent: a task per stop only from then on, not 10,000 at once."""
            admission = pace.admission(provider)
            # Only those not over: a task that ended holds its coroutine until let go of
            # (a run of 10,000 kept ~1 kB each to its end).
            going: set[asyncio.Task[None]] = set()
            for name in names:
                await admission.acquire()
                task = asyncio.create_task(one(name, _once(admission.release)))
                going.add(task)
                task.add_done_callback(going.discard)
            while going:
                await asyncio.gather(*going, return_exceptions=True)

        groups: dict[str, list[str]] = {}
        for name in pending:
            found = configured.get(name)
            groups.setdefault(found.provider if found else "", []).append(name)
        try:
            await self.publish(run_id, schedule)
            if schedule.select.environment is not None:
                await self._in_tiers(run, schedule.select.environment, pending, one)
            else:
                await asyncio.gather(
                    *(feed(provider, items) for provider, items in groups.items()),
                    return_exceptions=True,
                )
        except Exception:
            log.exception("scheduled run failed", extra={"run": run_id})
        await self._finish(run, schedule, late)

    async def _in_tiers(
        self,
        run: ScheduleRun,
        environment: str,
        pending: list[str],
        one: Callable[[str, Callable[[], None]], Awaitable[None]],
    ) -> None:
        """A run of an environment (``select: {environment: …}``): tier after tier, in
        reverse for a morning start, each begun once every member of the one before got
        there. As a person's stop of an environment, it is refused as a whole when a member is held
        (skipped: locked, kept, leased, opted out), and a member that does not get there
        halts the later tiers (bot/environments.py)."""
        tiers = [m for tier in self.config.environments.get(environment, []) for m in tier.values()]
        if starts(run):
            tiers = tiers[::-1]
        waiting = set(pending)
        verb = "started" if starts(run) else "stopped"
        held = [i for i in self.store.run_items(run.id) if i.outcome in Outcome.SKIPPED]
        if held:
            detail = say(
                "not {}: environment {} is refused as a whole while someone holds {}",
                verb,
                environment,
                ", ".join(f"{i.resource} ({i.outcome})" for i in held),
            )
            for name in pending:
                self.store.record_item(run.id, name, Outcome.REFUSED, detail)
            return
        for index, members in enumerate(tiers):
            await asyncio.gather(
                *(one(m, lambda: None) for m in members if m in waiting),
                return_exceptions=True,
            )
            ended = {i.resource: i.outcome for i in self.store.run_items(run.id)}
            short = [m for m in members if m in ended and ended[m] not in _REACHED]
            if short:
                detail = say(
                    "not {}: tier {} ({}) of environment {} did not get there",
                    verb,
                    index + 1,
                    ", ".join(short),
                    environment,
                )
                for later in tiers[index + 1 :]:
                    for m in later:
                        if m in waiting:
                            self.store.record_item(run.id, m, Outcome.REFUSED, detail)
                return

    async def _finish(self, run: ScheduleRun, schedule: ScheduleConfig, late: str | None) -> None:
        left = self.store.run_names(run.id, Outcome.MISSED)
        finished = self.store.finish_run(
            run.id,
            "missed" if left else "done",
            owner=self.registry.id,
            owe=self._summary(run.id, schedule, urgent=True),
        )
        self.outbox.kick()
        if finished and left and late is not None:
            self.announcements.announce(
                schedule,
                run.fire_time,
                say(
                    "The {} run due {} was cut by a restart, and {}: {} resource{} it had "
                    "not stopped yet were not stopped. Run it now with {}.",
                    schedule.name,
                    local(schedule, run.fire_time),
                    late,
                    len(left),
                    "" if len(left) == 1 else "s",
                    Command("schedule run", schedule.name),
                ),
                [],
            )

    async def _stop_one(
        self,
        run: ScheduleRun,
        schedule: ScheduleConfig,
        resource: Resource,
        actor: Actor,
        late: str | None,
        pace: RunPace,
        sent: Callable[[], None] = lambda: None,
    ) -> None:
        """One resource of a run, tried again after a failure ``retries`` times, except
        when the stop may have gone out (it could stop twice) or the run is ``late``. A
        preparation a restart cut short is no failure: it is simply tried again.

        The first try uses the run's bulk read of the resource; a try holds its place in
        the provider's window of stops being sent until the provider accepts the stop (or
        the try ends), then follows it with no place held; ``sent`` is told then."""
        failures = 0
        for attempt in itertools.count():
            key = f"schedule:{run.id}:{resource.name}:{attempt}"
            if late is not None and not self._sent(key, actor):
                self.store.record_item(
                    run.id, resource.name, Outcome.MISSED, say("not stopped: {}", late)
                )
                return
            prior = await pace.prior(resource) if attempt == 0 else None
            listener = _ItemListener(self, run.id, resource.name)
            async with pace.sending(resource.provider):
                driving = asyncio.create_task(
                    self._prepare_and_drive(
                        run, schedule, resource, actor, listener, pace, key, prior
                    ),
                    name=f"schedule-stop-{run.id}-{resource.name}",
                )
                del prior  # (the preparation's only: not held while the stop is followed)
                try:
                    await _until_sent(listener, driving)
                except asyncio.CancelledError:
                    driving.cancel()
                    raise
            sent()
            try:
                op, refused_by_lock = await driving
            except asyncio.CancelledError:
                driving.cancel()
                raise
            if op.state == OpState.FAILED and op.detail == INTERRUPTED_PREPARING:
                continue
            outcome, detail = self._outcome(op, refused_by_lock)
            uncertain = any(words in str(op.detail or "") for words in _UNCERTAIN)
            if outcome != Outcome.FAILED or failures == schedule.retries or late or uncertain:
                if outcome == Outcome.STOPPED and not starts(run):
                    detail = self.in_use.note(schedule.name, run.fire_time, resource.name)
                await self.store.off_loop(
                    partial(self.store.record_item, run.id, resource.name, outcome, detail, op.id)
                )
                return
            failures += 1
            again = say("failed, trying again: {}", op.detail or "")
            await self.store.off_loop(
                partial(self.store.record_item, run.id, resource.name, None, again, op.id)
            )
            await self.publish_soon(run.id)
            await self.sleep(self.settings.retry_delay.total_seconds())

    def _actor_of(self, run: ScheduleRun, schedule: ScheduleConfig) -> Actor:
        """Who asks for a run's stops: the schedule, or for a manual run the person who
        started it, so that its stops are theirs as a `/stop` would be (approval by
        someone else, the audit log)."""
        return self.definitions.actor(schedule, run.started_by if run.kind == "manual" else None)

    async def _prepare_and_drive(
        self,
        run: ScheduleRun,
        schedule: ScheduleConfig,
        resource: Resource,
        actor: Actor,
        listener: _ItemListener,
        pace: RunPace,
        key: str,
        prior: PriorRead | None,
    ) -> tuple[Operation, str | None]:
        """Prepare one try (confirmed at once), then drive it, in one task: the stop is
        driven from the moment it is confirmed (a stop this process confirmed and drives
        nowhere would be taken for stranded and driven a second time). Returns the
        operation as it ended, and its id if a lock refused it at its preview.

        A run of 10,000 follows thousands of stops at once: what only the preparation
        needs (the bulk read, the preview) is let go of once the stop is driven."""
        async with pace.previewing(resource.provider):
            preview = await self.service.prepare(
                resource.name,
                actor,
                source="schedule",
                reason=f"schedule {schedule.name}" + (" (morning start)" if starts(run) else ""),
                force=schedule.force and not starts(run),
                channel=schedule.channel,
                idempotency_key=key,
                prior=prior,
                action=Action.START if starts(run) else Action.STOP,
                # A person's run goes through approval as their /stop would; a timed one as
                # the schedule says.
                confirm=Confirmation(
                    actor, require_approval=schedule.approval or run.kind == "manual"
                ),
            )
        del prior
        refused_by_lock = preview.operation.id if preview.blocking_lock is not None else None
        driving = self._drive(preview, run, schedule, resource, actor, listener)
        del preview
        return await driving, refused_by_lock

    async def _drive(
        self,
        preview: Preview,
        run: ScheduleRun,
        schedule: ScheduleConfig,
        resource: Resource,
        actor: Actor,
        listener: _ItemListener,
    ) -> Operation:
        """Take an operation from wherever it is (new, or found again after a restart)
        to its end."""
        op = preview.operation
        prepared: Preview | None = None
        if op.state == OpState.REQUESTED:
            # prepare() waits for a preparation going on in this process, and prepares
            # again one whose process died: one left REQUESTED is another live process's.
            op = await self.service.until_decided(op.id)
        if op.state == OpState.AWAITING_CONFIRMATION:
            # A person's run goes through approval as their /stop would; a timed one as
            # the schedule says.
            needs = schedule.approval or run.kind == "manual"
            confirmed = await self.store.off_loop(
                partial(self.service.confirm, op.id, actor, require_approval=needs)
            )
            if confirmed.operation is None:
                return self.store.get_operation(op.id) or op
            op = confirmed.operation
            if not confirmed.needs_approval:  # (the request to approvers is owed by confirm)
                prepared = preview  # submitted at once: its lock read is still fresh
            del confirmed
        elif op.state == OpState.SUBMITTING:
            prepared = preview  # confirmed as it was prepared (run() checks the read's age)
        # Followed for minutes from here, thousands at once in a run of 10,000: only the
        # drive holds the preview and the operation, for as long as it needs them.
        op_id, submitting = op.id, op.state == OpState.SUBMITTING
        del op, preview
        if submitting and op_id not in self.service.in_flight():
            driving = self.service.drive(op_id, listener, actor, prepared=prepared)
            del prepared
            return await driving
        return await self.service.until_final(op_id, listener)

    def _sent(self, key: str, actor: Actor) -> bool:
        """Whether the stop recorded under ``key`` went (or may have gone) to the provider.
        One that never got that far is ended: a late run does not start it."""
        op = self.store.operation_for_key(key)
        if op is None:
            return False
        if op.state == OpState.REQUESTED:
            self.service.end_unprepared(op)
            return False
        if op.state == OpState.AWAITING_CONFIRMATION:
            self.store.transition(
                op.id,
                OpState.CANCELLED,
                allowed_from=[OpState.AWAITING_CONFIRMATION],
                actor=actor.id,
                detail=Text("not started: the scheduled run resumed past its grace time"),
            )
            return False
        return True

    def _outcome(self, op: Operation, refused_by_lock: str | None) -> tuple[str, Text | None]:
        """``refused_by_lock``: the id of the operation a lock refused at its preview."""
        if op.state == OpState.REFUSED:
            # A lock refuses at preview (where it is named) or right before the stop (the
            # only refusal once submitting); anything else refused says its own reason.
            if refused_by_lock == op.id or any(
                t.state == OpState.SUBMITTING.value for t in self.store.transitions(op.id)
            ):
                return Outcome.LOCKED, op.detail
            return Outcome.REFUSED, op.detail
        return _outcome(op)

    async def publish_soon(self, run_id: str) -> None:
        """Show the run's progress: its summary is owed, and shown at most every
        ``summary_interval`` however many of its stops moved meanwhile (building a report
        reads every item of the run: at each event, a run of n resources cost O(n^2)).
        Owed already and not shown yet, it is not owed again: it will show this too."""
        if run_id not in self._summary_owed:
            self._summary_owed.add(run_id)
            try:
                await self.publish(run_id)
            except BaseException:
                self._summary_owed.discard(run_id)  # not owed: the next change owes it
                raise

    async def publish(self, run_id: str, schedule: ScheduleConfig | None = None) -> None:
        """Owe the run's summary (off the loop: on PostgreSQL a write waits its turn
        behind the run's own); ``schedule`` stands in for its definition once it was
        removed mid-run, so the summary still ends."""
        await self.store.off_loop(partial(self.store.owe, self._summary(run_id, schedule)))
        self.outbox.kick()

    def _summary(
        self, run_id: str, schedule: ScheduleConfig | None, *, urgent: bool = False
    ) -> Owed:
        return self.outbox.message(
            SUMMARY,
            run_id,
            {"run": run_id, "schedule": schedule.model_dump(mode="json") if schedule else None},
            urgent=urgent,
        )

    def report(self, run_id: str, schedule: ScheduleConfig | None = None) -> RunReport | None:
        """The run as its summary shows it now."""
        run = self.store.run(run_id)
        if run is None:
            return None
        schedule = self.definitions.schedules().get(run.schedule) or schedule
        if schedule is None:
            return None
        end = run.finished_at or self.clock()
        counts, listed = self.store.run_tally(run_id, LISTED)
        return RunReport(
            run=run,
            schedule=schedule,
            items=listed,
            counts={outcome or IN_PROGRESS: count for outcome, count in counts.items()},
            elapsed=end - (run.started_at or end),
        )

    async def deliver_summary(self, owed: Owed) -> bool:
        self._summary_owed.discard(owed.payload["run"])  # what changes from now is owed again
        given = owed.payload.get("schedule")
        # Off the loop: a run's report reads all its items (10,000 rows on a large night).
        report = await self.store.off_loop(
            partial(
                self.report,
                owed.payload["run"],
                ScheduleConfig.model_validate(given) if given else None,
            ),
            heavy=True,
        )
        if report is None:
            return True
        if report.finished and self.savings is not None:
            run_id = report.run.id
            stopped = await self.store.off_loop(
                partial(self.store.run_names, run_id, Outcome.STOPPED), heavy=True
            )
            report.expected = await self.savings.expected(
                report.schedule, stopped, report.run.finished_at or self.clock()
            )
        return await self.notifier().summary(report) is not False


def _once(action: Callable[[], None]) -> Callable[[], None]:
    """``action``, done at the first call only."""
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return call


async def _until_sent(listener: _ItemListener, driving: asyncio.Task[Any]) -> None:
    """Until the provider has the stop ``driving`` sends, or ``driving`` is over."""
    await asyncio.wait({listener.sent, driving}, return_when=asyncio.FIRST_COMPLETED)


def _outcome(op: Operation) -> tuple[str, Text | None]:
    if op.state == OpState.STOPPED:
        return Outcome.STOPPED, None
    if op.state == OpState.STOPPED_ALREADY:
        return Outcome.ALREADY, None
    if op.state == OpState.STARTED:
        return Outcome.STARTED, None
    if op.state == OpState.RUNNING_ALREADY:
        return Outcome.ALREADY_RUNNING, None
    if op.state == OpState.AWAITING_APPROVAL:
        return Outcome.AWAITING_APPROVAL, Text("an approver decides in the channel")
    return Outcome.FAILED, op.detail or Text(op.state.value.replace("_", " "))
