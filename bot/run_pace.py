"""How a scheduled run paces its stops: at the providers' speed, not at the stops'.

A stop is one request the provider answers at once (202); the resource then stops by
itself. So a run holds nothing per stop once it is accepted (following it is the shared
status polling of :mod:`bot.polling`), and what limits it is what providers limit: the
requests of each account (:class:`providers.pacing.RequestGate`). Around that, a run

* reads every selected resource's status and provider lock once, with one list call per
  provider account (:meth:`RunPace.prior`), so that each resource costs its stop call and
  nothing else (a provider's lone resource is read on its own: one call either way);
* prepares and sends only a window of stops per provider at a time (twice the requests
  the account allows in flight), so that the gate always has the next request ready while
  the event loop is never taken by thousands of previews at once;
* caps the stops in progress per provider only if ``scheduling.max_stops_in_progress``
  says so, for a provider that queues many stops badly.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from bot.config import ResourceConfig, StopbotConfig
from bot.workflow import PriorRead
from providers.base import Phase, Provider, ProviderLock, Resource, ResourceStatus

__all__ = ["ADMISSION", "RunPace"]

log = logging.getLogger(__name__)

ADMISSION = 10
"""Stops of a provider started and not yet sent, at most, per request it allows in flight."""

# A run's bulk read stands for its whole run: a lock taken since is the provider's to
# enforce (it refuses the stop, reported as skipped), as it would be a second after a read.
_READ_STANDS_FOR_THE_RUN = dt.timedelta.max


class RunPace:
    """One run's bulk reads and windows, per provider account."""

    def __init__(
        self,
        config: StopbotConfig,
        providers: dict[str, Provider],
        resources: Sequence[ResourceConfig],
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.config = config
        self.providers = providers
        self.clock = clock
        self._groups: dict[str, list[ResourceConfig]] = {}
        for resource in resources:
            self._groups.setdefault(resource.provider, []).append(resource)
        self._reads: dict[str, asyncio.Task[_BulkRead]] = {}
        self._windows: dict[str, asyncio.Semaphore] = {}
        self._admissions: dict[str, asyncio.Semaphore] = {}
        self._previews: dict[str, asyncio.Lock] = {}
        self._caps: dict[str, asyncio.Semaphore] = {}

    async def prior(self, resource: Resource) -> PriorRead | None:
        """``resource``'s status and lock from its provider's bulk read (made at the first
        call for that provider); None when the bulk read failed or left it out, or when it
        is the run's only resource of that provider (one call either way, and its own read
        is the fresher): it is then read on its own, as a `/stop` is."""
        if len(self._groups.get(resource.provider, ())) < 2:
            return None
        read = self._reads.get(resource.provider)
        if read is None:
            read = asyncio.create_task(
                self._read(resource.provider), name=f"bulk-read-{resource.provider}"
            )
            self._reads[resource.provider] = read
        # Each is used once (a run's first try of each resource): let go of it then.
        return (await asyncio.shield(read)).take(resource.id)

    async def _read(self, name: str) -> _BulkRead:
        group = [r.to_resource() for r in self._groups.get(name, [])]
        found = await self.providers[name].statuses_and_locks(group)
        failed = [str(s) for s, _ in found.values() if isinstance(s, BaseException)]
        if failed:
            log.warning(
                "bulk read before the run failed for some: each is read on its own",
                extra={"provider": name, "error": failed[0], "count": len(failed)},
            )
        bulk = _BulkRead(name, self.clock())
        for rid, (status, lock) in found.items():
            if not isinstance(status, BaseException):
                bulk.keep(rid, status, lock)
        return bulk

    def sending(self, provider: str) -> asyncio.Semaphore:
        """The window of stops of ``provider`` being prepared and sent, until accepted."""
        window = self._windows.get(provider)
        if window is None:
            window = asyncio.Semaphore(5 * self._in_flight(provider))
            self._windows[provider] = window
        return window

    def admission(self, provider: str) -> asyncio.Semaphore:
        """Places among ``provider``'s stops started and not yet sent (twice its window),
        so the window always has the next ones, while the stops further down the run's
        list wait as items, not as tasks (a run of 10,000 held them all in memory)."""
        admission = self._admissions.get(provider)
        if admission is None:
            admission = asyncio.Semaphore(ADMISSION * self._in_flight(provider))
            self._admissions[provider] = admission
        return admission

    def previewing(self, provider: str) -> asyncio.Lock:
        """One preview of ``provider`` at a time: with its read done before, a preview is
        only store writes, and a window's worth at once would hold the event loop (and
        every Slack ack behind it) for as long; one at a time, they take turns with it."""
        return self._previews.setdefault(provider, asyncio.Lock())

    def in_progress(self, provider: str) -> contextlib.AbstractAsyncContextManager[object]:
        """A slot among ``provider``'s stops in progress, when they are capped."""
        cap = self.config.scheduling.max_stops_in_progress
        if cap is None:
            return contextlib.nullcontext()
        return self._caps.setdefault(provider, asyncio.Semaphore(cap))

    def _in_flight(self, provider: str) -> int:
        try:
            return self.config.provider(provider).requests.max_in_flight
        except KeyError:  # a provider no longer configured: its stops fail on their own
            return 1


class _Read(NamedTuple):
    """One resource's status and lock from a bulk read, as plain values: a run of 10,000
    holds them until each stop is prepared, and a ResourceStatus (a pydantic model with
    its own set of the fields given) took ten times the memory."""

    state: str
    phase: Phase
    terminal: bool
    message: str | None
    observed_at: dt.datetime
    lock: ProviderLock | BaseException | None


class _BulkRead:
    """A provider's bulk read: each resource's read, given out once."""

    def __init__(self, provider: str, at: dt.datetime) -> None:
        self.provider = provider
        self.at = at
        self._reads: dict[str, _Read] = {}

    def keep(
        self, rid: str, status: ResourceStatus, lock: ProviderLock | BaseException | None
    ) -> None:
        self._reads[rid] = _Read(
            status.state, status.phase, status.terminal, status.message, status.observed_at, lock
        )

    def take(self, rid: str) -> PriorRead | None:
        read = self._reads.pop(rid, None)
        if read is None:
            return None
        status = ResourceStatus(
            provider=self.provider,
            resource_id=rid,
            state=read.state,
            phase=read.phase,
            terminal=read.terminal,
            message=read.message,
            observed_at=read.observed_at,
        )
        return PriorRead((status, read.lock), self.at, lock_stands_for=_READ_STANDS_FOR_THE_RUN)
