"""Discovery: provider accounts declared with ``discover:`` are listed (one paged list per
account per refresh), kept in the store, laid over the configured resources, selected by
provider, tags and name, and stopped by schedules; a provider-side opt-out tag is honoured;
a resource gone at the provider leaves with one note. Against the simulators over HTTP."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.cli import main, refreshed_lines
from bot.config import ConfigError, parse_config
from bot.discovery import Refreshed
from bot.schedules import Outcome
from bot.slack import commands
from bot.slack.discovery_views import refreshed
from bot.stopbot import Stopbot
from bot.store import Store, open_store
from providers.base import Provider
from providers.registry import build_provider
from providers.simulators.samples import DEFAULT_SEED, sample_config
from providers.simulators.server import SimulatorServer
from tests.helpers import FAST_STOPS, SimTime
from tests.slack_harness import CHANNEL, Slack

UTC = dt.UTC
WEB_1 = DEFAULT_SEED["nova"]["servers"][0]["id"]
NEW_API = "7b2f0e2d-0000-4d7e-a6f5-00000000a001"
NEW_KEEP = "7b2f0e2d-0000-4d7e-a6f5-00000000a002"
NIGHTLY = {
    "name": "nova-dev",
    "cron": "0 20 * * *",
    "timezone": "UTC",
    "select": {"provider": "nova", "tags": {"env": "dev"}},
    "warn_before": "5m",
}


def document(
    sims: SimulatorServer, discover: Any = True, on: str = "nova", **overrides: Any
) -> dict[str, Any]:
    """The sample configuration with the provider ``on`` discovered (Nova) and only web-1
    of Nova's servers configured."""
    doc = sample_config(sims.base_url)
    for p in doc["providers"]:
        if p["name"] == on:
            p["discover"] = discover
    doc["resources"] = [r for r in doc["resources"] if r["provider"] != "nova" or r["id"] == WEB_1]
    doc["stops"] = FAST_STOPS
    doc["schedules"] = [NIGHTLY]
    doc.update(overrides)
    return doc


class Bot:
    """The assembled bot over the simulators, on their clock."""

    def __init__(self, sims: SimulatorServer, db: Path, **overrides: Any) -> None:
        sims.hub.clock.freeze()
        self.sims = sims
        self.time = SimTime(sims)
        self.config = parse_config(document(sims, **overrides), "test", env={})
        self.store: Store = open_store(db, clock=self.time.now)
        self.providers: dict[str, Provider] = {
            p.name: build_provider(p, http=self.config.http) for p in self.config.providers
        }
        self.bot = Stopbot(
            self.config,
            self.store,
            self.providers,
            clock=self.time.now,
            sleep=self.time.sleep,
            schedule_tick=None,
        )
        self.bot.engine.sync_config()

    def travel(self, when: dt.datetime) -> None:
        self.sims.hub.clock.advance((when - self.time.now()).total_seconds())

    def names(self) -> dict[str, str]:
        """Resource id -> the name the bot gives it, for Nova."""
        return {r.id: r.name for r in self.config.resources if r.provider == "nova"}

    async def aclose(self) -> None:
        await self.bot.engine.cancel()
        await self.bot.aclose()
        for p in self.providers.values():
            await p.aclose()
        self.store.close()


def create(sims: SimulatorServer, api: str, item: dict[str, Any]) -> httpx.Response:
    """Create a resource at the provider, as someone would in its console."""
    return httpx.post(f"{sims.base_url}/_sim/resources/{api}", json=item)


def delete(sims: SimulatorServer, api: str, resource_id: str) -> httpx.Response:
    """Delete a resource at the provider, as someone would in its console."""
    return httpx.delete(f"{sims.base_url}/_sim/resources/{api}/{resource_id}")


def inject(sims: SimulatorServer, fault: dict[str, Any]) -> None:
    httpx.post(f"{sims.base_url}/_sim/faults", json=fault).raise_for_status()


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.fixture
async def b(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Bot]:
    harness = Bot(sims, tmp_path / "db")
    harness.travel(utc(2027, 1, 11, 12, 0))
    await harness.bot.engine.tick()  # the schedule starts counting from here
    yield harness
    await harness.aclose()


