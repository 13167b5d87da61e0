"""Wake through Slack end to end (signed requests, the fake Web API, the simulators, one
movable clock): a stopped resource of each provider woken to running, a wake refused for
someone else's lock, and wake leases warned, extended and ended by a stop of their own,
also across a restart of the bot."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from bot.models import Action, LeaseState, OpState
from bot.slack import views
from bot.slack.fake_api import RESPONSE_URL_METHOD, Call
from bot.slack.leases import LEASE_END, LEASE_EXTEND
from tests.slack_harness import ALICE, BOB, CHANNEL, Slack

STOPPED = {"qovery": "qa-old", "nova": "db-3", "okeanos": "flink", "feldera": "archive"}
UP = {"qovery": "DEPLOYED", "nova": "ACTIVE", "okeanos": "started", "feldera": "Running"}


async def dm_to(slack: Slack, user: str, contains: str) -> dict[str, Any]:
    """The DM Stopbot sent ``user`` whose text contains ``contains``."""
    call = await slack.fake.wait_for(
        "chat.postMessage",
        lambda c: c.args.get("channel") == user and contains in c.args.get("text", ""),
    )
    assert isinstance(call.response, dict)
    channel = call.response["channel"]
    return next(m for m in slack.fake.messages(channel) if m["ts"] == call.response["ts"]) | {
        "channel": channel
    }


async def running(slack: Slack, resource: str) -> dict[str, Any]:
    """The progress message of ``resource``'s wake once it is running."""
    return await slack.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith(f"{resource}: :white_check_mark: Running")
    )


async def wake(slack: Slack, text: str, user: str = BOB) -> str:
    """``/stop wake …`` confirmed; the wake's operation id."""
    reply = await slack.ask(f"wake {text}", user)
    assert reply.args["text"].startswith("Wake "), reply.args["text"]
    op_id, ts = slack.confirmation(user)
    assert (await slack.click(views.CONFIRM, op_id, ts, user)).status_code == 200
    return op_id


async def until(condition: Any) -> None:
    """Wait (real time, a little at a time, 10 s at most) for the bot's background duties
    to get there."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the bot's duties did not get there within 10 s")


@pytest.mark.parametrize("provider", sorted(STOPPED))
async def test_wake_to_running(slack: Slack, provider: str) -> None:
    """`/stop wake <stopped resource>`: a confirmation, then live progress to Running."""
    resource = STOPPED[provider]
    reply = await slack.ask(f"wake {resource} demo")
    assert reply.args["text"] == f"Wake {resource} ({provider})? Confirm or cancel."
    op_id, ts = slack.confirmation()
    await slack.click(views.CONFIRM, op_id, ts)
    final = await running(slack, resource)
    assert "Wake of" in str(final["blocks"])
    [ephemeral] = slack.fake.ephemeral_messages(CHANNEL, BOB)
    assert ephemeral["text"] == f"Confirmed: waking {resource}. Progress follows."
    op = slack.store.get_operation(op_id)
    assert op is not None
    assert (op.action, op.state, op.provider_state) == (Action.START, OpState.STARTED, UP[provider])
    actions = [e.action for e in slack.store.audit_log(resource=resource)]
    assert "wake.requested" in actions and "wake.started" in actions
    again = await slack.ask(f"wake {resource}")
    assert again.args["text"] == (
        f":white_check_mark: Already running: {resource} is already running "
        f"({UP[provider]}): nothing to do."
    )


async def test_wake_refused_for_a_lock_held_by_someone_else(slack: Slack) -> None:
    """Alice's Stopbot lock keeps Bob from waking the resource, as from stopping it."""
    await slack.ask("lock db-3 4h migration", ALICE)
    reply = await slack.ask("wake db-3")
    assert "Refused" in reply.args["text"] and "locked by <@U0ALICE>" in reply.args["text"]
    assert slack.sims.hub["nova"].describe(slack.config.resource("db-3").id).status == "SHUTOFF"
    [op] = slack.store.recent_operations(resource="db-3")
    assert (op.action, op.state) == (Action.START, OpState.REFUSED)


