"""Schedules through Slack: the warning's buttons, the run summary, /stop schedule and dry-run.
The bot ticks its scheduler on the simulators' clock, which the tests move."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from bot.slack import schedule_views as sv
from bot.slack.fake_api import RESPONSE_URL_METHOD, block_actions_body, block_actions_payload
from bot.slack.views import when
from providers.simulators.common import Fault
from providers.simulators.server import SimulatorServer
from tests.slack_harness import ADMIN, ALICE, BOB, CHANNEL, Slack, block_texts

DEV_EU = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01"


def _hours_away(hours: int) -> str:
    """A daily cron ``hours`` from now in Paris."""
    paris = dt.datetime.now(ZoneInfo("Europe/Paris"))
    return f"0 {(paris.hour + hours) % 24} * * *"


NIGHTLY = {
    "name": "nightly",
    "cron": "0 20 * * *",
    "timezone": "Europe/Paris",
    "select": {"resources": ["dev-eu", "spark"]},
    "channel": CHANNEL,
    "warn_before": "15m",
    "until": "07:00",
}


@pytest.fixture
async def slack(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Slack]:
    harness = Slack(sims, tmp_path / "stopbot.db", schedules=[NIGHTLY])
    yield harness
    harness.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    """Wait for the bot's scheduler (ticking in its own thread) to get somewhere."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.01)


def fire_of(slack: Slack) -> dt.datetime:
    """Tonight's (or tomorrow's) 20:00 Paris, from the bot's clock."""
    engine = slack.stopbot.engine
    return engine.next_fire(engine.schedule("nightly"))


def travel(slack: Slack, when: dt.datetime) -> None:
    slack.sims.hub.clock.advance((when - slack.time.now()).total_seconds())


async def warning(slack: Slack) -> dict[str, Any]:
    travel(slack, fire_of(slack) - dt.timedelta(minutes=14))
    return await slack.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("nightly stops")
    )


def button(message: dict[str, Any], action_id: str) -> str:
    """The value of a button on a message."""
    return next(
        str(e["value"])
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e.get("action_id") == action_id
    )


async def summary(slack: Slack) -> dict[str, Any]:
    return await slack.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("nightly run done")
    )


async def choose(
    slack: Slack, message: dict[str, Any], action_id: str, value: str, user: str
) -> None:
    """Pick an option of a select menu on a channel message."""
    url = slack.fake.new_response_url(channel=CHANNEL, user=user, message_ts=message["ts"])
    payload = block_actions_payload(
        user,
        CHANNEL,
        action_id,
        value,
        response_url=url,
        message=message,
        trigger_id=uuid.uuid4().hex,
    )
    payload["actions"][0] = {
        "type": "static_select",
        "action_id": action_id,
        "block_id": "keep:nightly",
        "selected_option": {"text": {"type": "plain_text", "text": "Keep"}, "value": value},
        "action_ts": "1.0",
    }
    await slack.post(block_actions_body(payload))


async def test_warning_then_summary(slack: Slack) -> None:
    """The warning lists what will stop, with Skip, Snooze and Keep; the summary follows."""
    message = await warning(slack)
    assert "*Will stop (2):* dev-eu, spark" in block_texts(message)
    actions = [
        e.get("action_id")
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    ]
    assert actions == [sv.SKIP, sv.SNOOZE, f"{sv.KEEP}:dev-eu", f"{sv.KEEP}:spark"]
    travel(slack, fire_of(slack))
    done = await summary(slack)
    assert done["text"] == "nightly run done: 2 stopped"
    assert (
        len([m for m in slack.fake.messages(CHANNEL) if m["text"].startswith("nightly run")]) == 1
    )


async def test_a_summary_post_whose_answer_was_lost_is_found_not_posted_twice(
    slack: Slack,
) -> None:
    """Slack took the run's summary but its answer never reached the bot (a kill during the
    post): the next delivery finds it by its metadata and updates it to the end; there is
    one summary in the channel."""
    post = slack.bot.client.chat_postMessage
    lost: list[str] = []

    seen: list[str] = []

    async def answer_lost(**kwargs: Any) -> Any:
        seen.append(str(kwargs.get("text", ""))[:30])
        posted = await post(**kwargs)
        if str(kwargs.get("text", "")).startswith("nightly run") and not lost:
            lost.append(str(posted["ts"]))
            raise aiohttp.ClientConnectionError("connection reset before the answer")
        return posted

    slack.bot.client.chat_postMessage = answer_lost  # type: ignore[method-assign]
    fire = fire_of(slack)
    travel(slack, fire)
    await slack.fake.wait_for("conversations.history")
    travel(slack, fire + dt.timedelta(seconds=5))  # past the outbox's back-off
    done = await summary(slack)
    assert done["ts"] == lost[0]
    runs = [m for m in slack.fake.messages(CHANNEL) if m["text"].startswith("nightly run")]
    assert [m["ts"] for m in runs] == lost


