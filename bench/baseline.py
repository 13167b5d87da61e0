"""The baseline for the nightly run: the same stops done as a cron script does them.

A plain synchronous httpx client, one request at a time: POST each resource's stop in
turn, then read each stopped-or-not resource's own status endpoint in turn, round after
round, until every one is stopped. Same simulators, same estate, same latency and stop
duration as bench/nightly_run.py; each run then measures the bot on that estate too, so
the ratio compares two figures taken minutes apart on the same machine.

    .venv/bin/python -m bench.baseline --resources 1000 --runs 1
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import BenchError, bench_parser, machine, reported_errors
from bench.nightly_run import (
    Estate,
    Options,
    RunResult,
    SeededSimulators,
    make_estate,
    measure_once,
)
from providers.simulators.samples import (
    FELDERA_API_KEY,
    NOVA_PASSWORD,
    NOVA_PROJECT,
    NOVA_USER,
    OKEANOS_TOKEN,
    QOVERY_ORG,
    QOVERY_TOKEN,
)

__all__ = ["BaselineResult", "CronScript", "format_results", "main", "run_baseline"]


@dataclass(frozen=True)
class BaselineResult:
    """One baseline run, and the bot's run on the same estate right after it."""

    n: int
    wall: float
    provider_calls: int
    stopped: int
    rounds: int
    bot: RunResult | None

    @property
    def calls_per_resource(self) -> float:
        return self.provider_calls / self.n

    @property
    def bot_ratio(self) -> float | None:
        return None if self.bot is None else self.bot.wall / self.wall


class CronScript:
    """What a cron job would do with httpx against the four APIs, one call at a time."""

    def __init__(self, sims_url: str) -> None:
        self.url = sims_url
        self.client = httpx.Client(timeout=60.0)
        self.calls = 0
        self._compute = ""
        self._nova_token = ""

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        self.calls += 1
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise BenchError(f"{method} {url} got no answer: {exc}") from None
        if response.status_code >= 400:
            raise BenchError(f"{method} {url} answered {response.status_code}: {response.text}")
        return response

    def _nova(self) -> tuple[str, dict[str, str]]:
        """Keystone once (as a script does), then the compute endpoint from its catalog."""
        if not self._nova_token:
            body = {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": NOVA_USER,
                                "domain": {"name": "Default"},
                                "password": NOVA_PASSWORD,
                            }
                        },
                    },
                    "scope": {"project": {"name": NOVA_PROJECT, "domain": {"name": "Default"}}},
                }
            }
            response = self._call("POST", f"{self.url}/nova/identity/v3/auth/tokens", json=body)
            self._nova_token = response.headers["X-Subject-Token"]
            catalog = response.json()["token"]["catalog"]
            self._compute = next(
                str(e["url"]).rstrip("/")
                for s in catalog
                if s["type"] == "compute"
                for e in s["endpoints"]
                if e["interface"] == "public"
            )
        return self._compute, {"X-Auth-Token": self._nova_token}

    def stop(self, resource: dict[str, Any]) -> None:
        provider, rid = resource["provider"], resource["id"]
        if provider == "qovery":
            url = f"{self.url}/qovery/organization/{QOVERY_ORG}/cluster/{rid}/stop"
            self._call("POST", url, headers={"Authorization": f"Token {QOVERY_TOKEN}"})
        elif provider == "nova":
            compute, headers = self._nova()
            url = f"{compute}/servers/{rid}/action"
            self._call("POST", url, headers=headers, json={"os-stop": None})
        elif provider == "okeanos":
            self._call(
                "POST",
                f"{self.url}/okeanos/api/apps/{rid}/stop/",
                headers={"Authorization": f"Token {OKEANOS_TOKEN}"},
                data={"lambda_instance_id": resource["lambda_instance_id"]},
            )
        else:
            self._call(
                "POST",
                f"{self.url}/feldera/v0/pipelines/{rid}/stop",
                params={"force": "true"},
                headers={"Authorization": f"Bearer {FELDERA_API_KEY}"},
            )

    def stopped(self, resource: dict[str, Any]) -> bool:
        provider, rid = resource["provider"], resource["id"]
        if provider == "qovery":
            url = f"{self.url}/qovery/organization/{QOVERY_ORG}/cluster/{rid}/status"
            body = self._call("GET", url, headers={"Authorization": f"Token {QOVERY_TOKEN}"})
            return bool(body.json()["status"] == "STOPPED")
        if provider == "nova":
            compute, headers = self._nova()
            body = self._call("GET", f"{compute}/servers/{rid}", headers=headers)
            return bool(body.json()["server"]["status"] == "SHUTOFF")
        if provider == "okeanos":
            body = self._call(
                "GET",
                f"{self.url}/okeanos/api/apps/{rid}/",
                headers={"Authorization": f"Token {OKEANOS_TOKEN}"},
            ).json()
            [app] = body["data"]
            [deployment] = [
                d for d in app["lambda_instances"] if d["id"] == resource["lambda_instance_id"]
            ]
            return not deployment["started"]
        body = self._call(
            "GET",
            f"{self.url}/feldera/v0/pipelines/{rid}",
            headers={"Authorization": f"Bearer {FELDERA_API_KEY}"},
        )
        return bool(body.json()["deployment_status"] == "Stopped")


