"""Approve and Deny in Slack: the request message, the buttons, the deny modal.

The decisions themselves (who may decide, once, before expiry) are the core's
(:class:`~bot.approvals.Approvals`); this module only carries them between Slack and
it, and shows what it owes (its :class:`~bot.approvals.ApprovalNotifier`): the request
to approvers and the news of each decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.config import ApprovalPolicy
from bot.models import Action, Approval, Operation
from bot.slack import buttons, views
from bot.slack.progress import posted_before, tagged
from bot.slack.replies import Respond, tell
from bot.slack.wording import Mrkdwn, md, mrkdwn, plain
from bot.text import Command, Person, too_long

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

__all__ = ["ApprovalHandlers"]

log = logging.getLogger(__name__)

STATUS_READ_TIMEOUT = 5.0
"""Seconds the approval request waits for the resource's status before saying unknown."""

POST_WAIT = 10.0  # seconds a decision waits for its request to be posted
APPROVAL_EVENT = "stopbot_approval_request"
"""The metadata event of an approval request (a process taking over finds it again)."""

# views.open's answers for a trigger_id it will not exchange (expired, used, unknown).
TRIGGER_ERRORS = frozenset({"expired_trigger_id", "exchanged_trigger_id", "invalid_trigger_id"})


def _typed(view: dict[str, Any], block: str, action: str) -> str | None:
    """What was typed in a modal's input, stripped; None when empty or absent."""
    state: Any = view.get("state")
    for key in ("values", block, action):
        state = state.get(key) if isinstance(state, dict) else None
    value = state.get("value") if isinstance(state, dict) else None
    return value.strip() or None if isinstance(value, str) else None


