"""``/stop env <name> [reason…]`` and ``/stop wake env <name>``: the environment's plan
(every tier, member and lock) for its requester to confirm, or to stop the rest of when
someone else holds a member, then one public message for the whole environment, updated
as its tiers go (an :class:`~bot.environments.EnvironmentNotifier`, delivered from the
outbox: whichever process carries the run on keeps the message current)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.config import UnknownEnvironmentError
from bot.environments import ENVIRONMENT, EnvironmentRefused, Plan
from bot.models import Action, EnvRunState
from bot.slack import buttons
from bot.slack.commands import EnvironmentCommand
from bot.slack.environment_views import (
    ENV_CANCEL,
    ENV_CONFIRM,
    ENV_REST,
    plan_view,
    progress_view,
)
from bot.slack.progress import NO_POST_ERRORS, posted_before, tagged, transient
from bot.slack.replies import Respond, replace, tell
from bot.slack.wording import Mrkdwn, md, mrkdwn

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

__all__ = ["ENVIRONMENT_EVENT", "EnvironmentHandlers"]

log = logging.getLogger(__name__)

ENVIRONMENT_EVENT = "stopbot_environment"
"""The metadata event type of an environment's progress message (its payload names the run)."""
_ALL_STATES = list(EnvRunState)


class EnvironmentHandlers:
    """The environment command, its buttons, and its progress message."""

    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self.environments = bot.stopbot.environments

    def register(self) -> None:
        self.bot.action(ENV_CONFIRM, self.on_confirm)
        self.bot.action(ENV_REST, self.on_rest)
        self.bot.action(ENV_CANCEL, self.on_cancel)

    async def command(
        self, cmd: EnvironmentCommand, command: dict[str, Any], respond: Respond
    ) -> None:
        actor = await self.bot.actor(str(command["user_id"]))
        try:
            plan = await self.environments.preview(
                cmd.name,
                actor,
                action=Action.START if cmd.wake else Action.STOP,
                reason=cmd.reason,
                channel=command.get("channel_id"),
            )
        except UnknownEnvironmentError as exc:
            known = ", ".join(sorted(self.bot.config.environments)) or "none configured"
            await tell(respond, md("{} Environments: {}.", str(exc), known))
            return
        if plan.refusal is not None:
            verb = "woken" if cmd.wake else "stopped"
            await tell(respond, md("{} was not {}: {}", cmd.name, verb, plan.refusal))
            return
        text, blocks = plan_view(plan)
        await tell(respond, text, blocks)

    async def on_confirm(self, body: dict[str, Any], respond: Respond) -> None:
        await self._confirm(body, respond, skip_locked=False)

    async def on_rest(self, body: dict[str, Any], respond: Respond) -> None:
        await self._confirm(body, respond, skip_locked=True)

    async def _confirm(self, body: dict[str, Any], respond: Respond, *, skip_locked: bool) -> None:
        run_id, user = buttons.value(body), buttons.clicker(body)
        try:
            run = self.environments.confirm(
                run_id, await self.bot.actor(user), skip_locked=skip_locked
            )
        except EnvironmentRefused as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        waking = run.action is Action.START
        await replace(
            respond,
            md(
                "Confirmed: {} {}, tier by tier. Progress follows.",
                "waking" if waking else "stopping",
                run.environment,
            ),
        )
        # The progress message first, showing the run confirmed; then the run.
        await self.bot.stopbot.outbox.deliver_now(f"{ENVIRONMENT}:{run.id}")
        self.environments.start(run.id)

    async def on_cancel(self, body: dict[str, Any], respond: Respond) -> None:
        run_id, user = buttons.value(body), buttons.clicker(body)
        try:
            run = self.environments.cancel(run_id, await self.bot.actor(user))
        except EnvironmentRefused as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        verb = "woken" if run.action is Action.START else "stopped"
        await replace(respond, md("Cancelled: {} was not {}.", run.environment, verb))

    # -- the progress message (EnvironmentNotifier) ----------------------------------

    async def show_environment(self, plan: Plan) -> bool:
        """Post the run's message once in the channel it was asked from, then update it;
        False: try again later."""
        run = plan.run
        if run.channel is None or run.state in (
            EnvRunState.AWAITING_CONFIRMATION,
            EnvRunState.CANCELLED,
        ):
            return True  # asked from no channel (the terminal), or never begun
        text, blocks = progress_view(plan)
        client = self.bot.client
        ts = run.message_ts or await posted_before(
            client, run.channel, ENVIRONMENT_EVENT, "run", run.id
        )
        try:
            if ts is not None:
                await client.chat_update(channel=run.channel, ts=ts, text=text, blocks=blocks)
            else:
                posted = await client.chat_postMessage(
                    channel=run.channel,
                    text=text,
                    blocks=blocks,
                    metadata=tagged(ENVIRONMENT_EVENT, "run", run.id),
                )
                ts = str(posted["ts"])
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            error = str(exc.response.get("error")) if isinstance(exc, SlackApiError) else str(exc)
            if error in NO_POST_ERRORS:  # the bot may not post there: its end is told by DM
                if run.state.final:
                    await self.bot.dm(run.requested_by, Mrkdwn(text), blocks)
                return True
            log.warning("environment progress not shown yet", extra={"run": run.id, "error": error})
            return not transient(exc)
        if ts != run.message_ts:
            self.bot.store.move_environment_run(
                run.id, allowed_from=_ALL_STATES, actor="stopbot", fields={"message_ts": ts}
            )
        return True