async def test_created_after_start_found_at_next_refresh_and_stopped_by_tag_schedule(
    b: Bot,
) -> None:
    """A server created at the provider after start is found at the next periodic refresh
    and stopped by a schedule selecting provider nova, tag env=dev; its sibling tagged
    stopbot/skip at the provider is opted out."""
    await b.bot.tick()  # the leader's first refresh: nothing kept yet, so due
    assert b.names() == {
        WEB_1: "web-1",
        DEFAULT_SEED["nova"]["servers"][1]["id"]: "batch-2",
        DEFAULT_SEED["nova"]["servers"][2]["id"]: "db-3",
    }
    assert (
        create(b.sims, "nova", {"id": NEW_API, "name": "dev-api", "tags": ["env=dev"]}).status_code
        == 201
    )
    keep = {
        "id": NEW_KEEP,
        "name": "dev-keep",
        "tags": ["stopbot/skip"],
        "metadata": {"env": "dev"},
    }
    assert create(b.sims, "nova", keep).status_code == 201

    await b.bot.tick()  # not due yet: the snapshot is younger than discovery.interval
    assert NEW_API not in b.names()
    b.travel(utc(2027, 1, 11, 12, 10))
    await b.bot.tick()
    assert b.names()[NEW_API] == "dev-api" and b.names()[NEW_KEEP] == "dev-keep"

    b.travel(utc(2027, 1, 11, 19, 55))
    await b.bot.engine.tick()  # the warning
    b.travel(utc(2027, 1, 11, 20, 0))
    await b.bot.engine.tick()
    await b.bot.engine.wait()
    [run] = b.store.runs(schedule="nova-dev")
    outcomes = {i.resource: i.outcome for i in b.store.run_items(run.id)}
    # web-1 carries env=dev in the configuration, dev-api at the provider (a Nova tag),
    # dev-keep its metadata and Nova's stopbot/skip tag; batch-2 and db-3 carry no env.
    assert outcomes == {
        "web-1": Outcome.STOPPED,
        "dev-api": Outcome.STOPPED,
        "dev-keep": Outcome.OPTED_OUT,
    }
    state = {s["id"]: s["status"] for s in b.sims.hub["nova"].snapshot()["servers"]}
    assert (state[NEW_API], state[NEW_KEEP]) == ("SHUTOFF", "ACTIVE")


async def test_one_paged_list_per_account_per_refresh(b: Bot) -> None:
    """A refresh of Nova costs its paged server list only: with 1,000 servers and a page
    of 100, ten full pages and the empty one after the last full page's next link."""
    section = dict(DEFAULT_SEED["nova"])
    section["max_limit"] = 100
    section["servers"] = [
        {"id": f"srv-{i:05d}", "name": f"dev-{i:05d}", "tags": ["env=dev"]} for i in range(1000)
    ]
    b.sims.hub.seed({"nova": section})
    await b.bot.refresh()  # signs in (Keystone) once, apart from the count
    b.sims.hub.faults.reset_counts()
    [result] = await b.bot.refresh()
    assert result == Refreshed("nova", 1000)
    assert b.sims.hub.faults.counts() == {"nova": {"GET": 11}}
    # and web-1, configured, which this seed has not
    assert sum(1 for r in b.config.resources if r.provider == "nova") == 1001


async def test_configured_resource_wins_and_reads_provider_tags(
    b: Bot, sims: SimulatorServer
) -> None:
    """web-1 is configured: it keeps its name and tags, and the provider's tags are read
    under them, so a Nova stopbot/skip tag opts it out too."""
    section = dict(DEFAULT_SEED["nova"])
    section["servers"] = [
        {**DEFAULT_SEED["nova"]["servers"][0], "tags": ["stopbot/skip", "env=prod"]}
    ]
    sims.hub.seed({"nova": section})
    await b.bot.refresh()
    [web] = [r for r in b.config.resources if r.provider == "nova"]
    assert (web.name, web.tags) == ("web-1", {"stopbot/skip": "true", "env": "dev"})
    plan = b.bot.engine.definitions.plan(b.bot.engine.definitions.schedule("nova-dev"))
    assert [(i.resource, i.outcome) for i in plan] == [("web-1", Outcome.OPTED_OUT)]


