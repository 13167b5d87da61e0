"""What a resource costs an hour of running, for the savings (:mod:`bot.savings`): its
``cost_per_hour``, else the first ``savings.tags`` rule its tags match (configured), else
what its provider's API says (Qovery's currentCost, a range, asked at most once an hour),
else its provider's configured default; None when nothing tells."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot import reads
from bot.config import ResourceConfig, StopbotConfig
from providers.base import CostRange, Provider

__all__ = ["COST_TTL", "Rate", "Rates"]

log = logging.getLogger(__name__)

COST_TTL = 3600.0
"""Seconds a provider's cost answer is used before it is asked again."""


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
    """The rate of each resource: configured, else the provider's (cached an hour), else
    the provider's configured default."""

    def __init__(self, config: StopbotConfig, providers: Mapping[str, Provider]) -> None:
        self.config = config
        self.providers = providers
        self._costs: dict[str, tuple[float, CostRange | None]] = {}

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
        """The rate from what is known now, without asking a provider."""
        configured = self.configured(resource)
        if configured is not None:
            return configured
        known = self._costs.get(resource.name)
        if known is not None and known[1] is not None:
            return _from_cost(known[1])
        return self._default(resource)

    async def rates(self, resources: Sequence[ResourceConfig]) -> dict[str, Rate | None]:
        """The rate of each of ``resources``, asking providers where needed, all at once."""
        if self.config.savings.from_providers:
            ask = [r for r in resources if self.configured(r) is None and self._stale(r.name)]
            await asyncio.gather(*(self._ask(r) for r in ask))
        return {r.name: self.cached(r) for r in resources}

    def _stale(self, name: str) -> bool:
        known = self._costs.get(name)
        return known is None or time.monotonic() - known[0] > COST_TTL

    async def _ask(self, resource: ResourceConfig) -> None:
        provider = self.providers.get(resource.provider)
        if provider is None:
            return
        try:
            cost = await asyncio.wait_for(provider.cost(resource.to_resource()), reads.READ_TIMEOUT)
        except Exception as exc:  # an unknown cost leaves the default, never a failed report
            log.warning(
                "cost read failed",
                extra={"provider": resource.provider, "resource": resource.name, "error": str(exc)},
            )
            return
        self._costs[resource.name] = (time.monotonic(), cost)


def _from_cost(cost: CostRange) -> Rate:
    low, high = cost.per_hour
    return Rate(low, high, cost.currency, cost.source)
