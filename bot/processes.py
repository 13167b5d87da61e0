"""Which bot processes are alive: who may carry on with the work a process left behind.

Every process that drives work (prepares and sends stops, follows them, executes runs,
delivers messages, handles requests it answered) registers in the store and owns that work
by its id. When it dies, whatever it owned is taken over by a live process: at start by the
next one, or by a replica beside it.

Telling dead from alive without waiting: on the same host (the same kernel and process
namespace) a process is alive while its pid runs with the start time it registered, so a
process killed with SIGKILL is known dead the moment it is gone, and a restart takes over
at once. A process on another host (another container) is judged by its heartbeat, which
it renews every ``lease / 3``: it is dead once its lease has run out. A process that ends
cleanly says so (:meth:`ProcessRegistry.retire`) and hands its work back at once.

Within one Python process several registrations may live (tests run a "second process"
in-process): each is alive until it is retired or :meth:`abandoned <Registration.abandon>`,
the in-process stand-in for a kill.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.store import Store
    from bot.store.base import OwnedWork

__all__ = [
    "DEFAULT_LEASE",
    "ProcessInfo",
    "ProcessRegistry",
    "Registration",
    "host_key",
    "process_start",
]

log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

DEFAULT_LEASE = dt.timedelta(seconds=30)

# Registrations alive in this Python process (see the module's docstring).
_LIVE_HERE: set[str] = set()


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except OSError:
        return ""


def host_key() -> str:
    """What makes pids comparable: the kernel's boot, its pid namespace, the host name."""
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}|{_read('/proc/sys/kernel/random/boot_id')}|{namespace}"


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None when no such
    process runs (a zombie, killed and not yet reaped, counts as gone). Where /proc is
    missing (not Linux), "" for any pid that exists."""
    stat = _read(f"/proc/{pid}/stat")
    if stat:
        # The command name (field 2) may hold spaces and parentheses: split after its end.
        fields = stat.rsplit(")", 1)[-1].split()
        state, start = fields[0], fields[19]
        return None if state in {"Z", "X", "x"} else start
    if Path("/proc/self/stat").exists():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return ""
    return ""


@dataclass(frozen=True)
class ProcessInfo:
    """A registered process as the store keeps it."""

    id: str
    host: str
    pid: int
    pid_start: str
    heartbeat_at: dt.datetime
    retired: bool = False

    def alive(self, now: dt.datetime, lease: dt.timedelta, here: str) -> bool:
        if self.retired:
            return False
        if self.host == here:
            if self.pid == os.getpid():
                return self.id in _LIVE_HERE
            return process_start(self.pid) == self.pid_start
        return now - self.heartbeat_at < lease


@dataclass
class Registration:
    """This process as the store knows it."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    host: str = field(default_factory=host_key)
    pid: int = field(default_factory=os.getpid)

    def __post_init__(self) -> None:
        self.pid_start = process_start(self.pid) or ""
        _LIVE_HERE.add(self.id)

    def abandon(self) -> None:
        """Be dead from now on, as a killed process is, leaving everything owned behind
        (tests: a process killed in the middle of its work)."""
        _LIVE_HERE.discard(self.id)

    @property
    def live(self) -> bool:
        return self.id in _LIVE_HERE


Sweep = Callable[[], Awaitable[object]]


class ProcessRegistry:
    """This process in the store: registered, kept alive by its heartbeat, and asking which
    owners are dead so their work can be taken over.

    ``sweeps`` run at start and then every ``interval``: each component takes over the
    work of dead processes (its own compare-and-set decides who wins).
    """

    def __init__(
        self,
        store: Store,
        *,
        lease: dt.timedelta = DEFAULT_LEASE,
        registration: Registration | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.me = registration or Registration()
        self.here = self.me.host
        self.sweeps: list[Sweep] = []
        self._loop: asyncio.Task[None] | None = None
        self._registered = False

    @property
    def id(self) -> str:
        return self.me.id

    def register(self) -> None:
        if not self._registered:
            self.store.register_process(self.me)
            self._registered = True

    def beat(self) -> None:
        """Renew this process's heartbeat. A process silent longer than the lease (paused,
        or cut off from the database) may have been taken for dead and forgotten by
        another, which took its work over (this one's writes to that work are refused
        since): it registers again, so that what it starts from now on is known as a
        live process's."""
        if self._registered and not self.store.heartbeat(self.me.id):
            log.warning(
                "this process was taken for dead (silent longer than the lease of %s): "
                "its work was taken over; it registers again",
                self.lease,
            )
            self.store.register_process(self.me)

    def dead(self) -> set[str]:
        """The ids of registered processes that are dead (never this one)."""
        return self._judged()[1]

    def live(self) -> set[str]:
        """The ids of the registered processes alive now, this one among them."""
        return self._judged()[0]

    def _judged(self) -> tuple[set[str], set[str]]:
        now = self.store.clock()
        live: set[str] = {self.me.id}
        dead: set[str] = set()
        for p in self.store.processes():
            if p.id != self.me.id:
                (live if p.alive(now, self.lease, self.here) else dead).add(p.id)
        return live, dead

    def orphaned(self, owner: str | None, live: set[str] | None = None) -> bool:
        """Whether work owned by ``owner`` has nobody alive driving it (an owner the
        store no longer knows is long dead)."""
        if owner is None:
            return True
        if owner == self.me.id:
            return False
        return owner not in (self.live() if live is None else live)

    def take(self, work: OwnedWork, key: str, previous: str | None) -> bool:
        """Own one piece of work (see :meth:`Store.take_over`); True when it is this
        process's now."""
        if previous == self.me.id:
            return True
        return self.store.take_over(work, key, self.me.id, previous)

    async def sweep(self) -> None:
        """Take over what dead processes left, once (start, and each interval)."""
        for sweep in self.sweeps:
            try:
                await sweep()
            except Exception as exc:
                _failed("taking over a dead process's work failed; next round retries", exc)
        try:
            await self.store.off_loop(lambda: self.store.forget_processes(self.dead()))
        except Exception as exc:
            _failed("could not forget dead processes", exc)

    def start(self, interval: float | None = None) -> None:
        """Heartbeat and sweep every ``interval`` seconds (a third of the lease)."""
        self.register()
        every = interval if interval is not None else self.lease.total_seconds() / 3

        async def loop() -> None:
            while True:
                await asyncio.sleep(every)
                try:
                    # Off the loop, and on the lane no run's writes queue on: a heartbeat
                    # late by the lease would have this process taken for dead.
                    await self.store.off_loop(self.beat, urgent=True)
                except Exception as exc:
                    _failed("heartbeat failed", exc)
                await self.sweep()

        self._loop = asyncio.get_running_loop().create_task(loop(), name="process-registry")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None

    def retire(self) -> None:
        """Ending cleanly: hand everything this process owns back at once."""
        from bot.store.errors import StoreUnavailableError  # the store imports this module

        if self._registered:
            try:
                self.store.retire_process(self.me.id)
            except StoreUnavailableError as exc:  # the others see it gone, by its pid or its lease
                log.warning("could not hand this process's work back at its end: %s", exc)
            self._registered = False
        self.me.abandon()


def _failed(what: str, exc: Exception) -> None:
    """Log a failed duty (called in its ``except``): a database that does not answer is
    one line (it is said every round until it answers again), anything else with its
    traceback."""
    from bot.store.errors import StoreUnavailableError  # the store imports this module

    if isinstance(exc, StoreUnavailableError):
        log.warning("%s: %s", what, exc)
    else:
        log.exception(what)
