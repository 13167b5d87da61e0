"""Environments in order (issue 19), on the simulators over loopback: tiers stopped one after
the other (a later tier's stop is sent only once the earlier tier is stopped at its
provider), refused as a whole for someone else's lock unless the rest is stopped, halted by a
member that fails, taken over after a kill without a second stop, woken in reverse; through
the terminal and through Slack."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main
from bot.config import ConfigError, UnknownEnvironmentError
from bot.environments import EnvironmentRefused
from bot.models import Action, Actor, EnvRunState, OpState
from bot.slack.environment_views import ENV_CANCEL, ENV_CONFIRM, ENV_REST
from bot.slack.environments import ENVIRONMENT_EVENT
from bot.slack.fake_api import RESPONSE_URL_METHOD
from bot.slack.wording import mrkdwn
from bot.stopbot import Stopbot
from bot.store import open_store
from providers.base import Phase, Provider, Resource, StopAccepted
from providers.registry import build_provider
from providers.simulators.common import Fault
from providers.simulators.samples import DEFAULT_SEED, sample_config
from providers.simulators.server import SimulatorServer
from tests.helpers import FAST_STOPS, SimTime, sample
from tests.slack_harness import ALICE as ALICE_ID
from tests.slack_harness import BOB as BOB_ID
from tests.slack_harness import CHANNEL, Slack, block_texts

BOB = Actor(id="U0BOB", names=frozenset({"Bob Stone"}))
ALICE = "U0ALICE"
TIERS = [
    {"feldera": ["etl"]},
    {"okeanos": ["spark"]},
    {"nova": ["web-1"]},
    {"qovery": ["dev-eu"]},
]
ORDER = ["etl", "spark", "web-1", "dev-eu"]
ELAPSED = re.compile(r"^\[ *[0-9a-z ]+\] ")


class Harness:
    """The assembled bot on the simulators' clock, its provider calls recorded: for each
    stop or start sent, the resource and the phase every other member had at its provider
    at that moment (read over HTTP from the simulator, right before the call leaves)."""

    def __init__(self, sims: SimulatorServer, db: Path | str, **config: Any) -> None:
        self.sims = sims
        sims.hub.clock.freeze()
        self.time = SimTime(sims)
        config.setdefault("environments", {"staging": TIERS})
        self.config = sample(sims, admins=["U0ADMIN"], **config)
        self.store = open_store(db, clock=self.time.now)
        self.providers: dict[str, Provider] = {
            p.name: build_provider(p, http=self.config.http) for p in self.config.providers
        }
        self.sent: list[tuple[str, str, dict[str, Phase]]] = []
        for provider in self.providers.values():
            self._record(provider)
        self.bot = self.new_bot()

    def new_bot(self) -> Stopbot:
        return Stopbot(
            self.config, self.store, self.providers, clock=self.time.now, sleep=self.time.sleep
        )

    def _record(self, provider: Provider) -> None:
        stop, start = provider.stop, provider.start

        async def phases() -> dict[str, Phase]:
            found: dict[str, Phase] = {}
            for name in ORDER:
                resource = self.config.resource(name)
                found[name] = (await self.providers[resource.provider].status(resource)).phase
            return found

        async def recorded_stop(resource: Resource, *, force: bool = False) -> StopAccepted:
            self.sent.append(("stop", resource.name, await phases()))
            return await stop(resource, force=force)

        async def recorded_start(resource: Resource) -> StopAccepted:
            self.sent.append(("start", resource.name, await phases()))
            return await start(resource)

        provider.stop = recorded_stop  # type: ignore[method-assign]
        provider.start = recorded_start  # type: ignore[method-assign]

    def restart(self) -> Stopbot:
        """The process dies (its work left where it stands) and a new one starts."""
        self.bot.registry.me.abandon()
        self.bot = self.new_bot()
        return self.bot

    async def phase(self, name: str) -> Phase:
        resource = self.config.resource(name)
        return (await self.providers[resource.provider].status(resource)).phase

    async def aclose(self) -> None:
        await self.bot.aclose()
        for p in self.providers.values():
            await p.aclose()
        self.store.close()


@pytest.fixture
async def h(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(sims, tmp_path / "stopbot.db")
    yield harness
    await harness.aclose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def both(
    request: pytest.FixtureRequest, sims: SimulatorServer, tmp_path: Path
) -> AsyncIterator[Harness]:
    """The harness on each backend (PostgreSQL: a schema of the test's own, tests/pg.py)."""
    location = (
        str(request.getfixturevalue("pg_location"))
        if request.param == "postgresql"
        else tmp_path / "stopbot.db"
    )
    harness = Harness(sims, location)
    yield harness
    await harness.aclose()


def stops_sent(h: Harness) -> list[str]:
    return [name for verb, name, _ in h.sent if verb == "stop"]


# -- configuration ----------------------------------------------------------------------


def test_config_names_unknown_members_and_a_resource_in_two_tiers(sims: SimulatorServer) -> None:
    """An unknown member, a resource in two tiers and a tier of two labels are each a clear
    configuration error, with the key's path."""
    with pytest.raises(ConfigError) as caught:
        sample(
            sims,
            environments={
                "staging": [
                    {"feldera": ["etl", "etll"]},
                    {"nova": ["web-1"], "qovery": ["dev-eu"]},
                    {"okeanos": ["etl"]},
                ]
            },
        )
    assert caught.value.problems == [
        ("environments.staging[0].feldera[1]", "no resource named 'etll'"),
        ("environments.staging[1]", "a tier is one label with its resources, e.g. {nova: [web-1]}"),
        (
            "environments.staging[2].okeanos[0]",
            "'etl' is in tier 1 already: a resource stands in one tier of an environment",
        ),
    ]


def test_unknown_environment_suggests_the_close_ones(h: Harness) -> None:
    """A mistyped environment name is refused with the closest names."""
    with pytest.raises(UnknownEnvironmentError) as caught:
        h.config.environment("stagign")
    assert str(caught.value) == "Unknown environment 'stagign'. Did you mean staging?"


# -- stop, in order ---------------------------------------------------------------------


async def test_tiers_stop_in_order_each_after_the_previous_is_stopped(h: Harness) -> None:
    """Each tier's stop is sent only once every member of the tiers before it is stopped at
    its provider, and not before; the run ends done with every member stopped."""
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB, reason="night")
    assert [(t.label, [m.name for m in t.members]) for t in plan.tiers] == [
        ("feldera", ["etl"]),
        ("okeanos", ["spark"]),
        ("nova", ["web-1"]),
        ("qovery", ["dev-eu"]),
    ]
    assert plan.blocked == [] and plan.run.state == EnvRunState.AWAITING_CONFIRMATION
    envs.confirm(plan.run.id, BOB)
    final = await envs.run(plan.run.id)
    assert (final.state, final.tier, final.detail) == (EnvRunState.DONE, 4, None)
    assert stops_sent(h) == ORDER
    for i, (_, name, phases) in enumerate(h.sent):
        earlier, later = ORDER[:i], ORDER[i:]
        assert all(phases[e] == Phase.STOPPED for e in earlier), (name, phases)
        assert all(phases[x] == Phase.RUNNING for x in later), (name, phases)
    assert [await h.phase(n) for n in ORDER] == [Phase.STOPPED] * 4
    ops = [h.store.operation_for_key(f"environment:{final.id}:{n}") for n in ORDER]
    assert [(op.state, op.source, op.reason) for op in ops if op] == [
        (OpState.STOPPED, "environment", "night")
    ] * 4
    actions = [e.action for e in h.store.audit_log(resource="staging")]
    assert actions == [
        "environment.requested",
        "environment.running",
        "environment.running",
        "environment.running",
        "environment.running",
        "environment.running",
        "environment.done",
    ]


