"""What the benchmarks share: the bot, its peers and the load, each in its own process.

A benchmark measures ``stopbot serve --http`` as it is deployed: a subprocess of its own,
configured through its environment (``SLACK_BOT_TOKEN``, ``SLACK_SIGNING_SECRET``,
``SLACK_API_URL``, ``STOPBOT_CONFIG``, ``STOPBOT_DB``). Its peers run in processes of their
own too, so the event loop that times the requests runs nothing but the load:

    Simulators        ``stopbot simulate`` on a free port, slowed with ``POST /_sim/faults``
    FakeSlackProcess  bot/slack/fake_api's fake Slack (``python -m bench.common
                      fake-slack``), optionally slowed, with a small control API under
                      ``/_bench`` to mint response URLs and read the confirmations shown
    Bot               ``stopbot serve --http`` pointed at both
    Rig               the three together, started for one run and torn down after it

Then the figures: ``fire`` sends requests concurrently and times each one,
``percentile`` / ``Stats`` summarise, ``Stats.median`` combines several runs, and
``format_table`` prints them as a Markdown table that bench/README.md can quote as is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import aiohttp
import httpx
import psycopg
import psycopg.sql
import yaml

from bot.slack import views
from bot.slack.fake_api import DEFAULT_TOKEN, sign_request
from providers.registry import PROVIDERS
from providers.simulators.samples import sample_config

__all__ = [
    "BOT_TOKEN",
    "CHANNEL",
    "PROVIDER_APIS",
    "SIGNING_SECRET",
    "USER",
    "BenchError",
    "Bot",
    "FakeSlackProcess",
    "HttpRequest",
    "Profiler",
    "Rig",
    "Row",
    "Simulators",
    "Stats",
    "bench_parser",
    "fire",
    "format_table",
    "free_port",
    "load_session",
    "machine",
    "percentile",
    "profile_summary",
    "reported_errors",
    "run_queue_wait",
    "signed_headers",
]

ROOT = Path(__file__).resolve().parent.parent
BOT_TOKEN = DEFAULT_TOKEN
"""The fake Slack's made-up bot token: nothing real can be reached with it."""
SIGNING_SECRET = "bench-signing-secret"  # noqa: S105 - made up, shared by the load and the bot
USER, CHANNEL = "U0BENCH", "C0BENCH"
PROVIDER_APIS = tuple(kind.simulator.name for kind in PROVIDERS)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# A child's environment is built from scratch for these: a developer's own Slack or
# Stopbot settings must not leak into a benchmark (nor a benchmark reach a real Slack).
_OWN_ENV_PREFIXES = ("SLACK_", "STOPBOT_")


class BenchError(Exception):
    """A benchmark could not run; the message says what happened and what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a child that takes ``--port`` (not port 0)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


PROBE_LOOPS = 1_000_000
"""Iterations of :func:`speed_probe`'s loop."""


def speed_probe(tries: int = 5) -> float:
    """Milliseconds this machine takes now for a fixed pure-Python loop, the best of
    ``tries``: a shared machine's speed drifts (by a quarter between two quarter hours
    here), so figures of different hours compare only beside their probes."""
    best = math.inf
    for _ in range(tries):
        started = time.perf_counter()
        total = 0
        for number in range(PROBE_LOOPS):
            total += number
        best = min(best, time.perf_counter() - started)
    return best * 1000


def machine() -> str:
    """The machine the figures come from, for the line above a table (its speed probed
    as the figures are reported)."""
    return (
        f"{os.cpu_count()} CPU(s), Python {sys.version.split()[0]}, "
        f"{sys.platform}, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"speed probe {speed_probe():.0f} ms (lower is faster)"
    )


# -- figures ------------------------------------------------------------------------------