async def test_keep_from_the_warning(slack: Slack) -> None:
    """'Keep dev-eu for 1 hour' spares it tonight; the exception is listed and audited."""
    message = await warning(slack)
    await choose(
        slack,
        message,
        f"{sv.KEEP}:dev-eu",
        json.dumps({"s": "nightly", "r": "dev-eu", "d": "1h"}),
        ALICE,
    )
    said = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "keeps dev-eu" in c.args.get("text", "")
    )
    assert said.args["response_type"] == "in_channel"
    # The warning itself now says what changed: one resource to stop, not two.
    [card] = [m for m in slack.fake.messages(CHANNEL) if m["ts"] == message["ts"]]
    assert card["text"].startswith("nightly stops 1 resource at ")
    await slack.command("schedule exceptions")
    listing = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text") == "1 active exception"
    )
    assert "*dev-eu* kept out of `nightly` by <@U0ALICE> for 1h" in block_texts(listing.args)
    travel(slack, fire_of(slack))
    done = await summary(slack)
    assert done["text"] == "nightly run done: 1 skipped: kept, 1 stopped"


async def test_skip_from_the_warning(slack: Slack) -> None:
    """Skip tonight: announced when pressed and at the fire; nothing is stopped."""
    message = await warning(slack)
    fire = fire_of(slack)
    assert button(message, sv.SKIP) == f"nightly|{fire.isoformat()}"
    await slack.click_message(sv.SKIP, button(message, sv.SKIP), message, BOB)
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "skipped tonight's `nightly` run" in c.args.get("text", "")
    )
    # The warning says so, and its buttons are gone: nothing left to press on it.
    [card] = [m for m in slack.fake.messages(CHANNEL) if m["ts"] == message["ts"]]
    assert card["text"].startswith("<@U0BOB> skipped the `nightly` run due ")
    assert card["text"].endswith(": it will not run.")
    assert '"actions"' not in block_texts(card)
    travel(slack, fire + dt.timedelta(seconds=1))
    skipped = await slack.fake.wait_for_message(
        CHANNEL, lambda m: "is skipped (skipped by <@U0BOB>)" in m.get("text", "")
    )
    assert skipped["text"].startswith("The nightly run due ")
    assert [e for e in slack.store.audit_log() if e.action == "stop.accepted"] == []


async def test_snooze_from_the_warning(slack: Slack) -> None:
    """Snooze 1h moves tonight's run an hour later."""
    message = await warning(slack)
    fire = fire_of(slack)
    assert button(message, sv.SNOOZE) == f"nightly|1h|{fire.isoformat()}"
    await slack.click_message(sv.SNOOZE, button(message, sv.SNOOZE), message, BOB)
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "snoozed `nightly` by 1h" in c.args.get("text", "")
    )
    # The warning now shows the new time (an hour later), its buttons still on that fire.
    [card] = [m for m in slack.fake.messages(CHANNEL) if m["ts"] == message["ts"]]
    later = fire + dt.timedelta(hours=1)
    assert (
        card["text"] == f"nightly stops 2 resources at {later:%H:%M} UTC unless someone skips it."
    )
    assert button(card, sv.SKIP) == f"nightly|{fire.isoformat()}"
    travel(slack, fire + dt.timedelta(minutes=5))
    assert slack.store.runs(schedule="nightly") == []
    travel(slack, fire + dt.timedelta(hours=1))
    done = await summary(slack)
    assert done["text"] == "nightly run done: 2 stopped"
    [run] = slack.store.runs(schedule="nightly")
    assert (run.kind, run.fire_time) == ("snooze", fire + dt.timedelta(hours=1))


