"""Ack latency: how fast ``stopbot serve --http`` answers Slack while its providers are slow.

Slack gives an app three seconds to acknowledge a slash command or a click; the ack must
not wait for any provider or Slack Web API call. Target: p99 under 50 ms on a 2-core machine.

    .venv/bin/python -m bench.ack_latency [--runs 5] [--requests 200] [--check]

Each run starts a fresh rig (bench/common.py): the simulators with every call slowed by
``--provider-latency`` (500 ms), a fake Slack with every answer slowed by
``--slack-latency`` (200 ms), and the bot on a new database. Then, timing each request
from before it is sent to its whole response (``perf_counter``):

1. the first signed request after the start, alone (a ``/stop help``);
2. a warm-up of a few sequential requests, not counted;
3. the baseline: ``--requests`` concurrent ``GET /healthz``, the same server and client with
   no Slack handling, so the ratio shows what the Slack path adds to the floor;
4. ``--requests`` concurrent signed ``/stop dev-eu`` slash commands (each its own trigger_id);
5. waiting, untimed, until the bot has shown all their confirmations;
6. ``--requests`` concurrent Confirm clicks, one on each of those distinct operations;
7. ``--lone`` more ``/stop dev-eu`` commands, one at a time, each after a random pause
   (50 ms on average), as people's requests come: each meets whatever the bot is doing at
   that moment (the clicks' stops being sent, a run's writes), where a burst is timed at
   one moment only.

With ``--during-run N``, the simulators also hold N bench resources (bench/nightly_run.py's
estate, beside the sample one) and the bot a schedule over them: each run first starts that
schedule ("Run now"), lets it send stops for a few seconds, then takes the same figures
while the run is in flight (a run that ended before the last click is reported).

Each figure printed is the median over the runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    CHANNEL,
    USER,
    HttpRequest,
    Profiler,
    Rig,
    Row,
    Stats,
    add_database_url,
    bench_parser,
    fire,
    format_table,
    load_session,
    machine,
    main_thread_cpu,
    profile_summary,
    reported_errors,
    signed_headers,
    store_shown,
)
from bench.nightly_run import Options as NightlyOptions
from bench.nightly_run import bot_config, make_estate, post_signed, run_done, run_now_click
from bot.slack import views
from bot.slack.fake_api.payloads import (
    block_actions_body,
    block_actions_payload,
    slash_command_body,
)
from providers.simulators.samples import DEFAULT_SEED, sample_config

__all__ = ["Options", "Report", "RunResult", "main", "measure", "measure_once", "report"]

TARGET_P99 = 0.050
"""Seconds: the p99 that commands and clicks must stay under."""
RESOURCE = "dev-eu"
WARM_UP = 10
HTTP_TIMEOUT = 30.0
"""Longer than Slack's 3 s on purpose: a slow answer is measured, not cut off."""

LABELS = {
    "cold": "first request after start",
    "baseline": "GET /healthz (baseline)",
    "commands": f"/stop {RESOURCE} (slash command)",
    "clicks": "Confirm click (block_actions)",
    "lone": f"/stop {RESOURCE} alone, at random moments",
}
LONE_PAUSE = 0.1
"""Seconds: the longest pause before each lone request (uniform: 50 ms on average)."""


@dataclass(frozen=True)
class Options:
    requests: int = 200
    provider_latency: float = 0.5
    slack_latency: float = 0.2
    confirm_timeout: float = 120.0
    keep: Path | None = None
    profile: Path | None = None
    during_run: int = 0
    stop_seconds: float = 5.0
    """How long each of the run's resources takes to stop: a real cluster takes minutes,
    so a real night holds thousands of stops in flight at once."""
    ramp_up: float = 3.0
    database_url: str | None = None
    lone: int = 100


@dataclass(frozen=True)
class RunResult:
    """One run's figures, and what failed in it."""

    cold: Stats
    baseline: Stats
    commands: Stats
    clicks: Stats
    errors: tuple[str, ...] = ()
    cpu: tuple[float, float] = (math.nan, math.nan)
    """The CPU seconds of the bot's event loop a request, in the commands and the clicks
    bursts (its post-ack work may start before a burst's last answer is read)."""
    lone: Stats | None = None
    """The requests sent one at a time (None: none were, ``--lone 0``)."""