def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank percentile: the smallest sample that ``p`` % of samples do not
    exceed. It is always a measured value, so p99 of 200 requests is the third slowest."""
    if not samples:
        raise ValueError("no samples: nothing to take a percentile of")
    if not 0 < p <= 100:
        raise ValueError(f"a percentile is in (0, 100], not {p}")
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


@dataclass(frozen=True)
class Stats:
    """Response times of one batch of requests, in seconds; ``errors`` did not get a 200."""

    n: int
    errors: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, latencies: Sequence[float], errors: int = 0) -> Stats:
        if not latencies:
            nan = math.nan
            return cls(errors, errors, nan, nan, nan, nan)
        return cls(
            n=len(latencies) + errors,
            errors=errors,
            p50=percentile(latencies, 50),
            p95=percentile(latencies, 95),
            p99=percentile(latencies, 99),
            max=max(latencies),
        )

    @classmethod
    def median(cls, runs: Sequence[Stats]) -> Stats:
        """Each figure's median over several runs (errors: the worst run's, not hidden)."""
        if not runs:
            raise ValueError("no runs to take the median of")
        return cls(
            n=round(statistics.median(r.n for r in runs)),
            errors=max(r.errors for r in runs),
            p50=statistics.median(r.p50 for r in runs),
            p95=statistics.median(r.p95 for r in runs),
            p99=statistics.median(r.p99 for r in runs),
            max=statistics.median(r.max for r in runs),
        )


def main_thread_cpu(pid: int) -> float:
    """CPU seconds the main thread of a process has used (the bot's event loop runs
    there), with nanosecond precision from /proc/PID/schedstat; NaN where there is none.
    /proc/PID/stat counts every thread but in 10 ms ticks, too coarse for one burst."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return math.nan


def run_queue_wait(pid: int) -> float:
    """Seconds the main thread of a process was ready to run but waited for a CPU (the
    second figure of /proc/PID/schedstat): what other processes on the machine cost it."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return math.nan


@dataclass(frozen=True)
class Row:
    """One line of a table: what was measured, its figures, and its p99 against a baseline."""

    label: str
    stats: Stats
    ratio: float | None = None


TABLE_HEADERS = (
    "requests",
    "n",
    "errors",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "p99 / baseline",
)


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table, columns aligned so it also reads well in a terminal."""
    cells = [list(TABLE_HEADERS)]
    for row in rows:
        s = row.stats
        ratio = "-" if row.ratio is None or math.isnan(row.ratio) else f"{row.ratio:.1f}x"
        cells.append(
            [row.label, str(s.n), str(s.errors), *map(_ms, (s.p50, s.p95, s.p99, s.max)), ratio]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(TABLE_HEADERS))]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    # "---:" right-aligns the numbers in rendered Markdown too.
    rule = "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
    return "\n".join([line(cells[0]), f"|{rule}|", *(line(c) for c in cells[1:])])


def bench_parser(prog: str, description: str, *, runs: int = 5) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--runs N`` (figures are medians over the runs)
    and ``--check`` (exit 1 when a target is missed, for manual use: never in CI)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--runs",
        type=_positive_int,
        default=runs,
        help=f"independent runs; each figure is their median (default {runs})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a target is missed (for a person checking a change, not for CI)",
    )
    return parser


def add_database_url(parser: argparse.ArgumentParser) -> None:
    """``--database-url URL``: the bot's store on that PostgreSQL server (a fresh schema
    each run, dropped after it) instead of a fresh SQLite file."""
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="run the bot on PostgreSQL at URL (postgresql://…; a fresh schema each run, "
        "dropped after it) instead of a fresh SQLite file",
    )


def store_shown(database_url: str | None) -> str:
    """Which store the figures are of, for the line above a table."""
    return "store PostgreSQL" if database_url else "store SQLite"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, not {value}")
    return value