async def test_schedule_commands(slack: Slack) -> None:
    """list, dry-run, add (admins only), remove (not a config schedule), run with confirmation."""
    await slack.command("schedule list")
    listing = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text") == "1 schedule"
    )
    assert "would stop 2 now (dev-eu, spark) \\u00b7 from stopbot.yaml" in block_texts(listing.args)

    await slack.command("dry-run nightly")
    dry = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text", "").startswith("Dry run")
    )
    assert dry.args["text"].endswith("*Will stop (2):* dev-eu, spark")

    await slack.command('schedule add late "0 23 * * *" Europe/Paris tag:env=dev')
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text") == "Only admins can add schedules."
    )
    await slack.command('schedule add late "0 23 * * *" Mars/Olympus tag:env=dev', user=ADMIN)
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD,
        lambda c: c.args.get("text", "").startswith(
            "Cannot add `late`: unknown time zone 'Mars/Olympus'"
        ),
    )
    await slack.command('schedule add late "0 23 * * *" Europe/Paris tag:env=dev', user=ADMIN)
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text", "").startswith("Added `late`")
    )
    assert set(slack.stopbot.engine.schedules()) == {"nightly", "late"}

    await slack.command("schedule remove nightly", user=ADMIN)
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD,
        lambda c: c.args.get("text", "").startswith(
            "`nightly` is defined in stopbot.yaml: remove it there"
        ),
    )
    await slack.command("schedule remove late", user=ADMIN)
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text") == "Removed the schedule `late`."
    )

    await slack.command("schedule run nightly")
    confirm = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text") == "Run nightly now? Confirm or cancel."
    )
    ephemeral = slack.fake.ephemeral_messages(CHANNEL, BOB)[-1]
    assert ephemeral["text"] == confirm.args["text"]
    await slack.click(sv.RUN_CONFIRM, "nightly", ephemeral["ts"])
    done = await summary(slack)
    assert done["text"] == "nightly run done: 2 stopped"
    [run] = slack.store.runs(schedule="nightly")
    assert run.kind == "manual"


async def test_drift_reported_with_buttons(slack: Slack) -> None:
    """A cluster running again after the run is reported once, with Stop again / Leave it."""
    travel(slack, fire_of(slack))
    await summary(slack)
    slack.sims.hub["qovery"].set_state(DEV_EU, "DEPLOYED")
    travel(slack, slack.time.now() + dt.timedelta(minutes=6))
    report = await slack.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("dev-eu is running again")
    )
    assert report["text"] == "dev-eu is running again (DEPLOYED) after nightly stopped it."
    await slack.click_message(sv.DRIFT_STOP, "dev-eu", report, BOB)
    confirmation = await slack.fake.wait_for(
        RESPONSE_URL_METHOD,
        lambda c: c.args.get("text") == "Stop dev-eu (qovery)? Confirm or cancel.",
    )
    assert confirmation.args["response_type"] == "ephemeral"
    await slack.click_message(
        sv.DRIFT_LEAVE, json.dumps({"s": "nightly", "r": "dev-eu"}), report, ALICE
    )
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text") == "<@U0ALICE> leaves dev-eu running."
    )
    later = slack.time.now() + dt.timedelta(minutes=6)
    travel(slack, later)
    await until(lambda: (slack.store.schedule_state("nightly").drift_checked_at or later) >= later)
    drifts = [
        c for c in slack.fake.calls("chat.postMessage") if "is running again" in c.args["text"]
    ]
    assert len(drifts) == 1


def said(slack: Slack, words: str) -> list[dict[str, Any]]:
    """What the bot answered through response URLs, containing ``words``."""
    return [
        c.args for c in slack.fake.calls(RESPONSE_URL_METHOD) if words in c.args.get("text", "")
    ]


async def test_skip_clicked_twice_skips_tonight_only(slack: Slack) -> None:
    """Bob then Alice press Skip: tonight is skipped once, Alice is told it already was,
    and tomorrow's run is untouched."""
    message = await warning(slack)
    fire = fire_of(slack)
    await slack.click_message(sv.SKIP, button(message, sv.SKIP), message, BOB)
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "skipped tonight's `nightly` run" in c.args.get("text", "")
    )
    await slack.click_message(sv.SKIP, button(message, sv.SKIP), message, ALICE)
    again = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "is already skipped" in c.args.get("text", "")
    )
    assert again.args["text"] == (
        f"The `nightly` run due {when(fire)} is already skipped by <@{BOB}>: nothing was changed."
    )
    assert again.args["response_type"] == "ephemeral"
    assert slack.store.skips("nightly") == {fire: BOB}
    assert len(said(slack, "skipped tonight's")) == 1


