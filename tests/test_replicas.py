"""High availability: three `stopbot serve --http` replicas on one PostgreSQL, each Slack
request to a random one, a replica SIGKILLed and replaced every few seconds.

Whatever replica dies when: every confirmed stop ends stopped, each resource gets exactly
one stop call, each stop's progress message ends final (one message each), each operation
has one terminal audit row; a double click and a Slack retry sent to other replicas act
once. Run alone with `pytest -m chaos`; the seed makes a failure replayable
(``STOPBOT_CHAOS_SEED``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bench.nightly_run import make_estate
from bot.slack import views
from bot.slack.fake_api import (
    FakeSlack,
    FakeSlackServer,
    SlackUser,
    block_actions_body,
    block_actions_payload,
    sign_request,
)
from bot.store import Store, open_store
from providers.simulators.samples import sample_config
from providers.simulators.server import SimulatorServer
from tests.pg import PostgresServer
from tests.test_chaos import (
    FINAL_MARKS,
    FINAL_STATES,
    HTTP,
    SECRET,
    TERMINAL,
    TOKEN,
    StopCalls,
    ask_and_confirm,
)
from tests.test_cli import StopbotProcess, clean_env, free_port

pytestmark = pytest.mark.chaos

STOPS = 200
CHANNELS = 4
REPLICAS = 3
CONCURRENCY = 16
STOPS_CONFIG = {"poll_initial": 0.1, "poll_max": 0.2, "timeout": "5m", "progress_interval": 0}
# Same host: a killed replica is known dead by its pid at the next sweep.
RECOVERY = {"lease": "3s", "sweep_interval": "1s", "leader_timeout": "2s"}


class Replicas:
    """`stopbot serve --http` replicas on one PostgreSQL; requests go to a random live one."""

    def __init__(
        self, config: dict[str, Any], database_url: str, fake: FakeSlackServer, workdir: Path
    ) -> None:
        self.fake = fake.slack
        self.database_url = database_url
        self.config = config
        path = workdir / "stopbot.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.workdir = workdir
        self.env = clean_env(
            SLACK_BOT_TOKEN=TOKEN,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=fake.api_url,
            STOPBOT_CONFIG=str(path),
            STOPBOT_DATABASE_URL=database_url,
        )
        self.live: dict[str, StopbotProcess] = {}
        self.logs = ""
        self._lock = threading.Lock()
        self._store: Store | None = None

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

    async def post(
        self, body: bytes, rng: random.Random, *, url: str | None = None
    ) -> httpx.Response:
        """As Slack and a person do: a request nobody answered is sent again, to a replica
        that is up."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            urls = self.urls()
            if urls:
                target = url if url in urls else rng.choice(urls)
                signed = sign_request(SECRET, body, int(time.time()))
                try:
                    async with httpx.AsyncClient(timeout=10) as client:
                        answer = await client.post(
                            f"{target}/slack/events",
                            content=body,
                            headers={**signed, "Content-Type": "application/x-www-form-urlencoded"},
                        )
                except httpx.TransportError:
                    url = None
                else:
                    assert answer.status_code == 200, answer.text
                    return answer
            await asyncio.sleep(0.05)
        raise AssertionError("no replica answered for a minute")

    def stop_all(self) -> None:
        for url in self.urls():
            self.kill(url, signal.SIGTERM)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self._store is None:
            self._store = open_store(self.database_url)
        return self._store.tuples(sql, params)

    def history(self, resource: str) -> list[tuple[Any, ...]]:
        """What the store says happened to ``resource``'s operations: each one's
        transitions and audit rows, in order (a failing test's explanation)."""
        return self.rows(
            "SELECT o.id, o.idempotency_key, o.owner, o.sends, t.at, t.state, t.message "
            "FROM operations o JOIN transitions t ON t.operation_id = o.id "
            "WHERE o.resource = %s UNION ALL "
            "SELECT a.operation_id, a.action, a.actor, NULL, a.at, NULL, a.detail "
            "FROM audit a WHERE a.resource = %s ORDER BY 5",
            resource,
            resource,
        )

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


@pytest.fixture
def estate(sims: SimulatorServer) -> Iterator[dict[str, Any]]:
    """STOPS running resources over the four providers, stopped a second after the call;
    the stopbot.yaml that names them."""
    made = make_estate(STOPS, stop_seconds=1.0)
    sims.hub.seed(made.seed)
    yield {
        "providers": sample_config(sims.base_url)["providers"],
        "resources": made.resources,
        "stops": STOPS_CONFIG,
        "http": HTTP,
        "recovery": RECOVERY,
    }


