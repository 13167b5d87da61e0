"""Chaos: `stopbot serve --http` killed with SIGKILL at random instants, over the four
providers, and restarted on the same database; a second process beside it at times.

Each round asks four stops (one per provider, a second person's stop of the same Qovery
cluster among them) and confirms them, while a killer SIGKILLs a bot process at a random
instant and starts a new one at once. Whatever the instant:

- no provider gets two stop calls for one resource in a round;
- every confirmation Slack was answered 200 for ends final, stopped (or reported, when
  the process died after claiming the send: judged by the provider's state);
- every progress message shows a final state, and no message is left "Stopping…";
- every operation has one terminal audit row, and the database is intact.

Run it alone with `pytest -m chaos`. The simulators run on real time, fast (0.2 s a
step); the seed makes a failure replayable (``STOPBOT_CHAOS_SEED``).
"""

from __future__ import annotations

import asyncio
import os
import random
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
    FakeSlack,
    FakeSlackServer,
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

pytestmark = pytest.mark.chaos

TOKEN = "xoxb-chaos-0123456789-abcdef"
SECRET = "chaos-signing-secret-42"
ROUNDS = 20
STEP = 0.2
# (resource, provider, user): two people stop dev-eu; one stop is sent.
STOPS = [
    ("dev-eu", "qovery", "U0ANA"),
    ("dev-eu", "qovery", "U0BEN"),
    ("web-1", "nova", "U0CEL"),
    ("spark", "okeanos", "U0DAN"),
    ("etl --force", "feldera", "U0EVA"),
]
USERS = sorted({user for _, _, user in STOPS})
HTTP = {"timeout": 1.0, "attempts": 3, "wait_initial": 0.0, "wait_max": 0.1, "retry_budget": 2}
STOPS_CONFIG = {"poll_initial": 0.05, "poll_max": 0.1, "timeout": "5m", "progress_interval": 0}
TERMINAL = re.compile(r"^[\w.-]+: :(white_check_mark|x|hourglass|no_entry|no_entry_sign):")
FINAL_STATES = ("stopped", "stopped_already", "failed", "timed_out", "cancelled", "refused")
FINAL_MARKS = ", ".join("?" * len(FINAL_STATES))
NOT_TAKEN = "the provider did not take it"


def fast_seed() -> dict[str, Any]:
    return {api: {**seed, "step_seconds": STEP} for api, seed in DEFAULT_SEED.items()}


