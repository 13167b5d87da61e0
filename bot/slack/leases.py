"""Wake leases in Slack: ``/stop leases``, ``/stop leases end <resource>``, and the DM that
warns an owner before their lease ends, with Extend 1h, Keep until tomorrow's run and Stop
now.

The rules (who may change a lease, when it ends, what its end does) are the core's
(:class:`~bot.leases.Leases`): this module reads Slack's commands and buttons into it, and
writes what it decided as Slack messages (its :class:`~bot.leases.LeaseNotifier`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.leases import LeaseError
from bot.models import CLI_ACTOR, Lease
from bot.slack import buttons, commands, views
from bot.slack.replies import Respond, replace, tell
from bot.slack.wording import Mrkdwn, md, mrkdwn, when
from bot.text import Command, Person

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

__all__ = ["LEASE_END", "LEASE_EXTEND", "LEASE_KEEP", "LeaseHandlers"]

LEASE_EXTEND = "lease_extend"
LEASE_KEEP = "lease_keep"
LEASE_END = "lease_end"


class LeaseHandlers:
    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self.leases = bot.stopbot.leases

    def register(self) -> None:
        self.bot.action(LEASE_EXTEND, self.on_extend)
        self.bot.action(LEASE_KEEP, self.on_keep)
        self.bot.action(LEASE_END, self.on_end)

    # -- commands -------------------------------------------------------------------

    async def command(self, cmd: commands.Leases, user: str, respond: Respond) -> None:
        if cmd.end is None:
            text, blocks = listing(self.leases.running())
            await tell(respond, text, blocks)
            return
        resource = await self.bot.resolve(cmd.end, respond)
        if resource is None:
            return
        lease = self.leases.on(resource.name)
        if lease is None:
            await tell(respond, md("{} has no wake lease running.", resource.name))
            return
        try:
            self.leases.end_now(lease.id, user)
        except LeaseError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        await self.leases.tick()
        await tell(
            respond, md(":stopwatch: The lease on {} ended: it is being stopped.", lease.resource)
        )

    # -- the warning and its buttons ------------------------------------------------------

    async def ending(self, lease: Lease) -> bool:
        """The DM to a lease's owner before it ends (a :class:`~bot.leases.LeaseNotifier`'s)."""
        if lease.owner.startswith(CLI_ACTOR):
            return True  # woken from a terminal: no one to DM; the lease ends all the same
        text, blocks = warning(lease)
        return await self.bot.dm(lease.owner, text, blocks) is not None

    async def _clicked(
        self, body: dict[str, Any], respond: Respond, act: Callable[[str, str], Lease]
    ) -> Lease | None:
        """A lease button's move by its clicker (the core's rule); a refusal is said, and
        None returned."""
        try:
            return act(buttons.value(body), buttons.clicker(body))
        except LeaseError as exc:
            await tell(respond, mrkdwn(exc.text))
            return None

    async def on_extend(self, body: dict[str, Any], respond: Respond) -> None:
        lease = await self._clicked(body, respond, self.leases.extend)
        if lease is not None:
            await replace(
                respond,
                md(
                    ":alarm_clock: Extended: {} stays up until {}.",
                    lease.resource,
                    when(lease.ends_at),
                ),
            )

    async def on_keep(self, body: dict[str, Any], respond: Respond) -> None:
        lease = await self._clicked(body, respond, self.leases.keep_until_run)
        if lease is not None:
            await replace(
                respond,
                md(
                    ":alarm_clock: Kept: {} stays up until its next scheduled stop, {}.",
                    lease.resource,
                    when(lease.ends_at),
                ),
            )

    async def on_end(self, body: dict[str, Any], respond: Respond) -> None:
        lease = await self._clicked(body, respond, self.leases.end_now)
        if lease is not None:
            await self.leases.tick()
            await replace(
                respond,
                md(":stopwatch: The lease on {} ended: it is being stopped.", lease.resource),
            )


def warning(lease: Lease) -> views.View:
    """The DM before a lease ends, with its three buttons (the lease's id as their value)."""
    text = md(
        ":alarm_clock: Your wake lease on {} ends {}: it will be stopped then.",
        lease.resource,
        when(lease.ends_at),
    )
    blocks: views.Blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {
            "type": "actions",
            "block_id": f"lease:{lease.id}",
            "elements": [
                _button(LEASE_EXTEND, "Extend 1h", lease.id, "primary"),
                _button(LEASE_KEEP, "Keep until tomorrow's run", lease.id),
                _button(LEASE_END, "Stop now", lease.id, "danger"),
            ],
        },
    ]
    return text, blocks


def _button(action_id: str, label: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def listing(leases: list[Lease]) -> views.View:
    """``/stop leases``: each lease running, whose, and until when."""
    if not leases:
        text = md("No wake leases running. {} starts one.", Command("wake", "<resource> for 2h"))
        return text, views.message(text)[1]
    lines = [Mrkdwn("*Wake leases*")]
    for lease in leases:
        until = "until its next scheduled stop, " if lease.state == "until_run" else "until "
        lines.append(
            md(
                "• *{}* · woken by {} · {}{}",
                lease.resource,
                Person(lease.owner),
                until,
                when(lease.ends_at),
            )
        )
    lines.append(md("{} ends one (yours; admins: anyone's).", Command("leases", "end <resource>")))
    text = Mrkdwn("\n").join(lines)
    return text, views.message(text)[1]