async def test_wake_grammar_errors_are_usage(slack: Slack) -> None:
    """A wake without a resource, or with a bad duration, is answered with the grammar."""
    response = await slack.command("wake")
    assert "Usage: `/stop wake &lt;resource&gt; [for &lt;duration&gt;]" in response.json()["text"]
    response = await slack.command("wake qa-old for soon")
    assert "'soon' is not a duration" in response.json()["text"]
    assert slack.store.recent_operations() == []


async def test_lease_warned_extended_and_ended_by_a_stop(slack: Slack) -> None:
    """`for 2h`: a lease; its owner is warned before the end (once), Extend 1h moves the
    end, and at the end the bot stops the resource with a stop of its own, audited as
    the lease's end; `/stop leases` lists it meanwhile."""
    woke = await wake(slack, "qa-old for 2h demo")
    await running(slack, "qa-old")
    [lease] = slack.store.leases()
    assert (lease.id, lease.owner, lease.state) == (woke, BOB, LeaseState.ACTIVE)
    start = lease.ends_at - dt.timedelta(hours=2)
    listed = await slack.ask("leases")
    assert "*qa-old* · woken by <@U0BOB>" in listed.args["text"]

    slack.sims.hub.clock.advance((lease.ends_at - slack.time.now()).total_seconds() - 10 * 60)
    warning = await dm_to(slack, BOB, "Your wake lease on qa-old ends")
    buttons = next(b for b in warning["blocks"] if b["type"] == "actions")["elements"]
    assert [b["text"]["text"] for b in buttons] == [
        "Extend 1h",
        "Keep until tomorrow's run",
        "Stop now",
    ]
    extend = next(b for b in buttons if b["action_id"] == LEASE_EXTEND)
    await slack.click_message(LEASE_EXTEND, extend["value"], warning, BOB, warning["channel"])
    await slack.fake.wait_for(RESPONSE_URL_METHOD, lambda c: "Extended" in c.args.get("text", ""))
    extended = slack.store.get_lease(lease.id)
    assert extended is not None and extended.ends_at == start + dt.timedelta(hours=3)

    assert slack.store.leases([LeaseState.ENDED]) == []
    slack.sims.hub.clock.advance((extended.ends_at - slack.time.now()).total_seconds() - 5 * 60)
    await dm_to(slack, BOB, "ends <!date^" + str(int(extended.ends_at.timestamp())))
    slack.sims.hub.clock.advance(5 * 60 + 1)
    await until(lambda: slack.store.leases([LeaseState.ENDED]) != [])
    [ended] = slack.store.leases([LeaseState.ENDED])
    stop = slack.store.get_operation(str(ended.end_operation_id))
    assert stop is not None and (stop.action, stop.source) == (Action.STOP, "lease")
    assert stop.requested_by == "lease:U0BOB"
    await until(lambda: (slack.store.get_operation(stop.id) or stop).state.final)
    assert (slack.store.get_operation(stop.id) or stop).state == OpState.STOPPED
    warnings = [c for c in slack.fake.calls("chat.postMessage") if "wake lease" in c.args["text"]]
    assert len(warnings) == 2  # once before each end
    actions = [e.action for e in slack.store.audit_log(resource="qa-old")]
    for expected in (
        "lease.opened",
        "lease.warned",
        "lease.extended",
        "lease.ending",
        "lease.ended",
    ):
        assert expected in actions


async def test_stop_now_from_the_warning_and_only_the_owner_or_an_admin(slack: Slack) -> None:
    """Stop now ends the lease by its stop; someone else's click changes nothing."""
    await wake(slack, "archive for 30m")
    await running(slack, "archive")
    [lease] = slack.store.leases()
    slack.sims.hub.clock.advance((lease.ends_at - slack.time.now()).total_seconds() - 60)
    warning = await dm_to(slack, BOB, "Your wake lease on archive ends")
    await slack.click_message(LEASE_END, lease.id, warning, ALICE, warning["channel"])
    refused: Call = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "can change this lease" in c.args.get("text", "")
    )
    assert refused.args["text"] == "Only <@U0BOB> (or an admin) can change this lease."
    await slack.click_message(LEASE_END, lease.id, warning, BOB, warning["channel"])
    await until(lambda: slack.store.leases([LeaseState.ENDED]) != [])
    [ended] = slack.store.leases([LeaseState.ENDED])
    assert ended.ended_by == BOB
    stop = slack.store.get_operation(str(ended.end_operation_id))
    assert stop is not None
    await until(lambda: (slack.store.get_operation(stop.id) or stop).state.final)


