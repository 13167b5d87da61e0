"""What a resource costs an hour of running, for the savings (:mod:`bot.savings`): its
``cost_per_hour``, else the first ``savings.tags`` rule its tags match (configured), else
what its provider's API says (Qovery's currentCost, a range), else its provider's configured
default; None when nothing tells.

A provider's answer is kept in the store (shared by the replicas, kept across restarts) and
asked again once it is ``COST_TTL`` old. The leader keeps the answers fresh out of a run's way
(:meth:`Rates.refresh`, from housekeeping); a run's summary uses what is kept, even stale (an
estimate), and asks a provider only for a resource it never answered for: a nightly run sends
its stops and nothing else per resource.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bot import reads
from bot.config import ResourceConfig, StopbotConfig
from bot.store import Store
from providers.base import CostRange, Provider, utcnow

__all__ = ["COST_TTL", "Rate", "Rates"]

log = logging.getLogger(__name__)

COST_TTL = dt.timedelta(hours=6)
"""How long a provider's cost answer stands before the leader asks again (a cluster's cost
moves with its size, not by the hour)."""

RETRY_FAILED = dt.timedelta(minutes=15)
"""How long a resource whose cost read failed is left before it is asked again (a provider
that refuses or does not answer is not asked every housekeeping round)."""

REFRESH_IN_FLIGHT = 2
"""Cost reads of one provider account at a time during a refresh: a few, so that a run's
stops, sharing the account's requests (providers.pacing), keep most of them."""


@dataclass(frozen=True)
class Rate:
    """What a resource costs an hour of running: ``low`` to ``high`` (equal for a
    configured rate), in ``currency``, and where that comes from."""

    low: float
    high: float
    currency: str
    source: str

    @property
    def is_range(self) -> bool:
        return self.low != self.high


class Rates:
    """The rate of each resource: configured, else the provider's (kept in the store), else
    the provider's configured default."""

    def __init__(
        self,
        config: StopbotConfig,
        providers: Mapping[str, Provider],
        store: Store | None = None,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.config = config
        self.providers = providers
        self.store = store
        self.clock = clock
        # name -> (when the provider answered, its answer: None says it has no figure)
        self._costs: dict[str, tuple[dt.datetime, CostRange | None]] = {}
        self._failed: dict[str, dt.datetime] = {}  # name -> when its read last failed

    def configured(self, resource: ResourceConfig) -> Rate | None:
        settings = self.config.savings
        if resource.cost_per_hour is not None:
            rate = resource.cost_per_hour
            return Rate(rate, rate, settings.currency, f"configured for {resource.name}")
        for rule in settings.tags:
            if all(resource.tags.get(k) == v for k, v in rule.tags.items()):
                tags = ", ".join(f"{k}={v}" for k, v in sorted(rule.tags.items()))
                return Rate(
                    rule.per_hour, rule.per_hour, settings.currency, f"configured for {tags}"
                )
        return None

    def _default(self, resource: ResourceConfig) -> Rate | None:
        settings = self.config.savings
        rate = settings.providers.get(resource.provider)
        if rate is None:
            return None
        return Rate(rate, rate, settings.currency, f"configured for provider {resource.provider}")

    def cached(self, resource: ResourceConfig) -> Rate | None:
        """The rate from what is known now, without asking a provider or the store."""
        configured = self.configured(resource)
        if configured is not None:
            return configured
        known = self._costs.get(resource.name)
        if known is not None and known[1] is not None:
            return _from_cost(known[1])
        return self._default(resource)

    async def rates(
        self, resources: Sequence[ResourceConfig], *, stale: bool = True
    ) -> dict[str, Rate | None]:
        """The rate of each of ``resources``, asking providers where needed, all at once:
        for a cost never read, or (``stale``) one read ``COST_TTL`` ago; with
        ``stale=False`` an old answer stands (a run's estimate asks nothing it knows)."""
        await self._read(resources, stale=stale, wait=reads.READ_TIMEOUT)
        return {r.name: self.cached(r) for r in resources}

    async def refresh(self, resources: Sequence[ResourceConfig]) -> int:
        """Ask providers again for every cost ``COST_TTL`` old or never read; how many were
        asked. The leader's, from housekeeping: a run then finds them known. A few reads
        of an account at a time (``REFRESH_IN_FLIGHT``), each bounded by the HTTP
        client's timeouts only: thousands queue for minutes, and that is no failure."""
        return await self._read(resources, stale=True, in_flight=REFRESH_IN_FLIGHT)

    async def _read(
        self,
        resources: Sequence[ResourceConfig],
        *,
        stale: bool,
        wait: float | None = None,
        in_flight: int | None = None,
    ) -> int:
        if not self.config.savings.from_providers:
            return 0

        def due(r: ResourceConfig) -> bool:
            return self._due(r.name, stale) and not self._failed_lately(r.name)

        wanted = [r for r in resources if self.configured(r) is None and self._costly(r)]
        unknown = [r for r in wanted if due(r)]
        if unknown and self.store is not None:
            await self._load([r.name for r in unknown])  # another process may have read them
            unknown = [r for r in unknown if due(r)]
        if not unknown:
            return 0
        slots: dict[str, asyncio.Semaphore] = {}

        async def ask(resource: ResourceConfig) -> CostRange | None:
            if in_flight is None:
                return await self._ask(resource, wait)
            slot = slots.setdefault(resource.provider, asyncio.Semaphore(in_flight))
            async with slot:
                return await self._ask(resource, wait)

        answers = await asyncio.gather(*(ask(r) for r in unknown))
        kept = [
            (r.name, cost.model_dump(mode="json"))
            for r, cost in zip(unknown, answers, strict=True)
            if cost is not None
        ]
        store = self.store
        if kept and store is not None:
            await store.off_loop(lambda: store.save_costs(kept))
        return len(unknown)

    async def _load(self, names: Sequence[str]) -> None:
        store = self.store
        assert store is not None
        found = await store.off_loop(lambda: store.costs(names))
        for name, (at, cost) in found.items():
            try:
                self._costs[name] = (at, CostRange.model_validate(cost))
            except ValueError:  # a row no version of ours wrote: asked again
                log.warning("unreadable kept cost", extra={"resource": name})

    def _costly(self, resource: ResourceConfig) -> bool:
        """Whether ``resource``'s provider answers costs at all (the base class says None
        without a call)."""
        provider = self.providers.get(resource.provider)
        return provider is not None and type(provider).cost is not Provider.cost

    def _due(self, name: str, stale: bool) -> bool:
        known = self._costs.get(name)
        if known is None:
            return True
        return stale and self.clock() - known[0] > COST_TTL

    def _failed_lately(self, name: str) -> bool:
        failed = self._failed.get(name)
        return failed is not None and self.clock() - failed < RETRY_FAILED

    async def _ask(self, resource: ResourceConfig, wait: float | None) -> CostRange | None:
        provider = self.providers[resource.provider]
        try:
            cost = await asyncio.wait_for(provider.cost(resource.to_resource()), wait)
        except Exception as exc:  # an unknown cost leaves the default, never a failed report
            self._failed[resource.name] = self.clock()
            log.warning(
                "cost read failed",
                extra={
                    "provider": resource.provider,
                    "resource": resource.name,
                    "error": str(exc) or type(exc).__name__,
                },
            )
            return None
        self._failed.pop(resource.name, None)
        self._costs[resource.name] = (self.clock(), cost)
        return cost


def _from_cost(cost: CostRange) -> Rate:
    low, high = cost.per_hour
    return Rate(low, high, cost.currency, cost.source)