# -- the load -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    """One request, built (and signed) before the clock starts."""

    method: str
    url: str
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def signed_headers(body: bytes, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """The headers Slack sends with a form-encoded request, signed now."""
    return {
        **sign_request(secret, body, int(time.time())),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def load_session(timeout: float = 30.0) -> aiohttp.ClientSession:
    """The load generator's client: no limit on connections, so every request of a burst
    is sent at once, and each kept open for the next burst.

    Not httpx: httpcore 1.0's pool scans every waiting request against every connection on
    each event, and 200 concurrent GETs took it 3 to 4 s against a server aiohttp timed at
    17 ms (bench/README.md), so it measured itself rather than the bot.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=timeout),
        auto_decompress=False,
    )


async def fire(
    session: aiohttp.ClientSession, requests: Sequence[HttpRequest]
) -> tuple[list[float], list[str]]:
    """Send every request at once; the response time of each one answered 200 (from just
    before it is sent to its last byte), and a description of each failure."""

    async def one(request: HttpRequest) -> tuple[float, str | None]:
        started = time.perf_counter()
        try:
            async with session.request(
                request.method, request.url, data=request.content, headers=request.headers
            ) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return time.perf_counter() - started, f"no answer: {type(exc).__name__} {exc}"
        elapsed = time.perf_counter() - started
        if response.status != 200:
            text = body[:200].decode(errors="replace")
            return elapsed, f"HTTP {response.status}: {text}"
        return elapsed, None

    results = await asyncio.gather(*(one(r) for r in requests))
    latencies = [elapsed for elapsed, error in results if error is None]
    errors = [error for _, error in results if error is not None]
    return latencies, errors


# -- the processes ------------------------------------------------------------------------


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_ENV_PREFIXES)}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _stopbot() -> str:
    """The ``stopbot`` command of this interpreter's environment (the venv's)."""
    beside = Path(sys.executable).with_name("stopbot")
    found = str(beside) if beside.exists() else shutil.which("stopbot")
    if found is None:
        raise BenchError(
            "the stopbot command is not installed: run `.venv/bin/pip install -e .` "
            "and start the benchmark with .venv/bin/python"
        )
    return found


class _Child:
    """A child process whose output goes to a log file, shown when it fails."""

    name = "process"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None
        self.url = ""  # its base URL, once started

    def _spawn(self, argv: Sequence[str], env: Mapping[str, str], *, pipe_stdout: bool) -> None:
        self._log = self.log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(  # noqa: S603 - our own commands, no shell
            list(argv),
            cwd=ROOT,
            env=_child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe_stdout else self._log,
            stderr=self._log,
        )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"the {self.name} is not running")
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def failed(self, what: str) -> BenchError:
        return BenchError(f"{what}; the end of its log ({self.log_path}):\n{self.log_tail()}")

    def wait_ready(self, url: str, timeout: float = START_TIMEOUT) -> None:
        """Until ``url`` answers 200: the process prints its address before it listens."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self.process is None or self.process.poll() is not None:
                    raise self.failed(f"the {self.name} exited before it was ready")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise self.failed(f"the {self.name} did not answer {url} within {timeout:g}s")
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, as a deployment stops it; SIGKILL if it does not end in time."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None


class Simulators(_Child):
    """``stopbot simulate`` on a free port, and its control API."""

    name = "simulators"

    def start(self, seed: Mapping[str, Any] | None = None) -> str:
        """Start them, on the sample estate or on ``seed`` (a seed file's content)."""
        port = free_port()
        argv = [_stopbot(), "simulate", "--port", str(port)]
        if seed is not None:
            seed_path = self.workdir / "seed.yaml"
            seed_path.write_text(yaml.safe_dump(dict(seed)), encoding="utf-8")
            argv += ["--seed", str(seed_path)]
        self._spawn(argv, {}, pipe_stdout=False)
        self.url = f"http://127.0.0.1:{port}"
        self.wait_ready(f"{self.url}/_sim/state", timeout=START_TIMEOUT * 4)
        return self.url

    def slow_down(self, seconds: float, apis: Sequence[str] = PROVIDER_APIS) -> None:
        """Make every call to each API take ``seconds`` longer, for as long as it runs."""
        for api in apis:
            self.add_fault({"api": api, "kind": "latency", "seconds": seconds, "count": None})

    def add_fault(self, fault: Mapping[str, Any]) -> None:
        """Inject a fault (the fields of ``providers.simulators.common.Fault``)."""
        response = httpx.post(f"{self.url}/_sim/faults", json=dict(fault), timeout=10.0)
        if response.status_code != 200:
            raise BenchError(f"the simulators refused the fault {dict(fault)}: {response.text}")


class FakeSlackProcess(_Child):
    """The fake Slack in a process of its own (``python -m bench.common fake-slack``)."""

    name = "fake-slack"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def start(self, latency: float = 0.0) -> str:
        argv = [sys.executable, "-m", "bench.common", "fake-slack", "--latency", f"{latency}"]
        self._spawn(argv, {}, pipe_stdout=True)
        assert self.process is not None and self.process.stdout is not None
        # Its first line is its address: it prints it once its socket listens.
        readable, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT)
        first = self.process.stdout.readline().decode().strip() if readable else ""
        if not first.startswith("http://"):
            raise self.failed("the fake Slack did not start")
        self.url = first
        self.wait_ready(f"{self.url}/_bench/ready")
        return self.url

    def response_urls(self, hooks: Sequence[Mapping[str, Any]]) -> list[str]:
        """One response URL per hook (the arguments of ``FakeSlack.new_response_url``)."""
        response = httpx.post(
            f"{self.url}/_bench/response_urls", json={"hooks": list(hooks)}, timeout=30.0
        )
        response.raise_for_status()
        return [str(u) for u in response.json()["urls"]]

    def confirmations(
        self, count: int, *, user: str = USER, channel: str = CHANNEL, timeout: float = 120.0
    ) -> list[tuple[str, str]]:
        """(operation id, message ts) of the Confirm buttons ``user`` sees in ``channel``,
        as soon as there are ``count`` of them, or those there are after ``timeout`` seconds."""
        response = httpx.get(
            f"{self.url}/_bench/confirmations",
            params={"user": user, "channel": channel, "count": count, "timeout": timeout},
            timeout=timeout + 10.0,
        )
        response.raise_for_status()
        return [(str(op), str(ts)) for op, ts in response.json()["confirmations"]]

    def ephemeral(self, user: str = USER, channel: str = CHANNEL) -> list[dict[str, Any]]:
        """The ephemeral messages ``user`` sees in ``channel``, oldest first."""
        response = httpx.get(
            f"{self.url}/_bench/ephemeral", params={"user": user, "channel": channel}, timeout=30
        )
        response.raise_for_status()
        return list(response.json()["messages"])

    def calls(self, since: float) -> list[dict[str, Any]]:
        """Web API calls received at or after ``since`` (epoch seconds): method, time, text."""
        response = httpx.get(f"{self.url}/_bench/calls", params={"since": since}, timeout=30)
        response.raise_for_status()
        return list(response.json()["calls"])


