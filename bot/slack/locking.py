"""Locks in Slack: /stop lock, unlock and locks, "Ask to release", and expiry warnings."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from bot import reads
from bot.config import UnknownResourceError
from bot.durations import format_duration, parse_duration
from bot.locks import LockError
from bot.models import BotLock
from bot.slack import buttons, commands, views
from bot.slack.replies import Respond, replace, tell
from bot.slack.wording import Mrkdwn, md, mrkdwn
from bot.text import Command, Person
from providers.base import ProviderLock, Resource
from providers.errors import ProviderError

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

__all__ = ["LockHandlers"]

log = logging.getLogger(__name__)

LOCK_READ_TIMEOUT = 5.0


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
        decision = await self.bot.service.policy.may_stop(user, resource.name)
        if not decision.allowed:
            await tell(respond, md("You cannot lock {}: {}.", resource.name, decision.reason))
            return
        try:
            lock, extended = self.locks.lock(resource.name, user, cmd.duration, cmd.reason)
        except LockError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        verb = "Extended your lock on" if extended else "Locked"
        await tell(
            respond,
            md(
                ":lock: {} {} for {}, until {}. Nobody else can stop it until then; {} "
                "releases it.",
                verb,
                resource.name,
                format_duration(cmd.duration),
                views.when(lock.expires_at),
                Command("unlock", resource.name),
            ),
        )

    async def unlock(self, cmd: commands.Unlock, user: str, respond: Respond) -> None:
        resource = await self.bot.resolve(cmd.resource, respond)
        if resource is None:
            return
        try:
            removed = self.locks.unlock(
                resource.name,
                user,
                is_admin=self.bot.service.policy.is_admin(user),
                force=cmd.force,
            )
        except LockError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        if removed.owner != user:
            await self.bot.dm(
                removed.owner,
                md("Your lock on {} was removed by {} (admin).", resource.name, Person(user)),
            )
        await tell(respond, md(":unlock: {} is unlocked.", resource.name))

    async def list(self, respond: Respond) -> None:
        readings = await reads.read_locks(
            self.bot.providers, self.bot.config.all_resources(), within=LOCK_READ_TIMEOUT
        )
        provider_locks = [(r.resource, r.lock) for r in readings.values() if r.lock is not None]
        unread: dict[tuple[str, str], list[str]] = {}
        for r in readings.values():
            if r.lock_error is not None:
                unread.setdefault((r.resource.provider, r.lock_error), []).append(r.resource.name)
        text, blocks = views.locks_list(
            self.bot.store.active_locks(),
            provider_locks,
            self.bot.service.clock(),
            [(provider, names, error) for (provider, error), names in unread.items()],
        )
        await tell(respond, text, blocks)

    async def _provider_lock(self, resource: Resource) -> ProviderLock | None:
        """Raises ProviderError, or TimeoutError after LOCK_READ_TIMEOUT."""
        provider = self.bot.providers[resource.provider]
        return await asyncio.wait_for(provider.lock(resource), LOCK_READ_TIMEOUT)

    # -- ask to release ---------------------------------------------------------------

    def _slack_user_for(self, provider: str, owner: str) -> str | None:
        """The Slack user whose configured identity in ``provider`` is ``owner``."""
        for user_id, names in self.bot.config.identities.items():
            if names.get(provider, "").casefold() == owner.casefold():
                return user_id
        return None

    async def on_ask_release(self, body: dict[str, Any], respond: Respond) -> None:
        clicked = await self.bot.operation_of(body, respond)
        if clicked is None:
            return
        op, asker = clicked
        resource = await self.bot.resolve(op.resource, respond)
        if resource is None:
            return
        bot_lock = self.bot.store.get_lock(resource.name)
        owner: str | None = None
        lock_text = Mrkdwn()
        kind = "bot"
        if bot_lock is not None and bot_lock.owner != asker:
            owner = bot_lock.owner
            lock_text = md(
                "Stopbot lock ({}), expires {}",
                bot_lock.reason or "no reason given",
                views.when(bot_lock.expires_at),
            )
        else:
            try:
                provider_lock = await self._provider_lock(resource)
            except (ProviderError, TimeoutError) as exc:
                why = str(exc) or f"{resource.provider} did not answer in time"
                await tell(
                    respond,
                    md(
                        "Could not read the {} lock on {} ({}): try again in a moment.",
                        resource.provider,
                        resource.name,
                        why,
                    ),
                )
                return
            if provider_lock is not None and provider_lock.owner:
                kind = "provider"
                owner = self._slack_user_for(resource.provider, provider_lock.owner)
                lock_text = md(
                    "{} lock by {} ({})",
                    resource.provider,
                    provider_lock.owner,
                    provider_lock.reason or "no reason given",
                )
                if owner is None:
                    await tell(
                        respond,
                        md(
                            "Stopbot does not know who {} is in Slack (an admin can add them "
                            "under `identities` in the configuration). Ask them directly.",
                            provider_lock.owner,
                        ),
                    )
                    return
        if owner is None:
            await tell(
                respond,
                md(
                    "{} is no longer locked: {} again.",
                    resource.name,
                    Command("stop", resource.name),
                ),
            )
            return
        value = json.dumps({"r": resource.name, "a": asker, "k": kind})
        text, blocks = views.release_request(
            resource.name, asker, lock_text, value, provider=kind == "provider"
        )
        if await self.bot.dm(owner, text, blocks) is None:
            await tell(respond, md("Could not reach {} by DM; ask them directly.", Person(owner)))
            return
        self.bot.store.audit(
            asker,
            "lock.release_asked",
            resource=resource.name,
            detail={"owner": owner, "kind": kind},
        )
        await tell(
            respond,
            md(
                "Asked {} to release the lock on {}. Their answer will come to you by DM.",
                Person(owner),
                resource.name,
            ),
        )

    def _request(self, body: dict[str, Any]) -> tuple[str, str, str, str]:
        """A Release or Keep click: (resource, asker, kind of lock, owner who clicked)."""
        data = buttons.fields(buttons.value(body), "r", "a", "k")
        if data["k"] not in {"bot", "provider"}:
            raise buttons.StaleButton
        return self._known(data["r"]), data["a"], data["k"], buttons.clicker(body)

    def _known(self, resource: str) -> str:
        """The name of a configured resource a button names (else the button is stale)."""
        try:
            return self.bot.config.resource(resource).name
        except UnknownResourceError:
            raise buttons.StaleButton from None

    async def on_release(self, body: dict[str, Any], respond: Respond) -> None:
        resource, asker, kind, owner = self._request(body)
        if kind == "bot":
            try:
                self.locks.unlock(resource, owner, is_admin=False, force=False)
            except LockError as exc:
                await tell(respond, mrkdwn(exc.text))
                return
            answer = md(
                "{} released the lock on {}: {} now works.",
                Person(owner),
                resource,
                Command("stop", resource),
            )
        else:
            self.bot.store.audit(
                owner, "lock.release_confirmed", resource=resource, detail={"asker": asker}
            )
            answer = md(
                "{} says they released their provider lock on {}. Try {} again.",
                Person(owner),
                resource,
                Command("stop", resource),
            )
        await replace(respond, md("Done: {} is told that {} is released.", Person(asker), resource))
        await self.bot.dm(asker, answer)

    async def on_keep(self, body: dict[str, Any], respond: Respond) -> None:
        resource, asker, _, owner = self._request(body)
        self.bot.store.audit(
            owner, "lock.release_declined", resource=resource, detail={"asker": asker}
        )
        await replace(respond, md("You keep your lock on {}; {} is told.", resource, Person(asker)))
        await self.bot.dm(asker, md("{} keeps the lock on {} for now.", Person(owner), resource))

    # -- expiry -------------------------------------------------------------------------

    async def on_extend(self, body: dict[str, Any], respond: Respond) -> None:
        """Extend by the button's duration from the expiry the warning was about: clicking
        twice extends once. (A value without that expiry, from an older message, extends
        from the lock's current expiry.)"""
        parts = buttons.value(body).split("|")
        if len(parts) not in {2, 3} or parts[1] not in views.EXTENSIONS:
            raise buttons.StaleButton
        resource, extra = parts[:2]
        warned = buttons.moment(parts[2]) if len(parts) == 3 else None
        self._known(resource)
        user = buttons.clicker(body)
        current = self.bot.store.get_lock(resource)
        if current is None or current.owner != user:
            await tell(respond, md("You no longer hold a lock on {}.", resource))
            return
        until = (warned or current.expires_at) + parse_duration(extra)
        if current.expires_at >= until:
            await tell(
                respond,
                md(
                    "Your lock on {} already runs until {}: nothing to extend.",
                    resource,
                    views.when(current.expires_at),
                ),
            )
            return
        try:
            lock, _ = self.locks.lock(resource, user, until - self.bot.service.clock(), None)
        except LockError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        await replace(
            respond,
            md(
                ":lock: Extended: your lock on {} now expires {}.",
                resource,
                views.when(lock.expires_at),
            ),
        )

    async def expiring(self, lock: BotLock) -> bool:
        """The DM warning an owner before their lock expires, with Extend buttons (a
        :class:`~bot.locks.LockNotifier`'s)."""
        text, blocks = views.lock_warning(lock)
        return await self.bot.dm(lock.owner, text, blocks) is not None