async def test_a_restart_mid_lease_still_ends_it_on_time_once(slack: Slack) -> None:
    """The bot is stopped in the middle of a lease and started again after its end: the
    new process ends it at once, with one stop; a second tick makes no other."""
    await wake(slack, "db-3 for 1h")
    await running(slack, "db-3")
    [lease] = slack.store.leases()
    slack.stop()
    slack.sims.hub.clock.advance((lease.ends_at - slack.time.now()).total_seconds() + 30)
    slack.start()
    await until(lambda: slack.store.leases([LeaseState.ENDED]) != [])
    await slack.stopbot.leases.tick()
    stops = [
        op
        for op in slack.store.recent_operations(resource="db-3", limit=10)
        if op.action == Action.STOP
    ]
    assert len(stops) == 1 and stops[0].source == "lease"
    await until(lambda: (slack.store.get_operation(stops[0].id) or stops[0]).state.final)
    assert (slack.store.get_operation(stops[0].id) or stops[0]).state == OpState.STOPPED


async def test_admins_end_anyone_s_lease_from_the_command(slack: Slack) -> None:
    """`/stop leases end <resource>`: not for someone else's lease, but for an admin."""
    from tests.slack_harness import ADMIN

    await wake(slack, "flink for 2h")
    await running(slack, "flink")
    reply = await slack.ask("leases end flink", ALICE)
    assert reply.args["text"] == "Only <@U0BOB> (or an admin) can change this lease."
    reply = await slack.ask("leases end flink", ADMIN)
    assert reply.args["text"] == ":stopwatch: The lease on flink ended: it is being stopped."
    [ended] = slack.store.leases([LeaseState.ENDED])
    assert ended.ended_by == ADMIN


async def test_a_protected_wake_waits_for_its_approver(sims: Any, tmp_path: Any) -> None:
    """The same approval rules as a stop: Carol approves Bob's wake of a protected
    resource, and it goes on to running; the request says it is a wake."""
    from tests.slack_harness import CAROL

    guarded = Slack(
        sims,
        tmp_path / "stopbot.db",
        resources={"qa-old": {"approval": {"required": True, "approvers": [CAROL]}}},
    )
    try:
        op_id = await wake(guarded, "qa-old")
        await guarded.fake.wait_for(
            "chat.postMessage", lambda c: "Approval needed" in c.args["text"]
        )
        [request] = guarded.messages_with_action(CHANNEL, views.APPROVE)
        assert request["text"] == "Approval needed: <@U0BOB> wants to wake qa-old."
        assert guarded.store.get_operation(op_id).state == OpState.AWAITING_APPROVAL  # type: ignore[union-attr]
        await guarded.click_message(views.APPROVE, op_id, request, CAROL)
        await running(guarded, "qa-old")
        await dm_to(guarded, BOB, "Your request to wake qa-old was approved by <@U0CAROL>.")
    finally:
        guarded.close()


async def test_a_leased_resource_is_kept_out_of_scheduled_stops(sims: Any, tmp_path: Any) -> None:
    """While its lease runs, a scheduled run leaves the woken resource alone (skipped:
    leased, with whose and for how long) and stops the rest."""
    from bot.schedules import Outcome
    from bot.slack import schedule_views as sv
    from tests.slack_harness import ADMIN

    nightly = {
        "name": "nightly",
        "cron": "0 20 * * 1-5",
        "select": {"resources": ["qa-old", "dev-eu"]},
        "channel": CHANNEL,
    }
    harness = Slack(sims, tmp_path / "stopbot.db", schedules=[nightly])
    try:
        await wake(harness, "qa-old for 2h")
        await running(harness, "qa-old")
        await harness.ask("schedule run nightly", ADMIN)
        ephemeral = harness.fake.ephemeral_messages(CHANNEL, ADMIN)[-1]
        await harness.click(sv.RUN_CONFIRM, "nightly", ephemeral["ts"], ADMIN)
        done = await harness.fake.wait_for_message(
            CHANNEL, lambda m: m.get("text", "").startswith("nightly run done")
        )
        assert done["text"] == "nightly run done: 1 skipped: leased, 1 stopped"
        [run] = harness.store.runs(schedule="nightly")
        items = {i.resource: i for i in harness.store.run_items(run.id)}
        assert items["dev-eu"].outcome == Outcome.STOPPED
        assert items["qa-old"].outcome == Outcome.LEASED
        assert str(items["qa-old"].detail).startswith("woken by ")
        qa_old = harness.sims.hub["qovery"].describe(harness.config.resource("qa-old").id)
        assert qa_old is not None and qa_old.status == "DEPLOYED"
    finally:
        harness.close()


