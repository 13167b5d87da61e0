"""The assembled bot (bot/stopbot.py) driven with no Slack at all: stops, approvals, locks
and schedules through the core's own entry points, against the simulators, with a face
that records what it is told. One clock; nothing sleeps."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import ApprovalPolicy, ScheduleConfig
from bot.leadership import Leadership
from bot.locks import LockError, ReleaseAnswer, ReleaseAsk
from bot.models import (
    ActionResult,
    Actor,
    Approval,
    BotLock,
    Operation,
    OpState,
    ScheduleRun,
    Transition,
)
from bot.schedules import Outcome, PlanItem, RunReport, ScheduleError
from bot.stopbot import Face, Stopbot
from bot.store import open_store
from bot.text import Text
from bot.workflow import Unshown
from providers.base import Provider, ResourceStatus
from providers.registry import build_provider
from providers.simulators.server import SimulatorServer
from tests.helpers import SimTime, sample

UTC = dt.UTC
ADMIN, ALICE, BOB, CAROL = "U0ADMIN", "U0ALICE", "U0BOB", "U0CAROL"


class Told:
    """A face that records what the core has it show, as facts (it implements every
    notifier protocol of the core)."""

    def __init__(self) -> None:
        self.progress: list[tuple[str, OpState]] = []
        self.requests: list[tuple[str, list[str]]] = []
        self.outcomes: list[tuple[str, str, str | None, str | None]] = []
        self.warned: list[BotLock] = []
        self.removed_locks: list[tuple[str, str, str]] = []
        self.release_asks: list[ReleaseAsk] = []
        self.answers: list[ReleaseAnswer] = []
        self.reachable = True
        self.warnings: list[tuple[str, dt.datetime]] = []
        self.announcements: list[Text] = []
        self.summaries: list[RunReport] = []
        self.drifts: list[tuple[str, str]] = []
        self.swept: list[str] = []

    async def show(self, op: Operation, timeline: list[Transition]) -> bool:
        self.progress.append((op.resource, op.state))
        return True

    async def request(self, op: Operation, approval: Approval, policy: ApprovalPolicy) -> bool:
        self.requests.append((op.resource, policy.approvers))
        return True

    async def outcome(self, op: Operation, approval: Approval) -> bool:
        self.outcomes.append((op.resource, approval.status, approval.decided_by, approval.reason))
        return True

    async def expiring(self, lock: BotLock) -> bool:
        self.warned.append(lock)
        return True

    async def removed(self, lock: BotLock, by: str) -> None:
        self.removed_locks.append((lock.resource, lock.owner, by))

    async def ask_release(self, ask: ReleaseAsk) -> bool:
        self.release_asks.append(ask)
        return self.reachable

    async def release_answered(self, answer: ReleaseAnswer) -> None:
        self.answers.append(answer)

    async def warn(
        self, schedule: ScheduleConfig, at: dt.datetime, plan: list[PlanItem], *, fire: dt.datetime
    ) -> bool:
        self.warnings.append((schedule.name, at))
        return True

    async def announce(self, schedule: ScheduleConfig, fire: dt.datetime, text: Text) -> bool:
        self.announcements.append(text)
        return True

    async def summary(self, report: RunReport) -> bool:
        self.summaries.append(report)
        return True

    async def drift(
        self, schedule: ScheduleConfig, run: ScheduleRun, resource: str, status: ResourceStatus
    ) -> bool:
        self.drifts.append((schedule.name, resource))
        return True

    async def sweep(self) -> None:
        self.swept.append("face")

    def final_summary(self) -> RunReport:
        return next(r for r in reversed(self.summaries) if r.finished)


class Core:
    """The assembled bot over the simulators, with the recording face attached."""

    def __init__(
        self,
        sims: SimulatorServer,
        db: Path,
        resources: dict[str, dict[str, Any]] | None = None,
        groups: dict[str, frozenset[str]] | None = None,
        **config: Any,
    ) -> None:
        sims.hub.clock.freeze()
        self.sims = sims
        self.time = SimTime(sims)
        self.config = sample(sims, resources_patch=resources, **{"admins": [ADMIN], **config})
        self.groups = groups or {}
        self.store = open_store(db, clock=self.time.now)
        self.providers: dict[str, Provider] = {
            p.name: build_provider(p, http=self.config.http) for p in self.config.providers
        }
        self.bot = Stopbot(
            self.config,
            self.store,
            self.providers,
            clock=self.time.now,
            sleep=self.time.sleep,
            schedule_tick=None,
        )
        self.told = Told()
        self.bot.attach(
            Face(
                group_members=self.group_members,
                progress=self.told,
                approvals=self.told,
                locks=self.told,
                schedules=self.told,
                sweeps=[self.told.sweep],
            )
        )

    async def group_members(self, group: str) -> frozenset[str]:
        return self.groups.get(group, frozenset())

    def actor(self, user: str) -> Actor:
        return self.config.actor(user)

    async def confirmed(self, resource: str, user: str = BOB) -> ActionResult:
        """``user`` asks to stop ``resource`` and confirms; what the confirmation did."""
        preview = await self.bot.service.prepare(
            resource, self.actor(user), source="test", notify=True
        )
        assert preview.operation.state == OpState.AWAITING_CONFIRMATION, preview.operation.detail
        return self.bot.service.confirm(preview.operation.id, self.actor(user))

    def travel(self, when: dt.datetime) -> None:
        self.sims.hub.clock.advance((when - self.time.now()).total_seconds())

    async def aclose(self) -> None:
        await self.bot.engine.cancel()
        await self.bot.aclose()
        for p in self.providers.values():
            await p.aclose()
        self.store.close()


@pytest.fixture
async def core(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Core]:
    harness = Core(sims, tmp_path / "db")
    yield harness
    await harness.aclose()


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# -- the assembled bot ---------------------------------------------------------------------


async def test_takeovers_run_in_order_the_face_s_first(core: Core) -> None:
    """A sweep takes over the face's requests first, then stops, environment runs (which
    follow their members' stops), owed messages, runs."""
    bot = core.bot
    assert bot.registry.sweeps == [
        core.told.sweep,
        bot.resume_stops,
        bot.environments.resume,
        bot.outbox.drain,
        bot.engine.sweep,
    ]
    await bot.registry.sweep()
    assert core.told.swept == ["face"]


