"""The assembled bot, built once: the stop workflow and its rules (policy, approvals,
locks, schedule rights), the schedule engine, and the duties that keep time.

Faces get it built. The Slack app, the terminal and the playground each take a
:class:`Stopbot` and plug in what they show through (:meth:`Stopbot.attach`, a
:class:`Face`): none of them builds a rule, an engine or a duty of its own.

Duties (:meth:`Stopbot.start_duties`, in a serving process only):

* taking over what dead processes left, at start and every ``recovery.sweep_interval``,
  in this order: the face's own (the requests it answered), the stops they drove, the
  messages they owed, their scheduled runs;
* housekeeping every ``housekeeping_interval``: approval requests past their expiry are
  ended, owners of locks about to expire are warned, wake leases are warned and ended
  (:mod:`bot.leases`);
* schedule ticks (:class:`~bot.schedules.ScheduleRunner`), on the bot's clock: when it
  jumps (:meth:`Stopbot.clock_moved`), what fell due is done at once;
* discovery (:mod:`bot.discovery`): the leader lists the discovered provider accounts
  every ``discovery.interval`` (within housekeeping); every process lays the store's
  latest snapshot over its configured resources at each housekeeping round.

Housekeeping and schedule ticks are done by the leader only (:mod:`bot.leadership`: every
process on SQLite, one replica at a time on PostgreSQL); takeovers are done by every
process, each one a compare-and-set.

What the duties have to say is owed through the outbox in the same transaction as the
change, and shown by the face's notifiers: a process with no face (``stopbot stop``)
leaves it owed, for a process whose face shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.approvals import ApprovalNotifier
from bot.config import StopbotConfig
from bot.discovery import Discovery, Refreshed
from bot.environments import EnvironmentNotifier, Environments
from bot.leadership import Leadership, Sole
from bot.leases import LeaseNotifier, Leases
from bot.locks import LockNotifier, Locks
from bot.models import Owed
from bot.policy import GroupMembers, Policy
from bot.processes import Sweep
from bot.savings import Report, Savings
from bot.schedules import ScheduleEngine, ScheduleNotifier, ScheduleRights, ScheduleRunner
from bot.store import Store
from bot.workflow import Clock, ProgressNotifier, StopService, Unshown
from providers.base import Provider, utcnow

__all__ = ["DIGEST", "DISCOVERY_GONE", "DiscoveryNotifier", "Face", "SavingsNotifier", "Stopbot"]

DIGEST = "savings-digest"
"""The outbox kind of the weekly savings digest."""
WEEK = dt.timedelta(days=7)
DISCOVERY_GONE = "discovery-gone"
"""The outbox kind of the note that resources are gone at a provider."""
FRESH_FOR_A_RUN = dt.timedelta(minutes=1)
DISCOVERY_WAIT = 60.0
"""Seconds a run, or housekeeping, waits for a discovery refresh at most (the last
snapshot stays, and the next round tries again)."""


class DiscoveryNotifier(Protocol):
    """A face that tells ``channel`` which resources are gone at ``provider`` (``gone``:
    ``provider:id (name)`` each); False: try again later."""

    async def gone(self, channel: str, provider: str, gone: list[str]) -> bool | None: ...


class SavingsNotifier(Protocol):
    """A face that shows the weekly savings digest (False: try again later)."""

    async def digest(self, channel: str, report: Report) -> bool | None: ...


log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Face:
    """What a face plugs into the assembled bot: who is in a user group, how it shows
    what the core owes it (each notifier optional), and its own takeovers (``sweeps``,
    run first)."""

    group_members: GroupMembers | None = None
    progress: ProgressNotifier | None = None
    approvals: ApprovalNotifier | None = None
    locks: LockNotifier | None = None
    schedules: ScheduleNotifier | None = None
    leases: LeaseNotifier | None = None
    savings: SavingsNotifier | None = None
    discovery: DiscoveryNotifier | None = None
    sweeps: Sequence[Sweep] = ()
    environments: EnvironmentNotifier | None = None


class Stopbot:
    """The bot's rules, engine and duties over one store and one client per provider."""

    def __init__(
        self,
        config: StopbotConfig,
        store: Store,
        providers: dict[str, Provider],
        *,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
        housekeeping_interval: float = 30.0,
        schedule_tick: float | None = 30.0,
        leadership: Leadership | None = None,
    ) -> None:
        """``schedule_tick``: seconds between the scheduler's ticks besides each cron
        fire; None: no scheduler in this process (its owner ticks the engine itself).
        ``leadership``: who among the processes does the time-driven duties (default:
        every one)."""
        self.config = config
        self.store = store
        self.providers = providers
        self.policy = Policy(config)
        self.service = StopService(
            config, store, providers, policy=self.policy, clock=clock, sleep=sleep
        )
        self.clock = self.service.clock
        self.registry = self.service.registry
        self.outbox = self.service.outbox
        self.approvals = self.service.approvals
        self.locks = Locks(config, store, providers, self.policy, self.outbox)
        self.engine = ScheduleEngine(config, store, self.service)
        self.leases = Leases(
            config, store, self.service, self.policy, self.outbox, self.engine.next_stop_of
        )
        self.engine.definitions.leases = self.leases
        self.savings = Savings(config, store, providers, clock=self.clock)
        self.engine.count_savings_with(self.savings)
        self.outbox.handle(DIGEST, self._deliver_digest)
        self._savings_notifier: SavingsNotifier | None = None
        self._discovery_notifier: DiscoveryNotifier | None = None
        self.outbox.handle(DISCOVERY_GONE, self._deliver_gone)
        self.leadership = leadership or store.leadership(
            config.recovery.leader_timeout.total_seconds()
        )
        self.scheduler = (
            ScheduleRunner(self.engine, schedule_tick, lambda: self.leadership.leading)
            if schedule_tick
            else None
        )
        self.schedules = ScheduleRights(self.engine, self.policy, self.rebuild_schedules)
        self.discovery = Discovery(config, store, providers, clock=self.clock)
        self.discovery.load()
        self.engine.runs.before_start = self._discover_before_a_run
        self.housekeeping_interval = housekeeping_interval
        self._housekeeping: asyncio.Task[None] | None = None
        self._housekeeping_woken: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notices: set[asyncio.Task[None]] = set()
        self._costs: asyncio.Task[int] | None = None
        # Before the outbox's and the engine's (see the module's docstring).
        self.registry.sweeps.insert(0, self.resume_stops)
        # Environments stopped tier after tier (bot/environments.py): after the stops they
        # wait for are taken over.
        self.environments = Environments(config, self.service)
        self.registry.sweeps.insert(1, self.environments.resume)

    def attach(self, face: Face) -> None:
        """Plug a face in, once, before the duties start."""
        if face.group_members is not None:
            self.policy.group_members = face.group_members
        if face.progress is not None:
            self.service.show_progress_with(face.progress)
        if face.approvals is not None:
            self.approvals.notify_with(face.approvals)
        if face.locks is not None:
            self.locks.notify_with(face.locks)
        if face.schedules is not None:
            self.engine.notify_with(face.schedules)
        if face.leases is not None:
            self.leases.notify_with(face.leases)
        if face.savings is not None:
            self._savings_notifier = face.savings
        if face.environments is not None:
            self.environments.notify_with(face.environments)
        if face.discovery is not None:
            self._discovery_notifier = face.discovery
        self.registry.sweeps[0:0] = face.sweeps

    # -- duties ---------------------------------------------------------------------

    async def start_duties(self) -> None:
        """Take over what dead processes left, then keep this process alive in the store
        and do the time-driven work (housekeeping, schedules)."""
        # The outbox starts on this loop now: the workflow's store calls run off the loop
        # (bot/store/background.py), and a kick from there needs a loop to go to.
        self.outbox.kick()
        await self.registry.sweep()
        self.registry.start(self.config.recovery.sweep_interval.total_seconds())
        self._housekeeping = asyncio.create_task(self._housekeep(), name="housekeeping")
        if self.scheduler is not None:
            self.scheduler.start()
        self.leadership.follow(on_lead=self._lead, on_change=self._schedules_changed)
        await self.leadership.start()

    async def stop_duties(self) -> None:
        """Stop the time-driven work (then :meth:`aclose`)."""
        await self.leadership.stop()
        await self.registry.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)
            self._housekeeping = None
        if self._costs is not None:
            self._costs.cancel()
            await asyncio.gather(self._costs, return_exceptions=True)
            self._costs = None

    async def aclose(self) -> None:
        """Stop following stops (the store keeps them), and hand what this process owned
        to the next one at once."""
        await self.environments.aclose()
        await self.service.aclose()
        self.registry.retire()

    async def resume_stops(self) -> None:
        """Carry on the stops dead processes drove (their progress is owed to their face
        through the outbox)."""
        resumed = await self.service.resume(lambda op: Unshown())
        if resumed:
            log.info("took over %d stop(s) in flight", len(resumed))

    async def tick(self) -> None:
        """Housekeeping: end the approval requests past their expiry, warn the owners of
        locks about to expire, warn and end wake leases, owe the weekly savings digest when
        due, and read what is counted stopped (every ``savings.check_interval``)."""
        # Off the loop (on PostgreSQL, writes wait their turn behind a run's).
        await self.store.off_loop(self.approvals.expire)
        await self.store.off_loop(self.locks.warn_expiring)
        try:
            if self.discovery.due():  # bounded: the other duties wait for it
                await asyncio.wait_for(self.refresh(), DISCOVERY_WAIT)
        except Exception:  # a failed listing must never stop the other duties
            log.exception("discovery failed; trying again next round")
        await self.leases.tick()
        self.owe_digest()
        self._refresh_costs()
        try:
            await self.savings.check()
        except Exception:  # counting must never stop the other duties
            log.exception("savings check failed; trying again next round")

    @property
    def cost_refresh(self) -> asyncio.Task[int] | None:
        """The latest refresh of the costs housekeeping started (None: none yet)."""
        return self._costs

    def _refresh_costs(self) -> None:
        """Ask providers again for the costs that are old (bot/rates.py), in the
        background: housekeeping does not wait for a few thousand paced reads, and a run's
        summary then finds them known rather than asking them between its stops."""
        if not self.config.savings.from_providers:
            return
        if self._costs is not None and not self._costs.done():
            return
        self._costs = asyncio.create_task(
            self.savings.rates.refresh(self.config.resources), name="costs"
        )
        self._costs.add_done_callback(_log_cost_refresh)

    async def refresh(self) -> list[Refreshed]:
        """List the discovered provider accounts now and keep what they hold (for any
        process: the leader's periodic refresh, or someone asking)."""
        results = await self.discovery.refresh()
        self.owe_gone(results)
        return results

    def owe_gone(self, results: Sequence[Refreshed]) -> None:
        """Owe ``discovery.channel`` the resources a refresh found gone: once, whichever
        process or replica refreshed (a claim on the account's snapshot)."""
        channel = self.config.discovery.channel
        if channel is None:
            return
        taken = self.store.discovered_at()
        for r in results:
            if not r.gone or r.provider not in taken:
                continue
            owed = self.outbox.message(
                DISCOVERY_GONE,
                f"{r.provider}:{taken[r.provider].isoformat()}",
                {"channel": channel, "provider": r.provider, "gone": r.gone},
            )
            if self.store.claim(owed.key, owe=owed):
                self.outbox.kick()

    async def _deliver_gone(self, owed: Owed) -> bool:
        if self._discovery_notifier is None:
            return False
        payload = owed.payload
        told = await self._discovery_notifier.gone(
            payload["channel"], payload["provider"], list(payload["gone"])
        )
        return told is not False

    async def _discover_before_a_run(self) -> None:
        """A run selects from a snapshot at most ``FRESH_FOR_A_RUN`` old: a resource
        created since the last refresh is stopped tonight, one deleted is not tried (and
        noted once, by the refresh). A provider that does not answer leaves the last
        snapshot, after ``DISCOVERY_WAIT`` at most."""
        try:
            await asyncio.wait_for(self.discovery.refresh_if_older(FRESH_FOR_A_RUN), DISCOVERY_WAIT)
        except Exception:  # the run goes on with the last snapshot
            log.exception("discovery before a run failed; the last snapshot is used")

    def owe_digest(self) -> bool:
        """Owe this week's savings digest, once across restarts and replicas (a claim in
        the store, with the message it owes); True when this call owed it."""
        digest = self.config.savings.digest
        slot = self.savings.digest_due(self.clock())
        if digest is None or slot is None:
            return False
        owed = self.outbox.message(
            DIGEST,
            slot.isoformat(),
            {
                "channel": digest.channel,
                "since": (slot - WEEK).isoformat(),
                "until": slot.isoformat(),
            },
        )
        if not self.store.claim(owed.key, owe=owed):
            return False
        self.outbox.kick()
        return True

    async def _deliver_digest(self, owed: Owed) -> bool:
        if self._savings_notifier is None:
            return False
        report = await self.savings.report(
            dt.datetime.fromisoformat(owed.payload["since"]),
            until=dt.datetime.fromisoformat(owed.payload["until"]),
        )
        return await self._savings_notifier.digest(owed.payload["channel"], report) is not False

    async def _lead(self) -> None:
        """Now the leader: do at once what is due (a fire the previous leader missed)."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.rebuild()
            await self.scheduler.tick()
        await self.tick()

    async def _schedules_changed(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.rebuild()
            await self.scheduler.tick()

    async def _housekeep(self) -> None:
        self._housekeeping_woken = woken = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        while True:
            woken.clear()
            try:
                if self.leadership.leading:
                    await self.tick()
                else:
                    self.discovery.load()  # what the leader found, since the last round
            except Exception:
                log.exception("housekeeping failed; trying again next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), self.housekeeping_interval)

    def clock_moved(self) -> None:
        """The movable clock jumped (the playground's "skip ahead"): what fell due (a
        fire, a warning, an approval request's expiry, a lock's warning) is done now, not
        at the next round. Safe from any thread."""
        if self.scheduler is not None:
            self.scheduler.wake()
        woken, loop = self._housekeeping_woken, self._loop
        if woken is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(woken.set)

    def rebuild_schedules(self) -> None:
        """The scheduler's cron jobs, after a schedule was added or removed here; the
        other processes (the leader among them) hear of it too."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.rebuild()
        if not isinstance(self.leadership, Sole):
            task = asyncio.get_running_loop().create_task(self.leadership.changed())
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)


def _log_cost_refresh(task: asyncio.Task[int]) -> None:
    if task.cancelled():
        return
    failed = task.exception()
    if failed is not None:  # counting must never stop the other duties
        log.error("cost refresh failed; trying again next round", exc_info=failed)
    elif task.result():
        log.info("costs read again", extra={"count": task.result()})