class StopCalls:
    """Every stop call the simulators received, by the path it named."""

    def __init__(self, sims: SimulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[str] = []
        self._lock = threading.Lock()
        take = sims.hub.faults.take

        def spy(api: str, method: str, path: str) -> list[Fault]:
            if method == "POST" and (path.endswith(("/stop", "/stop/")) or "/action" in path):
                with self._lock:
                    self.paths.append(path)
            return take(api, method, path)

        monkeypatch.setattr(sims.hub.faults, "take", spy)

    def take(self) -> list[str]:
        with self._lock:
            taken, self.paths = self.paths, []
        return taken


class Bots:
    """`stopbot serve --http` processes on one database; requests go to a live one."""

    def __init__(self, sims: SimulatorServer, fake: FakeSlackServer, workdir: Path) -> None:
        self.fake = fake.slack
        self.db = workdir / "stopbot.db"
        document = sample_config(sims.base_url)
        document.update(stops=STOPS_CONFIG, http=HTTP)
        config = workdir / "stopbot.yaml"
        config.write_text(yaml.safe_dump(document), encoding="utf-8")
        self.workdir = workdir
        self.env = clean_env(
            SLACK_BOT_TOKEN=TOKEN,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=fake.api_url,
            STOPBOT_CONFIG=str(config),
            STOPBOT_DB=str(self.db),
        )
        self.live: dict[str, StopbotProcess] = {}
        self.logs = ""
        self._lock = threading.Lock()

    def start(self) -> str:
        url = f"http://127.0.0.1:{free_port()}"
        process = StopbotProcess(
            "serve", "--http", "--port", url.rsplit(":", 1)[1], env=self.env, cwd=self.workdir
        )
        process.wait_healthy(f"{url}/healthz")
        with self._lock:
            self.live[url] = process
        return url

    def kill(self, url: str, sig: int = signal.SIGKILL) -> None:
        with self._lock:
            process = self.live.pop(url)
        process.signal(sig)
        process.wait()
        self.logs += process.err.text
        process.close()

    def urls(self) -> list[str]:
        with self._lock:
            return list(self.live)

    async def post(self, body: bytes, rng: random.Random) -> None:
        """As Slack and a person do: a request nobody answered (its process died) is sent
        again, by the person, to whichever process is up."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            urls = self.urls()
            if urls:
                url = rng.choice(urls)
                signed = sign_request(SECRET, body, int(time.time()))
                try:
                    async with httpx.AsyncClient(timeout=10) as client:
                        answer = await client.post(
                            f"{url}/slack/events",
                            content=body,
                            headers={**signed, "Content-Type": "application/x-www-form-urlencoded"},
                        )
                except httpx.TransportError:
                    pass
                else:
                    assert answer.status_code == 200, answer.text
                    return
            await asyncio.sleep(0.05)
        raise AssertionError("no bot process answered for a minute")

    def stop_all(self) -> None:
        for url in self.urls():
            self.kill(url, signal.SIGTERM)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return list(conn.execute(sql, params))
        finally:
            conn.close()


async def ask_and_confirm(
    bots: Bots, channel: str, text: str, user: str, rng: random.Random
) -> bool:
    """`/stop <text>` as ``user`` in ``channel``, then Confirm once the confirmation shows
    (a command a dead process never answered is typed again); False when there was nothing
    to confirm (stopped already, by the other person's stop)."""
    fake = bots.fake
    confirmation: dict[str, Any] | None = None
    while confirmation is None:
        url = fake.new_response_url(channel=channel, user=user)
        await bots.post(
            slash_command_body("/stop", text, user, channel, url, uuid.uuid4().hex), rng
        )
        deadline = time.monotonic() + 20
        while confirmation is None and time.monotonic() < deadline:
            answers = fake.ephemeral_messages(channel, user)
            if any("already stopped" in m.get("text", "") for m in answers):
                return False
            confirmation = next(
                (
                    m
                    for m in answers
                    if any(b.get("type") == "actions" for b in m.get("blocks", []))
                ),
                None,
            )
            await asyncio.sleep(0.02)
    actions = next(b for b in confirmation["blocks"] if b["type"] == "actions")
    op_id: str = actions["elements"][0]["value"]
    url = fake.new_response_url(
        channel=channel, user=user, message_ts=confirmation["ts"], is_ephemeral=True
    )
    payload = block_actions_payload(
        user,
        channel,
        views.CONFIRM,
        op_id,
        response_url=url,
        message_ts=confirmation["ts"],
        is_ephemeral=True,
        block_id=f"confirm:{op_id}",
    )
    await bots.post(block_actions_body(payload), rng)
    return True


async def killer(bots: Bots, rng: random.Random, until: Callable[[], bool]) -> int:
    """SIGKILL a bot process at random instants (and start another at once); how many."""
    kills = 0
    await asyncio.sleep(rng.uniform(0.0, 0.6))
    while not until() or kills == 0:
        urls = bots.urls()
        if urls:
            await asyncio.to_thread(bots.kill, rng.choice(urls))
            kills += 1
            await asyncio.to_thread(bots.start)
        if until():
            break
        await asyncio.sleep(rng.uniform(0.1, 1.5))
    return kills


def wait_final(bots: Bots, channel: str, count: int, timeout: float = 60.0) -> None:
    """Until the round's operations that were confirmed are all final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = bots.rows(
            "SELECT COUNT(*) FROM operations WHERE channel = ? AND state NOT IN "  # noqa: S608
            f"({FINAL_MARKS}) AND state != 'awaiting_confirmation'",
            channel,
            *FINAL_STATES,
        )[0][0]
        confirmed = bots.rows(
            "SELECT COUNT(DISTINCT o.id) FROM operations o JOIN transitions t "
            "ON t.operation_id = o.id WHERE o.channel = ? AND t.state = 'submitting'",
            channel,
        )[0][0]
        if not pending and confirmed >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"the operations of {channel} did not all end within {timeout}s")


def wait_shown(fake: FakeSlack, channel: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The progress messages of ``channel`` once none says "Stopping…" any more (or once
    the time is up: the test then says which)."""
    deadline = time.monotonic() + timeout
    while True:
        messages = fake.messages(channel)
        if time.monotonic() > deadline or not any(
            m["text"].startswith("Stopping ") for m in messages
        ):
            return messages
        time.sleep(0.05)


@pytest.fixture
def sims_fast(sims: SimulatorServer) -> Iterator[SimulatorServer]:
    sims.hub.seed(fast_seed())
    yield sims


def test_sigkill_at_random_instants_never_doubles_or_loses_a_stop(
    sims_fast: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over twenty rounds of stops on the four providers, each with a bot killed at random
    instants (and, every fifth round, a second process serving beside it): one stop call
    per resource, every confirmed stop final and shown final, one terminal audit row per
    operation, an intact database."""
    seed = int(os.environ.get("STOPBOT_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    sims = sims_fast
    calls = StopCalls(sims, monkeypatch)
    fake_slack = FakeSlack(
        tokens=[TOKEN],
        users=[SlackUser(u, u.lower(), real_name=f"User {u}") for u in USERS],
        channels=[],
    )
    ids = {r["name"]: r["id"] for r in sample_config(sims.base_url)["resources"]}
    with FakeSlackServer(fake_slack) as fake:
        bots = Bots(sims, fake, tmp_path)
        bots.start()
        report: list[str] = []
        try:
            for round_no in range(ROUNDS):
                channel = f"C0R{round_no:02d}"
                fake.slack.add_channel(channel, f"round-{round_no}")
                if round_no % 5 == 4:
                    bots.start()  # a second process, as in a rolling deploy

                async def one_round(channel: str) -> tuple[int, int]:
                    done = False

                    async def stops() -> int:
                        nonlocal done
                        confirmed = await asyncio.gather(
                            *(
                                ask_and_confirm(bots, channel, text, user, rng)
                                for text, _, user in STOPS
                            )
                        )
                        done = True
                        return sum(confirmed)

                    return await asyncio.gather(killer(bots, rng, lambda: done), stops())

                kills, confirmed = asyncio.run(one_round(channel))
                while len(bots.urls()) > 1:
                    bots.kill(bots.urls()[0], signal.SIGTERM)
                wait_final(bots, channel, confirmed)
                messages = wait_shown(fake.slack, channel)
                sent = calls.take()
                states = sorted(
                    r[0]
                    for r in bots.rows(
                        "SELECT state FROM operations WHERE channel = ? AND id IN (SELECT "
                        "operation_id FROM transitions WHERE state = 'submitting')",
                        channel,
                    )
                )
                report.append(
                    f"round {round_no}: {kills} kill(s), {len(sent)} stop call(s), {states}"
                )

                ops = bots.rows(
                    "SELECT id, resource, state, detail, joined, message_ts FROM operations "
                    "WHERE channel = ? AND id IN (SELECT operation_id FROM transitions "
                    "WHERE state = 'submitting')",
                    channel,
                )
                assert {r[1] for r in ops} == {"dev-eu", "web-1", "spark", "etl"}, (seed, ops)
                for op_id, resource, state, detail, _joined, _ in ops:
                    # Stopped, or (killed between the claim and the call) said not taken.
                    assert state in {"stopped", "stopped_already"} or (
                        state == "failed" and NOT_TAKEN in (detail or "")
                    ), (seed, round_no, resource, state, detail)
                    terminal = bots.rows(
                        "SELECT COUNT(*) FROM audit WHERE operation_id = ? "  # noqa: S608
                        f"AND action IN ({FINAL_MARKS})",
                        op_id,
                        *(f"stop.{s}" for s in FINAL_STATES),
                    )
                    assert terminal == [(1,)], (seed, round_no, resource, terminal)
                # A stop call only from a claim to send won, one each (a stop that joined
                # another's claims none); a claim whose process died before its call left
                # is given back and claimed again, or at last said not taken.
                claims = bots.rows(
                    "SELECT resource, SUM(sends), SUM(COALESCE(detail, '') LIKE ?) "
                    "FROM operations WHERE channel = ? AND sends > 0 GROUP BY resource",
                    f"%{NOT_TAKEN}%",
                    channel,
                )
                for resource, claimed, not_taken in claims:
                    named = [path for path in sent if ids[resource] in path]
                    assert min(claimed - not_taken, 1) <= len(named) <= claimed, (
                        seed,
                        round_no,
                        resource,
                        claimed,
                        sent,
                        bots.rows(
                            "SELECT id, state, joined, send_claimed_at, owner, detail "
                            "FROM operations WHERE channel = ? AND resource = ?",
                            channel,
                            resource,
                        ),
                    )
                assert len(sent) == sum(len([p for p in sent if i in p]) for i in ids.values())
                # Every progress message shows a final state; none left "Stopping…".
                assert messages, (seed, round_no, "no progress message")
                for message in messages:
                    assert TERMINAL.match(message["text"]), (seed, round_no, message["text"])
                shown = {ts for *_, ts in ops if ts}
                assert shown <= {m["ts"] for m in messages}, (seed, round_no)
                sims.hub.seed(fast_seed())
        finally:
            bots.stop_all()
        assert bots.rows("PRAGMA integrity_check") == [("ok",)]
        open_requests = bots.rows("SELECT COUNT(*) FROM inbox WHERE done_at IS NULL")
        assert open_requests == [(0,)], seed
        assert "Traceback" not in bots.logs, (seed, bots.logs[-3000:])
        print(f"chaos seed {seed}:", "; ".join(report))
