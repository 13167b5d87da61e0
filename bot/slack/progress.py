"""A stop's progress in Slack, delivered from the outbox (bot/outbox.py) as the core's
:class:`~bot.workflow.ProgressNotifier`.

Every change of a stop a Slack user confirmed is owed to this face in the same transaction
as the change, so a restart never leaves a message at "Stopping…": whichever process
carries on delivers the latest state. Where it is shown, in this order:

1. a public message in the channel the stop was asked from: posted once, then updated
   with ``chat.update`` (rate limited per channel, about one a second: the outbox sends
   one stop's updates at most every ``stops.progress_interval``, the latest state each
   time, and the final state at once);
2. where the bot may not post there, the requester's own message through the command's
   ``response_url`` (Slack allows five uses in thirty minutes: only the first and the
   final state are sent there);
3. a DM to the requester (after an approval, or once the response URL is refused).

A failure worth another try (Slack busy, out of reach) leaves the message owed: the outbox
tries again later. 429s are retried first by slack_sdk's rate-limit handler, which waits
for ``Retry-After``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.models import Operation, Transition
from bot.slack import views
from bot.slack.wording import Mrkdwn

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

__all__ = ["INVITE_NOTE", "NO_POST_ERRORS", "SlackProgress", "transient"]

log = logging.getLogger(__name__)

INVITE_NOTE = Mrkdwn(
    "Stopbot is not a member of this channel, so progress is shown here only to you. "
    "Invite it with `/invite @Stopbot` to post progress for everyone."
)
NO_POST_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
TRANSIENT_ERRORS = frozenset({"ratelimited", "fatal_error", "internal_error", "request_timeout"})

# Where a stop's progress is shown (Operation.shown_in).
IN_MESSAGE = "message"
IN_RESPONSE = "response_url"
IN_DM = "dm"


def transient(exc: Exception) -> bool:
    """A failure worth another try: Slack busy or failing, or the connection."""
    if isinstance(exc, SlackApiError):
        return exc.response.get("error") in TRANSIENT_ERRORS
    return isinstance(exc, aiohttp.ClientError | TimeoutError)


def _error(exc: Exception) -> str:
    return str(exc.response.get("error")) if isinstance(exc, SlackApiError) else str(exc)


class SlackProgress:
    """Shows the progress of stops asked from Slack (a :class:`ProgressNotifier`)."""

    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot

    async def show(self, op: Operation, timeline: list[Transition]) -> bool:
        text, blocks = views.progress(op, timeline, None)
        if op.shown_in in {IN_MESSAGE, IN_DM} and op.channel and op.message_ts:
            return await self._update(op, op.channel, op.message_ts, text, blocks)
        if op.shown_in is None and op.channel:
            posted = await self._post(op, op.channel, text, blocks)
            if posted is not None:
                return posted
        if op.response_url and (op.shown_in is None or op.shown_in == IN_RESPONSE):
            if op.shown_in == IN_RESPONSE and not op.state.final:
                return True  # its five uses are kept for the final state
            if await self._respond(op, op.response_url, text, blocks):
                return True
            if not op.state.final:
                return True  # the final state falls back to a DM
        return await self._dm(op, text, blocks)

    async def _post(
        self, op: Operation, channel: str, text: str, blocks: list[dict[str, Any]]
    ) -> bool | None:
        """Post the public message; None when the bot may not post there (fall back)."""
        try:
            posted = await self.bot.client.chat_postMessage(
                channel=channel, text=text, blocks=blocks
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            if transient(exc):
                log.warning("progress message not posted yet", extra=self._about(op, exc))
                return False
            if _error(exc) not in NO_POST_ERRORS:  # those are expected: say nothing
                log.warning(
                    "progress message not posted in the channel: falls back",
                    extra=self._about(op, exc),
                )
            return None
        self.bot.store.update_operation(
            op.id,
            channel=str(posted["channel"]),
            message_ts=str(posted["ts"]),
            shown_in=IN_MESSAGE,
        )
        return True

    async def _update(
        self, op: Operation, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]
    ) -> bool:
        try:
            await self.bot.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("chat.update failed", extra=self._about(op, exc))
            return not transient(exc)
        return True

    async def _respond(
        self, op: Operation, url: str, text: str, blocks: list[dict[str, Any]]
    ) -> bool:
        noted = [
            *blocks,
            {"type": "context", "elements": [{"type": "mrkdwn", "text": INVITE_NOTE}]},
        ]
        try:
            answer = await AsyncWebhookClient(url).send(
                text=text, blocks=noted, replace_original=True
            )
            error = None if answer.status_code == 200 else f"{answer.status_code} {answer.body}"
        except Exception as exc:  # the user's Slack client going away must not stop the stop
            error = str(exc) or type(exc).__name__
        if error is not None:
            log.warning("response_url update failed", extra={"operation": op.id, "error": error})
            return False
        if op.shown_in != IN_RESPONSE:
            self.bot.store.update_operation(op.id, shown_in=IN_RESPONSE)
        return True

    async def _dm(self, op: Operation, text: Mrkdwn, blocks: list[dict[str, Any]]) -> bool:
        posted = await self.bot.dm(op.requested_by, text, blocks)
        if posted is None:
            return False
        channel, ts = posted
        self.bot.store.update_operation(op.id, channel=channel, message_ts=ts, shown_in=IN_DM)
        return True

    @staticmethod
    def _about(op: Operation, exc: Exception) -> dict[str, str]:
        return {"operation": op.id, "channel": op.channel or "", "error": _error(exc)}
