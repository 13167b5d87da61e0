"""'Is anyone using it?': before a scheduled stop, signs of live use turn the silent stop of a
resource into a question.

At the warning, the resources the run would stop are read for signs of use
(:meth:`~providers.base.Provider.usage`: a Qovery deployment within
``scheduling.deployed_within``, a Feldera pipeline still ingesting); each one in use gets a
question, recorded once in the store (a warning delivered again asks nothing new), that the
face shows with **Keep 2h** and **Stop anyway**. Each question is answered once (a
compare-and-set: a double click or a retried request finds it answered). At the run, an
answer decides; with none, the schedule's ``in_use`` default does, and the summary says
which. Wake leases and Keep in force are signs of use too: the plan skips those resources
already (:meth:`~bot.schedules.definitions.Definitions.plan`), so they are not asked about.

Questions are keyed by the time the run happens (``at``: a regular fire, or the time a
snooze moved it to), which is the fire time of the run that reads them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from bot.config import ScheduleConfig
from bot.durations import format_duration
from bot.models import InUseQuestion
from bot.reads import READ_TIMEOUT
from bot.schedules.definitions import Definitions
from bot.schedules.facts import Outcome, PlanItem, ScheduleError
from bot.text import Person, Text, say
from providers.base import Resource, UsageSignal

__all__ = ["KEEP", "KEEP_FOR", "STOP", "InUse", "signal_text"]

log = logging.getLogger(__name__)

KEEP = "keep"
STOP = "stop"
KEEP_FOR = dt.timedelta(hours=2)
"""How long **Keep 2h** keeps a resource out of the schedule's runs."""

USAGE_TIMEOUT = READ_TIMEOUT + 5.0
NOTED_RUNS = 8  # runs whose questions are kept for their summaries' notes
"""Seconds the usage reads of one warning may take (a Feldera read is two, apart)."""


