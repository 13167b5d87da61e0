"""Schedules in Slack: the notifier that posts warnings, summaries and drift, the
``/stop schedule`` and ``/stop dry-run`` commands, and their buttons."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from pydantic import ValidationError
from slack_sdk.errors import SlackApiError

from bot.config import ScheduleConfig, UnknownResourceError
from bot.durations import format_duration, parse_duration
from bot.models import ScheduleRun
from bot.schedules import Change, PlanItem, RunReport, ScheduleEngine, ScheduleError
from bot.slack import buttons, commands
from bot.slack import schedule_views as sv
from bot.slack.progress import transient
from bot.slack.replies import replace, tell, tell_channel
from bot.slack.views import message
from bot.slack.wording import Mrkdwn, code, md, mrkdwn, when
from bot.text import Person, Text
from providers.base import ResourceStatus

if TYPE_CHECKING:
    from bot.slack.app import Respond, SlackBot

__all__ = ["ScheduleHandlers", "SlackScheduleNotifier"]

log = logging.getLogger(__name__)


class SlackScheduleNotifier:
    """Shows schedules in their channel: each call a delivery from the outbox, which says
    when (the run summary is one message, updated at most once per
    ``scheduling.summary_interval`` and at the end). False: Slack could not be reached or
    refused for now, try again later."""

    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot

    async def _post(
        self, channel: str | None, text: Mrkdwn, blocks: list[dict[str, Any]]
    ) -> tuple[str, str] | bool:
        """Post; (channel, ts), or whether it is done with (no channel, or a refusal
        trying again would not change)."""
        if not channel:
            log.info("schedule message with no channel", extra={"text": text})
            return True
        try:
            posted = await self.bot.client.chat_postMessage(
                channel=channel, text=text, blocks=blocks
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            return _failed("schedule message failed", exc, channel=channel)
        return str(posted["channel"]), str(posted["ts"])

    async def warn(
        self, schedule: ScheduleConfig, at: dt.datetime, plan: list[PlanItem], *, fire: dt.datetime
    ) -> bool:
        return bool(await self._post(schedule.channel, *sv.warning(schedule, at, plan, fire)))

    async def announce(self, schedule: ScheduleConfig, fire: dt.datetime, text: Text) -> bool:
        return bool(await self._post(schedule.channel, *message(mrkdwn(text))))

    async def drift(
        self, schedule: ScheduleConfig, run: ScheduleRun, resource: str, status: ResourceStatus
    ) -> bool:
        return bool(await self._post(schedule.channel, *sv.drift(schedule, resource, status.state)))

    async def summary(self, report: RunReport) -> bool:
        run_id = report.run.id
        text, blocks = sv.summary(report)
        run = self.bot.store.run(run_id) or report.run
        if not (run.message_ts and run.channel):
            posted = await self._post(report.schedule.channel, text, blocks)
            if isinstance(posted, tuple):
                self.bot.store.set_run_message(run_id, *posted)
                return True
            return posted
        try:
            await self.bot.client.chat_update(
                channel=run.channel, ts=run.message_ts, text=text, blocks=blocks
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            return _failed("summary update failed", exc, run=run_id)
        return True


def _failed(what: str, exc: Exception, **about: str) -> bool:
    """Log a Slack failure; whether it is done with (False: worth another try later)."""
    error = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
    log.warning(what, extra={**about, "error": error})
    return not transient(exc)


class ScheduleHandlers:
    def __init__(self, bot: SlackBot, engine: ScheduleEngine) -> None:
        self.bot = bot
        self.engine = engine

    def register(self) -> None:
        action = self.bot.action
        action(sv.SKIP, self.on_skip)
        action(sv.SNOOZE, self.on_snooze)
        action(f"{sv.KEEP}:", self.on_keep, prefix=True)
        action(sv.RUN_CONFIRM, self.on_run_confirm)
        action(sv.RUN_CANCEL, self.on_run_cancel)
        action(sv.DRIFT_STOP, self.on_drift_stop)
        action(sv.DRIFT_LEAVE, self.on_drift_leave)

    # -- who may ------------------------------------------------------------------------

    async def _may_act(self, user: str, schedule: ScheduleConfig) -> str | None:
        """None when ``user`` may skip, snooze or run ``schedule``: an admin, or someone
        allowed to stop every resource it selects. Else why not."""
        if self.bot.service.policy.is_admin(user):
            return None
        for resource in self.engine.selected(schedule):
            decision = await self.bot.service.policy.may_stop(user, resource.name)
            if not decision.allowed:
                return f"you may not stop {resource.name}, which `{schedule.name}` stops"
        return None

    # -- commands -------------------------------------------------------------------------

    async def command(
        self, cmd: commands.ScheduleCommand, user: str, channel: str | None, respond: Respond
    ) -> None:
        try:
            await self._command(cmd, user, channel, respond)
        except ScheduleError as exc:
            await tell(respond, mrkdwn(exc.text))

    async def _command(
        self, cmd: commands.ScheduleCommand, user: str, channel: str | None, respond: Respond
    ) -> None:
        engine, action = self.engine, cmd.action
        if action == "list":
            sources = self.bot.store.schedule_sources()
            rows = [
                (
                    s,
                    engine.upcoming(s),
                    engine.plan(s),
                    "stopbot.yaml" if sources.get(name) == "config" else "Slack",
                )
                for name, s in sorted(engine.schedules().items())
            ]
            text, blocks = sv.listing(rows)
            await tell(respond, text, blocks)
            return
        if action == "exceptions":
            text, blocks = sv.exceptions(self.bot.store.active_exceptions(), engine.clock())
            await tell(respond, text, blocks)
            return
        name = cmd.name or ""
        if action in {"add", "remove"} and not self.bot.service.policy.is_admin(user):
            await tell(respond, md("Only admins can {} schedules.", action))
            return
        if action == "add":
            await self._add(cmd, user, channel, respond)
            return
        schedule = engine.schedule(name)
        if action == "dry-run":
            text, blocks = sv.dry_run(schedule, await engine.read_plan(schedule))
            await tell(respond, text, blocks)
            return
        refusal = await self._may_act(user, schedule)
        if refusal is not None:
            await tell(respond, md("You cannot {} {}: {}.", action, code(name), refusal))
            return
        if action == "remove":
            engine.remove(name, user)
            self.bot.stopbot.rebuild_schedules()
            await tell(respond, md("Removed the schedule {}.", code(name)))
        elif action == "run":
            plan = await engine.read_plan(schedule, started_by=user)
            await tell(respond, *sv.run_confirmation(schedule, plan))
        elif action == "skip":
            change = engine.skip(name, user)
            if change.repeat:
                await tell(respond, _already_skipped(name, change))
                return
            await tell_channel(
                respond, md("The next {} run ({}) will be skipped.", code(name), _at(change.fire))
            )
        elif action == "snooze" and cmd.duration is not None:
            change = engine.snooze(name, cmd.duration, user)
            if change.repeat:
                await tell(respond, _already_snoozed(name, change))
                return
            await tell_channel(
                respond,
                md(
                    "{} snoozed {}: it now runs at {}.",
                    Person(user),
                    code(name),
                    _at(change.at or change.fire),
                ),
            )

    async def _add(
        self, cmd: commands.ScheduleCommand, user: str, channel: str | None, respond: Respond
    ) -> None:
        selector = cmd.selector or ""
        if selector.startswith("tag:"):
            key, _, value = selector[4:].partition("=")
            select: dict[str, Any] = {"tags": {key: value}}
        else:
            select = {"resources": [r for r in selector.split(",") if r]}
        definition: dict[str, Any] = {
            "name": cmd.name,
            "cron": cmd.cron,
            "timezone": cmd.timezone,
            "select": select,
            "channel": channel,
        }
        if cmd.warn_before is not None:
            definition["warn_before"] = cmd.warn_before
        try:
            schedule = ScheduleConfig.model_validate(definition)
        except ValidationError as exc:
            reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            await tell(respond, md("Cannot add {}: {}.", code(cmd.name or ""), reasons))
            return
        self.engine.add(schedule, user)
        self.bot.stopbot.rebuild_schedules()
        await tell_channel(
            respond,
            md(
                "Added {}: {} in {}, next run {}; warnings and summaries here.",
                code(schedule.name),
                code(schedule.cron),
                schedule.timezone,
                _at(self.engine.upcoming(schedule)),
            ),
        )

    # -- buttons --------------------------------------------------------------------------

    async def _schedule_for(self, name: str, user: str, respond: Respond) -> ScheduleConfig | None:
        try:
            schedule = self.engine.schedule(name)
        except ScheduleError as exc:
            await tell(respond, mrkdwn(exc.text))
            return None
        refusal = await self._may_act(user, schedule)
        if refusal is not None:
            await tell(respond, md("You cannot change {}: {}.", code(name), refusal))
            return None
        return schedule

    def _button_fire(self, schedule: ScheduleConfig, fire: dt.datetime | None) -> dt.datetime:
        """The fire a Skip or Snooze button acts on: the one it carries, else (a message
        posted before buttons carried it) the next fire, skipped or not, so that a second
        click of such a button finds it skipped too."""
        return fire or self.engine.next_run(schedule, counting_skips=False)[0]

    async def _from_button(
        self,
        name: str,
        fire: dt.datetime | None,
        user: str,
        respond: Respond,
        change: Callable[[dt.datetime], Change],
        already: Callable[[str, Change], Mrkdwn],
    ) -> Change | None:
        """Skip or Snooze, on the fire the button carries; None once the clicker is told why
        nothing changed (not theirs to do, too late, done already)."""
        schedule = await self._schedule_for(name, user, respond)
        if schedule is None:
            return None
        try:
            made = change(self._button_fire(schedule, fire))
        except ScheduleError as exc:
            await tell(respond, mrkdwn(exc.text))
            return None
        if made.repeat:
            await tell(respond, already(name, made))
            return None
        return made

    async def on_skip(self, body: dict[str, Any], respond: Respond) -> None:
        value, user = self.bot.action_of(body)
        name, _, fire = sv.read_fire_value(value)
        change = await self._from_button(
            name,
            fire,
            user,
            respond,
            lambda at: self.engine.skip(name, user, at),
            _already_skipped,
        )
        if change is None:
            return
        await tell_channel(
            respond,
            md("{} skipped tonight's {} run ({}).", Person(user), code(name), _at(change.fire)),
        )

    async def on_snooze(self, body: dict[str, Any], respond: Respond) -> None:
        value, user = self.bot.action_of(body)
        name, [duration], fire = sv.read_fire_value(value, 1)
        if duration not in {sv.SNOOZE_BY, ""}:
            raise buttons.StaleButton
        delay = parse_duration(duration or sv.SNOOZE_BY)
        change = await self._from_button(
            name,
            fire,
            user,
            respond,
            lambda at: self.engine.snooze(name, delay, user, at),
            _already_snoozed,
        )
        if change is None:
            return
        await tell_channel(
            respond,
            md(
                "{} snoozed {} by {}: it now runs at {}.",
                Person(user),
                code(name),
                format_duration(delay),
                _at(change.at or change.fire),
            ),
        )

    def _known(self, resource: str) -> str:
        """The name of a configured resource a button names (else the button is stale)."""
        try:
            return self.bot.config.resource(resource).name
        except UnknownResourceError:
            raise buttons.StaleButton from None

    async def on_keep(self, body: dict[str, Any], respond: Respond) -> None:
        user = buttons.clicker(body)
        choice = buttons.fields(buttons.selected(body), "s", "r", "d")
        name, resource, kept = choice["s"], self._known(choice["r"]), choice["d"]
        if kept not in {c for c, _ in sv.KEEP_CHOICES}:  # only what the menu offers
            await tell(
                respond,
                Mrkdwn(
                    "That is not one of the Keep choices: nothing was changed. Pick one from "
                    "the menu."
                ),
            )
            return
        decision = await self.bot.service.policy.may_stop(user, resource)
        if not decision.allowed:
            await tell(respond, md("You cannot keep {}: {}.", resource, decision.reason))
            return
        try:
            schedule = self.engine.schedule(name)
            now = self.engine.clock()
            if kept == "next":
                tonight = self.engine.upcoming(schedule)
                until = self.engine.next_fire(schedule, tonight)
            else:
                until = now + dt.timedelta(hours=int(kept.removesuffix("h")))
            self.engine.keep(name, resource, until, user)
        except ScheduleError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        await tell_channel(
            respond,
            md("{} keeps {} out of {} until {}.", Person(user), resource, code(name), _at(until)),
        )

    async def on_run_confirm(self, body: dict[str, Any], respond: Respond) -> None:
        name, user = self.bot.action_of(body)
        if await self._schedule_for(name, user, respond) is None:
            return
        container = body.get("container")
        message_ts = container.get("message_ts") if isinstance(container, dict) else None
        if not self.bot.store.claim(f"schedule-run-click:{message_ts}:{name}"):
            await tell(respond, Mrkdwn("This run was already started."))
            return
        try:
            await self.engine.run_now(name, user)
        except ScheduleError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        await replace(
            respond, md("Running {} now; the summary follows in its channel.", code(name))
        )

    async def on_run_cancel(self, body: dict[str, Any], respond: Respond) -> None:
        name, _ = self.bot.action_of(body)
        await replace(respond, md("Not running {}.", code(name)))

    async def on_drift_stop(self, body: dict[str, Any], respond: Respond) -> None:
        resource, user = self.bot.action_of(body)
        channel = body.get("channel")
        preview = await self.bot.service.prepare(
            self._known(resource),
            await self.bot.actor(user),
            source="slack",
            reason="drift: running again",
            channel=channel.get("id") if isinstance(channel, dict) else None,
        )
        await self.bot.answer_preview(preview, respond, user)

    async def on_drift_leave(self, body: dict[str, Any], respond: Respond) -> None:
        data = buttons.fields(buttons.value(body), "s", "r")
        resource = self._known(data["r"])
        user = buttons.clicker(body)
        # Dismissing the report takes "Stop again" away from everyone: only someone who
        # could stop it decides to leave it running.
        decision = await self.bot.service.policy.may_stop(user, resource)
        if not decision.allowed:
            await tell(respond, md("You cannot decide for {}: {}.", resource, decision.reason))
            return
        self.bot.store.audit(
            user, "schedule.drift_accepted", resource=resource, detail={"schedule": data["s"]}
        )
        await replace(respond, md("{} leaves {} running.", Person(user), resource))


_at = when


def _already_skipped(name: str, change: Change) -> Mrkdwn:
    by = md(" by {}", Person(change.by)) if change.by else Mrkdwn()
    return md(
        "The {} run due {} is already skipped{}: nothing was changed.",
        code(name),
        _at(change.fire),
        by,
    )


def _already_snoozed(name: str, change: Change) -> Mrkdwn:
    return md(
        "The {} run due {} is already snoozed to {}: nothing was changed.",
        code(name),
        _at(change.fire),
        _at(change.at or change.fire),
    )
