"""The lock rules: nobody stops what someone else holds, unless that hold has lapsed.

Two kinds of lock are checked before every stop: the provider's own (Qovery
``cluster_lock``, Nova ``locked``) and the bot's (set by users, kept in the store).
:class:`Locks` decides who may take, extend and remove a bot lock, carries a request to
release a lock to its holder and their answer back, and warns owners before their lock
expires (owed through the outbox, once per expiry). What people are told goes through the
face's :class:`LockNotifier`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from bot import reads
from bot.config import StopbotConfig
from bot.durations import format_duration
from bot.models import Actor, BotLock, Owed
from bot.outbox import Outbox
from bot.policy import Decision, Policy
from bot.store import Store
from bot.text import Person, Text, TextError, say, too_long
from providers.base import Provider, ProviderLock, Resource
from providers.errors import ProviderError

__all__ = [
    "LOCK_WARNING",
    "Extension",
    "LockError",
    "LockKind",
    "LockNotifier",
    "LockVerdict",
    "Locked",
    "Locks",
    "LocksInForce",
    "ReleaseAnswer",
    "ReleaseAsk",
    "check_locks",
]

log = logging.getLogger(__name__)

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


class Locked(BaseModel):
    """A bot lock taken, or extended by its holder."""

    lock: BotLock
    extended: bool


class Extension(BaseModel):
    """What an Extend did: ``extended`` (``lock``, its new expiry), ``not_held`` (the
    asker no longer holds a lock there) or ``already`` (``lock`` runs that long already)."""

    status: Literal["extended", "not_held", "already"]
    lock: BotLock | None = None


LockKind = Literal["bot", "provider"]


class ReleaseAsk(BaseModel):
    """Someone refused by a lock asks its holder to release it, and what came of it.

    ``status``: ``asked`` (the holder was asked), ``unreadable`` (the provider lock could
    not be read: ``error``), ``unknown_holder`` (nobody is known as the provider lock's
    owner, ``provider_lock.owner``, in ``identities``), ``unlocked`` (no lock holds it
    now) or ``unreachable`` (the holder could not be told)."""

    resource: str
    provider: str
    asker: str
    status: Literal["asked", "unreadable", "unknown_holder", "unlocked", "unreachable"]
    kind: LockKind = "bot"
    holder: str | None = Field(default=None, description="Who is asked: a user id.")
    bot_lock: BotLock | None = None
    provider_lock: ProviderLock | None = None
    error: str | None = None


class ReleaseAnswer(BaseModel):
    """A holder's answer to a request to release a lock: ``released`` or kept."""

    resource: str
    asker: str
    holder: str
    kind: LockKind
    released: bool


class LocksInForce(BaseModel):
    """Every lock in force: the bot's, and the providers' as read (a read that failed is
    kept as its error: unknown is not none)."""

    bot_locks: list[BotLock]
    readings: list[reads.Reading] = Field(
        description="The resources of providers with locks of their own, in the "
        "configuration's order."
    )

    @classmethod
    async def read(
        cls, bot_locks: list[BotLock], providers: Mapping[str, Provider], resources: list[Resource]
    ) -> LocksInForce:
        """With the providers' locks read all at once (see bot/reads.py)."""
        readings = await reads.read_locks(providers, resources)
        return cls(bot_locks=bot_locks, readings=list(readings.values()))

    def provider_locks(self) -> list[tuple[Resource, ProviderLock]]:
        return [(r.resource, r.lock) for r in self.readings if r.lock is not None]

    def unread(self) -> list[tuple[str, list[str], str]]:
        """(provider, resource names, error) of the locks that could not be read, once
        per provider and error."""
        unread: dict[tuple[str, str], list[str]] = {}
        for r in self.readings:
            if r.lock_error is not None:
                unread.setdefault((r.resource.provider, r.lock_error), []).append(r.resource.name)
        return [(provider, names, error) for (provider, error), names in unread.items()]