async def test_a_stop_s_progress_is_shown_through_the_face(core: Core) -> None:
    """A stop its face follows (notify) is shown at each change, to the final state."""
    service = core.bot.service
    actor = core.config.actor(BOB)
    preview = await service.prepare("dev-eu", actor, source="test", notify=True)
    result = service.confirm(preview.operation.id, actor)
    assert result.ok and result.run
    final = await service.run(preview.operation.id, Unshown(), actor)
    await core.bot.outbox.flush()
    assert final.state == OpState.STOPPED
    assert core.told.progress[0] == ("dev-eu", OpState.SUBMITTING)
    assert core.told.progress[-1] == ("dev-eu", OpState.STOPPED)


# -- approvals ------------------------------------------------------------------------------

CAROL_APPROVES = {"dev-eu": {"approval": {"required": True, "approvers": [CAROL]}}}


@pytest.fixture
async def guarded(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Core]:
    """dev-eu needs Carol's approval."""
    harness = Core(sims, tmp_path / "db", resources=CAROL_APPROVES)
    yield harness
    await harness.aclose()


async def test_an_approved_stop_runs_and_everyone_is_told(guarded: Core) -> None:
    """A protected stop asks its approvers; the requester and others cannot decide; the
    approver's approval releases it, once, and the outcome is told."""
    core, approvals = guarded, guarded.bot.approvals
    asked = await core.confirmed("dev-eu")
    assert asked.ok and asked.needs_approval and not asked.run
    op_id = asked.operation.id if asked.operation else ""
    await core.bot.outbox.flush()
    assert core.told.requests == [("dev-eu", [CAROL])]
    own = await approvals.approve(op_id, core.actor(BOB))
    assert not own.ok and "your own stop request" in str(own.message)
    other = await approvals.approve(op_id, core.actor(ALICE))
    assert str(other.message) == "Only the approvers of dev-eu (U0CAROL) can decide this request."
    approved = await approvals.approve(op_id, core.actor(CAROL))
    assert approved.ok and approved.run
    again = await approvals.approve(op_id, core.actor(CAROL))
    assert not again.ok and not again.run
    final = await core.bot.service.run(op_id, Unshown(), core.actor(BOB))
    await core.bot.outbox.flush()
    assert final.state == OpState.STOPPED
    assert core.told.outcomes == [("dev-eu", "approved", CAROL, None)]
    assert core.told.progress[-1] == ("dev-eu", OpState.STOPPED)