async def test_buttons_posted_before_they_carried_the_fire_still_work(slack: Slack) -> None:
    """A warning posted by the previous version (values `nightly` and `nightly|1h`): Skip
    acts on the next fire, and twice is still once."""
    message = await warning(slack)
    fire = fire_of(slack)
    for user in (BOB, ALICE):
        await slack.click_message(sv.SKIP, "nightly", message, user)
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "is already skipped" in c.args.get("text", "")
    )
    assert slack.store.skips("nightly") == {fire: BOB}
    await slack.click_message(sv.SNOOZE, "nightly|1h", message, BOB)
    refused = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "nothing to snooze" in c.args.get("text", "")
    )
    assert refused.args["response_type"] == "ephemeral"


async def test_snooze_clicked_twice_moves_the_run_an_hour(slack: Slack) -> None:
    """Snooze 1h pressed twice: the run moves one hour, and the second click says so."""
    message = await warning(slack)
    fire = fire_of(slack)
    await slack.click_message(sv.SNOOZE, button(message, sv.SNOOZE), message, BOB)
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "snoozed `nightly` by 1h" in c.args.get("text", "")
    )
    await slack.click_message(sv.SNOOZE, button(message, sv.SNOOZE), message, ALICE)
    again = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "is already snoozed" in c.args.get("text", "")
    )
    later = fire + dt.timedelta(hours=1)
    assert again.args["text"] == (
        f"The `nightly` run due {when(fire)} is already snoozed to {when(later)}: "
        "nothing was changed."
    )
    assert slack.store.snoozes("nightly") == {fire: (later, False)}


async def test_skip_after_the_run_started_says_so(slack: Slack) -> None:
    """Skip pressed after the fire: the run has started, and nothing else is skipped."""
    message = await warning(slack)
    fire = fire_of(slack)
    travel(slack, fire)
    await summary(slack)
    await slack.click_message(sv.SKIP, button(message, sv.SKIP), message, BOB)
    late = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "has already started" in c.args.get("text", "")
    )
    assert late.args["response_type"] == "ephemeral"
    assert slack.store.skips("nightly") == {}


async def test_a_manual_run_asks_approval_for_what_needs_it(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """Bob runs `nightly` by hand: its stops are his, as his /stop would be. dev-eu, which
    needs Carol's approval, waits for it (Bob may not approve it himself); spark stops."""
    harness = Slack(
        sims,
        tmp_path / "stopbot.db",
        # A fire hours away: the hour this test travels never holds one.
        schedules=[{**NIGHTLY, "cron": _hours_away(3)}],
        resources={"dev-eu": {"approval": {"required": True, "approvers": ["U0CAROL"]}}},
    )
    try:
        await harness.command("schedule run nightly")
        await harness.fake.wait_for(
            RESPONSE_URL_METHOD,
            lambda c: c.args.get("text") == "Run nightly now? Confirm or cancel.",
        )
        ephemeral = harness.fake.ephemeral_messages(CHANNEL, BOB)[-1]
        await harness.click(sv.RUN_CONFIRM, "nightly", ephemeral["ts"])
        request = await harness.fake.wait_for_message(
            CHANNEL, lambda m: m.get("text", "").startswith("Approval needed")
        )
        assert request["text"] == "Approval needed: <@U0BOB> wants to stop dev-eu."
        ops = {op.resource: op for op in harness.store.recent_operations()}
        assert (ops["dev-eu"].requested_by, ops["dev-eu"].state.value) == (
            BOB,
            "awaiting_approval",
        )
        assert ops["dev-eu"].source == "schedule"
        # No travel while spark's stop is under way: a clock jumped past the stop's timeout
        # would time it out (the bot's polls move the clock by themselves).

        def spark() -> str:
            return next(o for o in harness.store.recent_operations() if o.resource == "spark").state

        await until(lambda: spark() == "stopped")
    finally:
        harness.close()


async def test_a_keep_choice_the_menu_does_not_offer_is_refused(slack: Slack) -> None:
    """A Keep value naming a year (not one of the menu's choices) changes nothing."""
    message = await warning(slack)
    await choose(
        slack,
        message,
        f"{sv.KEEP}:dev-eu",
        json.dumps({"s": "nightly", "r": "dev-eu", "d": "8760h"}),
        ALICE,
    )
    refused = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "not one of the Keep choices" in c.args.get("text", "")
    )
    assert refused.args["response_type"] == "ephemeral"
    assert slack.store.active_exceptions("nightly") == []