async def test_a_foreign_lock_refuses_the_whole_environment(h: Harness) -> None:
    """Someone else's Stopbot lock on one member refuses the whole environment, naming the
    owner: nothing is stopped."""
    h.store.set_lock("web-1", ALICE, h.time.now() + dt.timedelta(hours=2), "demo")
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB)
    [blocked] = plan.blocked
    assert blocked.name == "web-1" and blocked.verdict.owner == ALICE
    assert str(blocked.verdict.reason) == (
        "web-1 is locked by U0ALICE (demo); it expires in 2h. Ask them to unlock it."
    )
    with pytest.raises(EnvironmentRefused) as caught:
        envs.confirm(plan.run.id, BOB)
    assert str(caught.value) == (
        "staging is not stopped: web-1 is held by someone else. Ask the owner, or stop the rest."
    )
    run = h.store.get_environment_run(plan.run.id)
    assert run is not None and run.state == EnvRunState.AWAITING_CONFIRMATION
    assert h.sent == []


async def test_stop_the_rest_leaves_the_locked_member_alone(h: Harness) -> None:
    """With "stop the rest", the member locked by someone else (here Qovery's own lock,
    by its owner's name) is left running and every other tier goes in order."""
    h.config.environments["staging"][3] = {"qovery": ["dev-eu", "staging-us"]}
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB)
    [blocked] = plan.blocked
    assert (blocked.name, blocked.verdict.owner) == ("staging-us", "Alice Martin")
    envs.confirm(plan.run.id, BOB, skip_locked=True)
    final = await envs.run(plan.run.id)
    assert (final.state, final.skipped) == (EnvRunState.DONE, ["staging-us"])
    assert stops_sent(h) == ORDER
    staging_us = h.config.resource("staging-us")
    assert (await h.providers["qovery"].status(staging_us)).phase == Phase.RUNNING