class Bot(_Child):
    """``stopbot serve --http`` on a free port."""

    name = "bot"

    @property
    def events_url(self) -> str:
        return f"{self.url}/slack/events"

    def start(
        self, config: Path, db: Path, slack_api_url: str, database_url: str | None = None
    ) -> str:
        """Start the bot on the SQLite file ``db``, or on the PostgreSQL store at
        ``database_url`` (:func:`fresh_database` makes one) when given."""
        port = free_port()
        env = {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack_api_url,
            "STOPBOT_CONFIG": str(config),
            **({"STOPBOT_DATABASE_URL": database_url} if database_url else {"STOPBOT_DB": str(db)}),
        }
        argv = [_stopbot(), "serve", "--http", "--host", "127.0.0.1", "--port", str(port)]
        self._spawn(argv, env, pipe_stdout=False)
        self.url = f"http://127.0.0.1:{port}"
        self.wait_ready(f"{self.url}/healthz")
        return self.url


@contextlib.contextmanager
def fresh_database(url: str | None) -> Iterator[str | None]:
    """A fresh, empty PostgreSQL store on the server at ``url`` for one run: a schema of its
    own (``?schema=bench_…``; the bot creates it), dropped afterwards. None stays None (the
    bot then runs on a fresh SQLite file)."""
    if url is None:
        yield None
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        yield f"{url}{'&' if '?' in url else '?'}schema={schema}"
    finally:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                        psycopg.sql.Identifier(schema)
                    )
                )
        except psycopg.Error as exc:
            print(f"# could not drop the benchmark's schema {schema}: {exc}", file=sys.stderr)