class LockNotifier(Protocol):
    """A face that tells people about their locks (Slack DMs)."""

    async def expiring(self, lock: BotLock) -> bool:
        """Warn ``lock``'s owner that it expires soon, offering to extend it: a delivery
        from the outbox; False: it could not be shown, try again later."""
        ...

    async def removed(self, lock: BotLock, by: str) -> None:
        """Tell ``lock``'s owner that an admin, ``by``, removed it."""
        ...

    async def ask_release(self, ask: ReleaseAsk) -> bool:
        """Ask ``ask.holder`` to release their lock (they answer with
        :meth:`Locks.release` or :meth:`Locks.keep`); whether they could be reached."""
        ...

    async def release_answered(self, answer: ReleaseAnswer) -> None:
        """Tell the asker what the holder answered."""
        ...


class Locks:
    """Bot locks (one holder per resource, a bounded duration, audited) and the rules
    around every lock: who may lock, unlock and extend, asking a holder to release."""

    def __init__(
        self,
        config: StopbotConfig,
        store: Store,
        providers: Mapping[str, Provider],
        policy: Policy,
        outbox: Outbox,
    ) -> None:
        self.config = config
        self.settings = config.locks
        self.max_duration = self.settings.max_duration
        self.store = store
        self.providers = providers
        self.policy = policy
        self.outbox = outbox
        self._notifier: LockNotifier | None = None

    def notify_with(self, notifier: LockNotifier) -> None:
        """Tell people through ``notifier`` (until then, warnings stay owed for a process
        whose face shows them, and nobody else can be told anything)."""
        self._notifier = notifier
        self.outbox.handle(LOCK_WARNING, self._deliver_warning)

    # -- lock, unlock, extend -----------------------------------------------------------

    async def may_lock(self, user: str, resource: str) -> Decision:
        """Whoever may stop a resource may lock it (and nobody else: a lock stops others)."""
        return await self.policy.may_stop(user, self.config.resource(resource))

    async def lock(
        self, resource: str, owner: str, duration: dt.timedelta, reason: str | None
    ) -> Locked:
        """``owner`` locks ``resource`` for ``duration``, or extends their own lock from
        now. Raises LockError when they may not stop it, someone else holds it, it is
        longer than ``locks.max_duration`` or the reason longer than REASON_LIMIT."""
        decision = await self.may_lock(owner, resource)
        if not decision.allowed:
            raise LockError(say("You cannot lock {}: {}.", resource, decision.reason))
        return self._hold(resource, owner, duration, reason)

    def _hold(
        self, resource: str, owner: str, duration: dt.timedelta, reason: str | None
    ) -> Locked:
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
        if current is None or current.owner == owner:
            now = self.store.clock()
            lock = self.store.set_lock(
                resource, owner, now + duration, reason or (current.reason if current else None)
            )
            if lock is not None:
                return Locked(lock=lock, extended=current is not None)
            # Someone else locked it since the read (another replica, at the same instant):
            # the store let one of them hold it, and it is theirs.
            current = self.store.get_lock(resource)
            if current is None:
                raise LockError(
                    say("{} was locked by someone else meanwhile. Try again.", resource)
                )
        raise LockError(
            say(
                "{} is already locked by {}{} until {:%Y-%m-%d %H:%M} UTC. Ask them to release it.",
                resource,
                Person(current.owner),
                _why(current.reason),
                current.expires_at,
            )
        )

    def extend(
        self, resource: str, holder: str, by: dt.timedelta, warned: dt.datetime | None
    ) -> Extension:
        """The holder extends their lock by ``by`` from the expiry they were warned of
        (``warned``; without it, from its current expiry): a second Extend of the same
        warning changes nothing. Raises LockError past ``locks.max_duration``."""
        current = self.store.get_lock(resource)
        if current is None or current.owner != holder:
            return Extension(status="not_held")
        until = (warned or current.expires_at) + by
        if current.expires_at >= until:
            return Extension(status="already", lock=current)
        held = self._hold(resource, holder, until - self.store.clock(), None)
        return Extension(status="extended", lock=held.lock)

    async def unlock(self, resource: str, actor: str, *, force: bool) -> BotLock:
        """Remove the lock on ``resource``: its owner may, an admin with ``force`` may (and
        the owner is told). Raises LockError otherwise."""
        removed = self._unlock(resource, actor, is_admin=self.policy.is_admin(actor), force=force)
        if removed.owner != actor:
            await self._tell(lambda face: face.removed(removed, actor))
        return removed

    def _unlock(self, resource: str, actor: str, *, is_admin: bool, force: bool) -> BotLock:
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

    # -- asking a holder to release -------------------------------------------------------

    async def ask_release(self, resource: Resource, asker: str) -> ReleaseAsk:
        """``asker``, refused by a lock on ``resource``, asks its holder to release it:
        the bot lock's owner, else the provider lock's, known by ``identities``."""
        ask = ReleaseAsk(
            resource=resource.name, provider=resource.provider, asker=asker, status="asked"
        )
        bot_lock = self.store.get_lock(resource.name)
        if bot_lock is not None and bot_lock.owner != asker:
            ask.holder, ask.bot_lock = bot_lock.owner, bot_lock
        else:
            provider = self.providers[resource.provider]
            try:
                held = await asyncio.wait_for(provider.lock(resource), reads.READ_TIMEOUT)
            except (ProviderError, TimeoutError) as exc:
                ask.status = "unreadable"
                ask.error = str(exc) or f"{resource.provider} did not answer in time"
                return ask
            if held is not None and held.owner:
                ask.kind, ask.provider_lock = "provider", held
                ask.holder = self._user_known_as(resource.provider, held.owner)
                if ask.holder is None:
                    ask.status = "unknown_holder"
                    return ask
        if ask.holder is None:
            ask.status = "unlocked"
            return ask
        if self._notifier is None or not await self._notifier.ask_release(ask):
            ask.status = "unreachable"
            return ask
        self.store.audit(
            asker,
            "lock.release_asked",
            resource=resource.name,
            detail={"owner": ask.holder, "kind": ask.kind},
        )
        return ask

    def _user_known_as(self, provider: str, owner: str) -> str | None:
        """The user whose configured identity in ``provider`` is ``owner``."""
        for user_id, names in self.config.identities.items():
            if names.get(provider, "").casefold() == owner.casefold():
                return user_id
        return None

    async def release(self, resource: str, asker: str, kind: LockKind, holder: str) -> None:
        """The holder answers a request: released. A bot lock is removed (LockError if it
        is no longer theirs); a provider lock is released at the provider, by them, and
        their word for it is audited. The asker is told."""
        if kind == "bot":
            self._unlock(resource, holder, is_admin=False, force=False)
        else:
            self.store.audit(
                holder, "lock.release_confirmed", resource=resource, detail={"asker": asker}
            )
        answer = ReleaseAnswer(
            resource=resource, asker=asker, holder=holder, kind=kind, released=True
        )
        await self._tell(lambda face: face.release_answered(answer))

    async def keep(self, resource: str, asker: str, kind: LockKind, holder: str) -> None:
        """The holder answers a request: kept. The asker is told."""
        self.store.audit(
            holder, "lock.release_declined", resource=resource, detail={"asker": asker}
        )
        answer = ReleaseAnswer(
            resource=resource, asker=asker, holder=holder, kind=kind, released=False
        )
        await self._tell(lambda face: face.release_answered(answer))

    async def _tell(self, telling: Callable[[LockNotifier], Awaitable[None]]) -> None:
        """Tell someone through the face; one that cannot (or no face) must not undo what
        was done."""
        if self._notifier is None:
            log.warning("no face to tell about a lock in this process")
            return
        try:
            await telling(self._notifier)
        except Exception:
            log.exception("a lock notifier failed")

    # -- reading, warning ----------------------------------------------------------------

    async def in_force(self) -> LocksInForce:
        """Every lock in force."""
        return await LocksInForce.read(
            self.store.active_locks(), self.providers, self.config.all_resources()
        )

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
        assert self._notifier is not None  # (it is registered with one)
        return await self._notifier.expiring(lock)