@pytest.fixture
def replicas(
    estate: dict[str, Any], pg_location: str, tmp_path: Path
) -> Iterator[tuple[Replicas, FakeSlack]]:
    users = [f"U{i:04d}" for i in range(STOPS)]
    fake_slack = FakeSlack(
        tokens=[TOKEN],
        users=[SlackUser(u, u.lower(), real_name=f"User {u}") for u in users],
        channels=[],
    )
    for c in range(CHANNELS):
        fake_slack.add_channel(f"C0REPL{c}", f"replicas-{c}")
    with FakeSlackServer(fake_slack) as fake:
        bots = Replicas(estate, pg_location, fake, tmp_path)
        try:
            yield bots, fake_slack
        finally:
            bots.stop_all()
            bots.close()
            (tmp_path / "replicas.log").write_text(bots.logs, encoding="utf-8")
        assert "Traceback" not in bots.logs, f"see {tmp_path / 'replicas.log'}"


async def killer(bots: Replicas, rng: random.Random, done: asyncio.Event) -> int:
    """A replica SIGKILLed every 1-3 s and another started in its place; how many."""
    kills = 0
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), rng.uniform(1.0, 3.0))
        except TimeoutError:
            await asyncio.to_thread(bots.kill, rng.choice(bots.urls()))
            kills += 1
            await asyncio.to_thread(bots.start)
    return kills


