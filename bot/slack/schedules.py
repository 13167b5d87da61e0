"""Schedules in Slack: the notifier that posts warnings, summaries and drift, the
``/stop schedule`` and ``/stop dry-run`` commands, and their buttons."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from pydantic import ValidationError
from slack_sdk.errors import SlackApiError

from bot.config import ScheduleConfig
from bot.durations import format_duration, parse_duration
from bot.models import ScheduleRun
from bot.schedules import Change, PlanItem, RunReport, ScheduleEngine, ScheduleError
from bot.slack import commands
from bot.slack import schedule_views as sv
from bot.slack.progress import transient
from bot.slack.replies import tell
from bot.slack.views import message, when
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
        self, channel: str | None, text: str, blocks: list[dict[str, Any]]
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

    async def announce(self, schedule: ScheduleConfig, fire: dt.datetime, text: str) -> bool:
        return bool(await self._post(schedule.channel, *message(text)))

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
            await respond(text=str(exc), response_type="ephemeral")

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
            await respond(text=text, blocks=blocks, response_type="ephemeral")
            return
        if action == "exceptions":
            text, blocks = sv.exceptions(self.bot.store.active_exceptions(), engine.clock())
            await respond(text=text, blocks=blocks, response_type="ephemeral")
            return
        name = cmd.name or ""
        if action in {"add", "remove"} and not self.bot.service.policy.is_admin(user):
            await respond(text=f"Only admins can {action} schedules.", response_type="ephemeral")
            return
        if action == "add":
            await self._add(cmd, user, channel, respond)
            return
        schedule = engine.schedule(name)
        if action == "dry-run":
            text, blocks = sv.dry_run(schedule, await engine.read_plan(schedule))
            await respond(text=text, blocks=blocks, response_type="ephemeral")
            return
        refusal = await self._may_act(user, schedule)
        if refusal is not None:
            await respond(
                text=f"You cannot {action} `{name}`: {refusal}.", response_type="ephemeral"
            )
            return
        if action == "remove":
            engine.remove(name, user)
            self.bot.rebuild_schedules()
            await respond(text=f"Removed the schedule `{name}`.", response_type="ephemeral")
        elif action == "run":
            plan = await engine.read_plan(schedule, started_by=user)
            text, blocks = sv.run_confirmation(schedule, plan)
            await respond(text=text, blocks=blocks, response_type="ephemeral")
        elif action == "skip":
            change = engine.skip(name, user)
            if change.repeat:
                await respond(text=_already_skipped(name, change), response_type="ephemeral")
                return
            await respond(
                text=f"The next `{name}` run ({_at(change.fire)}) will be skipped.",
                response_type="in_channel",
            )
        elif action == "snooze" and cmd.duration is not None:
            change = engine.snooze(name, cmd.duration, user)
            if change.repeat:
                await respond(text=_already_snoozed(name, change), response_type="ephemeral")
                return
            await respond(
                text=f"<@{user}> snoozed `{name}`: it now runs at {_at(change.at or change.fire)}.",
                response_type="in_channel",
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
            await respond(text=f"Cannot add `{cmd.name}`: {reasons}.", response_type="ephemeral")
            return
        self.engine.add(schedule, user)
        self.bot.rebuild_schedules()
        await respond(
            text=f"Added `{schedule.name}`: `{schedule.cron}` in {schedule.timezone}, "
            f"next run {_at(self.engine.upcoming(schedule))}; warnings and summaries here.",
            response_type="in_channel",
        )

    # -- buttons --------------------------------------------------------------------------

    async def _schedule_for(self, name: str, user: str, respond: Respond) -> ScheduleConfig | None:
        try:
            schedule = self.engine.schedule(name)
        except ScheduleError as exc:
            await respond(text=str(exc), response_type="ephemeral", replace_original=False)
            return None
        refusal = await self._may_act(user, schedule)
        if refusal is not None:
            await respond(
                text=f"You cannot change `{name}`: {refusal}.",
                response_type="ephemeral",
                replace_original=False,
            )
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
        already: Callable[[str, Change], str],
    ) -> Change | None:
        """Skip or Snooze, on the fire the button carries; None once the clicker is told why
        nothing changed (not theirs to do, too late, done already)."""
        schedule = await self._schedule_for(name, user, respond)
        if schedule is None:
            return None
        try:
            made = change(self._button_fire(schedule, fire))
        except ScheduleError as exc:
            await tell(respond, str(exc))
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
        await respond(
            text=f"<@{user}> skipped tonight's `{name}` run ({_at(change.fire)}).",
            response_type="in_channel",
            replace_original=False,
        )

    async def on_snooze(self, body: dict[str, Any], respond: Respond) -> None:
        value, user = self.bot.action_of(body)
        name, [duration], fire = sv.read_fire_value(value, 1)
        delay = parse_duration(duration or "1h")
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
        await respond(
            text=f"<@{user}> snoozed `{name}` by {format_duration(delay)}: "
            f"it now runs at {_at(change.at or change.fire)}.",
            response_type="in_channel",
            replace_original=False,
        )

    async def on_keep(self, body: dict[str, Any], respond: Respond) -> None:
        action = body["actions"][0]
        user = str(body["user"]["id"])
        choice = sv.keep_value(str(action["selected_option"]["value"]))
        name, resource, code = str(choice["s"]), str(choice["r"]), str(choice["d"])
        if code not in {c for c, _ in sv.KEEP_CHOICES}:  # only what the menu offers
            await tell(
                respond,
                "That is not one of the Keep choices: nothing was changed. Pick one from the menu.",
            )
            return
        decision = await self.bot.service.policy.may_stop(user, resource)
        if not decision.allowed:
            await respond(
                text=f"You cannot keep {resource}: {decision.reason}.",
                response_type="ephemeral",
                replace_original=False,
            )
            return
        try:
            schedule = self.engine.schedule(name)
            now = self.engine.clock()
            if code == "next":
                tonight = self.engine.upcoming(schedule)
                until = self.engine.next_fire(schedule, tonight)
            else:
                until = now + dt.timedelta(hours=int(code.removesuffix("h")))
            self.engine.keep(name, resource, until, user)
        except (ScheduleError, ValueError) as exc:
            await respond(text=str(exc), response_type="ephemeral", replace_original=False)
            return
        await respond(
            text=f"<@{user}> keeps {resource} out of `{name}` until {_at(until)}.",
            response_type="in_channel",
            replace_original=False,
        )

    async def on_run_confirm(self, body: dict[str, Any], respond: Respond) -> None:
        name, user = self.bot.action_of(body)
        if await self._schedule_for(name, user, respond) is None:
            return
        if not self.bot.store.claim(
            f"schedule-run-click:{body.get('container', {}).get('message_ts')}:{name}"
        ):
            await respond(
                text="This run was already started.",
                response_type="ephemeral",
                replace_original=False,
            )
            return
        try:
            await self.engine.run_now(name, user)
        except ScheduleError as exc:
            await respond(text=str(exc), response_type="ephemeral", replace_original=False)
            return
        await respond(
            text=f"Running `{name}` now; the summary follows in its channel.", replace_original=True
        )

    async def on_run_cancel(self, body: dict[str, Any], respond: Respond) -> None:
        name, _ = self.bot.action_of(body)
        await respond(text=f"Not running `{name}`.", replace_original=True)

    async def on_drift_stop(self, body: dict[str, Any], respond: Respond) -> None:
        resource, user = self.bot.action_of(body)
        preview = await self.bot.service.prepare(
            resource,
            await self.bot.actor(user),
            source="slack",
            reason="drift: running again",
            channel=body.get("channel", {}).get("id"),
        )
        await self.bot.answer_preview(preview, respond, user)

    async def on_drift_leave(self, body: dict[str, Any], respond: Respond) -> None:
        data = json.loads(str(body["actions"][0]["value"]))
        user = str(body["user"]["id"])
        # Dismissing the report takes "Stop again" away from everyone: only someone who
        # could stop it decides to leave it running.
        decision = await self.bot.service.policy.may_stop(user, str(data["r"]))
        if not decision.allowed:
            await tell(respond, f"You cannot decide for {data['r']}: {decision.reason}.")
            return
        self.bot.store.audit(
            user, "schedule.drift_accepted", resource=str(data["r"]), detail={"schedule": data["s"]}
        )
        await respond(text=f"<@{user}> leaves {data['r']} running.", replace_original=True)


_at = when


def _already_skipped(name: str, change: Change) -> str:
    by = f" by <@{change.by}>" if change.by else ""
    return f"The `{name}` run due {_at(change.fire)} is already skipped{by}: nothing was changed."


def _already_snoozed(name: str, change: Change) -> str:
    return (
        f"The `{name}` run due {_at(change.fire)} is already snoozed to "
        f"{_at(change.at or change.fire)}: nothing was changed."
    )