async def test_a_denial_ends_the_request_with_its_reason(guarded: Core) -> None:
    """A denial refuses the stop; its reason reaches the requester's face."""
    asked = await guarded.confirmed("dev-eu")
    op_id = asked.operation.id if asked.operation else ""
    denied = await guarded.bot.approvals.deny(op_id, guarded.actor(CAROL), "demo tomorrow")
    await guarded.bot.outbox.flush()
    assert denied.ok and denied.operation and denied.operation.state == OpState.REFUSED
    assert guarded.told.outcomes == [("dev-eu", "denied", CAROL, "demo tomorrow")]


async def test_housekeeping_expires_an_approval_request(guarded: Core) -> None:
    """Past approval.expires_after nobody can decide any more: housekeeping ends it."""
    asked = await guarded.confirmed("dev-eu")
    op_id = asked.operation.id if asked.operation else ""
    guarded.sims.hub.clock.advance(30 * 60)
    await guarded.bot.tick()
    await guarded.bot.outbox.flush()
    op = guarded.store.get_operation(op_id)
    assert op is not None and op.state == OpState.CANCELLED
    assert guarded.told.outcomes == [("dev-eu", "expired", "stopbot", None)]
    late = await guarded.bot.approvals.approve(op_id, guarded.actor(CAROL))
    assert not late.ok and "already decided" in str(late.message)


class Switch(Leadership):
    """A leadership the test hands over."""

    def __init__(self) -> None:
        super().__init__()
        self.now = False

    @property
    def leading(self) -> bool:
        return self.now

    @property
    def role(self) -> str:
        return "leader" if self.now else "follower"

    async def take(self) -> None:
        self.now = True
        await self._on_lead()


async def test_only_the_leader_does_the_housekeeping(guarded: Core) -> None:
    """A follower's housekeeping leaves an expired approval request alone; becoming the
    leader does at once what is due."""
    switch = Switch()
    guarded.bot.leadership = switch
    asked = await guarded.confirmed("dev-eu")
    op_id = asked.operation.id if asked.operation else ""
    guarded.sims.hub.clock.advance(30 * 60)
    await guarded.bot.start_duties()
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        op = guarded.store.get_operation(op_id)
        assert op is not None and op.state == OpState.AWAITING_APPROVAL
        await switch.take()
        op = guarded.store.get_operation(op_id)
        assert op is not None and op.state == OpState.CANCELLED
    finally:
        await guarded.bot.stop_duties()


