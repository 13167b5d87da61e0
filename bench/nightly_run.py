"""The nightly run at scale: one schedule stopping n resources over the four providers.

Each run starts, in processes of their own (bench/common.py), the provider simulators
seeded with n resources (n/4 a provider, each reaching its stopped state ``--stop-seconds``
after its stop, every call slowed by ``--provider-latency``), a fake Slack that records
every call it receives, and ``stopbot serve --http`` with a schedule selecting all n. It
then does what a person does: ``/stop schedule run nightly`` and a click on "Run now", and
waits for the summary message's final "run done" update.

The simulators allow each provider account ``--concurrency`` requests at once (a request
beyond is answered 429, ``POST /_sim/limits``), and the bot is configured with the same
``providers[].requests.max_in_flight``. Before the bot, in the same run and on the same
simulators (reseeded), a well-written asyncio script does the same stops
(bench/async_script.py): the second baseline.

Figures of a run: wall time from the click to that update (both timed on the wall clock
the fake Slack stamps its calls with); the physical floor (per provider, ceil(n /
concurrency) waves of one call to send the stops, then the stop's duration; the slowest
provider's) and the wall's ratio to it; the script's wall and the bot's ratio to it; the
old design's ideal (ceil(n / concurrency) waves of a call *and* a stop: the limit of
holding a slot per stop); provider HTTP calls per resource (``/_sim/stats`` over the run)
and the most requests an account had in flight; Slack Web API calls during the run against
the budget of 1 + wall / 3 s; the bot's peak RSS (``VmHWM``) and CPU seconds (and the
seconds it waited for a CPU: other processes on the machine). Medians over ``--runs``.

    .venv/bin/python -m bench.nightly_run --resources 1000 --runs 3
    .venv/bin/python -m bench.nightly_run --sizes 1000,10000 --runs 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.async_script import AsyncScript
from bench.common import (
    CHANNEL,
    PROVIDER_APIS,
    START_TIMEOUT,
    USER,
    BenchError,
    Bot,
    FakeSlackProcess,
    Profiler,
    Simulators,
    add_database_url,
    bench_parser,
    free_port,
    fresh_database,
    machine,
    main_thread_cpu,
    profile_summary,
    reported_errors,
    run_queue_wait,
    signed_headers,
    store_shown,
)
from bot.slack.fake_api import (
    RESPONSE_URL_METHOD,
    block_actions_body,
    block_actions_payload,
    slash_command_body,
)
from providers.simulators.samples import DEFAULT_SEED, sample_config

__all__ = [
    "TARGETS",
    "Estate",
    "Options",
    "RunResult",
    "floor_seconds",
    "format_results",
    "ideal_seconds",
    "main",
    "make_estate",
    "measure",
    "misses",
    "peak_rss_mb",
    "post_signed",
    "run_done",
    "run_now_click",
]

SCHEDULE = "nightly"
RUN_CONFIRM = "schedule_run_confirm"
# Targets of issue 16: wall / floor, wall / the asyncio script's, calls a resource, RSS.
TARGETS = {"floor": 1.3, "script": 1.15, "calls": 1.2, "rss_mb": 200.0}
SLACK_SECONDS = 3.0
"""A run may make one Slack call, and one more for every this many seconds it lasts."""
# Qovery's simulated stop goes STOP_QUEUED -> STOPPING -> STOPPED: two steps; the others one.
_STEPS = {"qovery": 2, "nova": 1, "okeanos": 1, "feldera": 1}
_NAMESPACE = uuid.UUID("5f0c2b8e-1d4a-4e7b-9c3f-6a8d0e2b4c10")


@dataclass(frozen=True)
class Options:
    """What one invocation measures."""

    sizes: tuple[int, ...] = (1000,)
    runs: int = 3
    provider_latency: float = 0.1
    stop_seconds: float = 5.0
    concurrency: int = 10
    poll_interval: float = 1.0
    batch_window: float | None = None
    check: bool = False
    keep: Path | None = None
    profile: Path | None = None
    database_url: str | None = None


# -- the estate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Estate:
    """The simulators' seed and the bot's stopbot.yaml for ``n`` resources."""

    n: int
    per_provider: dict[str, int]
    seed: dict[str, Any]
    resources: list[dict[str, Any]]


def _split(n: int) -> dict[str, int]:
    """n over the four providers, as evenly as it goes (the first ones get the rest)."""
    base, rest = divmod(n, len(PROVIDER_APIS))
    return {api: base + (1 if i < rest else 0) for i, api in enumerate(PROVIDER_APIS)}


def _uuid(kind: str, i: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}-{i}"))


def make_estate(n: int, stop_seconds: float) -> Estate:
    """n running resources, each reaching its stopped state ``stop_seconds`` after its stop."""
    if n < 1:
        raise BenchError(f"a run needs at least one resource, not {n}")
    split = _split(n)
    # Credentials and options as the default seed has them, so sample_config's providers
    # authenticate; the resources are ours.
    credentials = {
        api: {k: v for k, v in section.items() if not isinstance(v, list)}
        for api, section in DEFAULT_SEED.items()
    }
    step = {api: stop_seconds / _STEPS[api] for api in PROVIDER_APIS}
    instance = _uuid("lambda-instance", 0)
    clusters = [
        {"id": _uuid("cluster", i), "name": f"bench-q{i:05d}", "status": "DEPLOYED"}
        for i in range(split["qovery"])
    ]
    servers = [
        {"id": _uuid("server", i), "name": f"bench-n{i:05d}", "status": "ACTIVE"}
        for i in range(split["nova"])
    ]
    apps = [
        {
            "id": _uuid("app", i),
            "name": f"bench-o{i:05d}",
            "type": "batch",
            "deployments": [{"lambda_instance_id": instance, "started": True}],
        }
        for i in range(split["okeanos"])
    ]
    pipelines = [
        {"name": f"bench-f{i:05d}", "deployment_status": "Running"} for i in range(split["feldera"])
    ]
    seed = {
        "qovery": {**credentials["qovery"], "step_seconds": step["qovery"], "clusters": clusters},
        "nova": {**credentials["nova"], "step_seconds": step["nova"], "servers": servers},
        "okeanos": {
            **credentials["okeanos"],
            "step_seconds": step["okeanos"],
            "lambda_instances": [{"id": instance, "name": "bench-lambda", "status": "STARTED"}],
            "applications": apps,
        },
        "feldera": {
            **credentials["feldera"],
            "step_seconds": step["feldera"],
            "enterprise": False,
            "pipelines": pipelines,
        },
    }
    tags = {"env": "bench"}
    resources: list[dict[str, Any]] = [
        *({"name": c["name"], "provider": "qovery", "id": c["id"], "tags": tags} for c in clusters),
        *({"name": s["name"], "provider": "nova", "id": s["id"], "tags": tags} for s in servers),
        *(
            {
                "name": a["name"],
                "provider": "okeanos",
                "id": a["id"],
                "lambda_instance_id": instance,
                "tags": tags,
            }
            for a in apps
        ),
        *(
            {"name": p["name"], "provider": "feldera", "id": p["name"], "tags": tags}
            for p in pipelines
        ),
    ]
    return Estate(n=n, per_provider=split, seed=seed, resources=resources)


def bot_config(estate: Estate, sims_url: str, options: Options) -> dict[str, Any]:
    """The stopbot.yaml: the simulators' providers, the estate, one schedule over all of it."""
    return {
        "providers": [
            # The simulators allow each account `concurrency` requests at once (429 beyond),
            # and no cap a second: the bot is told so.
            {**p, "requests": {"max_in_flight": options.concurrency, "max_per_second": None}}
            for p in sample_config(sims_url)["providers"]
        ],
        "resources": estate.resources,
        "schedules": [
            {
                "name": SCHEDULE,
                "cron": "0 3 * * *",
                "timezone": "UTC",
                "select": {"tags": {"env": "bench"}},
                "channel": CHANNEL,
                "force": True,  # Feldera's open-source edition refuses graceful stops
                "warn_before": "1m",
            }
        ],
        # The default 2 s -> 15 s back-off can notice a 5 s stop up to 10 s late.
        "stops": {
            # Plain numbers are seconds: "0.5s" is no duration to the bot's config.
            "poll_initial": options.poll_interval,
            "poll_max": options.poll_interval,
            **(
                {"poll_batch_window": options.batch_window}
                if options.batch_window is not None
                else {}
            ),
        },
    }