async def test_a_snooze_longer_than_a_week_is_refused(slack: Slack) -> None:
    await slack.command("schedule snooze nightly 52w")
    refused = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "at most" in c.args.get("text", "")
    )
    assert refused.args["text"] == (
        "A snooze moves one run by 7d at most: to leave a run out, skip it "
        "(`/stop schedule skip nightly`)."
    )


async def test_only_someone_who_may_stop_it_leaves_a_drifted_resource_running(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """Carol may not stop dev-eu: her "Leave it running" is refused, and the report keeps
    its Stop again button for the others."""
    harness = Slack(
        sims,
        tmp_path / "stopbot.db",
        schedules=[NIGHTLY],
        resources={"dev-eu": {"allowed_users": [BOB, ALICE]}},
    )
    try:
        travel(harness, fire_of(harness))
        await summary(harness)
        harness.sims.hub["qovery"].set_state(DEV_EU, "DEPLOYED")
        travel(harness, harness.time.now() + dt.timedelta(minutes=6))
        report = await harness.fake.wait_for_message(
            CHANNEL, lambda m: m.get("text", "").startswith("dev-eu is running again")
        )
        await harness.click_message(
            sv.DRIFT_LEAVE, json.dumps({"s": "nightly", "r": "dev-eu"}), report, "U0CAROL"
        )
        refused = await harness.fake.wait_for(
            RESPONSE_URL_METHOD, lambda c: "cannot decide" in c.args.get("text", "")
        )
        assert refused.args["text"].startswith("You cannot decide for dev-eu: ")
        assert [e for e in harness.store.audit_log() if e.action == "schedule.drift_accepted"] == []
    finally:
        harness.close()


MIX = {
    "name": "mix",
    "cron": "0 20 * * *",
    "timezone": "Europe/Paris",
    "select": {
        "resources": [
            "dev-eu",
            "etl",
            "qa-old",
            "db-3",
            "staging-us",
            "batch-2",
            "web-1",
            "spark",
            "analytics",
        ]
    },
    "channel": CHANNEL,
}
# What a run of MIX would do, as the sample estate stands: staging-us is locked in Qovery
# by Alice Martin, batch-2 in Nova; web-1 gets Alice's Stopbot lock, spark her Keep, and
# analytics the opt-out tag (see the `mixed` fixture).
MIX_PLAN = (
    "*Will stop (2):* dev-eu, etl\n"
    "*Already stopped (2):* qa-old (STOPPED), db-3 (SHUTOFF)\n"
    "*Skipped, locked (3):*\n"
    "• staging-us: locked in qovery by Alice Martin (load test until Friday); "
    "it expires in 3d.\n"
    "• batch-2: locked in nova (kernel upgrade in progress); only an admin can stop it.\n"
    "• web-1: locked by <@U0ALICE>: demo\n"
    "*Skipped, kept (1):*\n"
    "• spark: kept by <@U0ALICE> for 1h\n"
    "*Skipped, opted out (1):*\n"
    "• analytics: tagged stopbot/skip"
)
# One bulk read per provider read (okeanos has only spark, kept: not read); Nova's POST is
# its Keystone token, which reads need.
MIX_READS = {"qovery": {"GET": 1}, "nova": {"POST": 1, "GET": 1}, "feldera": {"GET": 1}}


def estate(sims: SimulatorServer) -> dict[str, Any]:
    """Every simulated resource as it stands (a stop call would change one)."""
    state = sims.hub.state()
    return {
        "clusters": state["qovery"]["clusters"],
        "servers": state["nova"]["servers"],
        "applications": state["okeanos"]["applications"],
        "pipelines": state["feldera"]["pipelines"],
    }


@pytest.fixture
async def mixed(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Slack]:
    """The MIX schedule, with Alice's Stopbot lock on web-1 and Keep on spark, analytics
    opted out; the simulators' request counts start from zero after that."""
    harness = Slack(
        sims,
        tmp_path / "stopbot.db",
        schedules=[MIX],
        resources={"analytics": {"tags": {"env": "dev", "stopbot/skip": "true"}}},
    )
    try:
        await harness.command("lock web-1 4h demo", user=ALICE)
        await harness.fake.wait_for(
            RESPONSE_URL_METHOD, lambda c: c.args.get("text", "").startswith(":lock: Locked")
        )
        harness.stopbot.engine.keep(
            "mix", "spark", harness.time.now() + dt.timedelta(hours=1), ALICE
        )
        sims.hub.faults.reset_counts()
        yield harness
    finally:
        harness.close()


async def test_dry_run_reads_and_sorts_every_resource(mixed: Slack) -> None:
    """A dry run reads statuses and locks, one bulk read per provider, and lists each
    resource under what a run would do: will stop, already stopped, skipped for a provider
    or a Stopbot lock with its owner and reason, kept, opted out. Nothing is stopped."""
    before = estate(mixed.sims)
    await mixed.command("dry-run mix")
    dry = await mixed.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text", "").startswith("Dry run")
    )
    assert dry.args["text"] == (
        "Dry run of `mix` now (statuses and locks read, nothing stopped):\n" + MIX_PLAN
    )
    assert dry.args["response_type"] == "ephemeral"
    assert [b["text"]["text"] for b in dry.args["blocks"]] == [dry.args["text"]]
    assert mixed.sims.hub.faults.counts() == MIX_READS
    assert estate(mixed.sims) == before
    assert mixed.store.recent_operations() == []


