"""The App Home tab: each person's world (:mod:`bot.world`) published with
``views.publish`` when they open it (``app_home_opened``), and again after each click on it.

Its buttons act as their twins elsewhere, through the very same handlers and so the same
rules and audit: Extend is the lock warning's Extend, Unlock is ``/stop unlock``, Approve and
Deny are the approval request's. A click on the Home has no message to answer beside: what
the handler says is shown at the top of the Home, published again.
https://docs.slack.dev/surfaces/app-home
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.models import BotLock, Lease, Operation
from bot.savings import Report
from bot.slack import buttons, commands, savings_views, views
from bot.slack.views import Blocks, _button, _context, _header, _section, line_sections
from bot.slack.wording import Mrkdwn, md, mrkdwn, when
from bot.text import Person
from bot.world import NextRun, World, world_of

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

__all__ = [
    "HOME_APPROVE",
    "HOME_DENY",
    "HOME_EXTEND",
    "HOME_UNLOCK",
    "MAX_HOME_APPROVALS",
    "MAX_HOME_LOCKS",
    "HomeHandlers",
    "home_view",
]

log = logging.getLogger(__name__)

HOME_EXTEND = "home_extend:"  # + the extension, as the lock warning's Extend
HOME_UNLOCK = "home_unlock"
HOME_APPROVE = "home_approve"
HOME_DENY = "home_deny"
HOME_LEASE_EXTEND = "home_lease_extend"
HOME_LEASE_END = "home_lease_end"
MAX_HOME_LOCKS = 20  # two blocks each: with the rest, a Home stays under its 100 blocks
MAX_HOME_APPROVALS = 15
MAX_HOME_LEASES = 5


class _Told:
    """A handler's ``respond`` on the Home: keeps what it says, for the top of the Home."""

    def __init__(self) -> None:
        self.said: Mrkdwn | None = None
        self.response_url = None

    async def __call__(self, text: str = "", **_: Any) -> None:
        self.said = mrkdwn(text)


def _lock_blocks(lock: BotLock) -> Blocks:
    shown = lock.expires_at.isoformat()
    return [
        _section(
            md(
                ":lock: *{}* until {}{}",
                lock.resource,
                when(lock.expires_at),
                md(" ({})", lock.reason) if lock.reason else Mrkdwn(),
            )
        ),
        {
            "type": "actions",
            "block_id": f"home-lock:{lock.resource}"[:255],
            "elements": [
                *(
                    # The expiry shown goes with the click, as in the warning's Extend: a
                    # second click on this same Home extends nothing more.
                    _button(f"{HOME_EXTEND}{extra}", label, f"{lock.resource}|{extra}|{shown}")
                    for extra, label in zip(
                        views.EXTENSIONS, ("Extend 1h", "Extend 1 day"), strict=True
                    )
                ),
                _button(HOME_UNLOCK, "Unlock", lock.resource, "danger"),
            ],
        },
    ]


def _approval_blocks(op: Operation) -> Blocks:
    return [
        _section(
            md(
                ":raised_hand: {} wants to stop *{}* ({}){}",
                Person(op.requested_by),
                op.resource,
                op.provider,
                md(": {}", op.reason) if op.reason else Mrkdwn(),
            )
        ),
        {
            "type": "actions",
            "block_id": f"home-approval:{op.id}",
            "elements": [
                _button(HOME_APPROVE, "Approve", op.id, "primary"),
                _button(HOME_DENY, "Deny", op.id, "danger"),
            ],
        },
    ]


def _lease_blocks(lease: Lease) -> Blocks:
    return [
        _section(
            md(
                ":alarm_clock: *{}* is up until {}, then stopped",
                lease.resource,
                when(lease.ends_at),
            )
        ),
        {
            "type": "actions",
            "block_id": f"home-lease:{lease.id}",
            "elements": [
                _button(HOME_LEASE_EXTEND, "Extend 1h", lease.id, "primary"),
                _button(HOME_LEASE_END, "Stop now", lease.id, "danger"),
            ],
        },
    ]


def _asked_line(op: Operation) -> Mrkdwn:
    return md(
        "• {} · *{}* · {}{}",
        when(op.created_at),
        op.resource,
        op.state.value.replace("_", " "),
        md(": {}", op.detail) if op.detail else Mrkdwn(),
    )


def _run_line(run: NextRun) -> Mrkdwn:
    return md("• {} · *{}* stops {}", when(run.at), run.schedule, ", ".join(run.resources))


def _more(shown: int, total: int, what: str, where: str) -> Blocks:
    if total <= shown:
        return []
    return [_context(md("… and {} more {}: {}", total - shown, what, Mrkdwn(where)))]


def _savings_text(report: Report | None, world: World) -> Mrkdwn:
    if report is None or not report.resources:
        return Mrkdwn("Nothing was stopped by Stopbot this month yet.")
    mine = world.my_savings
    yours = (
        md(
            "Your stops: {:,.1f} h stopped, ≈ {}. ",
            mine.hours,
            savings_views.money(mine.money),
        )
        if mine is not None
        else Mrkdwn()
    )
    return md(
        "{}Everyone's: {:,.1f} h stopped, ≈ {} (estimates; {}).",
        yours,
        report.total.hours,
        savings_views.money(report.total.money),
        Mrkdwn("`/stop savings month` for the details"),
    )