def floor_seconds(estate: Estate, options: Options) -> float:
    """What the providers need: per provider, ceil(n / concurrency) waves of one call to
    send every stop, then the last stop's duration; the slowest provider's."""
    return max(
        math.ceil(count / options.concurrency) * options.provider_latency + options.stop_seconds
        for count in estate.per_provider.values()
        if count
    )


def ideal_seconds(estate: Estate, options: Options) -> float:
    """The old design's limit, a slot held per stop until it had stopped: per provider,
    ceil(n / concurrency) waves of one stop call and the stop itself, one after another."""
    return max(
        math.ceil(count / options.concurrency) * (options.provider_latency + options.stop_seconds)
        for count in estate.per_provider.values()
        if count
    )


# -- the processes ------------------------------------------------------------------------


class SeededSimulators(Simulators):
    """``stopbot simulate --seed FILE``: the simulators with the bench's estate."""

    def start_seeded(self, seed: Mapping[str, Any]) -> str:
        seed_path = self.workdir / "seed.yaml"
        seed_path.write_text(yaml.safe_dump(dict(seed)), encoding="utf-8")
        port = free_port()
        argv = [_stopbot(), "simulate", "--port", str(port), "--seed", str(seed_path)]
        self._spawn(argv, {}, pipe_stdout=False)
        self.url = f"http://127.0.0.1:{port}"
        self.wait_ready(f"{self.url}/_sim/state", timeout=START_TIMEOUT * 4)
        return self.url

    def reset_stats(self) -> None:
        httpx.delete(f"{self.url}/_sim/stats", timeout=30.0).raise_for_status()

    def wait_quiet(self, quiet: float = 1.0, timeout: float = 300.0) -> None:
        """Until no provider received a request for ``quiet`` seconds: the bot's start-up
        reads (its leader's first housekeeping reads every cluster's cost) are done, as
        they are hours before a nightly run."""
        deadline = time.monotonic() + timeout
        seen = self.requests()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.requests()
            if now == seen:
                return
            seen = now
        raise BenchError(f"the providers were never quiet for {quiet:g} s")

    def reseed(self, seed: Mapping[str, Any]) -> None:
        """Every resource back to its seeded state (faults and limits stay)."""
        httpx.post(f"{self.url}/_sim/seed", json=dict(seed), timeout=120.0).raise_for_status()

    def limit(self, api: str, max_in_flight: int) -> None:
        """Answer 429 to a request beyond ``max_in_flight`` at once, as an account limit."""
        body = {"api": api, "max_in_flight": max_in_flight, "retry_after": 1}
        httpx.post(f"{self.url}/_sim/limits", json=body, timeout=30.0).raise_for_status()

    def peak_in_flight(self) -> dict[str, int]:
        """The most requests each API served at once since the last reset."""
        response = httpx.get(f"{self.url}/_sim/stats", timeout=30.0)
        response.raise_for_status()
        return {api: int(n) for api, n in response.json()["peak_in_flight"].items()}

    def requests(self) -> dict[str, dict[str, int]]:
        """Requests each API received since the last reset, by method."""
        response = httpx.get(f"{self.url}/_sim/stats", timeout=30.0)
        response.raise_for_status()
        return {
            api: {method: int(count) for method, count in methods.items()}
            for api, methods in response.json()["requests"].items()
        }


