"""The lock rule: nobody stops what someone else holds, unless that hold has lapsed.

Two kinds of lock are checked before every stop: the provider's own (Qovery
``cluster_lock``, Nova ``locked``) and the bot's (set from Slack, kept in the store).
Owners are warned before a bot lock expires: the warning is owed through the outbox,
once per expiry, and shown by the face's :class:`LockNotifier`.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from pydantic import BaseModel, Field

from bot.config import LockSettings
from bot.durations import format_duration
from bot.models import Actor, BotLock, Owed
from bot.outbox import Outbox
from bot.store import Store
from bot.text import Person, Text, TextError, say, too_long
from providers.base import ProviderLock

__all__ = [
    "LOCK_WARNING",
    "BotLocks",
    "LockError",
    "LockNotifier",
    "LockVerdict",
    "check_locks",
]

LOCK_WARNING = "lock-warning"
"""The outbox kind of a warning to a lock's owner before it expires."""


class LockVerdict(BaseModel):
    blocked: bool = False
    reason: Text | None = None
    notes: list[Text] = []
    owner: str | None = Field(
        default=None,
        description="Who holds the blocking lock: a Slack user id for a bot "
        "lock, the provider's owner name for a provider lock.",
    )
    bot_lock: bool = False


def _expiry(expires: dt.datetime | None, now: dt.datetime) -> str:
    if expires is None:
        return "it does not expire"
    return f"it expires in {format_duration(expires - now)}"


def _why(reason: str | None, around: str = " ({})") -> str:
    return around.format(reason) if reason else ""


def check_locks(
    actor: Actor,
    resource: str,
    provider: str,
    provider_lock: ProviderLock | None,
    bot_lock: BotLock | None,
    *,
    is_admin: bool,
    now: dt.datetime,
) -> LockVerdict:
    """Whether a lock blocks ``actor`` from stopping ``resource``."""
    notes: list[Text] = []
    if bot_lock is not None and not bot_lock.is_expired(now) and bot_lock.owner != actor.id:
        return LockVerdict(
            blocked=True,
            reason=say(
                "{} is locked by {}{}; {}. Ask them to unlock it.",
                resource,
                Person(bot_lock.owner),
                _why(bot_lock.reason),
                _expiry(bot_lock.expires_at, now),
            ),
            owner=bot_lock.owner,
            bot_lock=True,
        )
    if bot_lock is not None and bot_lock.owner == actor.id:
        notes.append(Text("your own lock on it is left in place"))
    if provider_lock is not None:
        why = _why(provider_lock.reason)
        if provider_lock.owner is None:
            # Nova: a locked server can only be stopped by an admin, as in Nova itself.
            if not is_admin:
                return LockVerdict(
                    blocked=True,
                    reason=say(
                        "{} is locked in {}{}; only an admin can stop it.", resource, provider, why
                    ),
                )
            notes.append(say("locked in {}{}: stopping as an admin", provider, why))
        elif provider_lock.is_expired(now):
            notes.append(
                say(
                    "the {} lock by {}{} expired {} ago: stale, ignored",
                    provider,
                    provider_lock.owner,
                    why,
                    format_duration(now - (provider_lock.expires_at or now)),
                )
            )
        elif provider_lock.owner.casefold() not in {n.casefold() for n in actor.known_as(provider)}:
            return LockVerdict(
                blocked=True,
                reason=say(
                    "{} is locked in {} by {}{}; {}.",
                    resource,
                    provider,
                    provider_lock.owner,
                    why,
                    _expiry(provider_lock.expires_at, now),
                ),
                owner=provider_lock.owner,
            )
        else:
            notes.append(say("locked in {} by you{}", provider, why))
    return LockVerdict(notes=notes)


class LockError(TextError):
    """A lock request that cannot be granted; the message is for the user."""


class LockNotifier(Protocol):
    """A face that tells people about their locks (Slack DMs)."""

    async def expiring(self, lock: BotLock) -> bool:
        """Warn ``lock``'s owner that it expires soon, offering to extend it: a delivery
        from the outbox; False: it could not be shown, try again later."""
        ...


class BotLocks:
    """Locks users set from Slack: one holder per resource, a bounded duration, audited."""

    def __init__(self, store: Store, settings: LockSettings, outbox: Outbox) -> None:
        self.store = store
        self.settings = settings
        self.max_duration = settings.max_duration
        self.outbox = outbox
        self.notifier: LockNotifier | None = None

    def notify_with(self, notifier: LockNotifier) -> None:
        """Show lock warnings through ``notifier`` (until then they stay owed, for a
        process whose face shows them)."""
        self.notifier = notifier
        self.outbox.handle(LOCK_WARNING, self._deliver_warning)

    def lock(
        self, resource: str, owner: str, duration: dt.timedelta, reason: str | None
    ) -> tuple[BotLock, bool]:
        """Lock ``resource`` for ``duration``; returns (lock, extended).

        Refused when someone else holds it, or the reason is longer than REASON_LIMIT; the
        holder extends it from now.
        """
        refused = too_long("A reason", reason)
        if refused is not None:
            raise LockError(refused)
        if duration > self.max_duration:
            raise LockError(
                say(
                    "{} is longer than the maximum lock of {}. Lock it for less, and extend "
                    "it later.",
                    format_duration(duration),
                    format_duration(self.max_duration),
                )
            )
        current = self.store.get_lock(resource)
        if current is not None and current.owner != owner:
            raise LockError(
                say(
                    "{} is already locked by {}{} until {:%Y-%m-%d %H:%M} UTC. Ask them to "
                    "release it.",
                    resource,
                    Person(current.owner),
                    _why(current.reason),
                    current.expires_at,
                )
            )
        now = self.store.clock()
        lock = self.store.set_lock(
            resource, owner, now + duration, reason or (current.reason if current else None)
        )
        return lock, current is not None

    def unlock(self, resource: str, actor: str, *, is_admin: bool, force: bool) -> BotLock:
        """Remove the lock on ``resource``: its owner may, an admin with ``force`` may."""
        current = self.store.get_lock(resource)
        if current is None:
            raise LockError(say("{} has no Stopbot lock.", resource))
        if current.owner != actor:
            if not force:
                hint = " As an admin you may add `--force`." if is_admin else ""
                raise LockError(
                    say(
                        "{} is locked by {}, not you: only they can unlock it.{}",
                        resource,
                        Person(current.owner),
                        hint,
                    )
                )
            if not is_admin:
                raise LockError(Text("Only admins can remove someone else's lock with `--force`."))
        self.store.delete_lock(resource, actor, forced=current.owner != actor)
        return current

    def warn_expiring(self) -> None:
        """Owe each owner one warning before their lock expires (owed with the claim that
        makes it once: a restart, or a second process, does not warn twice)."""
        for lock in self.store.locks_expiring(self.settings.warn_before_expiry):
            expiry = lock.expires_at.isoformat()
            owed = self.outbox.message(
                LOCK_WARNING,
                f"{lock.resource}:{expiry}",
                {"resource": lock.resource, "expires_at": expiry},
            )
            if self.store.claim(owed.key, owe=owed):
                self.outbox.kick()

    async def _deliver_warning(self, owed: Owed) -> bool:
        """A warning is shown while the lock it warns of holds."""
        lock = self.store.get_lock(str(owed.payload.get("resource")))
        if lock is None or lock.expires_at.isoformat() != owed.payload.get("expires_at"):
            return True  # released, or extended since: nothing to warn of
        assert self.notifier is not None  # (registered with it)
        return await self.notifier.expiring(lock)
