"""Prometheus metrics for ``GET /metrics``: what the bot is asked, what it stops, how fast
the providers answer.

    stopbot_commands_total{command}                          Slack commands and buttons received
    stopbot_stops_total{provider,outcome}                    stops that ended, by final state
    stopbot_operations_in_flight{provider,state}             stops being submitted or followed
    stopbot_provider_call_seconds{provider,method,endpoint,outcome}   each provider HTTP attempt
    stopbot_store_up                                         1 when the database answers
    stopbot_stopped_seconds_total{provider}                  time resources spent stopped
    stopbot_estimated_savings_total{provider,currency,bound} its estimated cost (low, high)

Stops and operations in flight are read from the store at scrape time rather than
counted in memory, so they are right after a restart and agree with the audit log.
Each :class:`Metrics` has its own registry (not prometheus-client's global one), so two
bots in one process (tests) never share counts.

The command counter (:meth:`Metrics.count_command`) is called by the Slack listeners,
which run after Bolt's request verification: forged requests are never counted. (Not a Bolt
middleware: each one builds every listener argument again, a sixth of an ack's cost.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.models import FINAL_STATES, TRACKED_STATES
from bot.savings import Savings
from bot.store import Store, StoreError
from providers.http import add_call_observer

__all__ = ["Metrics", "metrics_route"]

log = logging.getLogger(__name__)

# Provider calls take from milliseconds (a status read) to the whole HTTP timeout.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _StoreCollector(Collector):
    """Stops, operations in flight and runs, counted by the store at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        stops = CounterMetricFamily(
            "stopbot_stops",
            "Stops that ended, by provider and final state.",
            labels=["provider", "outcome"],
        )
        in_flight = GaugeMetricFamily(
            "stopbot_operations_in_flight",
            "Stops submitted and not yet ended (followed, or resumed at the next start).",
            labels=["provider", "state"],
        )
        up = GaugeMetricFamily("stopbot_store_up", "1 when the database answers, else 0.")
        try:
            counts = self.store.counts()
        except StoreError as exc:  # a scrape must say the store is down, not fail
            log.warning("metrics: cannot read the store", extra={"error": str(exc)})
            up.add_metric([], 0)
            yield up
            return
        runs = CounterMetricFamily(
            "stopbot_schedule_runs",
            "Scheduled runs by schedule and status (running, done, skipped, missed).",
            labels=["schedule", "status"],
        )
        for (schedule, status), count in counts.runs.items():
            runs.add_metric([schedule, status], count)
        yield runs
        final = {s.value for s in FINAL_STATES}
        tracked = {s.value for s in TRACKED_STATES}
        for (provider, state), count in counts.operations.items():
            if state in final:
                stops.add_metric([provider, state], count)
            elif state in tracked:
                in_flight.add_metric([provider, state], count)
        up.add_metric([], 1)
        yield from (stops, in_flight, up)


class _SavingsCollector(Collector):
    """Hours stopped and estimated savings by provider, counted from the audit (see
    :mod:`bot.savings`): a stretch still going grows at each scrape."""

    def __init__(self, savings: Savings) -> None:
        self.savings = savings

    def collect(self) -> Iterator[Metric]:
        seconds = CounterMetricFamily(
            "stopbot_stopped_seconds",
            "Seconds resources spent stopped by Stopbot, by provider.",
            labels=["provider"],
        )
        money = CounterMetricFamily(
            "stopbot_estimated_savings",
            "Estimated cost of those hours had the resources run (an estimate: hours times "
            "each resource's rate; bound low and high of a range), by provider and currency.",
            labels=["provider", "currency", "bound"],
        )
        try:
            totals = self.savings.totals()
        except StoreError as exc:
            log.warning("metrics: cannot read the savings", extra={"error": str(exc)})
            return
        for provider, (stopped, found) in sorted(totals.items()):
            seconds.add_metric([provider], stopped)
            for currency, (low, high) in sorted(found.items()):
                money.add_metric([provider, currency, "low"], low)
                money.add_metric([provider, currency, "high"], high)
        yield from (seconds, money)


class Metrics:
    """One bot's metrics: a registry of its own, fed by Bolt, the providers and the store."""

    def __init__(self, store: Store, savings: Savings | None = None) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "stopbot_commands",
            "Slack slash commands and interactions received (after signature checks).",
            ["command"],
            registry=self.registry,
        )
        self.provider_calls = Histogram(
            "stopbot_provider_call_seconds",
            "Provider HTTP calls, each attempt, by endpoint and outcome (status or error).",
            ["provider", "method", "endpoint", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store))
        if savings is not None:
            self.registry.register(_SavingsCollector(savings))
        self._detach: Callable[[], None] | None = None

    def observe_provider_call(
        self, provider: str, method: str, endpoint: str, outcome: str, seconds: float
    ) -> None:
        self.provider_calls.labels(provider, method, endpoint, outcome).observe(seconds)

    def attach(self) -> None:
        """Start timing provider calls (idempotent)."""
        if self._detach is None:
            self._detach = add_call_observer(self.observe_provider_call)

    def detach(self) -> None:
        if self._detach is not None:
            self._detach()
            self._detach = None

    def count_command(self, name: str) -> None:
        """Count one request that reached a listener (so a verified one), by a name of
        few values (``bot.slack.commands.request_name``)."""
        self.commands.labels(name).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def metrics_route(metrics: Metrics, path: str = "/metrics") -> Route:
    """``GET /metrics`` for a Starlette app."""

    async def endpoint(request: Request) -> Response:
        # Off the event loop: the savings' totals read the audit (seconds on a large one),
        # and acks must not wait behind a scrape.
        return Response(await asyncio.to_thread(metrics.render), media_type=CONTENT_TYPE_LATEST)

    return Route(path, endpoint, methods=["GET"])