class Rig:
    """Slowed simulators, a fake Slack and the bot pointed at both, in a temporary folder.

    ``with Rig(provider_latency=0.5, slack_latency=0.2) as rig: ...`` starts all three
    (the bot with a fresh database) and stops them on the way out, whatever happened.

    :param keep: a folder to keep the logs and database in, instead of a temporary one.
    :param seed: the simulators' estate instead of the sample one.
    :param config: top-level keys of stopbot.yaml replacing the sample configuration's.
    :param database_url: a PostgreSQL server for the bot's store (a fresh schema), instead
        of a fresh SQLite file.
    """

    def __init__(
        self,
        *,
        provider_latency: float,
        slack_latency: float,
        keep: Path | None = None,
        seed: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        database_url: str | None = None,
    ) -> None:
        self.provider_latency = provider_latency
        self.database_url = database_url
        self._database: contextlib.ExitStack | None = None
        self.slack_latency = slack_latency
        self.seed = seed
        self.config = config
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if keep is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="stopbot-bench-")
            self.workdir = Path(self._tmp.name)
        else:
            keep.mkdir(parents=True, exist_ok=True)
            self.workdir = keep
        self.simulators = Simulators(self.workdir)
        self.slack = FakeSlackProcess(self.workdir)
        self.bot = Bot(self.workdir)

    def start(self) -> Rig:
        sims_url = self.simulators.start(self.seed)
        if self.provider_latency > 0:
            self.simulators.slow_down(self.provider_latency)
        self.slack.start(self.slack_latency)
        config = self.workdir / "stopbot.yaml"
        document = {**sample_config(sims_url), **(self.config or {})}
        config.write_text(yaml.safe_dump(document), encoding="utf-8")
        db = self.workdir / "stopbot.db"
        for leftover in (db, db.with_name(f"{db.name}-wal"), db.with_name(f"{db.name}-shm")):
            leftover.unlink(missing_ok=True)  # a kept folder's previous run
        self._database = contextlib.ExitStack()
        database_url = self._database.enter_context(fresh_database(self.database_url))
        self.bot.start(config, db, self.slack.api_url, database_url)
        return self

    def stop(self) -> None:
        for child in (self.bot, self.slack, self.simulators):
            child.stop()
        if self._database is not None:
            self._database.close()
            self._database = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Rig:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Profiler:
    """py-spy sampling one process for a stretch of a benchmark.

    ``with Profiler(rig.bot.pid, path): ...`` writes collapsed stacks (one line a stack and
    its sample count) that flamegraph.pl and https://www.speedscope.app read, and that
    ``profile_summary`` condenses. py-spy is a tool, not a dependency: install it into the
    venv to profile (``.venv/bin/pip install py-spy``). Figures taken while profiling are
    slower than without: py-spy takes CPU from the same cores. It samples without pausing
    the process (``--nonblocking``): paused 1,000 times a second, a 10,000 run took four
    times as long, so what it recorded was no longer the run being measured.
    """

    def __init__(self, pid: int, path: Path, rate: int = 250) -> None:
        self.pid = pid
        self.path = path
        self.rate = rate
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if exe is None:
            raise BenchError("py-spy is not installed: run `.venv/bin/pip install py-spy`")
        argv = [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate)]
        argv += ["--idle", "--nonblocking", "--format", "raw", "--output", str(self.path)]
        self.process = subprocess.Popen(  # noqa: S603 - our own command, no shell
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert self.process.stdout is not None
        # It says so once it samples: the stretch to profile starts then, not before.
        readable, _, _ = select.select([self.process.stdout], [], [], START_TIMEOUT)
        line = self.process.stdout.readline().decode() if readable else ""
        if "Sampling" not in line:
            self.process.kill()
            rest = self.process.stdout.read().decode(errors="replace")
            raise BenchError(f"py-spy could not sample process {self.pid}: {line}{rest}".strip())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


OWN_CODE = ("bot/", "providers/")


def profile_summary(
    path: Path, top: int = 8
) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """What a py-spy recording says, as shares of its samples: the functions the time was
    spent in themselves (``select`` is the event loop waiting: idle), and the project's
    own functions with what they called (where in Stopbot that time came from).

    py-spy shows no frame for the garbage collector: a pause shows up as a large share of
    self time in whatever function happened to allocate (``Store._get``, say).
    """
    own: dict[str, int] = {}
    inner: dict[str, int] = {}
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        last = _frame_name(frames[-1])
        inner[last] = inner.get(last, 0) + n
        # Once a sample, however deep a recursion goes.
        for name in {_frame_name(f) for f in frames if f.partition(" (")[2].startswith(OWN_CODE)}:
            own[name] = own.get(name, 0) + n
    if not total:
        return [], []

    def ranked(counts: dict[str, int]) -> list[tuple[float, str]]:
        # What is on every stack (the entry point) says nothing about where time went.
        shares = ((c / total, f) for f, c in counts.items() if c < total)
        return sorted(shares, reverse=True)[:top]

    return ranked(inner), ranked(own)


def _frame_name(frame: str) -> str:
    """``SlackBot.actor (bot/slack/app.py:142)`` -> ``SlackBot.actor (bot/slack/app.py)``."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


# -- the fake Slack's process -------------------------------------------------------------


def _confirm_buttons(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    found = []
    for message in messages:
        for block in message.get("blocks") or []:
            if block.get("type") != "actions":
                continue
            for element in block.get("elements") or []:
                if element.get("action_id") == views.CONFIRM:
                    found.append((str(element["value"]), str(message["ts"])))
    return found


def _serve_fake_slack(latency: float) -> None:
    """Serve a fake Slack (slowed by ``latency`` seconds an answer) until SIGTERM."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route
    from starlette.types import ASGIApp, Receive, Scope, Send

    from bot.slack.fake_api import FakeSlack, SlackChannel, SlackUser

    fake = FakeSlack(
        users=[SlackUser(USER, "bench", real_name="Bench User")],
        channels=[SlackChannel(CHANNEL, "bench")],
    )

    def slowed(app: ASGIApp) -> ASGIApp:
        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            if latency > 0 and scope["type"] == "http":
                await asyncio.sleep(latency)
            await app(scope, receive, send)

        return answer

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def response_urls(request: Request) -> JSONResponse:
        hooks = (await request.json())["hooks"]
        return JSONResponse({"urls": [fake.new_response_url(**hook) for hook in hooks]})

    async def confirmations(request: Request) -> JSONResponse:
        # Woken by every change to the workspace, not polled: a run waits no longer than
        # the bot takes to show them.
        query = request.query_params
        count, timeout = int(query["count"]), float(query["timeout"])
        deadline = time.monotonic() + timeout
        while True:
            version = fake.version
            found = _confirm_buttons(fake.ephemeral_messages(query["channel"], query["user"]))
            left = deadline - time.monotonic()
            if len(found) >= count or left <= 0:
                return JSONResponse({"confirmations": found})
            await fake.wait_changed(version, left)

    async def ephemeral(request: Request) -> JSONResponse:
        query = request.query_params
        return JSONResponse({"messages": fake.ephemeral_messages(query["channel"], query["user"])})

    async def calls(request: Request) -> JSONResponse:
        since = float(request.query_params["since"])
        found = [
            {"method": c.method, "at": c.at, "text": c.args.get("text", "")}
            for c in fake.calls()
            if c.at >= since
        ]
        return JSONResponse({"calls": found})

    app = Starlette(
        routes=[
            Route("/_bench/ready", ready, methods=["GET"]),
            Route("/_bench/response_urls", response_urls, methods=["POST"]),
            Route("/_bench/confirmations", confirmations, methods=["GET"]),
            Route("/_bench/ephemeral", ephemeral, methods=["GET"]),
            Route("/_bench/calls", calls, methods=["GET"]),
            Mount("/", app=slowed(fake.app)),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    print(fake.base_url, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.common", description="Processes the benchmarks start."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fake = sub.add_parser("fake-slack", help="serve a fake Slack; prints its address first")
    fake.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    args = parser.parse_args(argv)
    _serve_fake_slack(args.latency)
    return 0


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """A benchmark's failure as one clear message and exit status 2, not a traceback."""
    try:
        yield
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    sys.exit(main())