def run_baseline(estate: Estate, options: Options, workdir: Path) -> tuple[float, int, int, int]:
    """(wall seconds, provider calls, resources stopped, status rounds) of one cron run."""
    sims = SeededSimulators(workdir)
    try:
        sims_url = sims.start_seeded(estate.seed)
        sims.slow_down(options.provider_latency)
        sims.reset_stats()
        script = CronScript(sims_url)
        try:
            started = time.monotonic()
            for resource in estate.resources:
                script.stop(resource)
            pending = list(estate.resources)
            rounds = 0
            deadline = started + 60 + estate.n * options.provider_latency * 10
            while pending and time.monotonic() < deadline:
                rounds += 1
                pending = [r for r in pending if not script.stopped(r)]
            wall = time.monotonic() - started
        finally:
            script.close()
        served = sum(sum(m.values()) for m in sims.requests().values())
        if served != script.calls:
            raise BenchError(f"the script made {script.calls} calls, the simulators saw {served}")
        return wall, served, estate.n - len(pending), rounds
    except BenchError as exc:
        raise BenchError(f"{exc}\n--- simulators:\n{sims.log_tail()}") from None
    finally:
        sims.stop()


def measure(
    n: int, options: Options, *, with_bot: bool = True, log: Callable[[str], Any] | None = None
) -> list[BaselineResult]:
    """``options.runs`` runs of the cron script, each followed by the bot on the same estate."""
    log = log or (lambda line: print(line, flush=True))
    estate = make_estate(n, options.stop_seconds)
    results = []
    for run in range(1, options.runs + 1):
        with tempfile.TemporaryDirectory(prefix="stopbot-baseline-") as tmp:
            wall, calls, stopped, rounds = run_baseline(estate, options, Path(tmp))
        bot = None
        if with_bot:
            with tempfile.TemporaryDirectory(prefix="stopbot-nightly-") as tmp:
                bot = measure_once(estate, options, Path(tmp), f"n{n}-run{run}", script=False)
        result = BaselineResult(n, wall, calls, stopped, rounds, bot)
        results.append(result)
        bot_text = "" if bot is None else f"; bot {bot.wall:.1f}s, ratio {result.bot_ratio:.3f}"
        log(f"# run {run}: cron {wall:.1f}s, {calls} calls, {stopped}/{n} stopped{bot_text}")
    return results


def format_results(results: Sequence[BaselineResult], concurrency: int = 10) -> str:
    """The cron script's row and the bot's: medians; "stopped" the fewest of any run."""
    med = statistics.median
    n = results[0].n
    cron_wall = med(r.wall for r in results)
    lines = [
        "| run | resources | wall s | provider calls / resource | stopped | bot / cron |",
        "|---|---:|---:|---:|---:|---:|",
        f"| cron script (httpx, one call at a time) | {n} | {cron_wall:.1f} | "
        f"{med(r.calls_per_resource for r in results):.2f} | "
        f"{min(r.stopped for r in results)}/{n} | 1.00 |",
    ]
    bots = [r for r in results if r.bot is not None]
    if bots:
        ratios = [r.bot_ratio for r in bots if r.bot_ratio is not None]
        lines.append(
            f"| Stopbot nightly run (concurrency {concurrency}) | {n} | "
            f"{med(r.bot.wall for r in bots if r.bot):.1f} | "
            f"{med(r.bot.calls_per_resource for r in bots if r.bot):.2f} | "
            f"{min(r.bot.outcomes.get('stopped', 0) for r in bots if r.bot)}/{n} | "
            f"{med(ratios):.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser("python -m bench.baseline", __doc__.splitlines()[0], runs=1)
    parser.add_argument("--resources", type=int, default=1000, help="how many (1000)")
    parser.add_argument("--provider-latency", type=float, default=0.1, help="s a call (0.1)")
    parser.add_argument("--stop-seconds", type=float, default=5.0, help="s a stop takes (5)")
    parser.add_argument("--no-bot", action="store_true", help="time the cron script only")
    args = parser.parse_args(argv)
    if args.resources < 1:
        parser.error(f"--resources must be at least 1, not {args.resources}")
    options = Options(
        sizes=(args.resources,),
        runs=args.runs,
        provider_latency=args.provider_latency,
        stop_seconds=args.stop_seconds,
    )
    with reported_errors():
        results = measure(args.resources, options, with_bot=not args.no_bot)
    print(
        f"\n{machine()}; providers +{options.provider_latency * 1000:g} ms a call, stops "
        f"{options.stop_seconds:g} s; medians of {options.runs} run(s)\n"
    )
    print(format_results(results, options.concurrency))
    if args.check:
        missed = [r for r in results if r.stopped != r.n]
        missed += [r for r in results if r.bot and r.bot.outcomes.get("stopped", 0) != r.n]
        if missed:
            print("MISSED: a run left resources running")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
