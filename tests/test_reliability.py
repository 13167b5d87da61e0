"""The bot as it runs in production: `stopbot serve --http` as a real process, killed with
SIGKILL mid-stop, provider faults injected in the simulators, forged Slack requests.

The simulators' clock is frozen: a stop moves on only when a test advances it, so each
test decides what the bot sees; the bot polls every 50 ms of real time.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.slack import views
from bot.slack.fake_api import (
    RESPONSE_URL_METHOD,
    FakeSlack,
    FakeSlackServer,
    SlackChannel,
    SlackUser,
    block_actions_body,
    block_actions_payload,
    sign_request,
    slash_command_body,
)
from providers.simulators.common import Fault
from providers.simulators.samples import DEFAULT_SEED, sample_config
from providers.simulators.server import SimulatorServer
from tests.test_cli import StopbotProcess, clean_env, free_port

TOKEN = "xoxb-reliability-0123456789-abcdef"
SECRET = "reliability-signing-secret-42"
BOB = "U0BOB"
STEP = 600.0
HTTP = {"timeout": 1.0, "attempts": 4, "wait_initial": 0.0, "wait_max": 0.2, "retry_budget": 10}
STOPS = {"poll_initial": 0.05, "poll_max": 0.1, "timeout": "30m", "progress_interval": 0}
FINAL = re.compile(r"^dev-eu: (:white_check_mark: Stopped|:x: Failed|:hourglass: Timed out)")


class Requests:
    """What reaches simulated Qovery: every request (faulted ones included), and every stop
    the simulator acted on."""

    def __init__(self, sims: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.stop_posted = threading.Event()
        self.stops_applied = 0
        self.stop_applied = threading.Event()
        take = sims.hub.faults.take
        qovery = sims.hub["qovery"]
        apply_stop: Callable[[Any], dict[str, Any]] = qovery._stop  # type: ignore[attr-defined]

        def spy_take(api: str, method: str, path: str) -> list[Fault]:
            self.seen.append((api, method, path))
            if method == "POST" and path.endswith("/stop"):
                self.stop_posted.set()
            return take(api, method, path)

        def spy_stop(cluster: Any) -> dict[str, Any]:
            try:
                return apply_stop(cluster)
            finally:
                self.stops_applied += 1
                self.stop_applied.set()

        monkeypatch.setattr(sims.hub.faults, "take", spy_take)
        monkeypatch.setattr(qovery, "_stop", spy_stop)

    def stop_posts(self) -> int:
        return sum(
            1 for _, method, path in self.seen if method == "POST" and path.endswith("/stop")
        )


class Bot:
    """`stopbot serve --http` in a child process, on the test's simulators and fake Slack."""

    def __init__(self, sims: SimulatorServer, fake: FakeSlackServer, workdir: Path) -> None:
        self.fake = fake.slack
        self.workdir = workdir
        self.db = workdir / "stopbot.db"
        document = sample_config(sims.base_url)
        document.update(stops=STOPS, http=HTTP)
        config = workdir / "stopbot.yaml"
        config.write_text(yaml.safe_dump(document), encoding="utf-8")
        self.env = clean_env(
            SLACK_BOT_TOKEN=TOKEN,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=fake.api_url,
            STOPBOT_CONFIG=str(config),
            STOPBOT_DB=str(self.db),
        )
        self.process: StopbotProcess | None = None
        self.url = ""
        self.logs = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = StopbotProcess(
            "serve", "--http", "--port", str(port), env=self.env, cwd=self.workdir
        )
        self.process.wait_healthy(f"{self.url}/healthz")

    def end(self, sig: int = signal.SIGTERM) -> int:
        """Stop the process; its exit code. Its logs are kept in ``logs``."""
        assert self.process is not None
        self.process.signal(sig)
        code = self.process.wait()
        self.logs += self.process.err.text
        self.process.close()
        self.process = None
        return code

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        signed = sign_request(SECRET, body, int(time.time())) if headers is None else headers
        return httpx.post(
            f"{self.url}/slack/events",
            content=body,
            headers={**signed, "Content-Type": "application/x-www-form-urlencoded"},
            timeout=10,
        )

    def command_body(self, text: str, channel: str) -> bytes:
        url = self.fake.new_response_url(channel=channel, user=BOB)
        return slash_command_body("/stop", text, BOB, channel, url, uuid.uuid4().hex)

    async def stop(self, resource: str, channel: str) -> str:
        """`/stop <resource>` then Confirm, as Bob; the operation id."""
        assert self.post(self.command_body(resource, channel)).status_code == 200
        await self.fake.wait_for(
            RESPONSE_URL_METHOD, lambda _: bool(self.fake.ephemeral_messages(channel, BOB))
        )
        [message] = self.fake.ephemeral_messages(channel, BOB)
        assert message["text"] == f"Stop {resource} (qovery)? Confirm or cancel."
        actions = next(b for b in message["blocks"] if b["type"] == "actions")
        op_id: str = actions["elements"][0]["value"]
        url = self.fake.new_response_url(
            channel=channel, user=BOB, message_ts=message["ts"], is_ephemeral=True
        )
        payload = block_actions_payload(
            BOB,
            channel,
            views.CONFIRM,
            op_id,
            response_url=url,
            message_ts=message["ts"],
            is_ephemeral=True,
            block_id=f"confirm:{op_id}",
        )
        assert self.post(block_actions_body(payload)).status_code == 200
        return op_id

    async def run_now(self, schedule: str, channel: str) -> None:
        """`/stop schedule run <schedule>` then Confirm, as Bob."""
        assert self.post(self.command_body(f"schedule run {schedule}", channel)).status_code == 200
        await self.fake.wait_for(
            RESPONSE_URL_METHOD, lambda _: bool(self.fake.ephemeral_messages(channel, BOB))
        )
        [message] = self.fake.ephemeral_messages(channel, BOB)
        assert message["text"] == f"Run {schedule} now? Confirm or cancel."
        url = self.fake.new_response_url(
            channel=channel, user=BOB, message_ts=message["ts"], is_ephemeral=True
        )
        payload = block_actions_payload(
            BOB,
            channel,
            "schedule_run_confirm",
            schedule,
            response_url=url,
            message_ts=message["ts"],
            is_ephemeral=True,
            block_id=f"run:{schedule}",
        )
        assert self.post(block_actions_body(payload)).status_code == 200

    async def final(self, channel: str, timeout: float = 15.0) -> dict[str, Any]:  # noqa: ASYNC109
        return await self.fake.wait_for_message(
            channel, lambda m: bool(FINAL.match(m.get("text", ""))), timeout=timeout
        )

    async def delivered(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until the bot has recorded every message it owed Slack as delivered."""
        deadline = time.monotonic() + timeout
        while self.rows("SELECT COUNT(*) FROM outbox WHERE sent_version < version") != [(0,)]:
            assert time.monotonic() < deadline, "messages still owed"
            await asyncio.sleep(0.02)  # the bot runs in another process: poll its database

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()


def slack_fake() -> FakeSlack:
    return FakeSlack(
        tokens=[TOKEN],
        users=[SlackUser(BOB, "bob", real_name="Bob Stone")],
        channels=[SlackChannel("C0DEV", "dev")],
    )


def slow_qovery(sims: SimulatorServer, step: float = STEP) -> None:
    sims.hub.clock.freeze()
    sims.hub.seed({"qovery": {**DEFAULT_SEED["qovery"], "step_seconds": step}})


def update_texts(fake: FakeSlack, channel: str) -> list[str]:
    return [c.args["text"] for c in fake.calls("chat.update") if c.args.get("channel") == channel]


def assert_clean_logs(logs: str) -> None:
    """Every line the bot logged is JSON, and no secret is in any of them."""
    for line in logs.splitlines():
        json.loads(line)
    assert TOKEN not in logs
    assert SECRET not in logs


# -- SIGKILL and restart ---------------------------------------------------------------------


@pytest.fixture
def own_bot(sims: SimulatorServer, tmp_path: Path) -> Iterator[Bot]:
    """A bot of the test's own (it is killed): its fake Slack, its database."""
    with FakeSlackServer(slack_fake()) as fake:
        bot = Bot(sims, fake, tmp_path)
        yield bot
        if bot.process is not None:
            bot.end(signal.SIGKILL)


def audit_of(bot: Bot, op_id: str) -> list[str]:
    return [
        r[0] for r in bot.rows("SELECT action FROM audit WHERE operation_id = ? ORDER BY id", op_id)
    ]


def timeline_of(bot: Bot, op_id: str) -> list[tuple[str, str | None]]:
    return [
        (r[0], r[1])
        for r in bot.rows(
            "SELECT state, provider_state FROM transitions WHERE operation_id = ? ORDER BY id",
            op_id,
        )
    ]


FULL_AUDIT = [
    "stop.requested",
    "stop.awaiting_confirmation",
    "stop.submitting",
    "stop.accepted",
    "stop.in_progress",
    "stop.stopped",
]


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGTERM, 0)], ids=["kill", "term"]
)
async def test_a_stop_being_followed_is_resumed_by_the_next_process(
    own_bot: Bot,
    sims: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    sig: signal.Signals,
    code: int,
) -> None:
    """Killed (SIGKILL) or shut down (SIGTERM) while following a stop, the bot's next process
    follows it to the end on the same Slack message; one stop was sent; the audit log has no
    gap and no repeat."""
    slow_qovery(sims)
    requests = Requests(sims, monkeypatch)
    own_bot.start()
    op_id = await own_bot.stop("dev-eu", "C0DEV")
    await own_bot.fake.wait_for("chat.update")
    await own_bot.delivered()  # (killed before that, the new process shows it again)
    assert own_bot.end(sig) == code
    [(state, ts)] = own_bot.rows("SELECT state, message_ts FROM operations WHERE id = ?", op_id)
    assert state in {"accepted", "in_progress"} and ts

    own_bot.start()
    sims.hub.clock.advance(STEP)
    await own_bot.fake.wait_for("chat.update", lambda c: c.args["text"].endswith("STOPPING"))
    sims.hub.clock.advance(STEP)
    final = await own_bot.final("C0DEV")
    assert own_bot.end() == 0

    assert final["ts"] == ts
    assert final["text"].startswith("dev-eu: :white_check_mark: Stopped in ")
    assert update_texts(own_bot.fake, "C0DEV") == [
        "Stopping dev-eu: STOP_QUEUED",
        "Stopping dev-eu: STOPPING",
        final["text"],
    ]
    assert audit_of(own_bot, op_id) == FULL_AUDIT
    assert timeline_of(own_bot, op_id) == [
        ("requested", None),
        ("awaiting_confirmation", None),
        ("submitting", None),
        ("accepted", None),
        ("accepted", "STOP_QUEUED"),
        ("in_progress", None),
        ("in_progress", "STOPPING"),
        ("in_progress", "STOPPED"),
        ("stopped", None),
    ]
    ids = [r[0] for r in own_bot.rows("SELECT id FROM audit ORDER BY id")]
    assert ids == list(range(1, len(FULL_AUDIT) + 1))
    assert (requests.stop_posts(), requests.stops_applied) == (1, 1)
    assert_clean_logs(own_bot.logs)