async def test_keep_until_tomorrow_s_run_leaves_the_stop_to_the_schedule(
    sims: Any, tmp_path: Any
) -> None:
    """Keep until tomorrow's run: the lease ends at the next scheduled stop of the
    resource, which stops it (the run does not skip it then); the lease makes no stop of
    its own."""
    from bot.slack.leases import LEASE_KEEP

    nightly = {
        "name": "nightly",
        "cron": "0 20 * * *",
        "select": {"resources": ["qa-old"]},
        "channel": CHANNEL,
        "warn_before": "5m",
    }
    harness = Slack(sims, tmp_path / "stopbot.db", schedules=[nightly])
    try:
        now = harness.time.now()
        harness.sims.hub.clock.advance(
            (now.replace(hour=12, minute=0, second=0, microsecond=0) - now).total_seconds()
            + (86400 if now.hour >= 12 else 0)
        )
        noon = harness.time.now()
        await wake(harness, "qa-old for 30m")
        await running(harness, "qa-old")
        [lease] = harness.store.leases()
        harness.sims.hub.clock.advance((lease.ends_at - harness.time.now()).total_seconds() - 60)
        warning = await dm_to(harness, BOB, "Your wake lease on qa-old ends")
        await harness.click_message(LEASE_KEEP, lease.id, warning, BOB, warning["channel"])
        await harness.fake.wait_for(
            RESPONSE_URL_METHOD, lambda c: "Kept: qa-old stays up" in c.args.get("text", "")
        )
        kept = harness.store.get_lease(lease.id)
        fire = noon.replace(hour=20)
        assert kept is not None and (kept.state, kept.ends_at) == (LeaseState.UNTIL_RUN, fire)
        harness.sims.hub.clock.advance((fire - harness.time.now()).total_seconds() + 1)
        done = await harness.fake.wait_for_message(
            CHANNEL, lambda m: m.get("text", "").startswith("nightly run done")
        )
        assert done["text"] == "nightly run done: 1 stopped"
        await until(lambda: harness.store.leases([LeaseState.ENDED]) != [])
        [ended] = harness.store.leases([LeaseState.ENDED])
        assert (ended.end_reason, ended.end_operation_id) == ("kept until the scheduled run", None)
        stops = [
            op
            for op in harness.store.recent_operations(resource="qa-old", limit=10)
            if op.action == Action.STOP
        ]
        assert [op.source for op in stops] == ["schedule"]
    finally:
        harness.close()


async def test_a_lease_on_a_resource_running_already_starts_now(slack: Slack) -> None:
    """`wake <running> for 1h`: nothing to start, but the lease runs from now, and says so."""
    reply = await slack.ask("wake dev-eu for 1h")
    assert reply.args["text"] == (
        ":white_check_mark: Already running: dev-eu is already running (DEPLOYED): nothing to do."
    )
    assert "your lease of 1h runs from now" in str(reply.args["blocks"])
    [lease] = slack.store.leases()
    assert (lease.resource, lease.ends_at) == ("dev-eu", slack.time.now() + dt.timedelta(hours=1))


async def test_a_lease_longer_than_the_maximum_is_refused(slack: Slack) -> None:
    """`for 30d` is past leases.max_duration (7d): refused before anything is sent."""
    reply = await slack.ask("wake qa-old for 30d")
    assert reply.args["text"] == (
        ":no_entry: Refused: a lease of 30d is longer than the maximum of 7d: wake it for "
        "less, and extend it later"
    )
    assert slack.store.leases() == []