def _stopbot() -> str:
    beside = Path(sys.executable).with_name("stopbot")
    if not beside.exists():
        raise BenchError(
            "the stopbot command is not installed: run `.venv/bin/pip install -e .` "
            "and start the benchmark with .venv/bin/python"
        )
    return str(beside)


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident set (``VmHWM``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"/proc/{pid}/status has no VmHWM line: is this Linux?")


# -- one run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """One run's figures."""

    n: int
    wall: float
    ideal: float
    provider_calls: int
    provider_calls_by_api: dict[str, dict[str, int]]
    slack_calls: dict[str, int]
    summary_updates: int
    rss_mb: float
    outcomes: dict[str, int]
    bot_cpu: float = math.nan
    sims_cpu: float = math.nan
    bot_waited: float = math.nan
    floor: float = math.nan
    script_wall: float = math.nan
    peak_in_flight: int = 0

    @property
    def ratio(self) -> float:
        return self.wall / self.ideal

    @property
    def floor_ratio(self) -> float:
        return self.wall / self.floor

    @property
    def script_ratio(self) -> float:
        return self.wall / self.script_wall

    @property
    def slack_budget(self) -> float:
        return 1 + self.wall / SLACK_SECONDS

    @property
    def calls_per_resource(self) -> float:
        return self.provider_calls / self.n

    @property
    def slack_total(self) -> int:
        return sum(self.slack_calls.values())