async def test_sigkill_while_the_stop_is_being_sent_never_sends_it_twice(
    own_bot: Bot, sims: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while the stop request is on the wire, the next process does not send it again:
    it reads the status, sees the stop was taken, and follows it to the end."""
    slow_qovery(sims)
    requests = Requests(sims, monkeypatch)
    # The provider takes the stop, but answers only after the bot is dead.
    sims.hub.faults.add(
        Fault(api="qovery", kind="latency", method="POST", path_contains="/stop", seconds=0.5)
    )
    own_bot.start()
    op_id = await own_bot.stop("dev-eu", "C0DEV")
    assert requests.stop_posted.wait(10)
    assert own_bot.end(signal.SIGKILL) == -signal.SIGKILL
    assert requests.stop_applied.wait(10)
    [(state,)] = own_bot.rows("SELECT state FROM operations WHERE id = ?", op_id)
    assert state == "submitting"

    own_bot.start()
    await own_bot.fake.wait_for("chat.update", lambda c: c.args["text"].endswith("STOP_QUEUED"))
    sims.hub.clock.advance(2 * STEP)
    final = await own_bot.final("C0DEV")
    assert own_bot.end() == 0

    assert final["text"].startswith("dev-eu: :white_check_mark: Stopped in ")
    assert (requests.stop_posts(), requests.stops_applied) == (1, 1)
    assert audit_of(own_bot, op_id) == FULL_AUDIT
    accepted = own_bot.rows(
        "SELECT detail FROM audit WHERE operation_id = ? AND action = 'stop.accepted'", op_id
    )
    assert [json.loads(d) for (d,) in accepted] == [{"detail": "resumed after a restart"}]
    assert_clean_logs(own_bot.logs)


# -- provider faults ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_bot(
    sim_server: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bot]:
    """One bot process for the fault tests: each test has its own channel and operation."""
    with FakeSlackServer(slack_fake()) as fake:
        bot = Bot(sim_server, fake, tmp_path_factory.mktemp("bot"))
        bot.start()
        yield bot
        bot.end()


def channel_for(bot: Bot) -> str:
    channel = f"C0{uuid.uuid4().hex[:8].upper()}"
    bot.fake.add_channel(channel, channel.lower())
    return channel


UNKNOWN_DETAIL = (
    "qovery: the provider did not answer in time: no answer within 1s, and the status is "
    "unknown: qovery: the provider is unavailable, try again later (HTTP 503): injected "
    "fault. The stop may or may not have been taken: check with `/stop status dev-eu` "
    "before trying again."
)


@pytest.mark.parametrize(
    ("faults", "final", "posts", "applied"),
    [
        pytest.param(
            [Fault(api="qovery", kind="latency", method="POST", seconds=1.5)],
            None,  # the provider took it after the bot gave up waiting: its state says so
            1,
            1,
            id="timeout",
        ),
        pytest.param(
            [
                Fault(api="qovery", kind="latency", method="POST", seconds=1.5),
                Fault(api="qovery", kind="status", method="GET", status=503, count=None),
            ],
            f"dev-eu: :x: Failed: {UNKNOWN_DETAIL}",
            1,
            1,  # the provider took it, and its state could not be read: the message says so
            id="timeout-status-unknown",
        ),
        pytest.param(
            [
                Fault(
                    api="qovery",
                    kind="status",
                    method="POST",
                    status=500,
                    body={"message": "maintenance window"},
                )
            ],
            "dev-eu: :x: Failed: qovery: the provider failed on its side (internal error) "
            "(HTTP 500): maintenance window",
            1,
            0,
            id="5xx",
        ),
        pytest.param(
            [
                Fault(
                    api="qovery",
                    kind="status",
                    method="POST",
                    status=429,
                    retry_after=0.2,
                    body={"message": "slow down"},
                )
            ],
            None,
            2,
            1,
            id="429-retry-after",
        ),
        pytest.param(
            [Fault(api="qovery", kind="drop", method="POST")],
            "dev-eu: :x: Failed: qovery: the connection to the provider dropped before its "
            "answer: peer closed connection without sending complete message body (received 0 "
            "bytes, expected 1000); the provider did not take it: dev-eu is DEPLOYED. Run "
            "`/stop dev-eu` again.",
            1,
            0,
            id="dropped",
        ),
        pytest.param(
            [Fault(api="qovery", kind="latency", seconds=0.3, count=None)],
            None,
            1,
            1,
            id="slow",
        ),
        pytest.param(
            [Fault(api="qovery", kind="status", method="GET", path_contains="/status", count=3)],
            None,
            1,
            1,
            id="503-while-following",
        ),
    ],
)
async def test_provider_faults_give_a_clear_end_and_never_stop_twice(
    shared_bot: Bot,
    sims: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    faults: list[Fault],
    final: str | None,
    posts: int,
    applied: int,
) -> None:
    """Timeouts, 5xx, 429 with Retry-After, dropped connections and slow answers each end
    in an exact message (or the stop done); the provider acts on one stop at most."""
    slow_qovery(sims, step=0)
    requests = Requests(sims, monkeypatch)
    for fault in faults:
        sims.hub.faults.add(fault)
    channel = channel_for(shared_bot)
    op_id = await shared_bot.stop("dev-eu", channel)
    message = await shared_bot.final(channel)
    if final is None:
        assert re.fullmatch(r"dev-eu: :white_check_mark: Stopped in \d+s", message["text"])
    else:
        assert message["text"] == final
    [(state,)] = shared_bot.rows("SELECT state FROM operations WHERE id = ?", op_id)
    assert state == ("stopped" if final is None else "failed")
    accepted = shared_bot.rows(
        "SELECT COUNT(*) FROM audit WHERE operation_id = ? AND action = 'stop.accepted'", op_id
    )
    assert accepted == [(1 if final is None else 0,)]
    if applied:  # a stop the bot gave up waiting for may still land: wait for that answer
        assert requests.stop_applied.wait(10)
    assert (requests.stop_posts(), requests.stops_applied) == (posts, applied)


# -- forged requests ----------------------------------------------------------------------------


def test_forged_replayed_and_unsigned_requests_are_refused(shared_bot: Bot) -> None:
    """A wrong signature, a replay of an old timestamp and no signature at all get 401;
    nothing is recorded but the refusal in the log, and Slack is never called."""
    before = shared_bot.rows(
        "SELECT (SELECT COUNT(*) FROM operations), (SELECT COUNT(*) FROM audit)"
    )
    calls = len(shared_bot.fake.calls())
    assert shared_bot.process is not None
    logged = len(shared_bot.process.err.text.splitlines())
    refused_before = shared_bot.process.err.text.count("Invalid request signature")
    body = shared_bot.command_body("dev-eu", "C0DEV")
    forged = shared_bot.post(body, sign_request("not-" + SECRET, body, int(time.time())))
    replayed = shared_bot.post(body, sign_request(SECRET, body, int(time.time()) - 10 * 60))
    unsigned = shared_bot.post(body, {})
    assert [r.status_code for r in (forged, replayed, unsigned)] == [401, 401, 401]
    assert (
        shared_bot.rows("SELECT (SELECT COUNT(*) FROM operations), (SELECT COUNT(*) FROM audit)")
        == before
    )
    assert len(shared_bot.fake.calls()) == calls
    text = shared_bot.process.err.wait_for("Invalid request signature", count=3 + refused_before)
    new_lines = text.splitlines()[logged:]
    refusals = [json.loads(line) for line in new_lines]
    assert len(refusals) == 3
    assert all(r["event"].startswith("Invalid request signature detected") for r in refusals)
    assert all("response_url=[REDACTED]" in r["event"] for r in refusals)
    assert SECRET not in "".join(new_lines)


async def test_sigkill_during_a_scheduled_run_finishes_it_once(
    own_bot: Bot, sims: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed in the middle of a scheduled run, the next process finishes that run, on the
    same summary message, with one stop per resource and one run in the store."""
    slow_qovery(sims)
    requests = Requests(sims, monkeypatch)
    config = own_bot.workdir / "stopbot.yaml"
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["schedules"] = [
        {
            "name": "nightly",
            "cron": "0 3 * * *",
            "timezone": "UTC",
            "select": {"resources": ["dev-eu", "web-1"]},
            "channel": "C0DEV",
        }
    ]
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    own_bot.start()
    await own_bot.run_now("nightly", "C0DEV")
    summary = await own_bot.fake.wait_for(
        "chat.postMessage", lambda c: c.args["text"].startswith("nightly run running")
    )
    deadline = time.monotonic() + 15
    while len(own_bot.rows("SELECT id FROM audit WHERE action = 'stop.in_progress'")) < 2:
        assert time.monotonic() < deadline, "the run's stops were never accepted"
        await asyncio.sleep(0.05)  # the bot runs in another process: poll its database
    assert own_bot.end(signal.SIGKILL) == -signal.SIGKILL
    [(status,)] = own_bot.rows("SELECT status FROM schedule_runs")
    assert status == "running"

    own_bot.start()
    sims.hub.clock.advance(2 * STEP)
    done = await own_bot.fake.wait_for(
        "chat.update", lambda c: c.args["text"].startswith("nightly run done"), timeout=15
    )
    assert own_bot.end() == 0

    assert isinstance(summary.response, dict)
    assert done.args["ts"] == summary.response["ts"]
    assert done.args["text"] == "nightly run done: 2 stopped"
    runs = own_bot.rows("SELECT status, kind FROM schedule_runs")
    assert runs == [("done", "manual")]
    accepted = own_bot.rows(
        "SELECT resource FROM audit WHERE action = 'stop.accepted' ORDER BY resource"
    )
    assert accepted == [("dev-eu",), ("web-1",)]
    assert (requests.stop_posts(), requests.stops_applied) == (1, 1)
    assert_clean_logs(own_bot.logs)


async def test_a_rolling_restart_during_a_scheduled_run_stops_each_resource_once(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """A new process started while the old one executes a run (a rolling deploy) leaves the
    run to it; the old one is then SIGKILLed: the new one takes the run and its stops over,
    sends no stop again, and ends the run once, on the same summary message."""
    slow_qovery(sims)
    stops: list[str] = []
    take = sims.hub.faults.take

    def spy(api: str, method: str, path: str) -> list[Fault]:
        if method == "POST" and (path.endswith(("/stop", "/stop/")) or "/action" in path):
            stops.append(path)
        return take(api, method, path)

    with FakeSlackServer(slack_fake()) as fake, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sims.hub.faults, "take", spy)
        old, new = Bot(sims, fake, tmp_path), Bot(sims, fake, tmp_path)  # one database
        config = tmp_path / "stopbot.yaml"
        document = yaml.safe_load(config.read_text(encoding="utf-8"))
        document["recovery"] = {"lease": 3, "sweep_interval": 0.2}
        document["schedules"] = [
            {
                "name": "nightly",
                "cron": "0 3 * * *",
                "timezone": "UTC",
                "select": {"resources": ["dev-eu", "web-1", "spark", "etl"]},
                "channel": "C0DEV",
                "force": True,
            }
        ]
        config.write_text(yaml.safe_dump(document), encoding="utf-8")
        try:
            old.start()
            await old.run_now("nightly", "C0DEV")
            summary = await old.fake.wait_for(
                "chat.postMessage", lambda c: c.args["text"].startswith("nightly run")
            )
            deadline = time.monotonic() + 15
            while len(old.rows("SELECT id FROM audit WHERE action = 'stop.accepted'")) < 4:
                assert time.monotonic() < deadline, "the run's stops were never accepted"
                await asyncio.sleep(0.05)  # the bot runs in another process: poll its database

            new.start()  # the rolling deploy: both serve for a while
            await asyncio.sleep(0.6)  # three sweeps of the new process
            [(owner_before,)] = old.rows("SELECT owner FROM schedule_runs")
            assert len(stops) == 4
            assert old.end(signal.SIGKILL) == -signal.SIGKILL

            deadline = time.monotonic() + 10
            while old.rows("SELECT owner FROM schedule_runs") == [(owner_before,)]:
                assert time.monotonic() < deadline, "the run was never taken over"
                await asyncio.sleep(0.05)
            sims.hub.clock.advance(2 * STEP)
            done = await new.fake.wait_for(
                "chat.update",
                lambda c: c.args["text"].startswith("nightly run done"),
                timeout=15,
            )
            assert new.end() == 0
        finally:
            for bot in (old, new):
                if bot.process is not None:
                    bot.end(signal.SIGKILL)

        assert isinstance(summary.response, dict)
        assert done.args["ts"] == summary.response["ts"]
        assert done.args["text"] == "nightly run done: 4 stopped"
        assert sorted(stops) == sorted(set(stops)) and len(stops) == 4
        assert new.rows("SELECT status FROM schedule_runs") == [("done",)]
        ends = new.rows("SELECT COUNT(*) FROM audit WHERE action = 'schedule.run.done'")
        assert ends == [(1,)]
        finals = new.rows(
            "SELECT resource, COUNT(*) FROM audit WHERE action LIKE 'stop.%' AND action IN "
            "('stop.stopped', 'stop.failed', 'stop.refused', 'stop.timed_out') "
            "GROUP BY resource ORDER BY resource"
        )
        assert finals == [("dev-eu", 1), ("etl", 1), ("spark", 1), ("web-1", 1)]
        assert new.rows("SELECT state FROM operations ORDER BY resource") == [("stopped",)] * 4
        assert_clean_logs(old.logs + new.logs)
