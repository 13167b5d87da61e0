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
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.models import Operation, OpState, Transition
from bot.outbox import current_delivery
from bot.slack import views
from bot.slack.wording import Mrkdwn

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

__all__ = [
    "INVITE_NOTE",
    "NO_POST_ERRORS",
    "SlackProgress",
    "posted_before",
    "tagged",
    "transient",
]

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
IN_POSTING = "posting"  # the post was sent: if its answer never came, look for it
HISTORY_LOOKBACK = 200
"""How many of a channel's latest messages a lost post is looked for among."""
PROGRESS_EVENT = "stopbot_progress"
"""The metadata event type of a progress message (its payload names the operation)."""


_CONFIRMED = frozenset({OpState.SUBMITTING.value, OpState.AWAITING_APPROVAL.value})
"""States an operation reaches only once confirmed: from then on its channel shows it."""


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
        if not any(t.state in _CONFIRMED for t in timeline):
            # Never confirmed (its preparation cut short by a restart): the channel never
            # saw it asked, so its end goes to the person who asked, not to the channel.
            if op.response_url and await self._respond(op, op.response_url, text, blocks):
                return True
            return await self._dm(op, text, blocks)
        if op.shown_in == IN_POSTING and op.channel:
            # Posted before a restart, its answer lost? Then that message is the one.
            found = await self._posted_before(op, op.channel)
            if found is not None:
                await self._shown(op.id, message_ts=found, shown_in=IN_MESSAGE)
                return await self._update(op, op.channel, found, text, blocks)
        if op.shown_in in {IN_MESSAGE, IN_DM} and op.channel and op.message_ts:
            return await self._update(op, op.channel, op.message_ts, text, blocks)
        if op.shown_in in {None, IN_POSTING} and op.channel:
            posted = await self._post(op, op.channel, text, blocks)
            if posted is not None:
                return posted
            store = self.bot.store
            current = await store.off_loop(partial(store.get_operation, op.id))
            op = current or op
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
        """Post the public message, tagged with the operation (Slack's message metadata) so
        that a process taking over after a kill during the post finds it instead of posting
        a second one; None when the bot may not post there (fall back)."""
        await self._shown(op.id, shown_in=IN_POSTING)
        try:
            posted = await self.bot.client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=blocks,
                metadata=tagged(PROGRESS_EVENT, "operation", op.id),
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
            await self._shown(op.id, shown_in=None)  # nothing was posted
            return None
        await self._shown(
            op.id,
            channel=str(posted["channel"]),
            message_ts=str(posted["ts"]),
            shown_in=IN_MESSAGE,
        )
        return True

    async def _posted_before(self, op: Operation, channel: str) -> str | None:
        """The ts of the progress message posted for ``op`` in ``channel``, if Slack has it."""
        return await posted_before(self.bot.client, channel, PROGRESS_EVENT, "operation", op.id)

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
            await self._shown(op.id, shown_in=IN_RESPONSE)
        return True

    async def _dm(self, op: Operation, text: Mrkdwn, blocks: list[dict[str, Any]]) -> bool:
        posted = await self.bot.dm(op.requested_by, text, blocks)
        if posted is None:
            return False
        channel, ts = posted
        await self._shown(op.id, channel=channel, message_ts=ts, shown_in=IN_DM)
        return True

    async def _shown(self, op_id: str, **fields: Any) -> None:
        """Record where ``op_id``'s progress is shown (off the loop: on PostgreSQL a write
        waits its turn behind a run's)."""
        store = self.bot.store
        await store.off_loop(partial(store.update_operation, op_id, **fields))

    @staticmethod
    def _about(op: Operation, exc: Exception) -> dict[str, str]:
        return {"operation": op.id, "channel": op.channel or "", "error": _error(exc)}


def tagged(event: str, key: str, value: str) -> dict[str, Any]:
    """Slack message metadata naming what a message is about (see :func:`posted_before`)."""
    return {"event_type": event, "event_payload": {key: value}}


MESSAGE_EVENT = "stopbot_message"
"""The metadata event type of a new message the outbox delivers (its payload names the
delivery: see :class:`~bot.outbox.Delivery`)."""


def delivery_tag() -> dict[str, Any] | None:
    """The metadata naming the outbox delivery under way, for the new message it posts."""
    delivery = current_delivery()
    return None if delivery is None else tagged(MESSAGE_EVENT, "delivery", delivery.tag)


async def delivered_before(client: AsyncWebClient, channel: str) -> str | None:
    """The ts of the new message of the outbox delivery under way, when that delivery may
    have been made already (a process killed during the post, an answer lost) and Slack
    has it in ``channel`` (an id; a user's DM is opened for its id): posted once, not
    twice. None otherwise, without asking Slack when the delivery is a first try."""
    delivery = current_delivery()
    if delivery is None or not delivery.resumed:
        return None
    if channel.startswith(("U", "W")):  # a user: their DM with the bot
        try:
            opened = await client.conversations_open(users=channel)
            channel = str(opened["channel"]["id"])
        except (SlackApiError, aiohttp.ClientError, TimeoutError, KeyError, TypeError) as exc:
            log.warning(
                "could not open a DM to look for a message posted before",
                extra={"user": channel, "error": str(exc)},
            )
            return None
    return await posted_before(client, channel, MESSAGE_EVENT, "delivery", delivery.tag)


async def posted_before(
    client: AsyncWebClient, channel: str, event: str, key: str, value: str
) -> str | None:
    """The ts of a message the bot posted in ``channel``, among its latest
    ``HISTORY_LOOKBACK``, tagged (see :func:`tagged`) as about ``value``, if Slack has it: a
    post whose answer was lost (its process killed during it) is found again instead of
    posted twice. None when there is none, or the history cannot be read (then a second
    post is the lesser evil). No ``oldest``: this host's clock need not agree with Slack's."""
    try:
        answer = await client.conversations_history(
            channel=channel, include_all_metadata=True, limit=HISTORY_LOOKBACK
        )
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning(
            "could not look for a message posted before",
            extra={"channel": channel, "error": _error(exc)},
        )
        return None
    for message in answer.get("messages") or []:
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        if metadata.get("event_type") == event and payload.get(key) == value:
            return str(message["ts"])
    return None