async def test_a_failed_member_halts_the_later_tiers(h: Harness) -> None:
    """A member whose stop fails halts the run with a clear message: the later tiers are
    never called."""
    h.sims.hub.faults.add(
        Fault(api="okeanos", kind="status", method="POST", status=400, count=None)
    )
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB)
    envs.confirm(plan.run.id, BOB)
    final = await envs.run(plan.run.id)
    assert (final.state, final.tier) == (EnvRunState.HALTED, 1)
    assert str(final.detail).startswith("tier 2 (spark) did not get there: spark failed (")
    assert str(final.detail).endswith("The 2 later tier(s) were not stopped.")
    assert stops_sent(h) == ["etl", "spark"]
    assert [await h.phase(n) for n in ORDER] == [
        Phase.STOPPED,
        Phase.RUNNING,
        Phase.RUNNING,
        Phase.RUNNING,
    ]


async def test_a_killed_run_is_taken_over_and_no_stop_is_sent_twice(both: Harness) -> None:
    """The process dies while tier 2 is being stopped: the next one takes the run over from
    that tier, follows the stop already sent, and goes on; each member's stop was sent
    once (on SQLite and on PostgreSQL)."""
    h = both
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB)
    envs.confirm(plan.run.id, BOB)
    okeanos = h.providers["okeanos"]
    recorded = okeanos.stop
    sent = asyncio.Event()

    async def hold(seconds: float) -> None:
        await asyncio.Event().wait()  # the process stops moving: it is about to die

    async def stop_then_hold(resource: Resource, *, force: bool = False) -> StopAccepted:
        accepted = await recorded(resource, force=force)
        h.bot.service.sleep = hold  # type: ignore[method-assign]
        sent.set()
        return accepted

    okeanos.stop = stop_then_hold  # type: ignore[method-assign]
    task = envs.start(plan.run.id)
    await asyncio.wait_for(sent.wait(), 10)
    okeanos.stop = recorded  # type: ignore[method-assign]
    assert stops_sent(h) == ["etl", "spark"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await h.bot.service.aclose()
    run = h.store.get_environment_run(plan.run.id)
    assert run is not None and (run.state, run.tier) == (EnvRunState.RUNNING, 1)

    bot = h.restart()
    await bot.registry.sweep()
    await bot.environments.wait()
    final = h.store.get_environment_run(plan.run.id)
    assert final is not None and (final.state, final.tier) == (EnvRunState.DONE, 4)
    assert final.owner == bot.registry.id
    assert stops_sent(h) == ORDER
    assert h.sims.hub.faults.counts()["okeanos"].get("POST") == 1


async def test_a_second_replica_does_not_run_a_run_it_does_not_own(both: Harness) -> None:
    """A replica asked to run a run another live process owns does nothing (on SQLite and
    on PostgreSQL)."""
    h = both
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB)
    envs.confirm(plan.run.id, BOB)
    other = h.new_bot()
    try:
        await other.registry.sweep()
        assert other.environments._runs == {}
        ran = await other.environments.run(plan.run.id)
        assert (ran.state, ran.tier) == (EnvRunState.RUNNING, 0)
        assert h.sent == []
    finally:
        await other.aclose()


