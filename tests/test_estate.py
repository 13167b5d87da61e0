"""One embedded estate: the playground and the CLI share its configuration, its database
and, while a playground runs, its simulators; a configuration file without providers is
laid over it; the sample office-hours schedule fires a few minutes after start."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bot.cli import main
from bot.config import Settings
from bot.estate import OFFICE_HOURS, PlaygroundNote, embedded_document, office_hours
from bot.runtime import BUILT_IN, Runtime
from tests.helpers import FAST_STOPS

PARIS = dt.timezone(dt.timedelta(hours=1))  # December: Paris is UTC+1


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """In-process commands configure the root logger: put it back after each test."""
    root = logging.getLogger()
    handlers, level, factory = list(root.handlers), root.level, logging.getLogRecordFactory()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory, no Stopbot or Slack settings in the environment."""
    for key in [k for k in os.environ if k.startswith(("SLACK_", "STOPBOT_"))]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class Dev:
    """`stopbot dev` as a child process in ``home``, its printed lines collected."""

    def __init__(self, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "STOPBOT_"))}
        code = (
            "import sys; from bot.config import Settings; from bot.playground.dev import run_dev;"
            " sys.exit(run_dev(Settings(), port=0))"
        )
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code],
            cwd=home,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [self.lines.put(line) for line in self.process.stdout or ()],
            daemon=True,
        ).start()
        printed: list[str] = []
        while not any(line.startswith("Stopbot playground: open ") for line in printed):
            printed.append(self.lines.get(timeout=60).rstrip("\n"))
        self.url = (
            printed[-1].removeprefix("Stopbot playground: open ").removesuffix("/ in your browser.")
        )
        while not printed[-1].startswith("Try "):
            printed.append(self.lines.get(timeout=60).rstrip("\n"))
        self.printed = printed

    def resources(self) -> dict[str, str]:
        state = httpx.get(f"{self.url}/playground/state", timeout=10).json()
        return {r["name"]: r["status"] for r in state["resources"]}

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def dev(home: Path) -> Iterator[Dev]:
    # Stops followed fast, and a file with no providers: the playground's estate as it is.
    (home / "stopbot.yaml").write_text(yaml.safe_dump({"stops": FAST_STOPS}), encoding="utf-8")
    running = Dev(home)
    try:
        yield running
    finally:
        running.kill()


def test_the_cli_acts_on_the_running_playgrounds_estate(
    dev: Dev, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While `stopbot dev` runs, `stopbot stop web-1` stops the playground's web-1 (the page
    shows it SHUTOFF), `stopbot status` then says SHUTOFF, and `stopbot history` has the
    stop: one estate, one database. Once the playground is gone, its note is too."""
    assert dev.resources()["web-1"] == "ACTIVE"
    assert main(["stop", "web-1", "--yes", "end", "of", "day"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("web-1: stopped")
    assert dev.resources()["web-1"] == "SHUTOFF"
    assert main(["status", "web-1"]) == 0
    assert "status:         SHUTOFF (stopped)" in capsys.readouterr().out
    assert main(["history", "--resource", "web-1", "--json"]) == 0
    actions = [e["action"] for e in json.loads(capsys.readouterr().out)]
    assert (actions[0], actions[-1]) == ("stop.requested", "stop.stopped")
    assert dev.stop() == 0
    assert not (home / "stopbot.db.playground.json").exists()
    assert (home / "stopbot.db").exists()


def test_the_playground_and_the_cli_share_one_estate(
    dev: Dev, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's estate is the playground's: spark needs Priya's approval in both."""
    assert "  spark       okeanos   started   needs approval by Priya Patel" in dev.printed
    assert main(["stop", "spark", "--yes"]) == 1
    out, err = capsys.readouterr()
    assert "  note:           needs 1 approval from Priya Patel after you confirm" in out
    assert err == (
        "stopbot: spark needs 1 approval before it is stopped, and approvers are asked in "
        "Slack: request it there with `/stop spark`.\n"
    )


def test_the_cli_alone_runs_on_the_same_embedded_estate(home: Path) -> None:
    """With no playground and no file, the CLI starts simulators of its own with the same
    estate: rights, approvals and the sample schedule."""
    runtime = Runtime.open(Settings())
    try:
        assert runtime.config_source == BUILT_IN
        assert runtime.playground is None and runtime.simulators is not None
        assert runtime.config.admins == ["U0LOCALADM"]
        spark = runtime.config.approval_for("spark")
        assert spark is not None and spark.approvers == ["U0LOCALAPV"]
        assert [s.name for s in runtime.config.schedules] == [OFFICE_HOURS]
    finally:
        runtime.store.close()
        assert runtime.simulators is not None
        runtime.simulators.stop()


def test_a_file_without_providers_is_laid_over_the_estate(home: Path) -> None:
    """A stopbot.yaml with only schedules and admins runs on the simulators' estate, its
    keys replacing the estate's."""
    schedule = {
        "name": "lunch",
        "cron": "0 12 * * 1-5",
        "timezone": "Europe/Paris",
        "select": {"resources": ["dev-eu"]},
    }
    (home / "stopbot.yaml").write_text(
        yaml.safe_dump({"schedules": [schedule], "admins": ["U0LOCALDEV"]}), encoding="utf-8"
    )
    runtime = Runtime.open(Settings())
    try:
        assert runtime.config_source == f"stopbot.yaml on {BUILT_IN}"
        assert [s.name for s in runtime.config.schedules] == ["lunch"]
        assert runtime.config.admins == ["U0LOCALDEV"]
        assert "web-1" in {r.name for r in runtime.config.resources}
    finally:
        runtime.store.close()
        assert runtime.simulators is not None
        runtime.simulators.stop()


def test_a_note_left_by_a_killed_playground_is_ignored(home: Path) -> None:
    """A note whose process is gone sends the CLI to simulators of its own."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    PlaygroundNote(dead.pid, "http://127.0.0.1:9", dt.datetime.now(dt.UTC)).write("stopbot.db")
    assert PlaygroundNote.running("stopbot.db") is None


@pytest.mark.parametrize(
    ("started", "cron"),
    [
        (dt.datetime(2026, 12, 4, 16, 0, 0, tzinfo=PARIS), "4 16 * * *"),
        (dt.datetime(2026, 12, 4, 16, 0, 1, tzinfo=PARIS), "5 16 * * *"),
        (dt.datetime(2026, 12, 4, 23, 58, 30, tzinfo=PARIS), "3 0 * * *"),
    ],
)
def test_the_sample_schedule_fires_a_few_minutes_after_start(
    started: dt.datetime, cron: str
) -> None:
    """office-hours fires at the first whole minute 4 minutes or more after start, Paris
    time, warned 3 minutes before, in the playground's channel."""
    schedule = office_hours(started)
    assert (schedule["cron"], schedule["timezone"], schedule["warn_before"]) == (
        cron,
        "Europe/Paris",
        "3m",
    )
    assert schedule["channel"] == "C0LOCAL01"
    document = embedded_document("http://127.0.0.1:1", started)
    assert document["schedules"] == [schedule]
