"""One person's world, as facts for a face's home page (Slack's App Home): their locks,
what they asked to stop and where it is, the approvals waiting for them, the next
scheduled runs that touch what they own or locked, and what stopping saved this month.

Everything here is read through the rules that decide it elsewhere (an approval is
waiting for someone when :meth:`~bot.approvals.Approvals.can_decide` says they may decide
it), so the page never offers what its buttons would then refuse."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from bot.models import Actor, BotLock, Lease, Operation
from bot.savings import Line, Report, parse_period
from bot.stopbot import Stopbot

__all__ = ["MAX_ASKED", "MAX_RUNS", "NextRun", "World", "world_of"]

MAX_ASKED = 10
"""The latest stops a person asked for, shown."""
MAX_RUNS = 10
"""The next scheduled runs shown."""
RECENT = 500
"""Recent operations read to find a person's own latest."""


@dataclass(frozen=True)
class NextRun:
    """A schedule's next run, and the resources of the person's it would stop."""

    schedule: str
    at: dt.datetime
    resources: tuple[str, ...]


@dataclass
class World:
    user: str
    now: dt.datetime
    locks: list[BotLock] = field(default_factory=list)
    leases: list[Lease] = field(default_factory=list)
    asked: list[Operation] = field(default_factory=list)
    approvals: list[Operation] = field(default_factory=list)
    runs: list[NextRun] = field(default_factory=list)
    savings: Report | None = None

    @property
    def my_savings(self) -> Line | None:
        """Their own stops' share of this month's savings."""
        if self.savings is None:
            return None
        return next((p for p in self.savings.people if p.name == self.user), None)


async def world_of(stopbot: Stopbot, actor: Actor) -> World:
    """``actor``'s world now."""
    user = actor.id
    now = stopbot.clock()
    store = stopbot.store
    world = World(user=user, now=now)
    world.locks = sorted(
        (lock for lock in store.active_locks() if lock.owner == user),
        key=lambda lock: lock.expires_at,
    )
    world.leases = [lease for lease in store.leases() if lease.owner == user]
    world.asked = [op for op in store.recent_operations(limit=RECENT) if op.requested_by == user][
        :MAX_ASKED
    ]
    for op_id in store.pending_approvals():
        checked = await stopbot.approvals.can_decide(op_id, actor)
        if checked.ok and checked.operation is not None:
            world.approvals.append(checked.operation)
    mine = {lock.resource for lock in world.locks} | {
        r.name for r in stopbot.config.resources if user in r.allowed_users
    }
    engine = stopbot.engine
    for schedule in engine.schedules().values():
        touched = tuple(r.name for r in engine.selected(schedule) if r.name in mine)
        if touched:
            world.runs.append(NextRun(schedule.name, engine.next_fire(schedule, now), touched))
    world.runs = sorted(world.runs, key=lambda run: (run.at, run.schedule))[:MAX_RUNS]
    since, _ = parse_period("month", now)
    world.savings = await stopbot.savings.report(since)
    return world