def _outcomes(text: str) -> dict[str, int]:
    """``nightly run done: 998 stopped, 2 failed`` -> ``{"stopped": 998, "failed": 2}``."""
    _, _, counts = text.partition(": ")
    found: dict[str, int] = {}
    for part in counts.split(", "):
        number, _, name = part.partition(" ")
        if number.isdigit():
            found[name] = int(number)
    return found


def _wait_for(what: str, timeout: float, probe: Any, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {timeout:g}s")
        time.sleep(every)


def _post(bot: Bot, body: bytes) -> None:
    response = httpx.post(bot.events_url, content=body, headers=signed_headers(body), timeout=30)
    if response.status_code != 200:
        raise BenchError(f"the bot answered HTTP {response.status_code}: {response.text[:200]}")


def run_now_click(bot: Bot, slack: FakeSlackProcess) -> bytes:
    """Ask for ``/stop schedule run nightly`` and return the signed body of the click on
    its "Run now" (posting it starts the run)."""
    [url] = slack.response_urls([{"channel": CHANNEL, "user": USER}])
    command = f"schedule run {SCHEDULE}"
    trigger = f"bench.{uuid.uuid4().hex}"
    _post(bot, slash_command_body("/stop", command, USER, CHANNEL, url, trigger))
    ts = _wait_for("the Run now confirmation", 60, lambda: _run_confirm_ts(slack.ephemeral()))
    hook = {"channel": CHANNEL, "user": USER, "message_ts": ts, "is_ephemeral": True}
    [url] = slack.response_urls([hook])
    payload = block_actions_payload(
        USER,
        CHANNEL,
        RUN_CONFIRM,
        SCHEDULE,
        response_url=url,
        message_ts=ts,
        is_ephemeral=True,
        block_id=f"run:{SCHEDULE}",
    )
    return block_actions_body(payload)


def post_signed(bot: Bot, body: bytes) -> None:
    """Post a signed Slack request to the bot (a click), checking it was taken."""
    _post(bot, body)


def run_done(slack: FakeSlackProcess, since: float) -> bool:
    """Whether the run summary says it is done (a call made after ``since``)."""
    return any(
        c["method"] in ("chat.update", "chat.postMessage")
        and str(c["text"]).startswith(f"{SCHEDULE} run done")
        for c in slack.calls(since)
    )


def _run_confirm_ts(messages: Sequence[Mapping[str, Any]]) -> str | None:
    for message in messages:
        for block in message.get("blocks") or []:
            for element in block.get("elements") or []:
                if element.get("action_id") == RUN_CONFIRM:
                    return str(message["ts"])
    return None


def measure_once(
    estate: Estate, options: Options, workdir: Path, label: str, *, script: bool = True
) -> RunResult:
    """Start the simulators, time the asyncio script on them (``script``), reseed them,
    then start the bot and its fake Slack, run the schedule now, and take its figures."""
    sims = SeededSimulators(workdir)
    slack = FakeSlackProcess(workdir)
    bot = Bot(workdir)
    stack = contextlib.ExitStack()  # the run's PostgreSQL schema, dropped once the bot stopped
    try:
        sims_url = sims.start_seeded(estate.seed)
        sims.slow_down(options.provider_latency)
        for api in PROVIDER_APIS:
            sims.limit(api, options.concurrency)
        script_wall = math.nan
        if script:
            done_by_script = AsyncScript(sims_url, options.concurrency, options.poll_interval).run(
                estate.resources, limit=ideal_seconds(estate, options) * 4 + 120
            )
            if done_by_script.stopped != estate.n:
                raise BenchError(f"the asyncio script stopped {done_by_script.stopped}/{estate.n}")
            script_wall = done_by_script.wall
            sims.reseed(estate.seed)
        slack.start()
        config = workdir / "stopbot.yaml"
        config.write_text(yaml.safe_dump(bot_config(estate, sims_url, options)), "utf-8")
        db = workdir / "stopbot.db"
        for leftover in (db, db.with_name(f"{db.name}-wal"), db.with_name(f"{db.name}-shm")):
            leftover.unlink(missing_ok=True)
        database_url = stack.enter_context(fresh_database(options.database_url))
        bot.start(config, db, slack.api_url, database_url)
        click = run_now_click(bot, slack)
        sims.wait_quiet()
        sims.reset_stats()
        ideal = ideal_seconds(estate, options)
        profiler = (
            Profiler(bot.pid, options.profile / f"{label}.txt")
            if options.profile is not None
            else contextlib.nullcontext()
        )
        cpu_before = (main_thread_cpu(bot.pid), main_thread_cpu(sims.pid))
        waited_before = run_queue_wait(bot.pid)
        with profiler:
            started = time.time()
            _post(bot, click)
            done_text = f"{SCHEDULE} run done"
            done = _wait_for(
                "the summary's final update",
                ideal * 4 + 120,
                lambda: next(
                    (
                        c
                        for c in slack.calls(started)
                        if c["method"] in ("chat.update", "chat.postMessage")
                        and str(c["text"]).startswith(done_text)
                    ),
                    None,
                ),
                # Not often: this process shares the CPUs, and the fake Slack's own
                # timestamp, not this loop, times the update.
                every=1.0,
            )
        wall = float(done["at"]) - started
        bot_cpu = main_thread_cpu(bot.pid) - cpu_before[0]
        sims_cpu = main_thread_cpu(sims.pid) - cpu_before[1]
        bot_waited = run_queue_wait(bot.pid) - waited_before
        rss = peak_rss_mb(bot.pid)
        requests = sims.requests()
        peak = max(sims.peak_in_flight().values(), default=0)
        slack_calls: dict[str, int] = {}
        updates = 0
        for call in slack.calls(started):
            if call["at"] > done["at"]:
                continue
            if call["method"] == "chat.update":
                updates += 1
            if call["method"] != RESPONSE_URL_METHOD:
                slack_calls[call["method"]] = slack_calls.get(call["method"], 0) + 1
        return RunResult(
            n=estate.n,
            wall=wall,
            ideal=ideal,
            provider_calls=sum(sum(m.values()) for m in requests.values()),
            provider_calls_by_api=requests,
            slack_calls=slack_calls,
            summary_updates=updates,
            rss_mb=rss,
            outcomes=_outcomes(str(done["text"])),
            bot_cpu=bot_cpu,
            sims_cpu=sims_cpu,
            bot_waited=bot_waited,
            floor=floor_seconds(estate, options),
            script_wall=script_wall,
            peak_in_flight=peak,
        )
    except BenchError as exc:
        logs = "\n".join(f"--- {c.name}:\n{c.log_tail()}" for c in (bot, slack, sims))
        raise BenchError(f"{exc}\n{logs}") from None
    finally:
        for child in (bot, slack, sims):
            child.stop()
        stack.close()


@contextlib.contextmanager
def _workdir(keep: Path | None, label: str) -> Iterator[Path]:
    if keep is not None:
        path = keep / label
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="stopbot-nightly-") as tmp:
        yield Path(tmp)