def _command(rig: Rig, text: str, response_url: str) -> HttpRequest:
    body = slash_command_body(
        "/stop", text, USER, CHANNEL, response_url, f"bench.{uuid.uuid4().hex}"
    )
    return HttpRequest("POST", rig.bot.events_url, body, signed_headers(body))


def _commands(rig: Rig, text: str, count: int) -> list[HttpRequest]:
    urls = rig.slack.response_urls([{"channel": CHANNEL, "user": USER}] * count)
    return [_command(rig, text, url) for url in urls]


def _clicks(rig: Rig, confirmations: Sequence[tuple[str, str]]) -> list[HttpRequest]:
    """A Confirm click on each confirmation, as Slack posts a click on an ephemeral message."""
    hooks = [
        {"channel": CHANNEL, "user": USER, "message_ts": ts, "is_ephemeral": True}
        for _, ts in confirmations
    ]
    requests = []
    for (op_id, ts), url in zip(confirmations, rig.slack.response_urls(hooks), strict=True):
        payload = block_actions_payload(
            USER,
            CHANNEL,
            views.CONFIRM,
            op_id,
            response_url=url,
            message_ts=ts,
            is_ephemeral=True,
            block_id=f"confirm:{op_id}",
            button_text="Confirm stop",
            trigger_id=f"bench.{uuid.uuid4().hex}",
        )
        body = block_actions_body(payload)
        requests.append(HttpRequest("POST", rig.bot.events_url, body, signed_headers(body)))
    return requests


async def measure_once(rig: Rig, options: Options, run: int = 1) -> RunResult:
    """One run against a started rig (its bot fresh: the first request is the cold one)."""
    n = options.requests
    errors: list[str] = []
    healthz = HttpRequest("GET", f"{rig.bot.url}/healthz")

    cpu: dict[str, float] = {}

    async def timed(requests: list[HttpRequest], kind: str) -> Stats:
        # Behind an ingress the bot's connections are kept open, so a burst is timed on
        # connections opened beforehand (they may have timed out while the bot worked).
        await fire(session, [healthz] * len(requests))
        with _profiled(rig, options, f"run-{run}-{kind}"):
            before = main_thread_cpu(rig.bot.pid)
            latencies, failed = await fire(session, requests)
            cpu[kind] = (main_thread_cpu(rig.bot.pid) - before) / len(requests)
        errors.extend(f"{LABELS[kind]}: {error}" for error in failed)
        return Stats.of(latencies, len(failed))

    async def one_at_a_time(session: Any, requests: list[HttpRequest], seed: int) -> Stats:
        pauses = random.Random(seed)  # the same moments for the same run number
        latencies: list[float] = []
        failures: list[str] = []
        for request in requests:
            await asyncio.sleep(pauses.uniform(0, LONE_PAUSE))
            answered, failed = await fire(session, [request])
            latencies += answered
            failures += failed
        errors.extend(f"{LABELS['lone']}: {error}" for error in failures)
        return Stats.of(latencies, len(failures))

    run_started = math.nan
    if options.during_run:
        post_signed(rig.bot, run_now_click(rig.bot, rig.slack))
        run_started = time.time()
        await asyncio.sleep(options.ramp_up)  # the bulk read is over, stops are being sent
    async with load_session(HTTP_TIMEOUT) as session:
        latencies, failed = await fire(session, _commands(rig, "help", 1))
        errors.extend(f"{LABELS['cold']}: {error}" for error in failed)
        cold = Stats.of(latencies, len(failed))
        for request in [*_commands(rig, "help", WARM_UP), *[healthz] * WARM_UP]:
            await fire(session, [request])
        baseline = await timed([healthz] * n, "baseline")
        commands = await timed(_commands(rig, RESOURCE, n), "commands")
        shown = rig.slack.confirmations(n, timeout=options.confirm_timeout)
        if len({op_id for op_id, _ in shown}) != n:
            raise rig.bot.failed(
                f"the bot showed {len(shown)} confirmations for {n} commands within "
                f"{options.confirm_timeout:g}s, not one each"
            )
        clicks = await timed(_clicks(rig, shown), "clicks")
        lone = None
        if options.lone:
            lone = await one_at_a_time(session, _commands(rig, RESOURCE, options.lone), run)
    if options.during_run and run_done(rig.slack, run_started):
        errors.append(f"the {options.during_run}-resource run ended before the last click")
    return RunResult(
        cold, baseline, commands, clicks, tuple(errors), (cpu["commands"], cpu["clicks"]), lone
    )