def _section_of(title: str, empty: str, lines: Sequence[Mrkdwn]) -> Blocks:
    blocks: Blocks = [_header(title)]
    if not lines:
        return [*blocks, _context(Mrkdwn(empty))]
    return [*blocks, *line_sections(lines, most=3)]


def home_view(world: World, notice: Mrkdwn | None = None) -> dict[str, Any]:
    """The Home of ``world``'s person: at most 100 blocks whatever they hold."""
    blocks: Blocks = [_header("Your Stopbot")]
    if notice:
        blocks.append(_section(notice))
    blocks += [_header("Savings this month"), _section(_savings_text(world.savings, world))]
    blocks.append(_header("Your locks"))
    if not world.locks:
        blocks.append(_context(Mrkdwn("You hold no lock. `/stop lock <resource> <duration>`.")))
    for lock in world.locks[:MAX_HOME_LOCKS]:
        blocks += _lock_blocks(lock)
    blocks += _more(MAX_HOME_LOCKS, len(world.locks), "locks", "`/stop locks`")
    if world.leases:
        blocks.append(_header("Your wake leases"))
        for lease in world.leases[:MAX_HOME_LEASES]:
            blocks += _lease_blocks(lease)
        blocks += _more(MAX_HOME_LEASES, len(world.leases), "leases", "`/stop leases`")
    blocks.append(_header("Approvals waiting for you"))
    if not world.approvals:
        blocks.append(_context(Mrkdwn("Nothing waits for your approval.")))
    for op in world.approvals[:MAX_HOME_APPROVALS]:
        blocks += _approval_blocks(op)
    blocks += _more(MAX_HOME_APPROVALS, len(world.approvals), "requests", "in their channels")
    blocks += _section_of(
        "What you asked to stop",
        "You asked to stop nothing yet.",
        [_asked_line(op) for op in world.asked],
    )
    blocks += _section_of(
        "Next runs on your resources",
        "No schedule stops a resource you own or locked.",
        [_run_line(run) for run in world.runs],
    )
    blocks.append(_context(md("Updated {}", when(world.now))))
    return {"type": "home", "blocks": blocks}


class HomeHandlers:
    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot

    def register(self) -> None:
        self.bot.app.event("app_home_opened")(self.bot.guarded(self.on_home_opened))
        self.bot.action(HOME_EXTEND, self.on_extend, prefix=True)
        self.bot.action(HOME_UNLOCK, self.on_unlock)
        self.bot.action(HOME_LEASE_EXTEND, self.on_lease_extend)
        self.bot.action(HOME_LEASE_END, self.on_lease_end)
        self.bot.action(HOME_APPROVE, self.on_approve)
        self.bot.action(HOME_DENY, self.on_deny)

    async def on_home_opened(self, body: dict[str, Any]) -> None:
        event = body.get("event") or {}
        if event.get("tab", "home") != "home":
            return  # the Messages tab
        await self.publish(str(event["user"]))

    async def publish(self, user: str, notice: Mrkdwn | None = None) -> bool:
        """Publish ``user``'s Home as it is now (with ``notice`` on top)."""
        world = await world_of(self.bot.stopbot, await self.bot.actor(user))
        try:
            await self.bot.client.views_publish(user_id=user, view=home_view(world, notice))
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
            log.warning("home not published", extra={"user": user, "error": error})
            return False
        return True

    async def _then_publish(self, body: dict[str, Any], told: _Told) -> None:
        await self.publish(buttons.clicker(body), told.said)

    async def _twin(self, body: dict[str, Any], work: Any) -> None:
        """Run a twin handler with the Home as its ``respond``, then show what it said."""
        told = _Told()
        try:
            await work(told)
        except buttons.StaleButton:
            told.said = buttons.STALE
        await self._then_publish(body, told)

    async def on_extend(self, body: dict[str, Any]) -> None:
        """The lock warning's Extend (the same handler)."""
        await self._twin(body, lambda told: self.bot.locks.on_extend(body, told))

    async def on_lease_extend(self, body: dict[str, Any]) -> None:
        """The lease warning's Extend 1h (the same handler)."""
        await self._twin(body, lambda told: self.bot.lease_handlers.on_extend(body, told))

    async def on_lease_end(self, body: dict[str, Any]) -> None:
        """The lease warning's Stop now (the same handler)."""
        await self._twin(body, lambda told: self.bot.lease_handlers.on_end(body, told))

    async def on_unlock(self, body: dict[str, Any]) -> None:
        """``/stop unlock <resource>`` by the clicker (the same handler)."""
        resource = buttons.value(body)
        user = buttons.clicker(body)
        await self._twin(
            body, lambda told: self.bot.locks.unlock(commands.Unlock(resource), user, told)
        )

    async def on_approve(self, body: dict[str, Any]) -> None:
        """The approval request's Approve (the same handler)."""

        async def approve(told: _Told) -> None:
            await self.bot.approvals.on_approve(body, told)
            if told.said is None:
                told.said = Mrkdwn(":white_check_mark: Approved.")

        await self._twin(body, approve)

    async def on_deny(self, body: dict[str, Any], client: Any) -> None:
        """The approval request's Deny: its form, which decides (the same handler)."""
        await self._twin(body, lambda told: self.bot.approvals.on_deny(body, told, client))