def _log(line: str) -> None:
    print(line, flush=True)


def measure(options: Options, log: Any = _log) -> dict[int, list[RunResult]]:
    """Every size, ``options.runs`` times (a fresh set of processes each run)."""
    results: dict[int, list[RunResult]] = {}
    for n in options.sizes:
        estate = make_estate(n, options.stop_seconds)
        for run in range(1, options.runs + 1):
            label = f"n{n}-run{run}"
            with _workdir(options.keep, label) as workdir:
                result = measure_once(estate, options, workdir, label)
            results.setdefault(n, []).append(result)
            log(
                f"# {label}: wall {result.wall:.1f}s, floor {result.floor:.1f}s (ratio "
                f"{result.floor_ratio:.3f}), asyncio script {result.script_wall:.1f}s (bot / "
                f"script {result.script_ratio:.3f}), old ideal {result.ideal:.1f}s, peak in "
                f"flight {result.peak_in_flight}, provider calls {result.provider_calls} "
                f"{json.dumps(result.provider_calls_by_api)}, Slack {result.slack_calls}, "
                f"RSS {result.rss_mb:.1f} MB, CPU bot {result.bot_cpu:.1f}s (and "
                f"{result.bot_waited:.1f}s waiting for a CPU) sims {result.sims_cpu:.1f}s, "
                f"outcomes {result.outcomes}"
            )
            if options.profile is not None:
                inner, own = profile_summary(options.profile / f"{label}.txt")
                log("#   self time: " + "; ".join(f"{s:.0%} {f}" for s, f in inner))
                log("#   Stopbot:   " + "; ".join(f"{s:.0%} {f}" for s, f in own))
    return results


