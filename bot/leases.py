"""Wake leases: a wake for a while (``wake <resource> for 2h``) brings a resource back, and
the bot stops it again when the while is over, so nobody has to remember to.

    wake (for a duration) ──▶ up ──▶ lease active ──▶ warned ──▶ ends ──▶ stopped
                                         │   ▲           │
                                         │   └─ Extend ──┘  (the end moves on, warned again)
                                         ├─ Keep until tomorrow's run ──▶ until_run ──▶
                                         │      (the next scheduled stop of it stops it)
                                         └─ Stop now / /stop leases end ──▶ ends now

* A lease opens when its wake is up (started, or running already): once per wake, in
  the store (:meth:`Store.open_lease`), by the process that ended the wake or, if it died
  first, by the leader's next round.
* While it runs, scheduled stops leave the resource alone (``leased_until`` for the
  schedule engine).
* Before it ends (``leases.warn_before``), its owner is warned once, owed through the
  outbox in the same transaction as the compare-and-set that marks it warned.
* At its end the leader claims it (active → ending, a compare-and-set: one winner across
  processes and restarts) and stops the resource with a stop of its own (actor
  ``lease:<owner>``, source ``lease``, idempotency key ``lease-end:<id>``, so a restart in
  the middle finds the same stop rather than making a second), audited as the lease's end.

All of it runs on the bot's clock from the leader's housekeeping (:meth:`Leases.tick`), so a
restart mid-lease still ends it on time: what is due is found in the store, not in memory.
Nothing here knows about Slack: a face shows warnings through a :class:`LeaseNotifier`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from functools import partial
from typing import Protocol

from bot.config import StopbotConfig, UnknownResourceError
from bot.durations import format_duration
from bot.models import LEASE_ACTOR, SYSTEM, Actor, Lease, LeaseState, OpState, Owed
from bot.outbox import Outbox
from bot.policy import Policy
from bot.store import Store
from bot.text import Person, Text, say
from bot.workflow import INTERRUPTED_PREPARING, StopService, Unshown

__all__ = ["LEASE_WARNING", "LeaseError", "LeaseNotifier", "Leases"]

log = logging.getLogger(__name__)

LEASE_WARNING = "lease-warning"
"""The outbox kind of the warning to a lease's owner before it ends."""
EXTEND_BY = dt.timedelta(hours=1)
CATCH_UP_EVERY = dt.timedelta(minutes=1)
"""How often the housekeeping looks for wakes whose lease was never opened (their process
died between the wake's end and its lease): a catch-up, not the usual way."""
MAX_END_TRIES = 3
"""Stops a lease's end makes at most (see :meth:`Leases._end_key`)."""
_RUNNING = (LeaseState.ACTIVE, LeaseState.UNTIL_RUN)

NextRun = Callable[[str, dt.datetime], dt.datetime | None]
"""The next scheduled stop of a resource after a time, if a schedule stops it."""


class LeaseError(Exception):
    """A lease action refused; ``text`` says why, for the person who asked."""

    def __init__(self, text: Text) -> None:
        super().__init__(str(text))
        self.text = text


class LeaseNotifier(Protocol):
    """A face that tells a lease's owner it is about to end (a DM with buttons)."""

    async def ending(self, lease: Lease) -> bool:
        """Show the warning; False: it could not be shown, try again later."""
        ...


