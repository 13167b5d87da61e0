"""Discovery of a large estate: what one refresh costs in provider requests and time.

Each of the four simulated accounts holds ``--resources`` resources (10,000 by default);
one refresh lists them all (:meth:`bot.discovery.Discovery.refresh`, the code ``/stop
refresh`` and the leader run), keeps the snapshots in a SQLite store and lays them over
the configuration. The table gives, per account, the requests the simulators received
(counted by them, ``/_sim/stats``) against the requests one paged list needs, and the
median refresh time; then the time a second process takes to load the snapshots without
listing anything (a replica, a restart).

    .venv/bin/python -m bench.discovery [--resources 10000] [--runs 3]
"""

from __future__ import annotations

import asyncio
import copy
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import bench_parser, machine
from bot.config import parse_config
from bot.discovery import Discovery
from bot.store import open_store
from providers import okeanos as okeanos_client
from providers.base import Provider
from providers.registry import build_provider
from providers.simulators.samples import DEFAULT_SEED, sample_config
from providers.simulators.server import SimulatorServer

NOVA_PAGE = 1000  # Nova's default [api]/max_limit
APPS_PER_INSTANCE = 100


def seed(n: int) -> dict[str, Any]:
    """``n`` resources in each account (~okeanos: ``APPS_PER_INSTANCE`` an instance)."""
    section = copy.deepcopy(DEFAULT_SEED)
    section["qovery"]["clusters"] = [
        {"id": f"c{i:06d}", "name": f"cluster-{i:06d}", "status": "DEPLOYED"} for i in range(n)
    ]
    section["nova"]["max_limit"] = NOVA_PAGE
    section["nova"]["servers"] = [
        {"id": f"s{i:06d}", "name": f"server-{i:06d}", "tags": ["env=dev"]} for i in range(n)
    ]
    instances = math.ceil(n / APPS_PER_INSTANCE)
    section["okeanos"]["lambda_instances"] = [
        {"id": f"li{j:05d}", "name": f"lambda-{j:05d}"} for j in range(instances)
    ]
    section["okeanos"]["applications"] = [
        {
            "id": f"a{i:06d}",
            "name": f"app-{i:06d}",
            "type": "BATCH",
            "deployments": [
                {"lambda_instance_id": f"li{i // APPS_PER_INSTANCE:05d}", "started": True}
            ],
        }
        for i in range(n)
    ]
    section["feldera"]["pipelines"] = [
        {"name": f"pipeline-{i:06d}", "deployment_status": "Running"} for i in range(n)
    ]
    return section


def one_list(api: str, n: int) -> int:
    """The requests one paged list of ``n`` resources needs, as each API pages."""
    if api == "nova":  # full pages, then the empty page after the last full page's link
        return n // NOVA_PAGE + 1
    if api == "okeanos":  # the instance pages, then each instance's details
        instances = math.ceil(n / APPS_PER_INSTANCE)
        return math.ceil(instances / okeanos_client.PAGE_SIZE) + instances
    return 1  # Qovery's cluster list and Feldera's pipeline list are not paged


async def run(n: int, runs: int) -> tuple[list[dict[str, Any]], list[float]]:
    rows: dict[str, dict[str, Any]] = {}
    loads: list[float] = []
    with SimulatorServer(seed(n)) as sims, tempfile.TemporaryDirectory() as tmp:
        document = sample_config(sims.base_url)
        for p in document["providers"]:
            p["discover"] = True
        document["resources"] = []
        config = parse_config(document, "bench", env={})
        providers: dict[str, Provider] = {
            p.name: build_provider(p, http=config.http) for p in config.providers
        }
        store = open_store(Path(tmp) / "stopbot.db")
        discovery = Discovery(config, store, providers)
        await discovery.refresh()  # signs in once (Keystone), apart from the figures
        times: list[float] = []
        for _ in range(runs):
            sims.hub.faults.reset_counts()
            started = time.perf_counter()
            results = await discovery.refresh()
            times.append(time.perf_counter() - started)
            counts = sims.hub.faults.counts()
            for r in results:
                row = rows.setdefault(
                    r.provider, {"api": r.provider, "found": r.found, "requests": []}
                )
                row["requests"].append(sum(counts.get(r.provider, {}).values()))
        for row in rows.values():
            row["refresh"] = statistics.median(times)
        for _ in range(runs):
            other = parse_config(document, "bench", env={})
            started = time.perf_counter()
            Discovery(other, store, providers).load()
            loads.append(time.perf_counter() - started)
            assert len(other.resources) == 4 * n
        for p in providers.values():
            await p.aclose()
        store.close()
    return list(rows.values()), loads


def table(rows: Sequence[dict[str, Any]], n: int) -> str:
    lines = [
        "| account | resources found | requests a refresh | one paged list needs |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        requests = sorted(set(row["requests"]))
        lines.append(
            f"| {row['api']} | {row['found']} | {', '.join(map(str, requests))} | "
            f"{one_list(row['api'], n)} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser("bench.discovery", __doc__ or "", runs=3)
    parser.add_argument("--resources", type=int, default=10_000, help="per account")
    args = parser.parse_args(argv)
    rows, loads = asyncio.run(run(args.resources, args.runs))
    print(f"Discovery of {args.resources} resources an account, 4 accounts, on {machine()}")
    print()
    print(table(rows, args.resources))
    print()
    refresh = rows[0]["refresh"] if rows else 0.0
    print(
        f"One refresh of the four accounts (all at once, SQLite store): median {refresh:.2f} s "
        f"over {args.runs} run(s); a second process loads the {4 * args.resources} "
        f"resources from the store in {statistics.median(loads):.2f} s (median), listing nothing."
    )
    missed = [r for r in rows if max(r["requests"]) > one_list(r["api"], args.resources)]
    if missed:
        print("More requests than one paged list: " + ", ".join(r["api"] for r in missed))
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