async def test_an_approver_by_user_group_through_the_face_s_directory(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """A user group among the approvers is resolved by the face (Slack's user groups)."""
    core = Core(
        sims,
        tmp_path / "db",
        resources={"dev-eu": {"approval": {"approvers": ["S0OPS"]}}},
        groups={"S0OPS": frozenset({CAROL})},
    )
    try:
        asked = await core.confirmed("dev-eu")
        op_id = asked.operation.id if asked.operation else ""
        refused = await core.bot.approvals.approve(op_id, core.actor(ALICE))
        assert not refused.ok
        approved = await core.bot.approvals.approve(op_id, core.actor(CAROL))
        assert approved.ok and approved.run
    finally:
        await core.aclose()


# -- locks ----------------------------------------------------------------------------------


async def test_only_who_may_stop_a_resource_may_lock_it(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """A lock stops others: only someone allowed to stop the resource may take one."""
    core = Core(sims, tmp_path / "db", resources={"dev-eu": {"allowed_users": [ALICE]}})
    try:
        with pytest.raises(LockError) as refused:
            await core.bot.locks.lock("dev-eu", BOB, dt.timedelta(hours=1), None)
        assert str(refused.value.text) == (
            "You cannot lock dev-eu: you are not allowed to stop dev-eu (dev-eu's own rule); "
            "ask an admin to add you."
        )
        locked = await core.bot.locks.lock("dev-eu", ALICE, dt.timedelta(hours=1), "demo")
        assert (locked.lock.owner, locked.extended) == (ALICE, False)
    finally:
        await core.aclose()


async def test_a_lock_refuses_others_and_its_holder_extends_it(core: Core) -> None:
    """Someone else's lock refuses a new one and the stop; its holder's lock extends it."""
    locks = core.bot.locks
    await locks.lock("dev-eu", ALICE, dt.timedelta(hours=2), "demo")
    with pytest.raises(LockError, match="already locked by U0ALICE"):
        await locks.lock("dev-eu", BOB, dt.timedelta(hours=1), None)
    refused = await core.bot.service.prepare("dev-eu", core.actor(BOB), source="test")
    assert refused.operation.state == OpState.REFUSED
    assert refused.blocking_lock is not None and refused.blocking_lock.owner == ALICE
    again = await locks.lock("dev-eu", ALICE, dt.timedelta(days=1), None)
    assert again.extended and again.lock.reason == "demo"
    assert again.lock.expires_at == core.time.now() + dt.timedelta(days=1)


async def test_an_extension_counts_from_the_expiry_warned_of(core: Core) -> None:
    """Extend twice from one warning: the lock is extended once."""
    locks = core.bot.locks
    lock = (await locks.lock("dev-eu", ALICE, dt.timedelta(minutes=40), None)).lock
    first = locks.extend("dev-eu", ALICE, dt.timedelta(hours=1), lock.expires_at)
    second = locks.extend("dev-eu", ALICE, dt.timedelta(hours=1), lock.expires_at)
    assert first.status == "extended" and second.status == "already"
    assert second.lock is not None
    assert second.lock.expires_at == lock.expires_at + dt.timedelta(hours=1)
    assert locks.extend("dev-eu", BOB, dt.timedelta(hours=1), None).status == "not_held"


async def test_an_admin_removes_a_lock_with_force_and_its_owner_is_told(core: Core) -> None:
    """Only the owner unlocks; an admin needs force, and the owner is told who did."""
    locks = core.bot.locks
    await locks.lock("dev-eu", ALICE, dt.timedelta(hours=4), None)
    with pytest.raises(LockError, match=r"only they can unlock it\.$"):
        await locks.unlock("dev-eu", BOB, force=False)
    with pytest.raises(LockError, match="Only admins can remove someone else's lock"):
        await locks.unlock("dev-eu", BOB, force=True)
    with pytest.raises(LockError, match=r"As an admin you may add `--force`\.$"):
        await locks.unlock("dev-eu", ADMIN, force=False)
    removed = await locks.unlock("dev-eu", ADMIN, force=True)
    assert removed.owner == ALICE and core.store.get_lock("dev-eu") is None
    assert core.told.removed_locks == [("dev-eu", ALICE, ADMIN)]


async def test_a_release_request_goes_to_the_holder_and_the_answer_back(core: Core) -> None:
    """Bob, refused by Alice's lock, asks her to release it: she is asked, releases it,
    and Bob is told; the request and the answer are audited."""
    await core.bot.locks.lock("dev-eu", ALICE, dt.timedelta(hours=4), "demo")
    resource = core.config.resource("dev-eu")
    ask = await core.bot.locks.ask_release(resource, BOB)
    assert (ask.status, ask.holder, ask.kind) == ("asked", ALICE, "bot")
    assert [a.holder for a in core.told.release_asks] == [ALICE]
    await core.bot.locks.release("dev-eu", BOB, "bot", ALICE)
    assert core.store.get_lock("dev-eu") is None
    assert [(a.asker, a.holder, a.released) for a in core.told.answers] == [(BOB, ALICE, True)]
    actions = [e.action for e in core.store.audit_log(resource="dev-eu")]
    assert "lock.release_asked" in actions


async def test_a_provider_lock_s_holder_is_found_through_identities(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """A Qovery lock by 'Alice Martin' goes to the user mapped to that name; with nobody
    mapped to it, nobody is asked and the asker is told why."""
    core = Core(sims, tmp_path / "db", identities={ALICE: {"qovery": "Alice Martin"}})
    bare = Core(sims, tmp_path / "db2")
    try:
        staging = core.config.resource("staging-us")
        ask = await core.bot.locks.ask_release(staging, BOB)
        assert (ask.status, ask.holder, ask.kind) == ("asked", ALICE, "provider")
        assert ask.provider_lock is not None and ask.provider_lock.owner == "Alice Martin"
        unknown = await bare.bot.locks.ask_release(staging, BOB)
        assert (unknown.status, unknown.holder) == ("unknown_holder", None)
        assert bare.told.release_asks == []
        unlocked = await core.bot.locks.ask_release(core.config.resource("dev-eu"), BOB)
        assert unlocked.status == "unlocked"
    finally:
        await bare.aclose()
        await core.aclose()


async def test_a_holder_out_of_reach_is_not_recorded_as_asked(core: Core) -> None:
    """When the face cannot reach the holder, the asker hears so and nothing is audited."""
    await core.bot.locks.lock("dev-eu", ALICE, dt.timedelta(hours=4), None)
    core.told.reachable = False
    ask = await core.bot.locks.ask_release(core.config.resource("dev-eu"), BOB)
    assert ask.status == "unreachable"
    assert [e for e in core.store.audit_log() if e.action == "lock.release_asked"] == []


async def test_housekeeping_warns_a_lock_s_owner_once(core: Core) -> None:
    """Within locks.warn_before_expiry the owner is warned through the face, once."""
    lock = (await core.bot.locks.lock("dev-eu", ALICE, dt.timedelta(hours=1), "demo")).lock
    await core.bot.tick()
    await core.bot.outbox.flush()
    assert core.told.warned == []
    core.sims.hub.clock.advance(31 * 60)
    for _ in range(2):
        await core.bot.tick()
        await core.bot.outbox.flush()
    assert [(w.resource, w.owner, w.expires_at) for w in core.told.warned] == [
        ("dev-eu", ALICE, lock.expires_at)
    ]


async def test_without_a_face_what_is_owed_waits_for_one(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """A bot no face is attached to (the terminal's) shows nothing: the warning stays owed
    until a face is there to show it."""
    core = Core(sims, tmp_path / "db")
    bare = Stopbot(core.config, core.store, core.providers, clock=core.time.now, schedule_tick=None)
    try:
        await bare.locks.lock("dev-eu", ALICE, dt.timedelta(minutes=20), None)
        await bare.tick()
        await bare.outbox.flush()
        assert [o.kind for o in core.store.owed()] == ["lock-warning"]
        bare.registry.retire()
        await core.bot.registry.sweep()
        await core.bot.outbox.flush()
        assert [w.resource for w in core.told.warned] == ["dev-eu"]
        assert core.store.owed() == []
    finally:
        await bare.aclose()
        await core.aclose()


# -- schedules ------------------------------------------------------------------------------

NIGHTLY = {
    "name": "nightly",
    "cron": "0 20 * * 1-5",
    "timezone": "Europe/Paris",
    "select": {"resources": ["dev-eu", "spark"]},
    "channel": "C0DEV",
    "warn_before": "15m",
}


@pytest.fixture
async def scheduled(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Core]:
    """The nightly schedule of dev-eu and spark; only Alice (and admins) may stop dev-eu."""
    harness = Core(
        sims,
        tmp_path / "db",
        resources={"dev-eu": {"allowed_users": [ALICE]}},
        schedules=[NIGHTLY],
    )
    harness.bot.engine.sync_config()
    harness.travel(utc(2027, 1, 11, 12))  # a Monday
    await harness.bot.engine.tick()
    yield harness
    await harness.aclose()


async def test_a_schedule_s_runs_are_for_those_who_may_stop_all_it_selects(
    scheduled: Core,
) -> None:
    """Bob may not stop dev-eu: he may not skip, snooze or run the schedule that stops
    it; Alice may, and so may an admin."""
    rights = scheduled.bot.schedules
    with pytest.raises(ScheduleError) as refused:
        await rights.skip(BOB, "nightly")
    assert str(refused.value.text) == (
        "You cannot skip `nightly`: you may not stop dev-eu, which `nightly` stops."
    )
    with pytest.raises(ScheduleError, match=r"^You cannot change `nightly`"):
        await rights.snooze(BOB, "nightly", dt.timedelta(hours=1), shown=True)
    with pytest.raises(ScheduleError, match=r"^You cannot run `nightly`"):
        await rights.plan_run(BOB, "nightly")
    skipped = await rights.skip(ALICE, "nightly")
    assert (skipped.fire, skipped.by, skipped.repeat) == (utc(2027, 1, 11, 19), ALICE, False)
    again = await rights.skip(ADMIN, "nightly", skipped.fire, shown=True)
    assert again.repeat and again.by == ALICE


async def test_only_admins_add_and_remove_schedules(scheduled: Core) -> None:
    """Adding and removing schedules is for admins; one from stopbot.yaml is removed there."""
    rights = scheduled.bot.schedules
    with pytest.raises(ScheduleError, match=r"^Only admins can add schedules\.$"):
        rights.add(ALICE, "late", "0 23 * * *", "Europe/Paris", "tag:env=dev")
    with pytest.raises(ScheduleError, match=r"^Cannot add `late`: unknown time zone"):
        rights.add(ADMIN, "late", "0 23 * * *", "Mars/Olympus", "tag:env=dev")
    added = rights.add(ADMIN, "late", "0 23 * * *", "Europe/Paris", "dev-eu,spark")
    assert added.select.resources == ["dev-eu", "spark"]
    assert set(scheduled.bot.engine.schedules()) == {"nightly", "late"}
    with pytest.raises(ScheduleError, match=r"^Only admins can remove schedules\.$"):
        await rights.remove(ALICE, "late")
    with pytest.raises(ScheduleError, match=r"is defined in stopbot\.yaml"):
        await rights.remove(ADMIN, "nightly")
    await rights.remove(ADMIN, "late")
    assert set(scheduled.bot.engine.schedules()) == {"nightly"}


async def test_a_run_confirmed_twice_starts_once(scheduled: Core) -> None:
    """Run now, confirmed twice from one message, runs once: its stops are the person's."""
    rights = scheduled.bot.schedules
    run = await rights.run_now(ALICE, "nightly", once="message-1")
    with pytest.raises(ScheduleError, match=r"^This run was already started\.$"):
        await rights.run_now(ALICE, "nightly", once="message-1")
    await scheduled.bot.engine.wait()
    final = scheduled.told.final_summary()
    assert (final.run.id, final.run.kind, final.run.started_by) == (run.id, "manual", ALICE)
    assert [(i.resource, i.outcome) for i in final.items] == [
        ("dev-eu", Outcome.STOPPED),
        ("spark", Outcome.STOPPED),
    ]


async def test_keeping_a_resource_out_is_for_who_may_stop_it(scheduled: Core) -> None:
    """Bob may not keep dev-eu out of a run; Alice may, and the plan says so."""
    rights = scheduled.bot.schedules
    with pytest.raises(ScheduleError, match=r"^You cannot keep dev-eu: you are not allowed"):
        await rights.keep(BOB, "nightly", "dev-eu", hours=2)
    until = await rights.keep(ALICE, "nightly", "dev-eu", hours=2)
    assert until == scheduled.time.now() + dt.timedelta(hours=2)
    plan = scheduled.bot.engine.plan(scheduled.bot.engine.schedule("nightly"))
    assert [(i.resource, i.outcome) for i in plan] == [("dev-eu", Outcome.KEPT), ("spark", None)]
    next_but_one = await rights.keep(ADMIN, "nightly", "spark", hours=None)
    assert next_but_one == utc(2027, 1, 12, 19)


async def test_leaving_a_drifted_resource_running_is_for_who_may_stop_it(
    scheduled: Core,
) -> None:
    """Dismissing a drift report is decided only by someone who could stop the resource."""
    rights = scheduled.bot.schedules
    with pytest.raises(ScheduleError, match=r"^You cannot decide for dev-eu: "):
        await rights.leave_drifted(BOB, "nightly", "dev-eu")
    await rights.leave_drifted(ALICE, "nightly", "dev-eu")
    [entry] = [e for e in scheduled.store.audit_log() if e.action == "schedule.drift_accepted"]
    assert (entry.actor, entry.resource, entry.detail) == (ALICE, "dev-eu", {"schedule": "nightly"})


async def test_a_scheduled_run_through_the_assembled_bot(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """At its fire time a schedule stops what it selects; the face is warned before and
    shown the summary after."""
    core = Core(sims, tmp_path / "db", schedules=[NIGHTLY])
    try:
        engine = core.bot.engine
        engine.sync_config()
        core.travel(utc(2027, 1, 11, 12))  # a Monday
        await engine.tick()
        core.travel(utc(2027, 1, 11, 18, 50))
        await engine.tick()
        await core.bot.outbox.flush()
        core.travel(utc(2027, 1, 11, 19))
        await engine.tick()
        await engine.wait()
        assert core.told.warnings == [("nightly", utc(2027, 1, 11, 19))]
        final = core.told.final_summary()
        assert [(i.resource, i.outcome) for i in final.items] == [
            ("dev-eu", Outcome.STOPPED),
            ("spark", Outcome.STOPPED),
        ]
    finally:
        await core.aclose()
