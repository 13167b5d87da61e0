"""Locks in Slack: /stop lock, unlock and locks, "Ask to release", and expiry warnings.

The rules (who may lock, unlock, extend, whom a release request goes to) are the core's
(:class:`~bot.locks.Locks`): this module reads Slack's commands and buttons into it, and
writes what it decided, and what it has people told (its
:class:`~bot.locks.LockNotifier`), as Slack messages and DMs.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from bot.config import UnknownResourceError
from bot.durations import format_duration, parse_duration
from bot.locks import LockError, LockKind, ReleaseAnswer, ReleaseAsk
from bot.models import BotLock
from bot.slack import buttons, commands, views
from bot.slack.replies import Respond, replace, tell
from bot.slack.wording import Mrkdwn, md, mrkdwn
from bot.text import Command, Person

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

__all__ = ["LockHandlers"]

log = logging.getLogger(__name__)

KINDS: dict[str, LockKind] = {"bot": "bot", "provider": "provider"}


class LockHandlers:
    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self.locks = bot.stopbot.locks

    def register(self) -> None:
        self.bot.action(views.ASK_RELEASE, self.on_ask_release)
        self.bot.action(views.RELEASE, self.on_release)
        self.bot.action(views.KEEP, self.on_keep)
        self.bot.action(views.EXTEND, self.on_extend, prefix=True)

    # -- commands -------------------------------------------------------------------

    async def lock(self, cmd: commands.Lock, user: str, respond: Respond) -> None:
        resource = await self.bot.resolve(cmd.resource, respond)
        if resource is None:
            return
        try:
            locked = await self.locks.lock(resource.name, user, cmd.duration, cmd.reason)
        except LockError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        verb = "Extended your lock on" if locked.extended else "Locked"
        await tell(
            respond,
            md(
                ":lock: {} {} for {}, until {}. Nobody else can stop it until then; {} "
                "releases it.",
                verb,
                resource.name,
                format_duration(cmd.duration),
                views.when(locked.lock.expires_at),
                Command("unlock", resource.name),
            ),
        )

    async def unlock(self, cmd: commands.Unlock, user: str, respond: Respond) -> None:
        resource = await self.bot.resolve(cmd.resource, respond)
        if resource is None:
            return
        try:
            await self.locks.unlock(resource.name, user, force=cmd.force)
        except LockError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        await tell(respond, md(":unlock: {} is unlocked.", resource.name))

    async def list(self, respond: Respond) -> None:
        in_force = await self.locks.in_force()
        text, blocks = views.locks_list(
            in_force.bot_locks,
            in_force.provider_locks(),
            self.bot.service.clock(),
            in_force.unread(),
        )
        await tell(respond, text, blocks)

    # -- ask to release ---------------------------------------------------------------

    async def on_ask_release(self, body: dict[str, Any], respond: Respond) -> None:
        clicked = await self.bot.operation_of(body, respond)
        if clicked is None:
            return
        op, asker = clicked
        resource = await self.bot.resolve(op.resource, respond)
        if resource is None:
            return
        ask = await self.locks.ask_release(resource, asker)
        if ask.status == "unreadable":
            said = md(
                "Could not read the {} lock on {} ({}): try again in a moment.",
                resource.provider,
                resource.name,
                ask.error or "",
            )
        elif ask.status == "unknown_holder":
            said = md(
                "Stopbot does not know who {} is in Slack (an admin can add them under "
                "`identities` in the configuration). Ask them directly.",
                ask.provider_lock.owner if ask.provider_lock else "",
            )
        elif ask.status == "unlocked":
            said = md(
                "{} is no longer locked: {} again.", resource.name, Command("stop", resource.name)
            )
        elif ask.status == "unreachable":
            said = md("Could not reach {} by DM; ask them directly.", Person(ask.holder or ""))
        else:
            said = md(
                "Asked {} to release the lock on {}. Their answer will come to you by DM.",
                Person(ask.holder or ""),
                resource.name,
            )
        await tell(respond, said)

    async def ask_release(self, ask: ReleaseAsk) -> bool:
        """The DM asking a lock's holder to release it, with Release and Keep (a
        :class:`~bot.locks.LockNotifier`'s)."""
        if ask.bot_lock is not None:
            lock_text = md(
                "Stopbot lock ({}), expires {}",
                ask.bot_lock.reason or "no reason given",
                views.when(ask.bot_lock.expires_at),
            )
        elif ask.provider_lock is not None:
            lock_text = md(
                "{} lock by {} ({})",
                ask.provider,
                ask.provider_lock.owner or "",
                ask.provider_lock.reason or "no reason given",
            )
        else:
            lock_text = Mrkdwn()
        value = json.dumps({"r": ask.resource, "a": ask.asker, "k": ask.kind})
        text, blocks = views.release_request(
            ask.resource, ask.asker, lock_text, value, provider=ask.kind == "provider"
        )
        return await self.bot.dm(ask.holder or "", text, blocks) is not None

    def _request(self, body: dict[str, Any]) -> tuple[str, str, LockKind, str]:
        """A Release or Keep click: (resource, asker, kind of lock, holder who clicked)."""
        data = buttons.fields(buttons.value(body), "r", "a", "k")
        kind = KINDS.get(data["k"])
        if kind is None:
            raise buttons.StaleButton
        return self._known(data["r"]), data["a"], kind, buttons.clicker(body)

    def _known(self, resource: str) -> str:
        """The name of a configured resource a button names (else the button is stale)."""
        try:
            return self.bot.config.resource(resource).name
        except UnknownResourceError:
            raise buttons.StaleButton from None

    async def on_release(self, body: dict[str, Any], respond: Respond) -> None:
        resource, asker, kind, holder = self._request(body)
        try:
            await self.locks.release(resource, asker, kind, holder)
        except LockError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        await replace(respond, md("Done: {} is told that {} is released.", Person(asker), resource))

    async def on_keep(self, body: dict[str, Any], respond: Respond) -> None:
        resource, asker, kind, holder = self._request(body)
        await self.locks.keep(resource, asker, kind, holder)
        await replace(respond, md("You keep your lock on {}; {} is told.", resource, Person(asker)))

    async def release_answered(self, answer: ReleaseAnswer) -> None:
        """The holder's answer, by DM to the asker (a :class:`~bot.locks.LockNotifier`'s)."""
        holder, resource = Person(answer.holder), answer.resource
        if not answer.released:
            said = md("{} keeps the lock on {} for now.", holder, resource)
        elif answer.kind == "bot":
            said = md(
                "{} released the lock on {}: {} now works.",
                holder,
                resource,
                Command("stop", resource),
            )
        else:
            said = md(
                "{} says they released their provider lock on {}. Try {} again.",
                holder,
                resource,
                Command("stop", resource),
            )
        await self.bot.dm(answer.asker, said)

    async def removed(self, lock: BotLock, by: str) -> None:
        """An admin removed someone's lock: its owner is told by DM."""
        await self.bot.dm(
            lock.owner, md("Your lock on {} was removed by {} (admin).", lock.resource, Person(by))
        )

    # -- expiry -------------------------------------------------------------------------

    async def on_extend(self, body: dict[str, Any], respond: Respond) -> None:
        """Extend by the button's duration from the expiry the warning was about (a value
        without that expiry, from an older message, extends from the current one)."""
        parts = buttons.value(body).split("|")
        if len(parts) not in {2, 3} or parts[1] not in views.EXTENSIONS:
            raise buttons.StaleButton
        resource, extra = parts[:2]
        warned = buttons.moment(parts[2]) if len(parts) == 3 else None
        self._known(resource)
        try:
            done = self.locks.extend(resource, buttons.clicker(body), parse_duration(extra), warned)
        except LockError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        if done.status == "not_held" or done.lock is None:
            await tell(respond, md("You no longer hold a lock on {}.", resource))
        elif done.status == "already":
            await tell(
                respond,
                md(
                    "Your lock on {} already runs until {}: nothing to extend.",
                    resource,
                    views.when(done.lock.expires_at),
                ),
            )
        else:
            await replace(
                respond,
                md(
                    ":lock: Extended: your lock on {} now expires {}.",
                    resource,
                    views.when(done.lock.expires_at),
                ),
            )

    async def expiring(self, lock: BotLock) -> bool:
        """The DM warning an owner before their lock expires, with Extend buttons (a
        :class:`~bot.locks.LockNotifier`'s)."""
        text, blocks = views.lock_warning(lock)
        return await self.bot.dm(lock.owner, text, blocks) is not None