async def test_confirm_is_the_requesters_once(h: Harness) -> None:
    """Only the requester confirms, and a second click does nothing."""
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB)
    with pytest.raises(EnvironmentRefused) as caught:
        envs.confirm(plan.run.id, Actor(id=ALICE))
    assert str(caught.value) == "Only U0BOB can confirm or cancel this stop of staging."
    envs.confirm(plan.run.id, BOB)
    with pytest.raises(EnvironmentRefused) as again:
        envs.confirm(plan.run.id, BOB)
    assert str(again.value) == "This stop of staging was already handled (it is running)."


async def test_a_member_the_requester_may_not_stop_refuses_the_plan(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """The policy judges every member at the preview: one the requester may not stop
    refuses the whole plan, with the policy's reason, and nothing is recorded to confirm."""
    h = Harness(
        sims,
        tmp_path / "stopbot.db",
        resources_patch={"web-1": {"allowed_users": [ALICE]}},
    )
    try:
        plan = await h.bot.environments.preview("staging", BOB)
        assert str(plan.refusal) == (
            "you are not allowed to stop web-1 (web-1's own rule); ask an admin to add you"
        )
        assert plan.run.state == EnvRunState.CANCELLED
        with pytest.raises(EnvironmentRefused):
            h.bot.environments.confirm(plan.run.id, BOB)
        assert h.sent == []
    finally:
        await h.aclose()


async def test_a_confirmation_expires(h: Harness) -> None:
    """A plan confirmed after `stops.confirm_ttl` is cancelled, and nothing is stopped."""
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB)
    await h.time.sleep(h.config.stops.confirm_ttl.total_seconds())
    with pytest.raises(EnvironmentRefused) as caught:
        envs.confirm(plan.run.id, BOB)
    assert mrkdwn(caught.value.text) == "This confirmation expired. Run `/stop env staging` again."
    run = h.store.get_environment_run(plan.run.id)
    assert run is not None and run.state == EnvRunState.CANCELLED
    assert h.sent == []


async def test_wake_starts_the_tiers_in_reverse(h: Harness) -> None:
    """`wake env` starts the cluster first and the pipelines last, each tier once the one
    before it is up."""
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB)
    envs.confirm(plan.run.id, BOB)
    await envs.run(plan.run.id)
    h.sent.clear()
    wake = await envs.preview("staging", BOB, action=Action.START)
    assert [t.label for t in wake.tiers] == ["qovery", "nova", "okeanos", "feldera"]
    envs.confirm(wake.run.id, BOB)
    final = await envs.run(wake.run.id)
    assert final.state == EnvRunState.DONE
    order = ORDER[::-1]
    assert [name for verb, name, _ in h.sent if verb == "start"] == order
    for i, (_, name, phases) in enumerate(h.sent):
        assert all(phases[e] == Phase.RUNNING for e in order[:i]), (name, phases)
        assert all(phases[x] == Phase.STOPPED for x in order[i:]), (name, phases)


# -- the terminal -------------------------------------------------------------------------