async def test_gone_at_the_provider_leaves_with_one_note(
    b: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    """A server deleted at the provider leaves the resources at the next refresh, said
    once (the refresh's answer and one warning), not at the refreshes after."""
    create(b.sims, "nova", {"id": NEW_API, "name": "dev-api", "tags": ["env=dev"]})
    await b.bot.refresh()
    assert delete(b.sims, "nova", NEW_API).status_code == 200
    [first] = await b.bot.refresh()
    [second] = await b.bot.refresh()
    assert first.gone == [f"nova:{NEW_API} (dev-api)"] and second.gone == []
    assert NEW_API not in b.names()
    notes = [r for r in caplog.records if "gone at the provider" in r.getMessage()]
    assert len(notes) == 1
    with pytest.raises(LookupError):
        b.config.resource("dev-api")


async def test_a_failed_list_keeps_the_last_snapshot(b: Bot) -> None:
    """Nova answering 503 to its list: the refresh says so, what was found stays, and the
    leader tries again an interval later, not at every housekeeping round."""
    await b.bot.refresh()
    inject(b.sims, {"api": "nova", "method": "GET", "kind": "status", "status": 503, "count": 50})
    [result] = await b.bot.refresh()
    assert result.found is None and result.error
    assert len(b.names()) == 3
    requests = b.sims.hub.faults.counts()["nova"]["GET"]
    await b.bot.tick()  # housekeeping: tried a moment ago, so not again at once
    assert b.sims.hub.faults.counts()["nova"]["GET"] == requests
    b.travel(utc(2027, 1, 11, 12, 10))
    await b.bot.tick()  # an interval later: tried again (and failing, noted again)
    assert b.sims.hub.faults.counts()["nova"]["GET"] > requests


async def test_a_restart_and_a_second_replica_see_the_same_snapshot(
    b: Bot, sims: SimulatorServer, tmp_path: Path
) -> None:
    """The snapshot lives in the store: another process on it sees what was found
    without listing anything, and what the leader finds later at its next round."""
    create(sims, "nova", {"id": NEW_API, "name": "dev-api"})
    await b.bot.refresh()
    sims.hub.faults.reset_counts()
    other = Bot(sims, tmp_path / "db")
    try:
        assert other.names()[NEW_API] == "dev-api"
        assert sims.hub.faults.counts() == {}
        assert other.config.resource(f"nova:{NEW_API}").name == "dev-api"
        assert other.bot.discovery.load() is False  # nothing new: the snapshots unread
        again = Stopbot(other.config, other.store, other.providers, schedule_tick=None)
        assert again.discovery.configured == other.bot.discovery.configured  # yaml's only
        await again.aclose()
        create(sims, "nova", {"id": NEW_KEEP, "name": "dev-keep"})
        await b.bot.refresh()  # the leader's
        assert other.bot.discovery.load() is True  # a follower's housekeeping round
        assert other.names()[NEW_KEEP] == "dev-keep"
    finally:
        await other.aclose()


async def test_names_unique_else_provider_id(b: Bot, sims: SimulatorServer) -> None:
    """Two servers with one name, or a name configured already, are named provider:id;
    a filter keeps only what it matches."""
    create(sims, "nova", {"id": "dup-1", "name": "twin"})
    create(sims, "nova", {"id": "dup-2", "name": "twin"})
    create(sims, "nova", {"id": "dup-3", "name": "dev-eu"})  # a Qovery cluster's name
    await b.bot.refresh()
    names = b.names()
    assert (names["dup-1"], names["dup-2"], names["dup-3"]) == (
        "nova:dup-1",
        "nova:dup-2",
        "nova:dup-3",
    )


async def test_discover_filter_keeps_what_it_matches(sims: SimulatorServer, tmp_path: Path) -> None:
    """``discover: {name: "dev-*", tags: {env: dev}}`` keeps only those servers."""
    harness = Bot(sims, tmp_path / "db", discover={"name": "dev-*", "tags": {"env": "dev"}})
    try:
        create(sims, "nova", {"id": "a", "name": "dev-a", "tags": ["env=dev"]})
        create(sims, "nova", {"id": "b", "name": "dev-b"})
        create(sims, "nova", {"id": "c", "name": "prod-c", "tags": ["env=dev"]})
        [result] = await harness.bot.refresh()
        assert result.found == 1
        assert set(harness.names()) == {WEB_1, "a"}
    finally:
        await harness.aclose()


def test_selectors_by_provider_tags_and_name(sims: SimulatorServer) -> None:
    """A selector matches provider, tags and a name glob together; it refuses resources
    beside them, an empty selection and an unknown provider."""
    doc = document(
        sims,
        schedules=[{**NIGHTLY, "select": {"provider": "qovery", "name": "dev-*"}}],
    )
    config = parse_config(doc, "test", env={})
    [schedule] = config.schedules
    assert schedule.select.describe() == "provider qovery, name dev-*"
    matched = [r.name for r in config.all_resources() if schedule.select.matches(r)]
    assert matched == ["dev-eu"]
    for select, error in [
        ({"provider": "nova", "resources": ["web-1"]}, "not both"),
        ({}, "give tags"),
        ({"provider": "aws"}, "no provider named 'aws'"),
    ]:
        bad = document(sims, schedules=[{**NIGHTLY, "select": select}])
        with pytest.raises(ConfigError, match=error):
            parse_config(bad, "test", env={})


def test_interval_must_be_sane(sims: SimulatorServer) -> None:
    """``discovery.interval`` below a minute is refused with the reason."""
    with pytest.raises(ConfigError, match="at least 1m"):
        parse_config(document(sims, discovery={"interval": "10s"}), "test", env={})


def test_refresh_command_and_its_answers() -> None:
    """``/stop refresh`` parses, and its answer and the terminal's name new, gone and
    failed accounts (user text escaped in Slack)."""
    assert commands.parse("refresh") == commands.Refresh()
    with pytest.raises(commands.UsageError):
        commands.parse("refresh now")
    results = [
        Refreshed("nova", 2, added=["nova:1 (a<b)"], gone=["nova:2 (old)"]),
        Refreshed("qovery", None, error="HTTP 503"),
    ]
    assert refreshed(results) == (
        "*Discovery refreshed*\n"
        "• *nova*: 2 resource(s); new: nova:1 (a&lt;b); gone at the provider (left lists "
        "and schedules): nova:2 (old)\n"
        "• *qovery*: could not be listed (HTTP 503); its last list is kept"
    )
    assert refreshed_lines(results) == [
        "nova: 2 resources; new: nova:1 (a<b); gone at the provider (left lists and "
        "schedules): nova:2 (old)",
        "qovery: could not be listed (HTTP 503); its last list is kept",
    ]
    assert "no provider is discovered" in refreshed_lines([])[0]


async def test_provider_tags_from_each_api(b: Bot) -> None:
    """Qovery's region and cloud provider, ~okeanos's application type and instance name
    reach the discovered resources' tags."""
    qovery = await b.providers["qovery"].list()
    assert qovery[0].tags == {"region": "eu-west-3", "cloud_provider": "AWS"}
    okeanos = await b.providers["okeanos"].list()
    assert okeanos and all("type" in r.tags and "lambda_instance" in r.tags for r in okeanos)


async def test_okeanos_application_on_two_instances_is_two_resources(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """An ~okeanos application deployed on two lambda instances is discovered as two
    resources, each with its instance, named provider:id/instance; the configured one
    (on the first instance) keeps its name."""
    okeanos = dict(DEFAULT_SEED["okeanos"])
    first = okeanos["lambda_instances"][0]["id"]
    other = "9c4b7a2e-1d3f-4e5a-b6c7-d8e9f0a1b299"
    okeanos["lambda_instances"] = [*okeanos["lambda_instances"], {"id": other, "name": "lc-2"}]
    okeanos["applications"] = [
        {**a, "deployments": [*a.get("deployments", []), {"lambda_instance_id": other}]}
        if a["name"] == "flink"
        else a
        for a in okeanos["applications"]
    ]
    sims.hub.seed({"okeanos": okeanos})
    harness = Bot(sims, tmp_path / "db", on="okeanos")
    try:
        results = await harness.bot.refresh()
        assert [(r.provider, r.found) for r in results] == [("okeanos", 3)]
        flink = [
            (r.name, r.lambda_instance_id)
            for r in harness.config.resources
            if r.provider == "okeanos" and r.name.endswith(("flink", other))
        ]
        flink_id = next(a["id"] for a in okeanos["applications"] if a["name"] == "flink")
        assert flink == [("flink", first), (f"okeanos:{flink_id}/{other}", other)]
    finally:
        await harness.aclose()


# -- the faces: Slack through its endpoint, the terminal --------------------------------------


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Commands configure the root logger: put it back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_slash_refresh_through_the_endpoint(sims: SimulatorServer, tmp_path: Path) -> None:
    """`/stop refresh`, signed, to the real endpoint: the answer names what is new and
    gone, discovery.channel is told once of what is gone, and `/stop status` then knows
    the new server by its provider:id."""
    slack = Slack(
        sims,
        tmp_path / "db",
        providers=document(sims)["providers"],
        discovery={"channel": CHANNEL},
    )
    try:
        create(sims, "nova", {"id": NEW_API, "name": "dev-api", "tags": ["env=dev"]})
        await slack.ask("refresh")  # the leader's housekeeping may have found it first
        delete(sims, "nova", NEW_API)
        create(sims, "nova", {"id": NEW_KEEP, "name": "dev<b>"})
        answer = await slack.ask("refresh")
        assert answer.args["text"] == (
            "*Discovery refreshed*\n"
            f"• *nova*: 4 resource(s); new: nova:{NEW_KEEP} (dev&lt;b&gt;); gone at the "
            f"provider (left lists and schedules): nova:{NEW_API} (dev-api)"
        )
        note = await slack.fake.wait_for(
            "chat.postMessage", lambda c: "gone at" in str(c.args.get("text"))
        )
        assert (note.args["channel"], note.args["text"]) == (
            CHANNEL,
            f"1 resource(s) gone at *nova* since the last discovery; they left lists and "
            f"schedules: nova:{NEW_API} (dev-api)",
        )
        await slack.ask("refresh")  # nothing gone since: nothing more to tell
        notes = [c for c in slack.fake.calls("chat.postMessage") if "gone at" in c.args["text"]]
        assert len(notes) == 1
        status = await slack.ask(f"status nova:{NEW_KEEP}")
        assert "ACTIVE" in json.dumps(status.args)
        listed = await slack.ask("list nova")
        assert listed.args["text"] == "4 resources on nova"
        everything = await slack.ask("list")
        assert everything.args["text"].endswith(" resources configured or discovered")
    finally:
        slack.close()


def test_stopbot_refresh_then_list(
    sims: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restored_logging: None,
) -> None:
    """`stopbot refresh` lists the discovered accounts and keeps the snapshot; `stopbot
    list nova` then shows the server created at the provider beside the configured one."""
    config = tmp_path / "stopbot.yaml"
    config.write_text(yaml.safe_dump(document(sims)), encoding="utf-8")
    for key in [k for k in os.environ if k.startswith(("SLACK_", "STOPBOT_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("STOPBOT_CONFIG", str(config))
    monkeypatch.setenv("STOPBOT_DB", str(tmp_path / "stopbot.db"))
    create(sims, "nova", {"id": NEW_API, "name": "dev-api"})
    assert main(["refresh"]) == 0
    assert capsys.readouterr().out == "nova: 4 resources\n"
    assert main(["list", "nova"]) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [
        ["web-1", "nova"],
        ["batch-2", "nova"],
        ["db-3", "nova"],
        ["dev-api", "nova"],
    ]


async def test_a_run_refreshes_first_so_a_deleted_server_is_not_tried(b: Bot) -> None:
    """A server deleted at the provider since the last refresh: the run's own refresh
    (the snapshot is older than a minute) takes it out, so the run neither tries nor
    reports it, and the one created meanwhile is stopped."""
    create(b.sims, "nova", {"id": NEW_API, "name": "dev-api", "tags": ["env=dev"]})
    await b.bot.refresh()
    delete(b.sims, "nova", NEW_API)
    create(b.sims, "nova", {"id": NEW_KEEP, "name": "dev-new", "tags": ["env=dev"]})
    b.travel(utc(2027, 1, 11, 20, 0))
    await b.bot.engine.tick()
    await b.bot.engine.wait()
    [run] = b.store.runs(schedule="nova-dev")
    outcomes = {i.resource: i.outcome for i in b.store.run_items(run.id)}
    assert outcomes == {"web-1": Outcome.STOPPED, "dev-new": Outcome.STOPPED}


OKEANOS_INSTANCE = DEFAULT_SEED["okeanos"]["lambda_instances"][0]["id"]
CREATED = {
    "qovery": ("c-new", {"id": "c-new", "name": "dev-new", "status": "DEPLOYED"}),
    "nova": ("s-new", {"id": "s-new", "name": "dev-new"}),
    "okeanos": (
        "a-new",
        {
            "id": "a-new",
            "name": "dev-new",
            "type": "BATCH",
            "deployments": [{"lambda_instance_id": OKEANOS_INSTANCE, "started": True}],
        },
    ),
    "feldera": ("dev-new", {"name": "dev-new", "deployment_status": "Running"}),
}


@pytest.mark.parametrize("api", sorted(CREATED))
async def test_each_simulator_creates_and_deletes_at_run_time(
    api: str, sims: SimulatorServer, tmp_path: Path
) -> None:
    """POST /_sim/resources/<api> creates a resource the next refresh finds (named by its
    own name); DELETE takes it away at the refresh after; a second create of one id is a
    400, a delete of nothing a 404."""
    resource_id, item = CREATED[api]
    # Feldera's pipeline name is its id: said once.
    label = f"{api}:{resource_id}" + (" (dev-new)" if resource_id != "dev-new" else "")
    harness = Bot(sims, tmp_path / "db", on=api)
    try:
        await harness.bot.refresh()
        assert create(sims, api, item).status_code == 201
        assert create(sims, api, item).status_code == 400
        [found] = await harness.bot.refresh()
        assert found.added == [label]
        assert harness.config.resource("dev-new").id == resource_id
        assert delete(sims, api, resource_id).status_code == 200
        assert delete(sims, api, resource_id).status_code == 404
        [gone] = await harness.bot.refresh()
        assert gone.gone == [label]
    finally:
        await harness.aclose()


def test_check_config_says_what_is_discovered(
    sims: SimulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restored_logging: None,
) -> None:
    """`stopbot check-config` names the discovered provider, its interval and filter."""
    config = tmp_path / "stopbot.yaml"
    doc = document(sims, discover={"name": "dev-*", "tags": {"env": "dev"}})
    doc["discovery"] = {"interval": "15m"}
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert main(["check-config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "    nova (openstack): 1 resource, discovered every 15m (name dev-*, env=dev)" in out
    assert "    qovery (qovery): 3 resources" in out


async def test_gone_is_owed_to_the_channel_once_across_replicas(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """With discovery.channel, what a refresh finds gone is owed to it through the outbox
    (kept until a face shows it); the same snapshot's note is owed once, whichever
    replica asks, and no note without anything gone."""
    first = Bot(sims, tmp_path / "db", discovery={"channel": "C0OPS"})
    second = Bot(sims, tmp_path / "db", discovery={"channel": "C0OPS"})
    try:
        create(sims, "nova", {"id": NEW_API, "name": "dev-api"})
        await first.bot.refresh()
        delete(sims, "nova", NEW_API)
        await first.bot.refresh()
        taken = first.store.discovered_at()["nova"]
        second.bot.owe_gone([Refreshed("nova", 3, gone=[f"nova:{NEW_API} (dev-api)"])])
        await first.bot.refresh()
        owed = [o for o in first.store.owed() if o.kind == "discovery-gone"]
        assert [(o.key, o.payload) for o in owed] == [
            (
                f"discovery-gone:nova:{taken.isoformat()}",
                {"channel": "C0OPS", "provider": "nova", "gone": [f"nova:{NEW_API} (dev-api)"]},
            )
        ]
    finally:
        await second.aclose()
        await first.aclose()
