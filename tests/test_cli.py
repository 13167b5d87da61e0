"""The terminal face: `stopbot stop` (the same workflow and audit as Slack), history, locks,
schedules, serve's checks. Interactive runs go through a real pseudo-terminal."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import importlib.metadata
import io
import json
import logging
import os
import pty
import pwd
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import time_machine
import yaml

from bot.cli import SAVINGS_FIELDS, main, parse_args, parse_since
from bot.config import load_config
from bot.models import Operation, OpState
from bot.slack.fake_api import DEFAULT_TOKEN, FakeSlack, FakeSlackServer
from bot.stopbot import Stopbot
from bot.store import open_store
from bot.text import Person, Text, say
from providers.registry import build_provider
from providers.simulators.common import Fault
from providers.simulators.samples import DEFAULT_SEED, sample_config
from providers.simulators.server import SimulatorServer

USER = f"cli:{pwd.getpwuid(os.getuid()).pw_name}"
FAST_STOPS = {"poll_initial": 0.05, "poll_max": 0.1, "timeout": "30m", "progress_interval": 0}
STEP = 600.0  # simulated seconds per provider step: only the test's clock moves a stop on
ELAPSED = re.compile(r"\[\s*\d+s\] ")

# -- real processes ---------------------------------------------------------------------------


def stopbot_command(*args: str) -> list[str]:
    """The installed `stopbot` script of this environment (what a user runs)."""
    script = Path(sys.executable).with_name("stopbot")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "bot.cli", *args]


def free_port() -> int:
    """A port nothing listens on now (a child process binds it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without Stopbot or Slack settings, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "STOPBOT_", "PYTEST_"))
    }
    env.update(extra)
    return env


class Output:
    """What a child writes on one stream, collected by a thread as it arrives."""

    def __init__(self, stream: IO[bytes] | int) -> None:
        self.fd = stream if isinstance(stream, int) else stream.fileno()
        self._data = b""
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # a pty's reading end raises EIO once the child is gone
                chunk = b""
            with self._changed:
                if not chunk:
                    self._closed = True
                    self._changed.notify_all()
                    return
                self._data += chunk
                self._changed.notify_all()

    @property
    def text(self) -> str:
        with self._changed:
            return self._data.decode(errors="replace")

    def wait_for(self, text: str, timeout: float = 15.0, count: int = 1) -> str:
        """Everything written so far once ``text`` is in it ``count`` times; fails after
        ``timeout``."""
        needle = text.encode()
        with self._changed:
            self._changed.wait_for(
                lambda: self._data.count(needle) >= count or self._closed, timeout
            )
            data = self._data.decode(errors="replace")
        if data.count(text) < count:
            raise AssertionError(f"{text!r} never came ({count}x); the output was:\n{data}")
        return data

    def closed(self, timeout: float = 15.0) -> str:
        with self._changed:
            self._changed.wait_for(lambda: self._closed, timeout)
        self._thread.join(timeout)
        return self.text