def _profiled(rig: Rig, options: Options, name: str) -> contextlib.AbstractContextManager[Any]:
    if options.profile is None:
        return contextlib.nullcontext()
    options.profile.mkdir(parents=True, exist_ok=True)
    return Profiler(rig.bot.pid, options.profile / f"{name}.txt")


def _with_estate(n: int, stop_seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The simulators' seed and the stopbot.yaml keys for the sample estate plus ``n``
    bench resources (each stopped ``stop_seconds`` after its stop), and the bench's
    schedule over those."""
    estate = make_estate(n, stop_seconds=stop_seconds)
    seed: dict[str, Any] = {}
    for api, section in estate.seed.items():
        merged = {**DEFAULT_SEED[api], **section}
        for key, value in section.items():
            if isinstance(value, list):
                merged[key] = [*DEFAULT_SEED[api].get(key, []), *value]
        seed[api] = merged
    config = bot_config(estate, "http://unused", NightlyOptions())
    resources = [*sample_config("http://unused")["resources"], *estate.resources]
    return seed, {"resources": resources, "schedules": config["schedules"]}


def measure(options: Options, runs: int) -> list[RunResult]:
    """``runs`` independent runs, each on a rig of its own."""
    results = []
    seed, config = (
        _with_estate(options.during_run, options.stop_seconds)
        if options.during_run
        else (None, None)
    )
    for run in range(1, runs + 1):
        keep = options.keep / f"run-{run}" if options.keep is not None else None
        with Rig(
            provider_latency=options.provider_latency,
            slack_latency=options.slack_latency,
            keep=keep,
            seed=seed,
            config=config,
            database_url=options.database_url,
        ) as rig:
            results.append(asyncio.run(measure_once(rig, options, run)))
        print(f"run {run}/{runs} done", file=sys.stderr, flush=True)
    return results


@dataclass(frozen=True)
class Report:
    rows: list[Row]
    missed: list[str]
    errors: list[str]
    text: str


def _ratio(stats: Stats, baseline: Stats) -> float:
    return stats.p99 / baseline.p99 if baseline.p99 > 0 else math.nan


def report(results: Sequence[RunResult], options: Options) -> Report:
    """The medians as a table, with the per-run p99s and whether the target was met."""
    if not results:
        raise ValueError("no runs to report")

    def median_of(kind: str) -> Stats:
        return Stats.median([getattr(r, kind) for r in results])

    def ratio_of(kind: str) -> float:
        return statistics.median(_ratio(getattr(r, kind), r.baseline) for r in results)

    kinds = ["baseline", "commands", "clicks"]
    if all(r.lone is not None for r in results):
        kinds.append("lone")
    rows = [Row(LABELS[kind], median_of(kind), ratio_of(kind)) for kind in kinds]
    held = rows[1:]  # the acks (the baseline is the floor they are compared with)
    rows.append(Row(LABELS["cold"], median_of("cold")))
    errors = [error for r in results for error in r.errors]
    missed = [
        f"{row.label}: p99 {row.stats.p99 * 1000:.1f} ms, target under {TARGET_P99 * 1000:g} ms"
        for row in held
        if not row.stats.p99 < TARGET_P99
    ]
    missed += [
        f"{row.label}: {row.stats.errors} request(s) without a 200"
        for row in rows[:-1]
        if row.stats.errors
    ]
    per_run = "; ".join(
        f"{kind} " + " ".join(f"{getattr(r, kind).p99 * 1000:.1f}" for r in results)
        for kind in kinds
    )

    def cpu_of(index: int) -> str:
        return " ".join(f"{r.cpu[index] * 1e6:.0f}" for r in results)

    cpu_line = (
        "The bot's event loop CPU a request during each burst, µs: commands "
        f"{cpu_of(0)}; clicks {cpu_of(1)}."
    )
    lines = [
        f"Ack latency: {options.requests} concurrent requests of each kind"
        + (f", then {options.lone} one at a time" if options.lone else "")
        + "; providers "
        f"+{options.provider_latency * 1000:g} ms a call, Slack Web API "
        f"+{options.slack_latency * 1000:g} ms a call; median of {len(results)} run(s)"
        + (
            f"; while a scheduled run over {options.during_run} more resources (each "
            f"stopped {options.stop_seconds:g} s after its stop) was in flight."
            if options.during_run
            else "."
        ),
        f"Machine: {machine()}; {store_shown(options.database_url)}.",
        "",
        format_table(rows),
        "",
        f"p99 per run, ms: {per_run}.",
        cpu_line,
        f"Target p99 < {TARGET_P99 * 1000:g} ms for every ack: "
        + ("met." if not missed else "MISSED: " + "; ".join(missed) + "."),
    ]
    if errors:
        shown = errors[:5]
        more = f" (and {len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
        lines.append("Failed requests: " + "; ".join(shown) + more)
    return Report(rows, missed, errors, "\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser("python -m bench.ack_latency", (__doc__ or "").split("\n\n")[0])
    defaults = Options()
    parser.add_argument(
        "--requests",
        type=int,
        default=defaults.requests,
        help=f"concurrent requests of each kind (default {defaults.requests})",
    )
    parser.add_argument(
        "--provider-latency",
        type=float,
        default=defaults.provider_latency,
        help=f"seconds added to every provider call (default {defaults.provider_latency:g})",
    )
    parser.add_argument(
        "--slack-latency",
        type=float,
        default=defaults.slack_latency,
        help=f"seconds added to every Slack Web API answer (default {defaults.slack_latency:g})",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep each run's logs, configuration and database under DIR",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record the bot with py-spy during each timed burst, into DIR/run-N-KIND.txt "
        "(the figures are then slower: py-spy shares the CPUs)",
    )
    parser.add_argument(
        "--during-run",
        type=int,
        default=0,
        metavar="N",
        help="measure while a scheduled run over N more resources is in flight",
    )
    parser.add_argument(
        "--stop-seconds",
        type=float,
        default=defaults.stop_seconds,
        metavar="S",
        help="with --during-run: seconds each of its resources takes to stop "
        f"(default {defaults.stop_seconds:g}; minutes keep thousands in flight, as a real night)",
    )
    parser.add_argument(
        "--lone",
        type=int,
        default=defaults.lone,
        metavar="N",
        help=f"commands then sent one at a time, at random moments (default {defaults.lone}; "
        "0: none)",
    )
    add_database_url(parser)
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.provider_latency < 0 or args.slack_latency < 0:
        parser.error("a latency cannot be negative")
    if args.lone < 0:
        parser.error("--lone cannot be negative")
    if args.stop_seconds <= 0:
        parser.error("--stop-seconds must be more than 0")
    options = Options(
        args.requests,
        args.provider_latency,
        args.slack_latency,
        keep=args.keep,
        profile=args.profile,
        during_run=args.during_run,
        stop_seconds=args.stop_seconds,
        database_url=args.database_url,
        lone=args.lone,
    )
    with reported_errors():
        results = measure(options, args.runs)
    result = report(results, options)
    print(result.text)
    if options.profile is not None:
        for kind in ("commands", "clicks"):
            path = options.profile / f"run-{args.runs}-{kind}.txt"
            inner, own = profile_summary(path)
            print(f"\nThe bot during the {kind} burst of run {args.runs} ({path}):")
            print("  time spent in (self):")
            print("\n".join(f"    {share:6.1%}  {frame}" for share, frame in inner))
            print("  Stopbot's own calls (with what they called):")
            print("\n".join(f"    {share:6.1%}  {frame}" for share, frame in own))
    return 1 if args.check and result.missed else 0


if __name__ == "__main__":
    sys.exit(main())
