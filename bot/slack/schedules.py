"""Schedules in Slack: the notifier that posts warnings, summaries and drift, the
``/stop schedule`` and ``/stop dry-run`` commands, and their buttons."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.config import ScheduleConfig, UnknownResourceError
from bot.durations import format_duration, parse_duration
from bot.models import ScheduleRun
from bot.savings import Report
from bot.schedules import Change, PlanItem, RunReport, ScheduleError
from bot.slack import buttons, commands, savings_views
from bot.slack import schedule_views as sv
from bot.slack.discovery_views import gone_note
from bot.slack.progress import delivered_before, delivery_tag, posted_before, tagged, transient
from bot.slack.replies import replace, replace_with, tell, tell_channel
from bot.slack.views import message
from bot.slack.wording import Mrkdwn, code, md, mrkdwn, when
from bot.text import Person, Text
from providers.base import ResourceStatus

if TYPE_CHECKING:
    from bot.slack.app import Respond, SlackBot
    from bot.stopbot import Stopbot

__all__ = ["ScheduleHandlers", "SlackScheduleNotifier"]

log = logging.getLogger(__name__)


RUN_EVENT = "stopbot_run"
"""The metadata event type of a run's summary (its payload names the run)."""


class SlackScheduleNotifier:
    """Shows schedules in their channel: each call a delivery from the outbox, which says
    when (the run summary is one message, updated at most once per
    ``scheduling.summary_interval`` and at the end). False: Slack could not be reached or
    refused for now, try again later."""

    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot

    async def _post(
        self,
        channel: str | None,
        text: Mrkdwn,
        blocks: list[dict[str, Any]],
        metadata: dict[str, Any] | None = None,
    ) -> tuple[str, str] | bool:
        """Post; (channel, ts), or whether it is done with (no channel, or a refusal
        trying again would not change)."""
        if not channel:
            log.info("schedule message with no channel", extra={"text": text})
            return True
        if metadata is None:  # a new message of its own: posted once across kills
            found = await delivered_before(self.bot.client, channel)
            if found is not None:
                return channel, found
            metadata = delivery_tag()
        try:
            posted = await self.bot.client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, metadata=metadata
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

    async def digest(self, channel: str, report: Report) -> bool:
        """The weekly savings digest (the savings notifier of :class:`~bot.stopbot.Face`)."""
        text, blocks = savings_views.report(report, "the last 7 days", title="Weekly savings")
        return bool(await self._post(channel, text, blocks))

    async def gone(self, channel: str, provider: str, gone: list[str]) -> bool:
        """Resources gone at a provider (the discovery notifier of
        :class:`~bot.stopbot.Face`)."""
        return bool(await self._post(channel, *message(gone_note(provider, gone))))

    async def summary(self, report: RunReport) -> bool:
        run_id = report.run.id
        text, blocks = sv.summary(report)
        run = self.bot.store.run(run_id) or report.run
        channel = report.schedule.channel
        if not (run.message_ts and run.channel) and channel:
            # Posted before a restart, its answer lost? Then that message is the summary.
            found = await posted_before(self.bot.client, channel, RUN_EVENT, "run", run_id)
            if found is not None:
                self.bot.store.set_run_message(run_id, channel, found)
                run = self.bot.store.run(run_id) or run
        if not (run.message_ts and run.channel):
            posted = await self._post(channel, text, blocks, tagged(RUN_EVENT, "run", run_id))
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
    """``/stop schedule`` and ``/stop dry-run``, and the buttons of schedule messages: read
    into the core's schedule rights (:class:`~bot.schedules.ScheduleRights`), whose
    answers and refusals are written here."""

    def __init__(self, bot: SlackBot, stopbot: Stopbot) -> None:
        self.bot = bot
        self.engine = stopbot.engine
        self.rights = stopbot.schedules

    def register(self) -> None:
        action = self.bot.action
        action(sv.SKIP, self.on_skip)
        action(sv.SNOOZE, self.on_snooze)
        action(f"{sv.KEEP}:", self.on_keep, prefix=True)
        action(sv.RUN_CONFIRM, self.on_run_confirm)
        action(sv.RUN_CANCEL, self.on_run_cancel)
        action(sv.DRIFT_STOP, self.on_drift_stop)
        action(sv.DRIFT_LEAVE, self.on_drift_leave)
        action(sv.IN_USE_KEEP, self.on_in_use_keep)
        action(sv.IN_USE_STOP, self.on_in_use_stop)

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
        engine, rights, action = self.engine, self.rights, cmd.action
        name = cmd.name or ""
        if action == "list":
            sources = self.bot.store.schedule_sources()
            rows = [
                (
                    s,
                    engine.upcoming(s),
                    engine.plan(s),
                    "stopbot.yaml" if sources.get(key) == "config" else "Slack",
                )
                for key, s in sorted(engine.schedules().items())
            ]
            text, blocks = sv.listing(rows)
            await tell(respond, text, blocks)
        elif action == "exceptions":
            text, blocks = sv.exceptions(self.bot.store.active_exceptions(), engine.clock())
            await tell(respond, text, blocks)
        elif action == "add":
            schedule = rights.add(
                user,
                name,
                cmd.cron or "",
                cmd.timezone or "",
                cmd.selector or "",
                channel=channel,
                warn_before=cmd.warn_before,
            )
            await tell_channel(
                respond,
                md(
                    "Added {}: {} in {}, next run {}; warnings and summaries here.",
                    code(schedule.name),
                    code(schedule.cron),
                    schedule.timezone,
                    _at(engine.upcoming(schedule)),
                ),
            )
        elif action == "remove":
            await rights.remove(user, name)
            await tell(respond, md("Removed the schedule {}.", code(name)))
        elif action == "dry-run":
            schedule = engine.schedule(name)
            text, blocks = sv.dry_run(schedule, await engine.read_plan(schedule))
            await tell(respond, text, blocks)
        elif action == "run":
            await tell(respond, *sv.run_confirmation(*await rights.plan_run(user, name)))
        elif action == "skip":
            change = await rights.skip(user, name)
            if change.repeat:
                await tell(respond, _already_skipped(name, change))
                return
            await tell_channel(
                respond, md("The next {} run ({}) will be skipped.", code(name), _at(change.fire))
            )
        elif action == "snooze" and cmd.duration is not None:
            change = await rights.snooze(user, name, cmd.duration)
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

    # -- buttons --------------------------------------------------------------------------

    async def on_skip(self, body: dict[str, Any], respond: Respond) -> None:
        value, user = self.bot.action_of(body)
        name, _, fire = sv.read_fire_value(value)
        try:
            change = await self.rights.skip(user, name, fire, shown=True)
        except ScheduleError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        if change.repeat:
            await tell(respond, _already_skipped(name, change))
            return
        await self._redraw_warning(body, respond, name, skipped_by=user)
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
        try:
            change = await self.rights.snooze(user, name, delay, fire, shown=True)
        except ScheduleError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        if change.repeat:
            await tell(respond, _already_snoozed(name, change))
            return
        await self._redraw_warning(body, respond, name)
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
        hours = None if kept == "next" else int(kept.removesuffix("h"))
        try:
            until = await self.rights.keep(user, name, resource, hours=hours)
        except ScheduleError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        await self._redraw_warning(body, respond, name)
        await tell_channel(
            respond,
            md("{} keeps {} out of {} until {}.", Person(user), resource, code(name), _at(until)),
        )

    async def on_in_use_keep(self, body: dict[str, Any], respond: Respond) -> None:
        await self._answer_in_use(body, respond, "keep")

    async def on_in_use_stop(self, body: dict[str, Any], respond: Respond) -> None:
        await self._answer_in_use(body, respond, "stop")

    async def _answer_in_use(self, body: dict[str, Any], respond: Respond, answer: str) -> None:
        """**Keep 2h** or **Stop anyway** on a warning's question: the first answer counts
        (a second click, or a retried request, is told who answered and what)."""
        value, user = self.bot.action_of(body)
        name, [resource], at = sv.read_fire_value(value, 1)
        if at is None:
            raise buttons.StaleButton
        resource = self._known(resource)
        try:
            question, won = await self.rights.answer_in_use(user, name, at, resource, answer)
        except ScheduleError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        said = "keep it" if question.answer == "keep" else "stop it anyway"
        if not won:
            await tell(
                respond,
                md(
                    "{} already answered for {}: {}. Nothing was changed.",
                    Person(question.answered_by or ""),
                    resource,
                    said,
                ),
            )
            return
        await self._redraw_warning(body, respond, name)
        if answer == "keep":
            text = md(
                "{} keeps {} running for 2h (in use): {} will not stop it.",
                Person(user),
                resource,
                code(name),
            )
        else:
            text = md("{} says {} is not in use: {} stops it.", Person(user), resource, code(name))
        await tell_channel(respond, text)

    async def _redraw_warning(
        self, body: dict[str, Any], respond: Respond, name: str, *, skipped_by: str | None = None
    ) -> None:
        """The warning clicked on, drawn again as it now stands, so it never shows what a
        Skip, Snooze or Keep changed: the run's new time and plan (a kept resource is no
        longer listed to stop), or that the run is skipped, without its buttons."""
        fire = _warned_fire((body.get("message") or {}).get("blocks") or [], name)
        engine = self.bot.stopbot.engine
        try:
            schedule = engine.schedule(name)
        except ScheduleError:
            return
        if fire is None:
            fire = engine.next_run(schedule)[0]
        if skipped_by is not None:
            text = md(
                "{} skipped the {} run due {}: it will not run.",
                Person(skipped_by),
                code(name),
                when(fire),
            )
            await replace_with(respond, *message(text))
            return
        snoozed = self.bot.store.snoozes(name).get(fire)
        at = snoozed[0] if snoozed else fire
        await replace_with(
            respond, *sv.warning(schedule, at, engine.warning_plan(schedule, at), fire)
        )

    async def on_run_confirm(self, body: dict[str, Any], respond: Respond) -> None:
        name, user = self.bot.action_of(body)
        container = body.get("container")
        message_ts = container.get("message_ts") if isinstance(container, dict) else None
        try:
            await self.rights.run_now(user, name, once=f"{message_ts}:{name}")
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
        try:
            await self.rights.leave_drifted(user, data["s"], resource)
        except ScheduleError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
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


def _warned_fire(blocks: list[dict[str, Any]], name: str) -> dt.datetime | None:
    """The fire a warning's buttons act on (its Skip button's value), if it carries one."""
    for block in blocks:
        if block.get("block_id") == f"schedule:{name}":
            for element in block.get("elements") or []:
                if element.get("action_id") == sv.SKIP:
                    return sv.read_fire_value(str(element.get("value", "")))[2]
    return None