@pytest.fixture
def cli_env(sims: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stopbot.yaml with a two-tier environment on instant simulators, for `main()`."""
    for name in ("feldera", "nova", "qovery"):
        sims.hub.seed({name: {**DEFAULT_SEED[name], "step_seconds": 0.01}})
    document = sample_config(sims.base_url)
    document["stops"] = FAST_STOPS
    document["environments"] = {
        "staging": [{"feldera": ["etl"]}, {"qovery": ["dev-eu", "staging-us"]}]
    }
    path = tmp_path / "stopbot.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    for key in [k for k in os.environ if k.startswith(("SLACK_", "STOPBOT_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("STOPBOT_CONFIG", str(path))
    monkeypatch.setenv("STOPBOT_DB", str(tmp_path / "stopbot.db"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_refuses_an_environment_with_a_foreign_lock(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stopbot stop --env` shows the whole plan, and refuses it for Qovery's lock by
    someone else, naming the owner: nothing is stopped (exit 1)."""
    assert main(["stop", "--env", "staging", "--yes"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "Stop environment staging? 2 tier(s), in order:",
        "  1. feldera: etl (Running (running))",
        "  2. qovery: dev-eu (DEPLOYED (running)), staging-us (DEPLOYED (running); staging-us "
        "is locked in qovery by Alice Martin (load test until Friday); it expires in 3d.)",
    ]
    assert err == (
        "stopbot: staging was not stopped: staging-us is locked in qovery by Alice Martin "
        "(load test until Friday); it expires in 3d. Add --skip-locked to stop the rest.\n"
    )


def test_cli_stops_the_rest_tier_by_tier(
    cli_env: Path, sims: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--skip-locked`: the locked member is left alone, the others stopped tier by tier."""
    assert main(["stop", "--env", "staging", "--skip-locked", "--yes", "end", "of", "day"]) == 0
    lines = [ELAPSED.sub("", line) for line in capsys.readouterr().out.splitlines()]
    assert lines[:4] == [
        "Stop environment staging? 2 tier(s), in order:",
        "  1. feldera: etl (Running (running))",
        "  2. qovery: dev-eu (DEPLOYED (running)), staging-us (skipped: staging-us is locked "
        "in qovery by Alice Martin (load test until Friday); it expires in 3d.)",
        "  reason: end of day",
    ]
    assert lines[4] == "tier 1/2 feldera: etl"
    assert "tier 2/2 qovery: dev-eu, staging-us (skipped)" in lines
    assert lines.index("etl: stopped") < lines.index(
        "tier 2/2 qovery: dev-eu, staging-us (skipped)"
    )
    assert lines[-2:] == ["dev-eu: stopped", "staging: stopped, every tier (staging-us left alone)"]
    qovery = {c["name"]: c["status"] for c in sims.hub.state()["qovery"]["clusters"]}
    assert (qovery["dev-eu"], qovery["staging-us"]) == ("STOPPED", "DEPLOYED")


def test_cli_sends_a_member_needing_approval_to_slack(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Approvers are asked in Slack: an environment with a member that needs approval is
    not run from the terminal, which says where to ask."""
    path = cli_env / "stopbot.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for resource in document["resources"]:
        if resource["name"] == "etl":
            resource["approval"] = {"required": True, "approvers": ["U0CAROL"]}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert main(["stop", "--env", "staging", "--skip-locked", "--yes"]) == 1
    assert capsys.readouterr().err == (
        "stopbot: etl needs approval before it is stopped, and approvers are asked in Slack: "
        "request it there with `/stop env staging`.\n"
    )


def env_runs(cli_env: Path) -> list[tuple[str, EnvRunState]]:
    store = open_store(cli_env / "stopbot.db")
    try:
        return [(r.environment, r.state) for r in store.environment_runs(list(EnvRunState))]
    finally:
        store.close()


def test_cli_shows_the_plan_then_sends_approval_to_slack(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As for one resource, the plan is shown before the terminal says that approvers
    are asked in Slack; the run is cancelled and nothing is stopped."""
    path = cli_env / "stopbot.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for resource in document["resources"]:
        if resource["name"] in {"etl", "dev-eu"}:
            resource["approval"] = {"required": True, "approvers": ["U0CAROL"]}
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert main(["wake", "--env", "staging", "--skip-locked"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "Wake environment staging? 2 tier(s), in order:"
    assert err == (
        "stopbot: dev-eu, etl need approval before they are woken, and approvers are asked "
        "in Slack: request it there with `/stop wake env staging`.\n"
    )
    assert env_runs(cli_env) == [("staging", EnvRunState.CANCELLED)]


def test_cli_without_a_terminal_needs_yes(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No terminal to confirm on and no --yes: exit 2, the same words as for one resource,
    the run cancelled."""
    assert main(["stop", "--env", "staging", "--skip-locked"]) == 2
    assert capsys.readouterr().err == (
        "stopbot: not stopping staging: there is no terminal to confirm on. "
        "Add --yes to confirm from a script.\n"
    )
    assert env_runs(cli_env) == [("staging", EnvRunState.CANCELLED)]


def test_cli_unknown_environment_is_a_usage_error(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped environment: one line, exit 2."""
    assert main(["wake", "--env", "stagin", "--yes"]) == 2
    assert capsys.readouterr().err == (
        "stopbot: Unknown environment 'stagin'. Did you mean staging?\n"
    )


# -- Slack --------------------------------------------------------------------------------


@pytest.fixture
async def slack_env(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Slack]:
    """The bot behind its endpoint with `staging`: Qovery's last tier holds staging-us,
    which Qovery locks for Alice."""
    tiers = [*TIERS[:3], {"qovery": ["dev-eu", "staging-us"]}]
    harness = Slack(sims, tmp_path / "stopbot.db", environments={"staging": tiers})
    yield harness
    harness.close()


def env_messages(slack: Slack) -> list[dict[str, Any]]:
    return [
        m
        for m in slack.fake.messages(CHANNEL)
        if (m.get("metadata") or {}).get("event_type") == ENVIRONMENT_EVENT
    ]


async def test_slack_plan_refused_as_a_whole_then_the_rest_stopped_in_one_message(
    slack_env: Slack,
) -> None:
    """`/stop env staging`: one plan with every tier and lock, refused as a whole for
    Alice's Qovery lock (no Confirm, only "Stop the rest"); stopping the rest shows one
    channel message, updated to the end; the locked cluster is left running."""
    slack = slack_env
    reply = await slack.ask("env staging night")
    assert reply.args["text"] == (
        "Stop environment staging? Refused as a whole: staging-us is held by someone else."
    )
    blocks = block_texts(reply.args)
    assert "*1. feldera*" in blocks and "*4. qovery*" in blocks
    assert "locked in qovery by Alice Martin (load test until Friday)" in blocks
    run_id, ts = slack.confirmation()
    message = slack.fake.ephemeral_messages(CHANNEL, BOB_ID)[-1]
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == [ENV_REST, ENV_CANCEL]

    assert (await slack.click(ENV_REST, run_id, ts)).status_code == 200
    final = await slack.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith(":white_check_mark: staging stopped")
    )
    assert final["text"] == (
        ":white_check_mark: staging stopped, every tier (staging-us left alone)"
    )
    assert len(env_messages(slack)) == 1
    assert "`staging-us`: left alone (held by someone else)" in block_texts(final)
    run = slack.store.get_environment_run(run_id)
    assert run is not None and (run.state, run.message_ts) == (EnvRunState.DONE, final["ts"])
    qovery = {c["name"]: c["status"] for c in slack.sims.hub.state()["qovery"]["clusters"]}
    assert (qovery["dev-eu"], qovery["staging-us"]) == ("STOPPED", "DEPLOYED")
    keys = [f"environment:{run_id}:{name}" for name in ORDER]
    ops = [slack.store.operation_for_key(key) for key in keys]
    assert [op.state if op else None for op in ops] == [OpState.STOPPED] * 4
    assert slack.store.operation_for_key(f"environment:{run_id}:staging-us") is None


async def test_slack_only_the_requester_confirms_and_unknown_names_are_told(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """Someone else's click on the plan changes nothing; an unknown environment is told
    with the known ones; a wake's plan lists the tiers in reverse."""
    slack = Slack(sims, tmp_path / "stopbot.db", environments={"staging": TIERS})
    try:
        reply = await slack.ask("env staging")
        assert reply.args["text"] == "Stop environment staging? 4 tier(s), in order."
        run_id, ts = slack.confirmation()
        await slack.click(ENV_CONFIRM, run_id, ts, user=ALICE_ID)
        refused = await slack.fake.wait_for(
            RESPONSE_URL_METHOD, lambda c: "Only" in c.args.get("text", "")
        )
        assert refused.args["text"] == (
            f"Only <@{BOB_ID}> can confirm or cancel this stop of staging."
        )
        run = slack.store.get_environment_run(run_id)
        assert run is not None and run.state == EnvRunState.AWAITING_CONFIRMATION
        unknown = await slack.ask("env stagin")
        assert unknown.args["text"] == (
            "Unknown environment 'stagin'. Did you mean staging? Environments: staging."
        )
        wake = await slack.ask("wake env staging")
        assert wake.args["text"] == "Wake environment staging? 4 tier(s), in order."
        wake_blocks = block_texts(wake.args)
        assert wake_blocks.index("1. qovery") < wake_blocks.index("4. feldera")
    finally:
        slack.close()


# -- schedules ------------------------------------------------------------------------------

NIGHTLY_STAGING = {
    "name": "nightly-staging",
    "cron": "0 20 * * 1-5",
    "timezone": "Europe/Paris",
    "select": {"environment": "staging"},
    "warn_before": "15m",
}


def test_a_schedule_names_a_known_environment(sims: SimulatorServer) -> None:
    """`select: {environment: …}` must name one under `environments:`."""
    with pytest.raises(ConfigError) as caught:
        sample(
            sims,
            environments={"staging": TIERS},
            schedules=[{**NIGHTLY_STAGING, "select": {"environment": "prod"}}],
        )
    assert caught.value.problems == [
        ("schedules[0].select.environment", "no environment named 'prod' (known: staging)")
    ]


async def test_a_schedule_selecting_an_environment_runs_it_in_tier_order(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """A schedule that selects an environment stops its tiers in order, each once the one
    before is stopped at its provider."""
    h = Harness(sims, tmp_path / "stopbot.db", schedules=[NIGHTLY_STAGING])
    try:
        h.bot.engine.sync_config()
        run = await h.bot.engine.run_now("nightly-staging", "U0ADMIN")
        await h.bot.engine.runs.wait()
        items = h.store.run_items(run.id)
        assert [(i.resource, i.outcome) for i in items] == [(n, "stopped") for n in ORDER]
        assert stops_sent(h) == ORDER
        for i, (_, name, phases) in enumerate(h.sent):
            assert all(phases[e] == Phase.STOPPED for e in ORDER[:i]), (name, phases)
            assert all(phases[x] == Phase.RUNNING for x in ORDER[i:]), (name, phases)
    finally:
        await h.aclose()


async def test_a_scheduled_environment_is_refused_as_a_whole_for_a_held_member(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """A scheduled run of an environment with a member someone holds stops nothing, and
    says why for each member."""
    h = Harness(sims, tmp_path / "stopbot.db", schedules=[NIGHTLY_STAGING])
    try:
        h.store.set_lock("web-1", ALICE, h.time.now() + dt.timedelta(days=1), "demo")
        h.bot.engine.sync_config()
        run = await h.bot.engine.run_now("nightly-staging", "U0ADMIN")
        await h.bot.engine.runs.wait()
        items = {i.resource: (i.outcome, str(i.detail)) for i in h.store.run_items(run.id)}
        refused = (
            "refused",
            "not stopped: environment staging is refused as a whole while someone holds "
            "web-1 (skipped: locked)",
        )
        assert items["etl"] == items["spark"] == items["dev-eu"] == refused
        assert items["web-1"][0] == "skipped: locked"
        assert h.sent == []
    finally:
        await h.aclose()


async def test_slack_escapes_what_was_typed(slack_env: Slack) -> None:
    """An environment name typed with mrkdwn in it comes back escaped: it mentions no one."""
    reply = await slack_env.ask("env <!channel>&x")
    assert reply.args["text"] == (
        "Unknown environment '&lt;!channel&gt;&amp;x'. Environments: staging."
    )


async def test_slack_progress_says_which_member_halted_the_run(slack_env: Slack) -> None:
    """A member that fails halts the run: the one message says which and why, and the
    later tiers stay waiting."""
    slack = slack_env
    slack.sims.hub.faults.add(
        Fault(api="okeanos", kind="status", method="POST", status=400, count=None)
    )
    await slack.ask("env staging")
    run_id, ts = slack.confirmation()
    await slack.click(ENV_REST, run_id, ts)
    final = await slack.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith(":x:")
    )
    assert final["text"].startswith(
        ":x: Stop of staging halted: tier 2 (spark) did not get there: spark failed ("
    )
    blocks = block_texts(final)
    assert "`web-1`: waiting" in blocks and "`dev-eu`: waiting" in blocks
    assert len(env_messages(slack)) == 1


async def test_a_run_whose_environment_left_the_configuration_halts(h: Harness) -> None:
    """A run taken over after its environment was removed from stopbot.yaml halts, saying
    so, instead of failing in the background."""
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB)
    envs.confirm(plan.run.id, BOB)
    del h.config.environments["staging"]
    final = await envs.run(plan.run.id)
    assert final.state == EnvRunState.HALTED
    assert str(final.detail) == "staging is no longer in the configuration"
    assert h.sent == []


async def test_a_run_whose_task_failed_is_run_again_by_its_own_process(h: Harness) -> None:
    """A run of this process that nothing runs any more (its task ended on an error) is
    run again by the next sweep, from the tier it was on."""
    envs = h.bot.environments
    plan = await envs.preview("staging", BOB)
    envs.confirm(plan.run.id, BOB)
    tiers_of = envs.tiers_of

    def broken(name: str, action: Action) -> Any:
        raise RuntimeError("the database went away")

    envs.tiers_of = broken  # type: ignore[method-assign]
    task = envs.start(plan.run.id)
    await asyncio.gather(task, return_exceptions=True)
    assert isinstance(task.exception(), RuntimeError)
    run = h.store.get_environment_run(plan.run.id)
    assert run is not None and run.state == EnvRunState.RUNNING and envs._runs == {}
    envs.tiers_of = tiers_of  # type: ignore[method-assign]
    await h.bot.registry.sweep()
    await envs.wait()
    final = h.store.get_environment_run(plan.run.id)
    assert final is not None and final.state == EnvRunState.DONE
    assert stops_sent(h) == ORDER


def test_check_config_shows_each_environment_in_order(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stopbot check-config` lists each environment's tiers in stop order."""
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [
        "  environments: 1",
        "    staging: feldera (etl) -> qovery (dev-eu, staging-us)",
    ]


async def test_slack_wake_env_starts_the_cluster_first_and_shows_one_message(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """`/stop wake env old` on stopped members: Confirm, then one message to the end; every
    member is up, the cluster's start sent first and the pipeline's last."""
    old = [
        {"feldera": ["archive"]},
        {"okeanos": ["flink"]},
        {"nova": ["db-3"]},
        {"qovery": ["qa-old"]},
    ]
    slack = Slack(sims, tmp_path / "stopbot.db", environments={"old": old})
    try:
        reply = await slack.ask("wake env old morning")
        assert reply.args["text"] == "Wake environment old? 4 tier(s), in order."
        run_id, ts = slack.confirmation()
        assert (await slack.click(ENV_CONFIRM, run_id, ts)).status_code == 200
        final = await slack.fake.wait_for_message(
            CHANNEL, lambda m: m.get("text", "").startswith(":white_check_mark: old woken")
        )
        assert final["text"] == ":white_check_mark: old woken, every tier"
        assert len(env_messages(slack)) == 1
        ops = [
            slack.store.operation_for_key(f"environment:{run_id}:{n}")
            for n in ["qa-old", "db-3", "flink", "archive"]
        ]
        assert [(op.action, op.state) for op in ops if op] == [(Action.START, OpState.STARTED)] * 4
        # Each tier's start asked only once the one before is up: strictly later.
        asked = [op.created_at for op in ops if op]
        assert asked == sorted(asked) and len(set(asked)) == 4
    finally:
        slack.close()