# -- the table ----------------------------------------------------------------------------

HEADERS = (
    "resources",
    "runs",
    "wall s",
    "floor s",
    "wall / floor",
    "script s",
    "bot / script",
    "old ideal s",
    "provider calls / resource",
    "peak in flight",
    "Slack calls (budget)",
    "peak RSS MB",
    "bot CPU s (waited)",
    "stopped",
)


def format_results(results: Mapping[int, Sequence[RunResult]]) -> str:
    """One Markdown row per size: each figure the median over its runs; "stopped" the
    fewest resources any run stopped, out of n; "peak in flight" the most of any run."""
    rows = [list(HEADERS)]
    for n, runs in results.items():
        med = statistics.median
        rows.append(
            [
                str(n),
                str(len(runs)),
                f"{med(r.wall for r in runs):.1f}",
                f"{med(r.floor for r in runs):.1f}",
                f"{med(r.floor_ratio for r in runs):.3f}",
                f"{med(r.script_wall for r in runs):.1f}",
                f"{med(r.script_ratio for r in runs):.3f}",
                f"{med(r.ideal for r in runs):.1f}",
                f"{med(r.calls_per_resource for r in runs):.2f}",
                str(max(r.peak_in_flight for r in runs)),
                f"{med(r.slack_total for r in runs):g} ({med(r.slack_budget for r in runs):.0f})",
                f"{med(r.rss_mb for r in runs):.1f}",
                f"{med(r.bot_cpu for r in runs):.1f} ({med(r.bot_waited for r in runs):.1f})",
                f"{min(r.outcomes.get('stopped', 0) for r in runs)}/{n}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADERS))]
    lines = [
        "| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([lines[0], rule, *lines[1:]])


def misses(results: Mapping[int, Sequence[RunResult]]) -> list[str]:
    """The targets a size's medians miss, and any run that left a resource running."""
    found = []
    for n, runs in results.items():
        med = statistics.median
        floor = med(r.floor_ratio for r in runs)
        script = med(r.script_ratio for r in runs)
        calls = med(r.calls_per_resource for r in runs)
        rss = med(r.rss_mb for r in runs)
        if floor > TARGETS["floor"]:
            found.append(f"{n} resources: wall / floor {floor:.3f}, target at most 1.3")
        if script > TARGETS["script"]:
            found.append(f"{n} resources: bot / asyncio script {script:.3f}, target at most 1.15")
        if calls > TARGETS["calls"]:
            found.append(f"{n} resources: {calls:.2f} provider calls a resource, target 1.2")
        if rss > TARGETS["rss_mb"]:
            found.append(f"{n} resources: peak RSS {rss:.1f} MB, target at most 200 MB")
        for r in runs:
            if r.slack_total > r.slack_budget:
                found.append(
                    f"{n} resources: {r.slack_total} Slack calls in {r.wall:.1f}s, budget "
                    f"{r.slack_budget:.1f}"
                )
            if r.outcomes.get("stopped", 0) != n:
                found.append(f"{n} resources: a run ended with {r.outcomes}, not all stopped")
    return found


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes like 100,1000,5000, not {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"each size must be at least 1, not {text!r}")
    return sizes


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = bench_parser("python -m bench.nightly_run", __doc__.splitlines()[0], runs=3)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--resources", type=int, help="one size: how many resources (1000)")
    which.add_argument("--sizes", type=_sizes, help="several sizes, e.g. 100,1000,5000")
    parser.add_argument("--provider-latency", type=float, default=0.1, help="s a call (0.1)")
    parser.add_argument("--stop-seconds", type=float, default=5.0, help="s a stop takes (5)")
    parser.add_argument(
        "--concurrency", type=int, default=10, help="requests in flight an account allows (10)"
    )
    parser.add_argument("--poll-interval", type=float, default=1.0, help="stops.poll_* (1 s)")
    parser.add_argument(
        "--batch-window", type=float, help="stops.poll_batch_window, s (the bot's default)"
    )
    parser.add_argument("--keep", type=Path, help="keep each run's logs and database here")
    parser.add_argument("--profile", type=Path, help="record the bot with py-spy into here")
    add_database_url(parser)
    args = parser.parse_args(argv)
    if args.resources is not None and args.resources < 1:
        parser.error(f"--resources must be at least 1, not {args.resources}")
    sizes = args.sizes or (args.resources or 1000,)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    return Options(
        sizes=sizes,
        runs=args.runs,
        provider_latency=args.provider_latency,
        stop_seconds=args.stop_seconds,
        concurrency=args.concurrency,
        poll_interval=args.poll_interval,
        batch_window=args.batch_window,
        check=args.check,
        keep=args.keep,
        profile=args.profile,
        database_url=args.database_url,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    options = parse_options(args)
    with reported_errors():
        results = measure(options)
    window = "" if options.batch_window is None else f", batch window {options.batch_window:g} s"
    print(
        f"\n{machine()}; providers +{options.provider_latency * 1000:g} ms a call, stops "
        f"{options.stop_seconds:g} s, {options.concurrency} requests in flight an account, polling "
        f"every {options.poll_interval:g} s{window}, {store_shown(options.database_url)}; "
        f"medians of {options.runs} run(s)\n"
    )
    print(format_results(results))
    if options.check:
        missed = misses(results)
        for line in missed:
            print(f"MISSED: {line}")
        return 1 if missed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