def sections(message: dict[str, Any]) -> str:
    """The text of a message's sections, one after the other."""
    return "\n".join(b["text"]["text"] for b in message["blocks"] if b["type"] == "section")


async def test_run_now_confirmation_shows_what_the_run_would_do(mixed: Slack) -> None:
    """ "Run now" asks with the dry run of the person who runs it (the lock rule judges
    their stops): Bob's skips Nova's locked batch-2, an admin's stops it. Nothing is
    stopped before the click."""
    before = estate(mixed.sims)
    bobs = await mixed.ask("schedule run mix")
    assert bobs.args["text"] == "Run mix now? Confirm or cancel."
    assert sections(bobs.args) == MIX_PLAN
    admins = await mixed.ask("schedule run mix", user=ADMIN)
    assert sections(admins.args) == (
        "*Will stop (3):* dev-eu, etl, batch-2\n"
        "*Already stopped (2):* qa-old (STOPPED), db-3 (SHUTOFF)\n"
        "*Skipped, locked (2):*\n"
        "• staging-us: locked in qovery by Alice Martin (load test until Friday); "
        "it expires in 3d.\n"
        "• web-1: locked by <@U0ALICE>: demo\n"
        "*Skipped, kept (1):*\n"
        "• spark: kept by <@U0ALICE> for 1h\n"
        "*Skipped, opted out (1):*\n"
        "• analytics: tagged stopbot/skip"
    )
    assert estate(mixed.sims) == before
    assert mixed.store.recent_operations() == []
    assert mixed.store.runs(schedule="mix") == []


async def test_dry_run_says_unknown_where_a_provider_cannot_be_read(mixed: Slack) -> None:
    """Qovery answers 503: its resources, and their locks, are unknown, with its error (not
    "will stop", not "no lock"); the other providers' are read as usual."""
    mixed.sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", count=None))
    await mixed.command("dry-run mix")
    dry = await mixed.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text", "").startswith("Dry run")
    )
    unknown = (
        "status and provider lock unknown: qovery: the provider is unavailable, try again "
        "later (HTTP 503): injected fault"
    )
    assert dry.args["text"] == (
        "Dry run of `mix` now (statuses and locks read, nothing stopped):\n"
        "*Will stop (1):* etl\n"
        "*Already stopped (1):* db-3 (SHUTOFF)\n"
        "*Skipped, locked (2):*\n"
        "• batch-2: locked in nova (kernel upgrade in progress); only an admin can stop it.\n"
        "• web-1: locked by <@U0ALICE>: demo\n"
        "*Skipped, kept (1):*\n"
        "• spark: kept by <@U0ALICE> for 1h\n"
        "*Skipped, opted out (1):*\n"
        "• analytics: tagged stopbot/skip\n"
        "*Unknown, could not be read (3):*\n"
        f"• dev-eu: {unknown}\n"
        f"• qa-old: {unknown}\n"
        f"• staging-us: {unknown}"
    )
    assert mixed.sims.hub.faults.counts()["qovery"].get("POST", 0) == 0