class ApprovalHandlers:
    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self.approvals = bot.stopbot.approvals
        # Set once a request's messages are posted and recorded: an approver quick enough
        # to click before that must not leave a live copy behind.
        self._posted: dict[str, asyncio.Event] = {}

    def register(self) -> None:
        self.bot.action(views.APPROVE, self.on_approve)
        self.bot.action(views.DENY, self.on_deny)

    async def request(self, op: Operation, approval: Approval, policy: ApprovalPolicy) -> bool:
        """The request to approvers: posted once to each (see :meth:`_post_once`)."""
        return await self.post_request(op, approval, policy)

    async def outcome(self, op: Operation, approval: Approval) -> bool:
        """A decision: every copy of the request replaced by it (no live button left), and
        the requester told by DM."""
        who = Person(approval.decided_by or "")
        why = md(": {}", approval.reason) if approval.reason else Mrkdwn()
        waking = op.action is Action.START
        verb, doing, done = (
            ("wake", "waking", "woken") if waking else ("stop", "stopping", "stopped")
        )
        if approval.status == "approved":
            line = md(":white_check_mark: Approved by {}: {} now.", who, doing)
            told = md(
                "Your request to {} {} was approved by {}. {} it now.",
                verb,
                op.resource,
                who,
                doing.capitalize(),
            )
        elif approval.status == "denied":
            line = md(":no_entry: Denied by {}{}", who, why)
            told = md(
                "Your request to {} {} was denied by {}{}. It was not {}.",
                verb,
                op.resource,
                who,
                why,
                done,
            )
        else:
            line = Mrkdwn(":hourglass: Expired: no approver decided in time.")
            told = md(
                "Your request to {} {} expired before an approver decided. Run {} again "
                "if it is still needed.",
                verb,
                op.resource,
                Command("wake" if waking else "stop", op.resource),
            )
        await self.close_request(op, line)
        return await self.bot.dm(op.requested_by, told) is not None

    def register_views(self) -> None:
        """After the buttons' router: clicks are far more frequent than this modal."""
        # Its answer (the modal's validation errors) depends on the work: it acks itself.
        self.bot.app.view(views.DENY_MODAL)(self.bot.guarded(self.on_deny_submitted, early=None))

    async def post_request(self, op: Operation, approval: Approval, policy: ApprovalPolicy) -> bool:
        """Post the approval request in the requester's channel, or DM each approver;
        whether it was posted anywhere."""
        posted = self._posted.setdefault(op.id, asyncio.Event())
        try:
            return await self._post_request(op, approval, policy)
        finally:
            posted.set()

    async def _current_status(self, op: Operation) -> Mrkdwn:
        """The resource's status as the approver should weigh it: read now (the preview
        the requester saw may be minutes old), else the last one the stop recorded."""
        stopbot = self.bot.stopbot
        try:
            resource = stopbot.config.resource(op.resource)
            provider = stopbot.providers[resource.provider]
            status = await asyncio.wait_for(provider.status(resource), STATUS_READ_TIMEOUT)
        except Exception as exc:  # a status is a courtesy here: the approval goes on
            recorded = next(
                (
                    t.provider_state
                    for t in reversed(self.bot.store.transitions(op.id))
                    if t.provider_state
                ),
                None,
            )
            if recorded:
                return md("`{}` (last read; now unknown: {})", recorded, str(exc) or "no answer")
            return md("unknown ({})", str(exc) or "no answer in time")
        words = md("`{}` ({})", status.state, status.phase.value)
        return md("{}: {}", words, status.message) if status.message else words

    async def _post_request(
        self, op: Operation, approval: Approval, policy: ApprovalPolicy
    ) -> bool:
        bot = self.bot
        text, blocks = views.approval_request(
            op, await self._current_status(op), policy.everyone(), approval.expires_at
        )
        if policy.post_to == "channel" and op.channel:
            try:
                await self._post_once(op, op.channel, text, blocks)
                return True
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                error = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
                # Not a member, an archived channel: expected. Anything else, worth a warning.
                level = logging.INFO if error in bot.no_post_errors else logging.WARNING
                log.log(
                    level,
                    "approval request falls back to DMs",
                    extra={"operation": op.id, "error": error},
                )
        asked = False
        for approver in await self._approver_users(policy, exclude=op.requested_by):
            try:
                opened = await bot.client.conversations_open(users=approver)
                await self._post_once(op, str(opened["channel"]["id"]), text, blocks)
                asked = True
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                error = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
                log.warning("DM failed", extra={"user": approver, "error": error})
        if not asked:
            log.error("approval request posted nowhere", extra={"operation": op.id})
        return asked

    async def _post_once(
        self, op: Operation, channel: str, text: Mrkdwn, blocks: list[dict[str, Any]]
    ) -> None:
        """Post the request in ``channel`` unless it is there already: recorded, or, when a
        process was killed between its post and the record, found in the channel's history
        by the operation it is tagged with (Slack's message metadata)."""
        bot = self.bot
        if channel in dict(bot.store.approval_messages(op.id)):
            return
        ts = await posted_before(bot.client, channel, APPROVAL_EVENT, "operation", op.id)
        if ts is None:
            posted = await bot.client.chat_postMessage(
                channel=channel,
                text=text,
                blocks=blocks,
                metadata=tagged(APPROVAL_EVENT, "operation", op.id),
            )
            channel, ts = str(posted["channel"]), str(posted["ts"])
        bot.store.add_approval_message(op.id, channel, ts)

    async def _approver_users(self, policy: ApprovalPolicy, *, exclude: str) -> list[str]:
        users: list[str] = []
        members = [[a] for a in policy.approvers]
        members += [sorted(await self.bot.group_members(g)) for g in policy.approver_groups]
        for group in members:
            users += [u for u in group if u != exclude and u not in users]
        return users

    async def close_request(self, op: Operation, line: Mrkdwn) -> None:
        """Replace every copy of the request with its outcome, so no live button is left."""
        posted = self._posted.pop(op.id, None)
        if posted is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(posted.wait(), POST_WAIT)
        text, blocks = views.approval_outcome(op, line)
        for channel, ts in self.bot.store.approval_messages(op.id):
            try:
                await self.bot.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
            except SlackApiError as exc:
                log.warning(
                    "approval message update failed",
                    extra={"operation": op.id, "error": exc.response.get("error")},
                )

    async def on_approve(self, body: dict[str, Any], respond: Respond) -> None:
        op_id, user = self.bot.action_of(body)
        result = await self.approvals.approve(op_id, await self.bot.actor(user))
        if not result.ok or result.operation is None or not result.run:
            await tell(respond, mrkdwn(result.message))
            return
        await self.bot.start_stop(result.operation)

    async def on_deny(self, body: dict[str, Any], respond: Respond, client: Any) -> None:
        """Open the deny modal first: its trigger_id lasts three seconds, and telling who
        may decide can wait on Slack (users.info, usergroups.users.list). A user who may
        not decide then sees the modal say why, instead of the form."""
        clicked = await self.bot.operation_of(body, respond)
        if clicked is None:
            return
        op, user = clicked
        trigger = body.get("trigger_id")
        if not isinstance(trigger, str) or not trigger:
            raise buttons.StaleButton
        try:
            opened = await client.views_open(trigger_id=trigger, view=views.deny_modal(op))
        except SlackApiError as exc:
            if exc.response.get("error") not in TRIGGER_ERRORS:
                raise
            # Slack gives three seconds to open a form from a click.
            await tell(respond, Mrkdwn("Slack did not open the form in time: click Deny again."))
            return
        checked = await self.approvals.can_decide(op.id, await self.bot.actor(user))
        if checked.operation is None or not checked.ok:
            shown = opened["view"]
            await client.views_update(
                view_id=shown["id"],
                hash=shown.get("hash"),
                view=views.deny_refused(mrkdwn(checked.message)),
            )

    async def on_deny_submitted(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        op_id = str(view.get("private_metadata") or "")
        user = buttons.clicker(body)
        reason = _typed(view, "reason", "reason")
        refused = too_long("A reason", reason)
        if refused is not None:  # the modal's max_length says so already, Slack willing
            await ack(response_action="errors", errors={"reason": plain(str(refused), 150)})
            return
        result = await self.approvals.deny(op_id, await self.bot.actor(user), reason)
        if not result.ok or result.operation is None:
            # A modal's errors are plain text: the message's neutral words.
            await ack(response_action="errors", errors={"reason": plain(str(result.message), 150)})
            return
        await ack()  # what the decision owes (messages, the requester's DM) is delivered
