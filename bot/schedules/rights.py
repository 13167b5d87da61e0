"""Who may do what to schedules, and doing it for them: every request a face carries
(add, remove, run now, skip, snooze, keep a resource out, leave a drifted one running)
checked against who asks, then done by the engine.

The rights: admins add and remove schedules (those from stopbot.yaml are removed there);
acting on a schedule's runs (run now, skip, snooze) is for admins and for anyone allowed to
stop every resource it selects; keeping one resource out of a run, or leaving one that
drifted back running, for anyone allowed to stop that resource. Each refusal is a
:class:`~bot.schedules.facts.ScheduleError` that says why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from bot.config import ScheduleConfig
from bot.models import InUseQuestion, ScheduleRun
from bot.policy import Policy
from bot.schedules.engine import ScheduleEngine
from bot.schedules.facts import Change, PlanItem, ScheduleError
from bot.schedules.in_use import KEEP, KEEP_FOR
from bot.store import Store
from bot.text import Text, say

__all__ = ["ScheduleRights"]


class ScheduleRights:
    """The requests people make of schedules, each checked (see the module's docstring)."""

    def __init__(self, engine: ScheduleEngine, policy: Policy, changed: Callable[[], None]) -> None:
        """``changed``: called once the set of schedules changed (the scheduler's jobs
        follow it)."""
        self.engine = engine
        self.policy = policy
        self.store: Store = engine.store
        self.changed = changed

    async def refusal(self, user: str, schedule: ScheduleConfig) -> Text | None:
        """None when ``user`` may act on ``schedule``'s runs: an admin, or someone allowed
        to stop every resource it selects. Else why not."""
        if self.policy.is_admin(user):
            return None
        for resource in self.engine.selected(schedule):
            decision = await self.policy.may_stop(user, resource)
            if not decision.allowed:
                return say("you may not stop {}, which `{}` stops", resource.name, schedule.name)
        return None

    async def _may_act(self, user: str, name: str, verb: str) -> ScheduleConfig:
        """``name``'s definition, once ``user`` may act on it; else ScheduleError, saying
        "You cannot ``verb`` it" and why."""
        schedule = self.engine.schedule(name)
        refusal = await self.refusal(user, schedule)
        if refusal is not None:
            raise ScheduleError(say("You cannot {} `{}`: {}.", verb, name, refusal))
        return schedule

    def _admin(self, user: str, verb: str) -> None:
        if not self.policy.is_admin(user):
            raise ScheduleError(say("Only admins can {} schedules.", verb))

    # -- definitions ------------------------------------------------------------------

    def add(
        self,
        user: str,
        name: str,
        cron: str,
        timezone: str,
        selector: str,
        *,
        channel: str | None = None,
        warn_before: dt.timedelta | None = None,
    ) -> ScheduleConfig:
        """An admin adds a schedule: ``selector`` is resource names, comma separated, or
        ``tag:key=value``; its messages go to ``channel``. Raises ScheduleError, saying
        what is wrong, for a definition that is not valid."""
        self._admin(user, "add")
        if selector.startswith("tag:"):
            key, _, value = selector[4:].partition("=")
            select: dict[str, Any] = {"tags": {key: value}}
        else:
            select = {"resources": [r for r in selector.split(",") if r]}
        definition: dict[str, Any] = {
            "name": name,
            "cron": cron,
            "timezone": timezone,
            "select": select,
            "channel": channel,
        }
        if warn_before is not None:
            definition["warn_before"] = warn_before
        try:
            schedule = ScheduleConfig.model_validate(definition)
        except ValidationError as exc:
            reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise ScheduleError(say("Cannot add `{}`: {}.", name, reasons)) from None
        self.engine.add(schedule, user)
        self.changed()
        return schedule

    async def remove(self, user: str, name: str) -> None:
        """An admin removes a schedule added from a face."""
        self._admin(user, "remove")
        await self._may_act(user, name, "remove")
        self.engine.remove(name, user)
        self.changed()

    # -- runs --------------------------------------------------------------------------

    async def plan_run(self, user: str, name: str) -> tuple[ScheduleConfig, list[PlanItem]]:
        """What running ``name`` now for ``user`` would do, for them to confirm."""
        schedule = await self._may_act(user, name, "run")
        return schedule, await self.engine.read_plan(schedule, started_by=user)

    async def run_now(self, user: str, name: str, *, once: str | None = None) -> ScheduleRun:
        """``user`` runs ``name`` now, having confirmed its plan. ``once``: what names this
        confirmation (clicked twice, it starts one run)."""
        await self._may_act(user, name, "change")
        if once is not None and not self.store.claim(f"schedule-run-click:{once}"):
            raise ScheduleError(Text("This run was already started."))
        return await self.engine.run_now(name, user)

    async def skip(
        self, user: str, name: str, fire: dt.datetime | None = None, *, shown: bool = False
    ) -> Change:
        """``user`` skips ``fire``'s run, else the next run (see :meth:`ScheduleEngine.skip`).
        ``shown``: from a message that showed the run (see :meth:`_shown_fire`)."""
        if shown:
            await self._may_act(user, name, "change")
            fire = self._shown_fire(name, fire)
        else:
            await self._may_act(user, name, "skip")
        return self.engine.skip(name, user, fire)

    async def snooze(
        self,
        user: str,
        name: str,
        duration: dt.timedelta,
        fire: dt.datetime | None = None,
        *,
        shown: bool = False,
    ) -> Change:
        """``user`` snoozes ``fire``'s run, else the next run, by ``duration`` (see
        :meth:`ScheduleEngine.snooze`). ``shown``: as for :meth:`skip`."""
        if shown:
            await self._may_act(user, name, "change")
            fire = self._shown_fire(name, fire)
        else:
            await self._may_act(user, name, "snooze")
        return self.engine.snooze(name, duration, user, fire)

    def _shown_fire(self, name: str, fire: dt.datetime | None) -> dt.datetime:
        """The fire a message showed, for Skip and Snooze: the one it carries, else (a
        message posted before buttons carried it) the next fire, skipped or not, so that
        a second click of such a button finds it skipped too."""
        return fire or self.engine.next_run(self.engine.schedule(name), counting_skips=False)[0]

    # -- resources -----------------------------------------------------------------------

    async def keep(self, user: str, name: str, resource: str, *, hours: int | None) -> dt.datetime:
        """``user`` keeps ``resource`` out of ``name``'s runs for ``hours``, or (None)
        until the run after the next one; returns until when."""
        decision = await self.policy.may_stop(user, self.engine.config.resource(resource))
        if not decision.allowed:
            raise ScheduleError(say("You cannot keep {}: {}.", resource, decision.reason))
        schedule = self.engine.schedule(name)
        if hours is None:
            until = self.engine.next_fire(schedule, self.engine.upcoming(schedule))
        else:
            until = self.engine.clock() + dt.timedelta(hours=hours)
        self.engine.keep(name, resource, until, user)
        return until

    async def answer_in_use(
        self, user: str, name: str, at: dt.datetime, resource: str, answer: str
    ) -> tuple[InUseQuestion, bool]:
        """``user`` answers the warning's question about ``resource`` (in use before
        ``name``'s run at ``at``): ``keep`` it (out of the schedule's runs for
        :data:`~bot.schedules.in_use.KEEP_FOR`) or ``stop`` it anyway. Anyone allowed to
        stop it answers, once: returns the question as it stands and whether this answer
        counts (False: someone answered first; nothing changed)."""
        decision = await self.policy.may_stop(user, self.engine.config.resource(resource))
        if not decision.allowed:
            raise ScheduleError(say("You cannot decide for {}: {}.", resource, decision.reason))
        self.engine.schedule(name)
        question, won = self.engine.in_use.answer(name, at, resource, answer, user)
        if won and answer == KEEP:
            self.engine.keep(name, resource, self.engine.clock() + KEEP_FOR, user)
        return question, won

    async def leave_drifted(self, user: str, name: str, resource: str) -> None:
        """``user`` leaves ``resource``, found running again after ``name`` stopped it,
        running: dismissing the report takes "stop it again" away from everyone, so only
        someone who could stop it decides."""
        decision = await self.policy.may_stop(user, self.engine.config.resource(resource))
        if not decision.allowed:
            raise ScheduleError(say("You cannot decide for {}: {}.", resource, decision.reason))
        self.store.audit(
            user, "schedule.drift_accepted", resource=resource, detail={"schedule": name}
        )
