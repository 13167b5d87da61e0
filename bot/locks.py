"""The lock rule: nobody stops what someone else holds, unless that hold has lapsed.

Two kinds of lock are checked before every stop: the provider's own (Qovery
``cluster_lock``, Nova ``locked``) and the bot's (set from Slack, kept in the store).
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from bot.durations import format_duration
from bot.models import Actor, BotLock
from bot.store import Store
from providers.base import ProviderLock

__all__ = ["BotLocks", "LockError", "LockVerdict", "check_locks"]


class LockVerdict(BaseModel):
    blocked: bool = False
    reason: str | None = None
    notes: list[str] = []
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
    notes: list[str] = []
    if bot_lock is not None and not bot_lock.is_expired(now) and bot_lock.owner != actor.id:
        why = f" ({bot_lock.reason})" if bot_lock.reason else ""
        return LockVerdict(
            blocked=True,
            reason=f"{resource} is locked by <@{bot_lock.owner}>{why}; "
            f"{_expiry(bot_lock.expires_at, now)}. Ask them to unlock it.",
            owner=bot_lock.owner,
            bot_lock=True,
        )
    if bot_lock is not None and bot_lock.owner == actor.id:
        notes.append("your own lock on it is left in place")
    if provider_lock is not None:
        why = f" ({provider_lock.reason})" if provider_lock.reason else ""
        if provider_lock.owner is None:
            # Nova: a locked server can only be stopped by an admin, as in Nova itself.
            if not is_admin:
                return LockVerdict(
                    blocked=True,
                    reason=f"{resource} is locked in {provider}{why}; only an admin can stop it.",
                )
            notes.append(f"locked in {provider}{why}: stopping as an admin")
        elif provider_lock.is_expired(now):
            notes.append(
                f"the {provider} lock by {provider_lock.owner}{why} expired "
                f"{format_duration(now - (provider_lock.expires_at or now))} ago: stale, ignored"
            )
        elif provider_lock.owner.casefold() not in {n.casefold() for n in actor.known_as(provider)}:
            return LockVerdict(
                blocked=True,
                reason=f"{resource} is locked in {provider} by {provider_lock.owner}{why}; "
                f"{_expiry(provider_lock.expires_at, now)}.",
                owner=provider_lock.owner,
            )
        else:
            notes.append(f"locked in {provider} by you{why}")
    return LockVerdict(notes=notes)


class LockError(Exception):
    """A lock request that cannot be granted; the message is for the user."""


class BotLocks:
    """Locks users set from Slack: one holder per resource, a bounded duration, audited."""

    def __init__(self, store: Store, max_duration: dt.timedelta) -> None:
        self.store = store
        self.max_duration = max_duration

    def lock(
        self, resource: str, owner: str, duration: dt.timedelta, reason: str | None
    ) -> tuple[BotLock, bool]:
        """Lock ``resource`` for ``duration``; returns (lock, extended).

        Refused when someone else holds it; the holder extends it from now.
        """
        if duration > self.max_duration:
            raise LockError(
                f"{format_duration(duration)} is longer than the maximum lock of "
                f"{format_duration(self.max_duration)}. Lock it for less, and extend it later."
            )
        current = self.store.get_lock(resource)
        if current is not None and current.owner != owner:
            why = f" ({current.reason})" if current.reason else ""
            raise LockError(
                f"{resource} is already locked by <@{current.owner}>{why} until "
                f"{current.expires_at:%Y-%m-%d %H:%M} UTC. Ask them to release it."
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
            raise LockError(f"{resource} has no Stopbot lock.")
        if current.owner != actor:
            if not force:
                hint = " As an admin you may add `--force`." if is_admin else ""
                raise LockError(
                    f"{resource} is locked by <@{current.owner}>, not you: only they can "
                    f"unlock it.{hint}"
                )
            if not is_admin:
                raise LockError("Only admins can remove someone else's lock with `--force`.")
        self.store.delete_lock(resource, actor, forced=current.owner != actor)
        return current