class InUse:
    """The questions of one schedule engine: asked at warnings, decided at runs."""

    def __init__(self, definitions: Definitions) -> None:
        self.definitions = definitions
        self.settings = definitions.settings
        self.store = definitions.store
        self.clock = definitions.clock
        self.providers = definitions.service.providers
        self.sleep = definitions.service.sleep  # between two reads: the bot's clock
        # The questions of the runs being noted, read once a run (answers close when it
        # starts): a run of 10,000 read them 10,000 times.
        self._noted: dict[tuple[str, dt.datetime], dict[str, InUseQuestion]] = {}

    async def signals(self, resources: Sequence[Resource]) -> dict[str, list[UsageSignal]]:
        """The signs of use of each of ``resources`` that count now, by name (those with
        none left out): one bulk read per provider (:meth:`~providers.base.Provider.usages`),
        all at once, bounded in time; a read that fails or is too slow counts as no sign
        (the run then stops as it would have)."""
        now = self.clock()
        groups: dict[str, list[Resource]] = {}
        for resource in resources:
            if resource.provider in self.providers:
                groups.setdefault(resource.provider, []).append(resource)

        async def bulk(name: str, group: list[Resource]) -> dict[str, Any]:
            return dict(await self.providers[name].usages(group, sleep=self.sleep))

        try:
            answers = await asyncio.wait_for(
                asyncio.gather(
                    *(bulk(name, group) for name, group in groups.items()),
                    return_exceptions=True,
                ),
                USAGE_TIMEOUT,
            )
        except TimeoutError:
            log.warning("usage reads timed out", extra={"resources": len(resources)})
            return {}
        counted: dict[str, list[UsageSignal]] = {}
        for group, answer in zip(groups.values(), answers, strict=True):
            for resource in group:
                found = answer if isinstance(answer, BaseException) else answer.get(resource.id)
                if isinstance(found, BaseException) or found is None:
                    log.warning(
                        "usage read failed", extra={"resource": resource.name, "error": str(found)}
                    )
                    continue
                live = [s for s in found if self._counts(s, now)]
                if live:
                    counted[resource.name] = live
        return counted

    def _counts(self, signal: UsageSignal, now: dt.datetime) -> bool:
        """A deployment counts within ``deployed_within``; any other sign counts."""
        if signal.kind == "deployed":
            return signal.at is not None and now - signal.at <= self.settings.deployed_within
        return True

    async def ask(
        self, schedule: ScheduleConfig, at: dt.datetime, plan: list[PlanItem]
    ) -> list[PlanItem]:
        """Ask about each resource ``plan`` would stop that is in use (once per run: asked
        already, the recorded question stands, and nothing is read again), and mark those
        items with their signs (``in_use``) for the warning to show."""
        asked = {q.resource: q for q in self.store.in_use_questions(schedule.name, at)}
        selected = {r.name: r for r in self.definitions.selected(schedule)}
        unread = [selected[i.resource] for i in plan if i.stop and i.resource in selected]
        if not asked and unread:
            for name, signals in (await self.signals(unread)).items():
                self.store.ask_in_use(
                    schedule.name, at, name, [s.model_dump(mode="json") for s in signals]
                )
            asked = {q.resource: q for q in self.store.in_use_questions(schedule.name, at)}
        return mark(plan, asked)

    def answer(
        self, schedule: str, at: dt.datetime, resource: str, answer: str, actor: str
    ) -> tuple[InUseQuestion, bool]:
        """``actor`` answers the question about ``resource``; returns it as it stands and
        whether this answer is the one that counts. Raises ScheduleError when no such
        question was asked (a stale or forged button), or the run has started."""
        run = self.store.run_at(schedule, at)
        if run is not None:
            raise ScheduleError(
                say("The {} run has already started: nothing was changed.", schedule)
            )
        question, won = self.store.answer_in_use(schedule, at, resource, answer, actor)
        if question is None:
            raise ScheduleError(
                say("Nobody asked about {} before that {} run.", resource, schedule)
            )
        return question, won

    def decide(self, schedule: ScheduleConfig, at: dt.datetime, plan: list[PlanItem]) -> None:
        """At the run: each question's answer, else the schedule's ``in_use`` default,
        decides whether the resource it is about is stopped; the item says which."""
        questions = {q.resource: q for q in self.store.in_use_questions(schedule.name, at)}
        for item in plan:
            question = questions.get(item.resource)
            if question is None or not item.stop:
                continue
            why = signal_text(question)
            if question.answer == KEEP:
                item.stop, item.outcome = False, Outcome.IN_USE
                item.detail = say("kept by {}: in use, {}", Person(question.answered_by or ""), why)
            elif question.answer is None and schedule.in_use == KEEP:
                item.stop, item.outcome = False, Outcome.IN_USE
                item.detail = say("kept: in use, {}; nobody answered", why)

    def note(self, schedule: str, at: dt.datetime, resource: str) -> Text | None:
        """What the summary says of ``resource`` once stopped, if it was in use: stopped
        anyway, and on whose word."""
        questions = self._noted.get((schedule, at))
        if questions is None:
            if len(self._noted) >= NOTED_RUNS:
                self._noted.pop(next(iter(self._noted)))
            questions = {}
            for q in self.store.in_use_questions(schedule, at):
                questions.setdefault(q.resource, q)
            self._noted[(schedule, at)] = questions
        question = questions.get(resource)
        if question is None:
            return None
        if question.answer == STOP:
            return say(
                "stopped anyway by {}: in use, {}",
                Person(question.answered_by or ""),
                signal_text(question),
            )
        return say("stopped anyway: nobody answered (in use, {})", signal_text(question))

    async def preview(self, schedule: ScheduleConfig) -> list[PlanItem]:
        """The next run's plan as a dry run finds it now (nothing recorded, nothing sent):
        each resource's status and provider lock read in bulk, one call per provider
        account, bounded in time, and judged with its Stopbot lock by the lock rule a run
        applies (:meth:`~bot.schedules.definitions.Definitions.read_plan`); then each one
        it would still stop that is in use now marked: who its warning would ask about."""
        plan = await self.definitions.read_plan(schedule)
        selected = {r.name: r for r in self.definitions.selected(schedule)}
        now = self.clock()
        found = await self.signals(
            [selected[i.resource] for i in plan if i.stop and i.resource in selected]
        )
        for item in plan:
            signals = found.get(item.resource)
            if signals:
                item.in_use = Text("; ").join(_one(s, now) for s in signals)
        return plan


def mark(plan: list[PlanItem], questions: dict[str, InUseQuestion]) -> list[PlanItem]:
    """``plan`` with each item asked about marked with its signs, and its answer if any."""
    for item in plan:
        question = questions.get(item.resource)
        if question is not None and item.stop:
            item.in_use = signal_text(question)
            item.in_use_answer = question.answer
            item.in_use_by = question.answered_by
    return plan


def signal_text(question: InUseQuestion) -> Text:
    """The signs a question was asked for, as of when it was asked: "deployed 12m ago"."""
    signals = [UsageSignal.model_validate(s) for s in question.signals]
    return Text("; ").join(_one(s, question.asked_at) for s in signals)


def _one(signal: UsageSignal, now: dt.datetime) -> Text:
    if signal.kind == "deployed" and signal.at is not None:
        by = say(" by {}", signal.by) if signal.by else Text()
        return say("deployed {} ago{}", format_duration(now - signal.at), by)
    if signal.kind == "ingesting":
        return say("still ingesting ({})", signal.detail or "input moving")
    return say("{}{}", signal.kind, say(" ({})", signal.detail) if signal.detail else Text())