class Leases:
    """The leases' rules and duties, the same for every face."""

    def __init__(
        self,
        config: StopbotConfig,
        store: Store,
        service: StopService,
        policy: Policy,
        outbox: Outbox,
        next_run: NextRun,
    ) -> None:
        self.config = config
        self.settings = config.leases
        self.store = store
        self.service = service
        self.policy = policy
        self.outbox = outbox
        self.next_run = next_run
        self._notifier: LeaseNotifier | None = None
        self._caught_up_at: dt.datetime | None = None
        self._claimed = False  # an end claimed since the last round: its stop is due

    def notify_with(self, notifier: LeaseNotifier) -> None:
        self._notifier = notifier
        self.outbox.handle(LEASE_WARNING, self._deliver_warning)

    # -- reading -----------------------------------------------------------------------

    def running(self) -> list[Lease]:
        """The leases running now, soonest end first."""
        return self.store.leases(_RUNNING)

    def on(self, resource: str) -> Lease | None:
        """The lease running on ``resource``, if any."""
        return next((lease for lease in self.running() if lease.resource == resource), None)

    def leased_until(self, resource: str, at: dt.datetime) -> Lease | None:
        """The lease that keeps ``resource`` out of a scheduled stop at ``at``: one running
        that ends after it (a lease kept until the next run ends at that run: not kept)."""
        lease = self.on(resource)
        return lease if lease is not None and lease.ends_at > at else None

    # -- people's actions --------------------------------------------------------------

    def _mine(self, lease_id: str, actor: str) -> Lease:
        lease = self.store.get_lease(lease_id)
        if lease is None or not lease.running:
            raise LeaseError(Text("This lease is over: nothing was changed."))
        if lease.owner != actor and not self.policy.is_admin(actor):
            raise LeaseError(
                say("Only {} (or an admin) can change this lease.", Person(lease.owner))
            )
        return lease

    def extend(self, lease_id: str, actor: str, by: dt.timedelta = EXTEND_BY) -> Lease:
        """Move the lease's end ``by`` later (from its end, or from now if that is past),
        warned again before the new end; kept within ``leases.max_duration`` from now."""
        lease = self._mine(lease_id, actor)
        now = self.service.clock()
        ends_at = max(lease.ends_at, now) + by
        if ends_at - now > self.settings.max_duration:
            raise LeaseError(
                say(
                    "A lease runs at most {} from now: it was not extended.",
                    format_duration(self.settings.max_duration),
                )
            )
        moved = self.store.move_lease(
            lease.id,
            LeaseState.ACTIVE,
            allowed_from=_RUNNING,
            actor=actor,
            audit="lease.extended",
            fields={"ends_at": ends_at, "warned_at": None},
        )
        if moved is None:
            raise LeaseError(Text("This lease is over: nothing was changed."))
        return moved

    def keep_until_run(self, lease_id: str, actor: str) -> Lease:
        """Keep the resource up until the next scheduled stop of it, which stops it (the
        lease then ends without a stop of its own)."""
        lease = self._mine(lease_id, actor)
        now = self.service.clock()
        fire = self.next_run(lease.resource, max(now, lease.ends_at))
        if fire is None:
            raise LeaseError(
                say(
                    "No schedule stops {}: there is no run to keep it until. Extend the "
                    "lease instead.",
                    lease.resource,
                )
            )
        moved = self.store.move_lease(
            lease.id,
            LeaseState.UNTIL_RUN,
            allowed_from=_RUNNING,
            actor=actor,
            audit="lease.kept_until_run",
            fields={"ends_at": fire},
        )
        if moved is None:
            raise LeaseError(Text("This lease is over: nothing was changed."))
        return moved

    def end_now(self, lease_id: str, actor: str) -> Lease:
        """End the lease now, by its stop (its owner, or an admin for anyone's)."""
        lease = self._mine(lease_id, actor)
        ending = self._claim_end(lease, actor, "ended early")
        if ending is None:
            raise LeaseError(Text("This lease is over: nothing was changed."))
        return ending

    # -- duties (the leader's housekeeping) ---------------------------------------------

    async def tick(self) -> None:
        """Open the leases whose wake ended where no lease was opened, warn the owners of
        those about to end, and end those due: each step a compare-and-set."""
        # The store's steps off the loop (on PostgreSQL, round trips and writes behind a
        # run's).
        due = await self.store.off_loop(self._advance)
        for lease in due:
            try:
                await self._stop(lease)
            except UnknownResourceError:
                gone = "the resource is no longer in the configuration"
                await self.store.off_loop(
                    partial(
                        self.store.move_lease,
                        lease.id,
                        LeaseState.ENDED,
                        allowed_from=[LeaseState.ENDING],
                        actor=SYSTEM,
                        audit="lease.ended",
                        fields={"end_reason": gone},
                    )
                )

    def _advance(self) -> list[Lease]:
        """:meth:`tick`'s steps in the store: leases opened, warned, claimed to end; those
        ending, to stop."""
        now = self.service.clock()
        if self._caught_up_at is None or now - self._caught_up_at >= CATCH_UP_EVERY:
            for op_id in self.store.unopened_leases():
                self.store.open_lease(op_id)
            self._caught_up_at = now
        leases = self.store.leases([*_RUNNING, LeaseState.ENDING])
        for lease in leases:
            if lease.state is LeaseState.ENDING:
                continue
            if lease.ends_at <= now:
                if lease.state is LeaseState.UNTIL_RUN:
                    self.store.move_lease(
                        lease.id,
                        LeaseState.ENDED,
                        allowed_from=[LeaseState.UNTIL_RUN],
                        actor=SYSTEM,
                        audit="lease.ended",
                        fields={"ended_by": SYSTEM, "end_reason": "kept until the scheduled run"},
                    )
                else:
                    self._claim_end(lease, SYSTEM, "its time ran out")
            elif (
                lease.state is LeaseState.ACTIVE
                and lease.warned_at is None
                and lease.ends_at - self.settings.warn_before <= now
            ):
                self._warn(lease, now)
        due = [lease for lease in leases if lease.state is LeaseState.ENDING]
        if self._claimed:  # ends claimed this round (or by a person since the last)
            self._claimed = False
            due = self.store.leases([LeaseState.ENDING])
        return due

    def _warn(self, lease: Lease, now: dt.datetime) -> None:
        owed = self.outbox.message(
            LEASE_WARNING,
            f"{lease.id}:{lease.ends_at.isoformat()}",
            {"lease": lease.id, "ends_at": lease.ends_at.isoformat()},
        )
        warned = self.store.move_lease(
            lease.id,
            LeaseState.ACTIVE,
            allowed_from=[LeaseState.ACTIVE],
            actor=SYSTEM,
            audit="lease.warned",
            unwarned=True,
            fields={"warned_at": now},
            owe=owed,
        )
        if warned is not None:
            self.outbox.kick()

    def _claim_end(self, lease: Lease, actor: str, why: str) -> Lease | None:
        self._claimed = True
        return self.store.move_lease(
            lease.id,
            LeaseState.ENDING,
            allowed_from=_RUNNING,
            actor=actor,
            audit="lease.ending",
            fields={"ended_by": actor, "end_reason": why},
        )

    async def _stop(self, lease: Lease) -> None:
        """The lease's own stop: prepared once (a restart finds it again by its key),
        confirmed without approval (the wake was allowed), followed in the background;
        the lease ends with it recorded."""
        actor = Actor(id=f"{LEASE_ACTOR}{lease.owner}")
        who = Person(lease.ended_by) if lease.ended_by and lease.ended_by != SYSTEM else None
        reason = (
            f"the wake lease of {lease.owner} ended: {lease.end_reason or 'its time ran out'}"
            if who is None
            else f"the wake lease of {lease.owner} was ended by {lease.ended_by}"
        )
        preview = await self.service.prepare(
            lease.resource,
            actor,
            source="lease",
            reason=reason,
            idempotency_key=self._end_key(lease),
        )
        op = preview.operation
        if op.state == OpState.REQUESTED:
            op = await self.service.until_decided(op.id)
        if op.state == OpState.AWAITING_CONFIRMATION:
            result = await self.store.off_loop(
                partial(self.service.confirm, op.id, actor, require_approval=False)
            )
            op = result.operation or self.store.get_operation(op.id) or op
        if op.state == OpState.SUBMITTING and op.id not in self.service.in_flight():
            self.service.start(op.id, Unshown(), actor)
        self.store.move_lease(
            lease.id,
            LeaseState.ENDED,
            allowed_from=[LeaseState.ENDING],
            actor=SYSTEM,
            audit="lease.ended",
            fields={"end_operation_id": op.id},
        )

    def _end_key(self, lease: Lease) -> str:
        """The key of the lease's stop: the same one across restarts, so that a restart
        finds the stop made before rather than making another; a next one only when that
        stop never went anywhere (a restart cut it before its confirmation, which then
        expired), so that the lease still ends with a stop."""
        for attempt in range(MAX_END_TRIES):
            key = f"lease-end:{lease.id}" + (f":{attempt}" if attempt else "")
            op = self.store.operation_for_key(key)
            unsent = op is not None and (
                op.state == OpState.CANCELLED
                or (op.state == OpState.FAILED and op.detail == INTERRUPTED_PREPARING)
            )
            if not unsent:
                return key
        return key

    async def _deliver_warning(self, owed: Owed) -> bool:
        """A warning is shown while the lease it warns of runs, with the end it warns of."""
        lease = self.store.get_lease(str(owed.payload.get("lease")))
        if (
            lease is None
            or lease.state is not LeaseState.ACTIVE
            or lease.ends_at.isoformat() != owed.payload.get("ends_at")
        ):
            return True  # ended, extended or kept since: nothing to warn of
        assert self._notifier is not None  # (registered with one)
        return await self._notifier.ending(lease)
