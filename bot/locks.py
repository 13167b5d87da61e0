"""The lock rule: nobody stops what someone else holds, unless that hold has lapsed.

Two kinds of lock are checked before every stop: the provider's own (Qovery
``cluster_lock``, Nova ``locked``) and the bot's (set from Slack, kept in the store).
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from bot.durations import format_duration
from bot.models import Actor, BotLock
from providers.base import ProviderLock

__all__ = ["LockVerdict", "check_locks"]


class LockVerdict(BaseModel):
    blocked: bool = False
    reason: str | None = None
    notes: list[str] = []


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
        elif provider_lock.owner.casefold() not in {n.casefold() for n in actor.names}:
            return LockVerdict(
                blocked=True,
                reason=f"{resource} is locked in {provider} by {provider_lock.owner}{why}; "
                f"{_expiry(provider_lock.expires_at, now)}.",
            )
        else:
            notes.append(f"locked in {provider} by you{why}")
    return LockVerdict(notes=notes)