class StopbotProcess:
    """`stopbot <args>` as a child process, its output read as it comes."""

    def __init__(
        self,
        *args: str,
        env: Mapping[str, str],
        cwd: Path,
        stdin: int | None = subprocess.DEVNULL,
        command: list[str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 -- our own script, our own arguments
            command or stopbot_command(*args),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = Output(self.proc.stdout)
        self.err = Output(self.proc.stderr)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_healthy(self, url: str, timeout: float = 30.0) -> httpx.Response:
        """Once ``url`` answers 200 (the server is up); fails if the process exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                response = httpx.get(url, timeout=2)
            except httpx.TransportError:
                pass
            else:
                if response.status_code == 200:
                    return response
            try:  # doubles as the pause between tries: returns at once if the child died
                code = self.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            raise AssertionError(f"exited with {code} before {url} answered:\n{self.err.text}")
        raise AssertionError(f"{url} did not answer within {timeout}s:\n{self.err.text}")

    def wait(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        self.out.closed()
        self.err.closed()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Commands configure the root logger: put it back after each test."""
    root = logging.getLogger()
    handlers, level, factory = list(root.handlers), root.level, logging.getLogRecordFactory()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


class Env:
    """A working directory with a stopbot.yaml for the test's simulators and a database."""

    def __init__(self, sims: SimulatorServer, path: Path, **config: Any) -> None:
        self.sims = sims
        self.path = path
        self.config_path = path / "stopbot.yaml"
        self.db = path / "stopbot.db"
        document = sample_config(sims.base_url)
        document["stops"] = FAST_STOPS
        document.update(config)
        self.config_path.write_text(yaml.safe_dump(document), encoding="utf-8")
        self.vars = {"STOPBOT_CONFIG": str(self.config_path), "STOPBOT_DB": str(self.db)}

    def process(self, *args: str, stdin: int | None = subprocess.DEVNULL) -> StopbotProcess:
        return StopbotProcess(*args, env=clean_env(**self.vars), cwd=self.path, stdin=stdin)

    def audit(self) -> list[tuple[str, str, str | None]]:
        with sqlite3.connect(self.db) as conn:
            return list(conn.execute("SELECT actor, action, resource FROM audit ORDER BY id"))

    def operations(self) -> list[tuple[str, str]]:
        with sqlite3.connect(self.db) as conn:
            return list(conn.execute("SELECT resource, state FROM operations ORDER BY rowid"))

    def slow_qovery(self) -> None:
        """Qovery stops move on only when the test advances the simulated clock."""
        self.sims.hub.clock.freeze()
        self.sims.hub.seed({"qovery": {**DEFAULT_SEED["qovery"], "step_seconds": STEP}})


@pytest.fixture
def env(sims: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """In-process commands see the same environment as the child processes."""
    environment = Env(sims, tmp_path)
    for key in [k for k in os.environ if k.startswith(("SLACK_", "STOPBOT_"))]:
        monkeypatch.delenv(key)
    for key, value in environment.vars.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return environment


def without_elapsed(text: str) -> list[str]:
    return [ELAPSED.sub("[t] ", line) for line in text.splitlines()]


PREVIEW = [
    "Stop dev-eu?",
    "  resource:       dev-eu (qovery, id 0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01)",
    "  status:         DEPLOYED (running)",
    "  provider lock:  none",
    "  Stopbot lock:   none",
]

# -- stop -------------------------------------------------------------------------------------


def test_stop_with_yes_shows_each_state_then_the_end(env: Env) -> None:
    """`stopbot stop --yes` previews, then prints one line per provider state and the end."""
    env.slow_qovery()
    child = env.process("stop", "dev-eu", "nightly", "savings", "--yes")
    try:
        env.sims.hub.clock.advance(0)
        child.out.wait_for("dev-eu: STOP_QUEUED (stopping)\n")
        env.sims.hub.clock.advance(STEP)
        child.out.wait_for("dev-eu: STOPPING (stopping)\n")
        env.sims.hub.clock.advance(STEP)
        assert child.wait() == 0
    finally:
        child.close()
    assert without_elapsed(child.out.text) == [
        *PREVIEW,
        "  reason:         nightly savings",
        "[t] dev-eu: STOP_QUEUED (stopping)",
        "[t] dev-eu: STOPPING (stopping)",
        "[t] dev-eu: stopped",
    ]
    assert child.err.text == ""
    assert env.audit() == [
        (USER, "stop.requested", "dev-eu"),
        (USER, "stop.awaiting_confirmation", "dev-eu"),
        (USER, "stop.submitting", "dev-eu"),
        ("stopbot", "stop.accepted", "dev-eu"),
        ("stopbot", "stop.in_progress", "dev-eu"),
        ("stopbot", "stop.stopped", "dev-eu"),
    ]


def test_stop_asks_on_a_terminal_and_acts_on_yes(env: Env) -> None:
    """On a terminal the stop waits for `y`, then runs; the answer is read from the tty."""
    env.sims.hub.seed({"qovery": {**DEFAULT_SEED["qovery"], "step_seconds": 0}})
    master, slave = pty.openpty()
    child = env.process("stop", "dev-eu", stdin=slave)
    os.close(slave)
    try:
        child.out.wait_for("Stop dev-eu? [y/N] ")
        os.write(master, b"y\n")
        assert child.wait() == 0
    finally:
        child.close()
        os.close(master)
    # The typed answer is echoed by the terminal, not written on stdout: hence one line.
    assert without_elapsed(child.out.text) == [
        *PREVIEW,
        "Stop dev-eu? [y/N] [t] dev-eu: STOPPED (stopped)",
        "[t] dev-eu: stopped",
    ]
    assert env.operations() == [("dev-eu", "stopped")]


def test_stop_declined_on_the_terminal_changes_nothing(env: Env) -> None:
    """Any answer but y/yes cancels: exit 1, nothing sent to the provider, audited."""
    master, slave = pty.openpty()
    child = env.process("stop", "dev-eu", stdin=slave)
    os.close(slave)
    try:
        child.out.wait_for("Stop dev-eu? [y/N] ")
        os.write(master, b"\n")
        assert child.wait() == 1
    finally:
        child.close()
        os.close(master)
    assert child.err.text == "stopbot: dev-eu was not stopped (not confirmed).\n"
    assert env.operations() == [("dev-eu", "cancelled")]
    assert env.sims.hub.state()["qovery"]["clusters"][0]["status"] == "DEPLOYED"


def test_ctrl_c_at_the_question_stops_nothing(env: Env) -> None:
    """Ctrl-C while the question waits: exit 130, the request cancelled, nothing stopped."""
    master, slave = pty.openpty()
    child = env.process("stop", "dev-eu", stdin=slave)
    os.close(slave)
    try:
        child.out.wait_for("Stop dev-eu? [y/N] ")
        child.signal(signal.SIGINT)
        assert child.wait() == 130
    finally:
        child.close()
        os.close(master)
    assert child.err.text == "stopbot: interrupted: dev-eu was not stopped.\n"
    assert env.operations() == [("dev-eu", "cancelled")]


def test_ctrl_c_while_following_leaves_the_stop_to_the_provider(env: Env) -> None:
    """Ctrl-C after the provider took the stop: exit 130, how to check it, and the operation
    stays in flight for `stopbot serve` to resume."""
    env.slow_qovery()
    child = env.process("stop", "dev-eu", "--yes")
    try:
        child.out.wait_for("dev-eu: STOP_QUEUED (stopping)\n")
        child.signal(signal.SIGINT)
        assert child.wait() == 130
    finally:
        child.close()
    assert child.err.text == (
        "stopbot: interrupted: this terminal no longer follows the stop of dev-eu; if it was "
        "sent, it goes on at qovery. Check with `stopbot status dev-eu`; a running "
        "`stopbot serve` resumes following it.\n"
    )
    [(resource, state)] = env.operations()
    assert resource == "dev-eu" and state in {"accepted", "in_progress"}
    assert env.sims.hub.state()["qovery"]["clusters"][0]["status"] == "STOP_QUEUED"


def test_stop_without_a_terminal_needs_yes(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """With no terminal to ask on and no --yes, nothing is stopped: exit 2, and why."""
    assert main(["stop", "dev-eu"]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == PREVIEW
    assert captured.err == (
        "stopbot: not stopping dev-eu: there is no terminal to confirm on. "
        "Add --yes to confirm from a script.\n"
    )
    assert env.operations() == [("dev-eu", "cancelled")]


def test_stop_of_a_stopped_resource_says_so(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """A resource already stopped: exit 0, the reason, no question asked."""
    assert main(["stop", "qa-old"]) == 0
    assert capsys.readouterr().out == (
        "qa-old: already stopped: qa-old is already stopped (STOPPED): nothing to do.\n"
    )
    assert env.audit() == [
        (USER, "stop.requested", "qa-old"),
        (USER, "stop.stopped_already", "qa-old"),
    ]


def test_the_audit_names_the_account_not_what_user_says(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """$USER and $LOGNAME are anyone's to set: the audit log names the process's account."""
    monkeypatch.setenv("USER", "mallory")
    monkeypatch.setenv("LOGNAME", "mallory")
    assert main(["stop", "qa-old"]) == 0
    assert {actor for actor, _, _ in env.audit()} == {USER}
    assert USER != "cli:mallory"


def test_stop_refused_by_policy(
    sims: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """With cli_is_admin false, the terminal user is held to allowed_users: refused, exit 1."""
    refused = Env(sims, tmp_path, cli_is_admin=False, allowed_users=["U0ADMIN"])
    for key, value in refused.vars.items():
        monkeypatch.setenv(key, value)
    assert main(["stop", "dev-eu", "--yes"]) == 1
    assert capsys.readouterr().err == (
        "stopbot: dev-eu: refused: you are not allowed to stop dev-eu (the global rule); "
        "ask an admin to add you\n"
    )
    assert refused.operations() == [("dev-eu", "refused")]


def test_unknown_resource_is_a_usage_error(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """A name not configured: exit 2 and the closest names; nothing recorded."""
    assert main(["stop", "dev-ue", "--yes"]) == 2
    assert capsys.readouterr().err == "stopbot: Unknown resource 'dev-ue'. Did you mean dev-eu?\n"
    assert env.operations() == []


def test_a_reason_too_long_is_a_usage_error(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """A reason over 500 characters: exit 2, the limit said, nothing recorded."""
    assert main(["stop", "dev-eu", "x" * 501, "--yes"]) == 2
    assert capsys.readouterr().err == (
        "stopbot: A reason is 500 characters at most (this one has 501): shorten it.\n"
    )
    assert env.operations() == []


# -- history, locks, schedules ------------------------------------------------------------------

T0 = dt.datetime(2026, 11, 2, 8, 0, tzinfo=dt.UTC)


def seeded_store(db: Path | str) -> tuple[str, str]:
    """Two operations at known times; their ids."""
    now = [T0]
    store = open_store(db, clock=lambda: now[0])
    op, _ = store.create_operation(
        resource="dev-eu",
        provider="qovery",
        resource_id="c1",
        requested_by="U0BOB",
        source="slack",
        reason="nightly",
    )
    now[0] = T0 + dt.timedelta(seconds=5)
    store.transition(
        op.id,
        OpState.REFUSED,
        allowed_from=[OpState.REQUESTED],
        actor="U0BOB",
        detail=Text("locked by Alice"),
    )
    now[0] = T0 + dt.timedelta(days=1)
    etl, _ = store.create_operation(
        resource="etl", provider="feldera", resource_id="etl", requested_by=USER, source="cli"
    )
    store.close()
    return op.id[:8], etl.id[:8]


def test_history_table(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """`stopbot history` prints the audit log as a table, oldest first."""
    dev, etl = seeded_store(env.db)
    assert main(["history"]) == 0
    actor = f"{'ACTOR':<{len(USER)}}"
    assert capsys.readouterr().out.splitlines() == [
        f"AT                       {actor}  ACTION          RESOURCE  OPERATION  DETAIL",
        f"2026-11-02 08:00:00 UTC  {'U0BOB':<{len(USER)}}  stop.requested  dev-eu    {dev}   "
        "reason=nightly source=slack state=requested",
        f"2026-11-02 08:00:05 UTC  {'U0BOB':<{len(USER)}}  stop.refused    dev-eu    {dev}   "
        "locked by Alice",
        f"2026-11-03 08:00:00 UTC  {USER}  stop.requested  etl       {etl}   "
        "source=cli state=requested",
    ]


def test_history_never_prints_slack_mentions(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """People are named by id in the terminal: a sentence that names someone, and a row an
    older version wrote with Slack's mention syntax, print no `<@U…>`."""
    store = open_store(env.db, clock=lambda: T0)
    op, _ = store.create_operation(
        resource="dev-eu", provider="qovery", resource_id="c1", requested_by="U0BOB", source="slack"
    )
    store.transition(
        op.id,
        OpState.REFUSED,
        allowed_from=[OpState.REQUESTED],
        actor="U0CAROL",
        detail=say("denied by {}: not tonight", Person("U0CAROL")),
    )
    store.audit("U0ALICE", "lock.override", resource="dev-eu", detail={"lock": "by <@U0ALICE>"})
    store.close()
    assert main(["history"]) == 0
    out = capsys.readouterr().out
    assert "denied by U0CAROL: not tonight" in out
    assert "lock=by U0ALICE" in out
    assert "<@" not in out


def test_history_filters_and_exports(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """--resource and --since filter; --json and --csv export every field."""
    seeded_store(env.db)
    assert main(["history", "--resource", "dev-eu", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["id"], e["at"], e["action"], e["detail"]) for e in entries] == [
        (
            1,
            "2026-11-02T08:00:00Z",
            "stop.requested",
            {"force": False, "reason": "nightly", "source": "slack", "state": "requested"},
        ),
        (2, "2026-11-02T08:00:05Z", "stop.refused", {"detail": "locked by Alice"}),
    ]
    assert main(["history", "--since", "2026-11-03", "--csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "id,at,actor,action,resource,operation_id,detail"
    assert len(rows) == 2
    assert rows[1].startswith(f"3,2026-11-03T08:00:00+00:00,{USER},stop.requested,etl,")
    assert rows[1].endswith(
        ',"{""force"": false, ""reason"": null, ""source"": ""cli"", ""state"": ""requested""}"'
    )
    assert main(["history", "--since", "2027-01-01"]) == 0
    assert capsys.readouterr().out == "No audit entries match.\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
        ("2026-11-01T08:30", dt.datetime(2026, 11, 1, 8, 30, tzinfo=dt.UTC)),
        ("2026-11-01T08:30+01:00", dt.datetime(2026, 11, 1, 7, 30, tzinfo=dt.UTC)),
        ("24h", dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)),
        ("1h30m", dt.datetime(2026, 11, 25, 10, 30, tzinfo=dt.UTC)),
    ],
)
def test_since_takes_dates_and_durations(text: str, expected: dt.datetime) -> None:
    """--since is a date, a date and time (UTC unless an offset is given), or time ago."""
    assert parse_since(text, dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)) == expected


def test_history_bad_since_and_missing_database(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --since, or no database at STOPBOT_DB, is a one-line usage error (exit 2)."""
    assert main(["history", "--since", "yesterday"]) == 2
    assert capsys.readouterr().err == (
        "stopbot: --since takes a date (2026-11-01), a date and time (2026-11-01T08:00, UTC) "
        "or a duration back from now (24h, 7d); got 'yesterday'\n"
    )
    assert not env.db.exists()
    assert main(["history"]) == 2
    assert capsys.readouterr().err == (
        f"stopbot: no database at {env.db}: nothing has been recorded there. "
        "Set STOPBOT_DB to the bot's database file.\n"
    )
    assert not env.db.exists()


def test_history_reads_the_postgresql_store(
    env: Env, pg_location: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With STOPBOT_DATABASE_URL (or database_url in stopbot.yaml), `stopbot history` reads
    the PostgreSQL store; before anything was recorded there, it says so, naming the URL
    without its password."""
    url = pg_location.replace("://postgres@", "://postgres:pg-s3cret@")
    monkeypatch.setenv("STOPBOT_DATABASE_URL", url)
    assert main(["history"]) == 2
    assert capsys.readouterr().err == (
        f"stopbot: no database at {pg_location}: nothing has been recorded there. "
        "Check STOPBOT_DATABASE_URL (or database_url in the configuration).\n"
    )
    seeded_store(url)
    assert main(["history", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [(e["action"], e["resource"]) for e in entries] == [
        ("stop.requested", "dev-eu"),
        ("stop.refused", "dev-eu"),
        ("stop.requested", "etl"),
    ]
    monkeypatch.delenv("STOPBOT_DATABASE_URL")
    document = yaml.safe_load(env.config_path.read_text(encoding="utf-8"))
    env.config_path.write_text(yaml.safe_dump({**document, "database_url": url}), "utf-8")
    assert main(["history", "--resource", "etl", "--json"]) == 0
    assert [e["action"] for e in json.loads(capsys.readouterr().out)] == ["stop.requested"]
    assert not env.db.exists()


def test_a_bad_database_url_is_a_configuration_error(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A STOPBOT_DATABASE_URL that is no PostgreSQL URL is a configuration error (exit 2)
    naming the variable, never its password."""
    monkeypatch.setenv("STOPBOT_DATABASE_URL", "mysql://bot:pg-s3cret@db/stopbot")
    assert main(["history"]) == 2
    assert capsys.readouterr().err == (
        "stopbot: configuration error:\n"
        "STOPBOT_DATABASE_URL: the database URL must start with postgresql:// (not mysql://)\n"
    )


def test_locks_lists_stopbot_and_provider_locks(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stopbot locks` shows the bot's locks and each provider lock in force."""
    store = open_store(env.db)
    store.set_lock("web-1", "U0BOB", dt.datetime(2099, 1, 1, tzinfo=dt.UTC), "demo on Friday")
    store.close()
    lock = env.sims.hub.state()["qovery"]["clusters"][1]["lock"]
    expires = dt.datetime.fromisoformat(lock["locked_at"].replace("Z", "+00:00")) + dt.timedelta(
        days=3
    )
    assert main(["locks"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "RESOURCE    LOCK     OWNER         REASON                      EXPIRES",
        "web-1       stopbot  U0BOB         demo on Friday              2099-01-01 00:00:00 UTC",
        f"staging-us  qovery   Alice Martin  load test until Friday      "
        f"{expires:%Y-%m-%d %H:%M:%S} UTC",
        "batch-2     nova     ?             kernel upgrade in progress  never",
    ]


QOVERY_503 = "qovery: the provider is unavailable, try again later (HTTP 503): injected fault"


def qovery_unavailable(env: Env) -> None:
    env.sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", count=None))


def test_locks_lists_what_could_not_be_read_as_unknown(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """Qovery answers 503: `stopbot locks` lists its clusters' locks as unknown, says why
    once on stderr, and fails (exit 1); Nova's lock is listed as usual."""
    qovery_unavailable(env)
    assert main(["locks"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "RESOURCE    LOCK    OWNER    REASON                      EXPIRES",
        "dev-eu      qovery  unknown  could not be read           -",
        "staging-us  qovery  unknown  could not be read           -",
        "qa-old      qovery  unknown  could not be read           -",
        "batch-2     nova    ?        kernel upgrade in progress  never",
    ]
    assert captured.err == (
        f"stopbot: could not read the qovery locks of dev-eu, staging-us, qa-old: {QOVERY_503}\n"
    )


def test_status_says_none_only_for_a_lock_read(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stopbot status` says "none" (JSON null) for a provider lock read and absent; when
    Qovery answers 503 it claims nothing and fails with Qovery's error."""
    assert main(["status", "dev-eu"]) == 0
    assert capsys.readouterr().out.splitlines()[-2] == "provider lock:  none"
    assert main(["status", "dev-eu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provider_lock"] is None
    qovery_unavailable(env)
    assert main(["status", "dev-eu"]) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"stopbot: {QOVERY_503}\n")


def test_stop_preview_says_an_unreadable_lock_is_unknown(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """Qovery answers 503: `stopbot stop`'s preview says the provider lock is unknown,
    with Qovery's error, not "none"."""
    qovery_unavailable(env)
    assert main(["stop", "dev-eu"]) == 2
    assert capsys.readouterr().out.splitlines() == [
        "Stop dev-eu?",
        "  resource:       dev-eu (qovery, id 0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01)",
        f"  status:         unknown: {QOVERY_503}",
        f"  provider lock:  unknown: {QOVERY_503}",
        "  Stopbot lock:   none",
    ]


def test_schedules_lists_the_store(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """`stopbot schedules` lists what the store holds, as a table or JSON."""
    store = open_store(env.db)
    store.close()
    assert main(["schedules"]) == 0
    assert capsys.readouterr().out == "No schedules.\n"
    store = open_store(env.db)
    store.save_schedule("nightly", {"cron": "0 20 * * 1-5", "resources": ["dev-eu"]}, "U0ADMIN")
    store.close()
    assert main(["schedules"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "NAME     DEFINITION",
        'nightly  {"cron": "0 20 * * 1-5", "resources": ["dev-eu"]}',
    ]
    assert main(["schedules", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "nightly": {"cron": "0 20 * * 1-5", "resources": ["dev-eu"]}
    }


# -- people and displays, as a terminal shows them ---------------------------------------------

BOB, CAROL = "U0BOB", "U0CAROL"
NAMES = {BOB: "Bob Builder", CAROL: "Carol Danvers"}
SLACK_MARKUP = re.compile(r"<@|<!|/stop |\*\w[^*]*\*")


def approved_elsewhere(env: Env) -> None:
    """What Slack would have done on the same database: Bob asks to stop web-1 (Carol
    approves it) and locks spark, which Carol then cannot stop."""

    async def run() -> None:
        config = load_config(env.config_path)
        store = open_store(env.db)
        providers = {p.name: build_provider(p, http=config.http) for p in config.providers}
        bot = Stopbot(config, store, providers, schedule_tick=None)
        try:
            preview = await bot.service.prepare("web-1", config.actor(BOB), source="slack")
            asked = bot.service.confirm(preview.operation.id, config.actor(BOB))
            assert asked.needs_approval, asked.message
            approved = await bot.approvals.approve(preview.operation.id, config.actor(CAROL))
            assert approved.ok and approved.run, approved.message
            await bot.locks.lock("spark", BOB, dt.timedelta(hours=2), "demo at 5")
            refused = await bot.service.prepare("spark", config.actor(CAROL), source="slack")
            assert refused.operation.state == OpState.REFUSED
        finally:
            await bot.aclose()
            for provider in providers.values():
                await provider.aclose()
            store.close()

    asyncio.run(run())


@pytest.fixture
def named(sims: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """The configuration names Bob and Carol; web-1 needs Carol's approval."""
    document = sample_config(sims.base_url)
    for resource in document["resources"]:
        if resource["name"] == "web-1":
            resource["approval"] = {"approvers": [CAROL]}
    environment = Env(sims, tmp_path, resources=document["resources"], names=NAMES)
    for key in [k for k in os.environ if k.startswith(("SLACK_", "STOPBOT_"))]:
        monkeypatch.delenv(key)
    for key, value in environment.vars.items():
        monkeypatch.setenv(key, value)
    return environment


def test_history_status_and_locks_name_people_and_write_no_slack_markup(
    named: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a stop from the terminal, an approval and a lock from Slack, `history`,
    `status` and `locks` name Bob and Carol as the configuration does, and print no
    mention, no `/stop` command and no mrkdwn."""
    named.sims.hub.seed({"qovery": {**DEFAULT_SEED["qovery"], "step_seconds": 0}})
    assert main(["stop", "dev-eu", "--yes"]) == 0
    approved_elsewhere(named)
    capsys.readouterr()
    assert main(["history"]) == 0
    history = capsys.readouterr().out
    assert main(["status", "spark"]) == 0
    status = capsys.readouterr().out
    assert main(["locks"]) == 0
    locks = capsys.readouterr().out
    assert SLACK_MARKUP.findall(history + status + locks) == []
    assert [line.split("  ")[1] for line in history.splitlines() if " web-1 " in line] == [
        "Bob Builder",
        "Bob Builder",
        "Bob Builder",
        "Carol Danvers",
        "Carol Danvers",
    ]
    [refused] = [line for line in history.splitlines() if "stop.refused" in line]
    assert refused.startswith(f"{refused[:25]}Carol Danvers  stop.refused ")
    assert refused.endswith(
        " spark is locked by Bob Builder (demo at 5); it expires in 2h. Ask them to unlock it."
    )
    assert BOB not in history and CAROL not in history
    assert status.splitlines()[-1].startswith("Stopbot lock:   Bob Builder: demo at 5 (expires ")
    assert "spark       stopbot  Bob Builder" in locks


def test_a_stop_that_needs_approval_is_sent_to_slack(
    named: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """web-1 needs Carol's approval: the preview names her, and the terminal says to ask
    in Slack (exit 1, the request cancelled)."""
    assert main(["stop", "web-1", "--yes"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == (
        "  note:           needs 1 approval from Carol Danvers after you confirm"
    )
    assert captured.err == (
        "stopbot: web-1 needs 1 approval before it is stopped, and approvers are asked in "
        "Slack: request it there with `/stop web-1`.\n"
    )
    assert named.operations() == [("web-1", "cancelled")]


def test_slack_real_names_when_a_bot_token_is_set(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With SLACK_BOT_TOKEN set, people the configuration does not name are shown by the
    real name users.info gives (never their display name); one Slack does not know
    stays an id."""
    fake = FakeSlackServer(FakeSlack())
    fake.start()
    try:
        fake.slack.add_user(BOB, "bob", real_name="Bob Builder", display_name="The Boss")
        store = open_store(env.db)
        store.set_lock("web-1", BOB, dt.datetime(2099, 1, 1, tzinfo=dt.UTC), "demo")
        store.set_lock("spark", "U0GHOST", dt.datetime(2099, 1, 1, tzinfo=dt.UTC), "gone")
        store.close()
        monkeypatch.setenv("SLACK_BOT_TOKEN", DEFAULT_TOKEN)
        monkeypatch.setenv("SLACK_API_URL", fake.api_url)
        assert main(["locks"]) == 0
    finally:
        fake.stop()
    owners = [line.split()[2:4] for line in capsys.readouterr().out.splitlines()[1:3]]
    assert owners == [["Bob", "Builder"], ["U0GHOST", "gone"]]
    assert sorted(call.args["user"] for call in fake.slack.calls("users.info")) == [
        BOB,
        "U0GHOST",
    ]


def test_status_is_lines_for_people_and_json_for_machines(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stopbot status` prints the resource, its status and both locks in words (no
    Python dict, no `terminal: True`); --json has every field."""
    store = open_store(env.db)
    store.set_lock("staging-us", BOB, dt.datetime(2099, 1, 1, tzinfo=dt.UTC), "demo")
    store.close()
    lock = env.sims.hub.state()["qovery"]["clusters"][1]["lock"]
    expires = dt.datetime.fromisoformat(lock["locked_at"].replace("Z", "+00:00")) + dt.timedelta(
        days=3
    )
    assert main(["status", "staging-us"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "resource:       staging-us (qovery, id 0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c02)",
        "status:         DEPLOYED (running)",
        f"provider lock:  Alice Martin: load test until Friday (expires {expires:%Y-%m-%d %H:%M:%S} UTC)",
        "Stopbot lock:   U0BOB: demo (expires 2099-01-01 00:00:00 UTC)",
    ]
    assert main(["status", "staging-us", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["state"], out["phase"], out["terminal"]) == ("DEPLOYED", "running", True)
    assert out["provider_lock"] == {
        "owner": "Alice Martin",
        "reason": "load test until Friday",
        "expires_at": expires.isoformat(),
    }
    assert out["stopbot_lock"] == {
        "owner": BOB,
        "reason": "demo",
        "expires_at": "2099-01-01T00:00:00+00:00",
    }


# -- the grammar --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["stop", "dev-eu", "--yes", "end", "of", "day"],
        ["stop", "dev-eu", "end", "--yes", "of", "day"],
        ["stop", "--yes", "dev-eu", "end", "of", "day"],
        ["stop", "dev-eu", "end", "of", "--log-level", "error", "day", "-y"],
    ],
)
def test_a_reason_is_taken_wherever_its_words_stand(argv: list[str]) -> None:
    """As `/stop web-1 end of day`, the reason's words may come before or after options."""
    args = parse_args(argv)
    assert (args.resource, args.reason, args.yes) == ("dev-eu", ["end", "of", "day"], True)


def test_serve_keeps_idle_connections_longer_than_a_load_balancer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`serve --keep-alive` takes whole seconds, 75 by default (past AWS's ALB and
    nginx's 60 s, so the balancer closes an idle connection first, never the bot under a
    request it sends); anything else is a usage error in words."""
    assert parse_args(["serve", "--http"]).keep_alive is None  # the server's KEEP_ALIVE
    assert parse_args(["serve", "--http", "--keep-alive", "650"]).keep_alive == 650
    for wrong, why in [("0", "at least 1 second"), ("1.5", "'1.5' is not a whole number")]:
        with pytest.raises(SystemExit) as usage:
            parse_args(["serve", "--keep-alive", wrong])
        assert usage.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == (
            f"stopbot serve: error: argument --keep-alive: {why}"
            + (" of seconds" if wrong == "1.5" else "")
        )


def test_the_last_log_line_of_serve_survives_a_database_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """serve's shutdown counts the stops in flight for its log line; a database that no
    longer answers is said so, and does not keep the shutdown from going on."""
    from bot.cli import _in_flight
    from bot.store import open_store
    from tests.test_store import new_op

    store = open_store(str(tmp_path / "stopbot.db"))
    new_op(store, state=OpState.IN_PROGRESS)
    assert _in_flight(store) == 1
    store.close()
    assert _in_flight(store) is None
    assert "could not count the stops in flight" in caplog.text


def test_usage_errors_say_what_is_missing_or_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    """`stopbot stop` alone asks for a resource (not a reason); an unknown option after the
    reason is still refused; --version says the version."""
    with pytest.raises(SystemExit) as usage:
        parse_args(["stop"])
    assert usage.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "stopbot stop: error: the following arguments are required: resource (or --env ENVIRONMENT)"
    )
    with pytest.raises(SystemExit):
        parse_args(["stop", "dev-eu", "--yes", "end", "--frce"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "stopbot: error: unrecognized arguments: end --frce"
    )
    with pytest.raises(SystemExit) as shown:
        parse_args(["--version"])
    assert shown.value.code == 0
    assert capsys.readouterr().out == f"stopbot {importlib.metadata.version('stopbot')}\n"


# -- serve's checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "args", "message"),
    [
        (
            {"SLACK_BOT_TOKEN": "xoxb-1-2"},
            ["serve", "--http"],
            "stopbot: set SLACK_SIGNING_SECRET to connect to Slack. Socket Mode needs "
            "SLACK_BOT_TOKEN and SLACK_APP_TOKEN; HTTP mode (--http) needs SLACK_BOT_TOKEN and "
            "SLACK_SIGNING_SECRET (create the app from app-manifest.yml, see the README).\n",
        ),
        (
            {"SLACK_BOT_TOKEN": "xoxb-1-2", "SLACK_SIGNING_SECRET": " "},  # blank: not a secret
            ["serve", "--http"],
            "stopbot: set SLACK_SIGNING_SECRET to connect to Slack. Socket Mode needs "
            "SLACK_BOT_TOKEN and SLACK_APP_TOKEN; HTTP mode (--http) needs SLACK_BOT_TOKEN and "
            "SLACK_SIGNING_SECRET (create the app from app-manifest.yml, see the README).\n",
        ),
        (
            {"SLACK_APP_TOKEN": "xapp-1-2"},
            ["serve"],
            "stopbot: set SLACK_BOT_TOKEN to connect to Slack. Socket Mode needs "
            "SLACK_BOT_TOKEN and SLACK_APP_TOKEN; HTTP mode (--http) needs SLACK_BOT_TOKEN and "
            "SLACK_SIGNING_SECRET (create the app from app-manifest.yml, see the README).\n",
        ),
        (
            {},
            ["serve", "--host", "0.0.0.0"],  # noqa: S104 -- refused before anything binds
            "stopbot: no Slack credentials are set. Socket Mode needs SLACK_BOT_TOKEN and "
            "SLACK_APP_TOKEN; HTTP mode (--http) needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET "
            "(create the app from app-manifest.yml, see the README). Without them, `stopbot "
            "serve` opens the local playground, which listens on loopback only "
            "(--host 127.0.0.1).\n",
        ),
    ],
)
def test_serve_says_which_credentials_are_missing(
    env: Env,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variables: dict[str, str],
    args: list[str],
    message: str,
) -> None:
    """Incomplete Slack credentials (or none, off loopback) exit 2 naming what to set."""
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    assert main(args) == 2
    assert capsys.readouterr().err == message


def test_an_unexpected_error_is_one_line_without_secrets(
    env: Env, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug surfaces as one line naming the error, with any token in it redacted."""

    def broken() -> None:
        raise RuntimeError("boom with xoxb-123-456-secret\nsecond line")

    monkeypatch.setattr("bot.cli.Settings", broken)
    assert main(["schedules"]) == 1
    assert capsys.readouterr().err == (
        "stopbot: unexpected error (RuntimeError): boom with xoxb-[REDACTED] second line\n"
    )


def test_serve_without_credentials_opens_the_playground(env: Env) -> None:
    """With no Slack credentials, `stopbot serve` on loopback runs the playground (the page
    and the bot behind it); SIGTERM ends it with 0."""
    port = free_port()
    child = env.process("serve", "--port", str(port))
    try:
        child.wait_healthy(f"http://127.0.0.1:{port}/healthz")
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        child.signal(signal.SIGTERM)
        assert child.wait(timeout=15) == 0
    finally:
        child.close()
    assert f"Stopbot playground: open http://127.0.0.1:{port}/ in your browser." in child.out.text


def test_serve_comes_back_on_a_port_its_killed_process_left_in_time_wait() -> None:
    """A port whose last connections wait in TIME_WAIT (the process that served them was
    killed) is free to listen on at once, as uvicorn does; one that is listened on is
    refused in words."""
    from bot.cli import CliError, _check_port

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    with pytest.raises(CliError, match=f"cannot listen on 127.0.0.1:{port}: Address already"):
        _check_port("127.0.0.1", port)
    served.close()  # the server side closes first: its port goes to TIME_WAIT
    client.close()
    listener.close()
    _check_port("127.0.0.1", port)


def test_the_terminal_says_whose_step_accepted_is() -> None:
    """The bot's own "accepted" step names the provider that accepted the stop."""
    from bot.cli import TerminalProgress

    op = Operation(
        id="op-1",
        resource="web-1",
        provider="nova",
        resource_id="s-1",
        requested_by="cli:dana",
        source="cli",
        state=OpState.ACCEPTED,
        created_at=dt.datetime(2026, 12, 4, tzinfo=dt.UTC),
        updated_at=dt.datetime(2026, 12, 4, tzinfo=dt.UTC),
    )
    assert TerminalProgress().line(op, None) == "web-1: accepted by nova"


# -- wake -------------------------------------------------------------------------------------


def test_wake_with_yes_follows_the_start_to_running(env: Env) -> None:
    """`stopbot wake qa-old for 2h --yes`: the same preview, then each state to running;
    the audit says wake, and the lease is opened for the terminal's user."""
    env.slow_qovery()
    child = env.process("wake", "qa-old", "for", "2h", "demo", "--yes")
    try:
        env.sims.hub.clock.advance(0)
        child.out.wait_for("qa-old: DEPLOYMENT_QUEUED (running)\n")
        env.sims.hub.clock.advance(STEP)
        child.out.wait_for("qa-old: DEPLOYING (running)\n")
        env.sims.hub.clock.advance(STEP)
        assert child.wait() == 0
    finally:
        child.close()
    assert without_elapsed(child.out.text) == [
        "Wake qa-old?",
        "  resource:       qa-old (qovery, id 0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c03)",
        "  status:         STOPPED (stopped)",
        "  provider lock:  none",
        "  Stopbot lock:   none",
        "  reason:         demo",
        "  lease:          2h from when it runs, then stopped again",
        "[t] qa-old: DEPLOYMENT_QUEUED (running)",
        "[t] qa-old: DEPLOYING (running)",
        "[t] qa-old: running",
    ]
    assert env.audit() == [
        (USER, "wake.requested", "qa-old"),
        (USER, "wake.awaiting_confirmation", "qa-old"),
        (USER, "wake.submitting", "qa-old"),
        ("stopbot", "wake.accepted", "qa-old"),
        ("stopbot", "wake.in_progress", "qa-old"),
        ("stopbot", "wake.started", "qa-old"),
        (USER, "lease.opened", "qa-old"),
    ]


def test_wake_of_a_running_resource_says_so(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """A resource running already: exit 0, the reason, no question asked."""
    assert main(["wake", "dev-eu"]) == 0
    assert capsys.readouterr().out == (
        "dev-eu: already running: dev-eu is already running (DEPLOYED): nothing to do.\n"
    )


def test_wake_with_a_bad_lease_is_usage(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """`for` needs a duration: exit 2, the grammar, nothing recorded."""
    assert main(["wake", "qa-old", "for", "soon", "--yes"]) == 2
    assert "Usage: stopbot wake <resource> [for <duration>] [reason…]" in capsys.readouterr().err
    assert env.operations() == []


# -- savings ----------------------------------------------------------------------------------


def stopped_for_savings(db: Path) -> None:
    """web-1 stopped by Bob on Nov 2 at 08:00 and seen running at 18:00; dev-eu stopped by
    the nightly schedule on Nov 3 at 20:00 and still stopped."""
    at = [T0]
    store = open_store(db, clock=lambda: at[0])
    web, _ = store.create_operation(
        resource="web-1", provider="nova", resource_id="s1", requested_by="U0BOB", source="slack"
    )
    dev, _ = store.create_operation(
        resource="dev-eu",
        provider="qovery",
        resource_id="c1",
        requested_by="schedule:nightly",
        source="schedule",
    )
    for when, action, resource, op in (
        (dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC), "stop.stopped", "web-1", web.id),
        (dt.datetime(2026, 11, 2, 18, tzinfo=dt.UTC), "resource.running", "web-1", None),
        (dt.datetime(2026, 11, 3, 20, tzinfo=dt.UTC), "stop.stopped", "dev-eu", dev.id),
    ):
        at[0] = when
        store.audit("stopbot", action, resource=resource, operation_id=op)
    store.close()


def test_savings_report_and_exports(
    sims: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`stopbot savings --since 30d` prints hours and estimates by resource, schedule and
    person with each rate's source (Qovery's range for dev-eu, a configured rate for web-1);
    --json and --csv carry the same figures; a bad period is a usage error."""
    environment = Env(sims, tmp_path, savings={"currency": "EUR"}, names={"U0BOB": "Bob Stone"})
    document = yaml.safe_load(environment.config_path.read_text(encoding="utf-8"))
    for resource in document["resources"]:
        if resource["name"] == "web-1":
            resource["cost_per_hour"] = 0.3
    environment.config_path.write_text(yaml.safe_dump(document), encoding="utf-8")
    for key, value in environment.vars.items():
        monkeypatch.setenv(key, value)
    stopped_for_savings(environment.db)
    with time_machine.travel(dt.datetime(2026, 11, 4, 8, tzinfo=dt.UTC), tick=False):
        assert main(["savings", "--since", "30d"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == (
            "Savings of all resources from 2026-10-05 08:00:00 UTC to 2026-11-04 08:00:00 UTC "
            "(estimates: hours stopped times each resource's rate while running)"
        )
        assert out[1].split() == [
            "RESOURCE",
            "PROVIDER",
            "HOURS",
            "STOPPED",
            "ESTIMATED",
            "SAVINGS",
            "RATE",
        ]
        assert out[2].split() == [
            "dev-eu",
            "(stopped",
            "now)",
            "qovery",
            "12.0",
            "6.00-12.00",
            "USD",
            "0.50-1.00",
            "USD/h",
            "(Qovery",
            "currentCost,",
            "a",
            "monthly",
            "range)",
        ]
        assert out[3].split() == [
            "web-1",
            "nova",
            "10.0",
            "3.00",
            "EUR",
            "0.30",
            "EUR/h",
            "(configured",
            "for",
            "web-1)",
        ]
        assert any(line.split() == ["nightly", "12.0", "6.00-12.00", "USD"] for line in out)
        assert any(line.split()[:4] == ["Bob", "Stone", "10.0", "3.00"] for line in out)
        assert out[-1] == "Total: 22.0 hours stopped, 3.00 EUR, 6.00-12.00 USD estimated"
        assert main(["savings", "web-1", "--since", "month", "--json"]) == 0
        body = json.loads(capsys.readouterr().out)
        assert body["estimate"] is True and body["selection"] == "web-1"
        assert body["since"] == "2026-11-01T00:00:00+00:00"
        [web] = body["resources"]
        assert (web["name"], web["hours"], web["estimated_savings"]) == (
            "web-1",
            10.0,
            {"EUR": {"low": 3.0, "high": 3.0}},
        )
        assert body["people"] == [
            {
                "name": "U0BOB",
                "hours": 10.0,
                "estimated_savings": {"EUR": {"low": 3.0, "high": 3.0}},
            }
        ]
        assert main(["savings", "--csv"]) == 0
        rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
        assert rows[0] == list(SAVINGS_FIELDS)
        assert [
            "resource",
            "dev-eu",
            "qovery",
            "12.0000",
            "USD",
            "6.00",
            "12.00",
            "Qovery currentCost, a monthly range",
        ] in rows
        assert ["total", "total", "", "22.0000", "EUR", "3.00", "3.00", ""] in rows
        assert main(["savings", "--since", "0d"]) == 2
        assert "a period is 7d, 30d or month" in capsys.readouterr().err
        assert main(["savings", "nope"]) == 2
        assert "no resource or env named nope" in capsys.readouterr().err