def wait_all_final(bots: Replicas, count: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [(pending, confirmed)] = bots.rows(
            "SELECT (SELECT COUNT(*) FROM operations WHERE state NOT IN "  # noqa: S608
            f"({FINAL_MARKS}) AND state != 'awaiting_confirmation'), "
            "(SELECT COUNT(DISTINCT operation_id) FROM transitions WHERE state = 'submitting')",
            *FINAL_STATES,
        )
        if not pending and confirmed >= count:
            return
        time.sleep(0.2)
    stuck = bots.rows(
        "SELECT resource, state, owner, send_claimed_at, detail FROM operations "  # noqa: S608
        f"WHERE state NOT IN ({FINAL_MARKS}) AND state != 'awaiting_confirmation'",
        *FINAL_STATES,
    )
    raise AssertionError(f"not every stop ended within {timeout} s: {stuck}")


def test_replicas_killed_at_random_stop_each_resource_once(
    replicas: tuple[Replicas, FakeSlack], sims: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 stops through three replicas, one killed and replaced every 1-3 s: each resource
    stopped with exactly one stop call, each operation final with one terminal audit row,
    and one final progress message per stop."""
    bots, fake = replicas
    seed = int(os.environ.get("STOPBOT_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    calls = StopCalls(sims, monkeypatch)
    for _ in range(REPLICAS):
        bots.start()
    names = [
        r["name"] for r in yaml.safe_load((bots.workdir / "stopbot.yaml").read_text())["resources"]
    ]

    async def scenario() -> int:
        done = asyncio.Event()
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int, name: str) -> bool:
            async with slots:
                text = f"{name} --force" if name.startswith("bench-f") else name
                return await ask_and_confirm(
                    bots,
                    f"C0REPL{i % CHANNELS}",
                    text,
                    f"U{i:04d}",
                    rng,  # type: ignore[arg-type]
                )

        kill_task = asyncio.create_task(killer(bots, rng, done))
        confirmed = await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))
        done.set()
        kills = await kill_task
        assert all(confirmed), seed
        return kills

    kills = asyncio.run(scenario())
    wait_all_final(bots, STOPS)
    assert kills >= 3, (seed, kills)

    ops = bots.rows(
        "SELECT id, resource, state, detail FROM operations WHERE id IN "
        "(SELECT operation_id FROM transitions WHERE state = 'submitting')"
    )
    assert sorted(r[1] for r in ops) == sorted(names), seed
    for op_id, resource, state, detail in ops:
        assert state == "stopped", (seed, resource, state, detail)
        terminal = bots.rows(
            "SELECT COUNT(*) FROM audit WHERE operation_id = ? "  # noqa: S608
            f"AND action IN ({FINAL_MARKS})",
            op_id,
            *(f"stop.{s}" for s in FINAL_STATES),
        )
        assert terminal == [(1,)], (seed, resource, terminal)
    ids = {
        r["id"]: r["name"]
        for r in yaml.safe_load((bots.workdir / "stopbot.yaml").read_text())["resources"]
    }
    sent = calls.take()
    per_resource = {name: 0 for name in names}
    for path in sent:
        [name] = [n for i, n in ids.items() if i in path]
        per_resource[name] += 1
    assert {n: c for n, c in per_resource.items() if c != 1} == {}, seed

    deadline = time.monotonic() + 30
    while True:
        messages = [m for c in range(CHANNELS) for m in fake.messages(f"C0REPL{c}")]
        if all(TERMINAL.match(m["text"]) for m in messages) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(m["text"].split(":", 1)[0] for m in messages) == sorted(names), seed
    for message in messages:
        assert TERMINAL.match(message["text"]), (seed, message["text"])
    print(f"replicas seed {seed}: {kills} kills")


def test_a_double_click_and_a_retry_on_other_replicas_stop_once(
    replicas: tuple[Replicas, FakeSlack], sims: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Confirm clicked twice at once on two replicas, and the same click retried by Slack
    (X-Slack-Retry-Num) to a third: one operation confirmed, one stop call."""
    bots, fake = replicas
    rng = random.Random(7)
    calls = StopCalls(sims, monkeypatch)
    urls = [bots.start() for _ in range(REPLICAS)]
    channel, user = "C0REPL0", "U0001"
    name = "bench-n00000"

    async def scenario() -> None:
        reply_url = fake.new_response_url(channel=channel, user=user)
        from bot.slack.fake_api import slash_command_body

        await bots.post(
            slash_command_body("/stop", name, user, channel, reply_url, uuid.uuid4().hex),
            rng,
            url=urls[0],
        )
        confirmation = None
        while confirmation is None:
            confirmation = next(
                (
                    m
                    for m in fake.ephemeral_messages(channel, user)
                    if any(b.get("type") == "actions" for b in m.get("blocks", []))
                ),
                None,
            )
            await asyncio.sleep(0.02)
        actions = next(b for b in confirmation["blocks"] if b["type"] == "actions")
        op_id: str = actions["elements"][0]["value"]
        payload = block_actions_payload(
            user,
            channel,
            views.CONFIRM,
            op_id,
            response_url=fake.new_response_url(
                channel=channel, user=user, message_ts=confirmation["ts"], is_ephemeral=True
            ),
            message_ts=confirmation["ts"],
            is_ephemeral=True,
            block_id=f"confirm:{op_id}",
        )
        body = block_actions_body(payload)
        await asyncio.gather(*(bots.post(body, rng, url=u) for u in urls))

    asyncio.run(scenario())
    wait_all_final(bots, 1)
    assert bots.rows(
        "SELECT resource, state FROM operations WHERE state != 'awaiting_confirmation'"
    ) == [(name, "stopped")]
    assert len(calls.take()) == 1


def leader_of(bots: Replicas) -> str | None:
    """The replica whose /healthz says it leads, if one does now."""
    for url in bots.urls():
        try:
            checks = httpx.get(f"{url}/healthz", timeout=2).json()["checks"]
        except (httpx.HTTPError, ValueError, KeyError):
            continue
        if checks.get("role") == "leader":
            return url
    return None


def test_a_fire_with_its_leader_killed_runs_once(
    estate: dict[str, Any],
    pg_location: str,
    sims: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A schedule fires while its leaders are SIGKILLed at random (before the warning,
    between it and the fire, during the run) and replaced: one run row, one warning, one
    summary ending done, each selected resource stopped with one stop call."""
    seed = int(os.environ.get("STOPBOT_CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    calls = StopCalls(sims, monkeypatch)
    now = dt.datetime.now(dt.UTC)
    fire = (now + dt.timedelta(seconds=45)).replace(second=0, microsecond=0) + dt.timedelta(
        minutes=1
    )
    selected = [r["name"] for r in estate["resources"]][::5]  # 40, over the four providers
    channel = "C0SCHED"
    estate = {
        **estate,
        "schedules": [
            {
                "name": "tonight",
                "cron": f"{fire.minute} {fire.hour} * * *",
                "timezone": "UTC",
                "select": {"resources": selected},
                "channel": channel,
                "force": True,
                "warn_before": "30s",
            }
        ],
    }
    fake_slack = FakeSlack(tokens=[TOKEN], users=[], channels=[])
    fake_slack.add_channel(channel, "scheduled")
    with FakeSlackServer(fake_slack) as fake_server:
        bots = Replicas(estate, pg_location, fake_server, tmp_path)
        try:
            for _ in range(REPLICAS):
                bots.start()
            kills = 0
            summaries: list[dict[str, Any]] = []
            # Kill the leader at random instants from before the warning to the run's end.
            until = fire + dt.timedelta(seconds=90)
            time.sleep(
                max(
                    0.0, (fire - dt.timedelta(seconds=40) - dt.datetime.now(dt.UTC)).total_seconds()
                )
            )
            while dt.datetime.now(dt.UTC) < until:
                summaries = [
                    m for m in fake_slack.messages(channel) if m["text"].startswith("tonight run")
                ]
                if summaries and summaries[0]["text"].startswith("tonight run done"):
                    break
                time.sleep(rng.uniform(2.0, 6.0))
                leader = leader_of(bots)
                if leader is not None and dt.datetime.now(dt.UTC) < until:
                    bots.kill(leader)
                    kills += 1
                    bots.start()
            deadline = time.monotonic() + 60
            while not (summaries and summaries[0]["text"].startswith("tonight run done")):
                assert time.monotonic() < deadline, (seed, fake_slack.messages(channel))
                time.sleep(0.2)
                summaries = [
                    m for m in fake_slack.messages(channel) if m["text"].startswith("tonight run")
                ]
        finally:
            bots.stop_all()
            rows = bots.rows("SELECT status FROM schedule_runs WHERE schedule = 'tonight'")
        (tmp_path / "replicas.log").write_text(bots.logs, encoding="utf-8")
        assert "Traceback" not in bots.logs, bots.logs[-3000:]

    assert kills >= 2, (seed, kills)
    print(f"scheduled fire seed {seed}: {kills} leader kills")
    assert rows == [("done",)], seed
    posted = [c.args.get("text", "") for c in fake_slack.calls("chat.postMessage")]
    warnings = [t for t in posted if t.startswith("tonight stops ")]
    assert len(warnings) == 1, (seed, posted)
    assert len([t for t in posted if t.startswith("tonight run")]) == 1, (seed, posted)
    assert summaries[0]["text"] == f"tonight run done: {len(selected)} stopped", seed
    ids = {r["id"]: r["name"] for r in estate["resources"] if r["name"] in selected}
    sent = calls.take()
    per_resource = dict.fromkeys(selected, 0)
    for path in sent:
        [name] = [n for i, n in ids.items() if i in path]
        per_resource[name] += 1
    doubled = {n: c for n, c in per_resource.items() if c != 1}
    history = {n: bots.history(n) for n in doubled}
    bots.close()
    assert doubled == {}, (seed, history, f"logs in {tmp_path / 'replicas.log'}")


def test_postgresql_restarted_during_stops_loses_and_doubles_nothing(
    replicas: tuple[Replicas, FakeSlack],
    sims: SimulatorServer,
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database stopped (immediate shutdown) while two replicas follow 20 stops they
    just sent: /healthz answers 503 on both meanwhile; started again, every stop ends
    stopped, each with one stop call and one final message."""
    if not postgres_server.ours:
        pytest.skip("STOPBOT_TEST_DATABASE_URL is a server these tests may not stop")
    bots, fake = replicas
    rng = random.Random(11)
    calls = StopCalls(sims, monkeypatch)
    urls = [bots.start() for _ in range(2)]
    names = [r["name"] for r in bots.config["resources"]][:20]

    async def confirm_all() -> None:
        await asyncio.gather(
            *(
                ask_and_confirm(
                    bots,
                    "C0REPL0",
                    n if not n.startswith("bench-f") else f"{n} --force",
                    f"U{i:04d}",
                    rng,
                )  # type: ignore[arg-type]
                for i, n in enumerate(names)
            )
        )

    asyncio.run(confirm_all())
    postgres_server.stop()
    try:
        for url in urls:
            response = httpx.get(f"{url}/healthz", timeout=10)
            assert response.status_code == 503, response.text
            assert response.json()["checks"]["store"].startswith("error: "), response.text
        # A /stop meanwhile is answered (never a 5xx), and its sender told why not now.
        late, user = [r["name"] for r in bots.config["resources"]][20], "U0999"
        from bot.slack.fake_api import slash_command_body

        reply = fake.new_response_url(channel="C0REPL0", user=user)
        answer = asyncio.run(
            bots.post(
                slash_command_body("/stop", late, user, "C0REPL0", reply, uuid.uuid4().hex),
                rng,
                url=urls[0],
            )
        )
        assert answer.json() == {
            "response_type": "ephemeral",
            "text": "Stopbot's database is not answering right now, so nothing was done. "
            "Try again in a minute.",
        }
        time.sleep(3)  # the stops go on at the providers; the bots cannot record them
    finally:
        postgres_server.start()
    wait_all_final(bots, len(names), timeout=90)
    for url in urls:
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200

    states = bots.rows(
        "SELECT resource, state FROM operations WHERE state != "
        "'awaiting_confirmation' ORDER BY resource"
    )
    assert states == [(n, "stopped") for n in sorted(names)]
    sent = calls.take()
    assert len(sent) == len(names), sent
    deadline = time.monotonic() + 30
    while True:
        messages = fake.messages("C0REPL0")
        if all(TERMINAL.match(m["text"]) for m in messages) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(m["text"].split(":", 1)[0] for m in messages) == sorted(names)
    for message in messages:
        assert TERMINAL.match(message["text"]), message["text"]


class _Pinned:
    """The replicas as :func:`ask_and_confirm` sees them, every request sent to one."""

    def __init__(self, bots: Replicas, url: str) -> None:
        self.bots, self.url, self.fake = bots, url, bots.fake

    async def post(
        self, body: bytes, rng: random.Random, *, url: str | None = None
    ) -> httpx.Response:
        await self.bots.post(body, rng, url=self.url)


def test_the_replica_following_100_stops_killed_they_go_on_elsewhere(
    replicas: tuple[Replicas, FakeSlack],
    sims: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 stops confirmed on one replica, each taking 30 s at its provider; that replica
    SIGKILLed while it follows them all: within the lease and two sweeps the other replica
    follows every one, on the same Slack message as before, to stopped; one stop call
    each, no second message."""
    bots, fake = replicas
    sims.hub.seed(make_estate(STOPS, stop_seconds=30.0).seed)
    rng = random.Random(5)
    calls = StopCalls(sims, monkeypatch)
    first, second = bots.start(), bots.start()
    names = [r["name"] for r in bots.config["resources"]][:100]
    pinned = _Pinned(bots, first)

    async def confirm_all() -> None:
        slots = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int, name: str) -> bool:
            async with slots:
                text = f"{name} --force" if name.startswith("bench-f") else name
                return await ask_and_confirm(pinned, "C0REPL0", text, f"U{i:04d}", rng)  # type: ignore[arg-type]

        assert all(await asyncio.gather(*(one(i, n) for i, n in enumerate(names))))

    asyncio.run(confirm_all())
    # Every stop sent and followed by the first replica, each with its message posted.
    deadline = time.monotonic() + 60
    while True:
        owners = bots.rows(
            "SELECT owner, state FROM operations WHERE state != 'awaiting_confirmation'"
        )
        posted = fake.messages("C0REPL0")
        following = {o for o, s in owners if s in ("accepted", "in_progress")}
        if (
            len(owners) == 100
            and len(following) == 1
            and all(s in ("accepted", "in_progress") for _, s in owners)
            and len(posted) == 100
        ):
            break
        assert time.monotonic() < deadline, (owners, len(posted))
        time.sleep(0.1)
    [dead] = following
    before = sorted(m["ts"] for m in posted)

    killed_at = time.monotonic()
    bots.kill(first)
    lease = 3.0 + 2 * 1.0  # RECOVERY: the lease, and two sweeps
    while True:
        owners = bots.rows("SELECT owner FROM operations WHERE state != 'awaiting_confirmation'")
        if all(o != dead for (o,) in owners):
            taken = time.monotonic() - killed_at
            break
        assert time.monotonic() - killed_at < lease + 1.0, owners  # one more second to look
        time.sleep(0.1)
    assert taken <= lease + 1.0
    print(f"100 stops taken over {taken:.1f} s after the kill")

    wait_all_final(bots, len(names), timeout=120)
    states = bots.rows(
        "SELECT resource, state FROM operations WHERE state != 'awaiting_confirmation' "
        "ORDER BY resource"
    )
    assert states == [(n, "stopped") for n in sorted(names)]
    assert len(calls.take()) == len(names)
    deadline = time.monotonic() + 30
    while True:
        messages = fake.messages("C0REPL0")
        if all(TERMINAL.match(m["text"]) for m in messages) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    # The same messages, carried on by the second replica: one each, none posted anew.
    assert sorted(m["ts"] for m in messages) == before
    assert sorted(m["text"].split(":", 1)[0] for m in messages) == sorted(names)
    for message in messages:
        assert TERMINAL.match(message["text"]), message["text"]
    assert second in bots.urls()
