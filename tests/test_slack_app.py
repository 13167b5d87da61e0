"""The Slack app end to end: signed requests to its real HTTP endpoint, a fake Slack Web API
recording every call, and the provider simulators behind it. One clock; no sleeps."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import httpx
import pytest

from bot.models import OpState
from bot.processes import Registration
from bot.slack import views
from bot.slack.fake_api import RESPONSE_URL_METHOD, slash_command_body
from bot.slack.fake_api.blocks import check_blocks
from bot.slack.inbox import PAYLOAD
from bot.store import open_store
from providers.simulators.common import Fault
from providers.simulators.samples import DEFAULT_SEED
from providers.simulators.server import SimulatorServer
from tests.slack_harness import ALICE, BOB, CHANNEL, Slack, block_texts

DEV_EU = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01"


async def test_help_is_answered_in_the_ack(slack: Slack) -> None:
    """`/stop help` is answered at once, in the HTTP response, ephemeral."""
    response = await slack.command("help")
    assert response.status_code == 200
    assert response.json()["response_type"] == "ephemeral"
    assert response.json()["text"].startswith("*Stopbot* stops cloud resources safely.")


async def test_the_ack_does_not_wait_for_the_provider(slack: Slack) -> None:
    """`/stop dev-eu` is acked (an empty 200) while Qovery is still answering the status
    read; the confirmation follows through the response URL once it has."""
    slack.sims.hub.faults.add(Fault(api="qovery", kind="latency", seconds=2, count=None))
    response = await slack.command("dev-eu")
    assert (response.status_code, response.text) == (200, "")
    assert slack.fake.calls(RESPONSE_URL_METHOD) == []
    reply = await slack.reply()
    assert reply.args["text"] == "Stop dev-eu (qovery)? Confirm or cancel."


async def test_slack_url_verification_and_ssl_check_are_answered(slack: Slack) -> None:
    """Slack's two handshakes: the Events API URL check gets its challenge back, and the
    slash command SSL check an empty 200; neither records anything."""
    challenge = json.dumps({"token": "x", "challenge": "c-123", "type": "url_verification"})
    response = await slack.post(challenge.encode(), headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (200, {"challenge": "c-123"})
    response = await slack.post(b"ssl_check=1&token=x")
    assert (response.status_code, response.text) == (200, "")
    assert slack.store.recent_operations() == []


async def test_malformed_command_says_what_was_expected(slack: Slack) -> None:
    """A malformed command gets the expected grammar, and nothing is recorded."""
    response = await slack.command("status")
    assert response.json() == {
        "response_type": "ephemeral",
        "text": "Usage: `/stop status &lt;resource&gt;` (one resource name).",
    }
    assert slack.store.recent_operations() == []


async def test_unknown_resource_suggests_names(slack: Slack) -> None:
    """An unknown resource is answered with the closest names, and nothing is stopped."""
    assert (await slack.command("dev-ue")).status_code == 200
    reply = await slack.reply()
    assert reply.args["text"] == "Unknown resource 'dev-ue'. Did you mean dev-eu?"
    assert reply.args["response_type"] == "ephemeral"


@pytest.mark.parametrize(
    ("resource", "provider_states", "progress"),
    [
        # Qovery answers the stop with its status, so the first update already names it.
        ("dev-eu", ["STOP_QUEUED", "STOPPING", "STOPPED"], ["STOP_QUEUED", "STOPPING"]),
        ("web-1", ["ACTIVE (powering-off)", "SHUTOFF"], ["accepted", "ACTIVE (powering-off)"]),
        ("spark", ["started", "stopped"], ["accepted", "started"]),
        ("etl", ["Stopping", "Stopped"], ["accepted", "Stopping"]),
    ],
)
async def test_stop_confirmed_and_followed_to_stopped(
    slack: Slack, resource: str, provider_states: list[str], progress: list[str]
) -> None:
    """Confirm posts a public message that is updated through every provider state to Stopped."""
    force = " --force" if resource == "etl" else ""
    await slack.command(f"{resource}{force} nightly savings")
    confirmation = (await slack.reply()).args
    assert confirmation["response_type"] == "ephemeral"
    assert (
        confirmation["text"]
        == f"Stop {resource} ({slack.config.resource(resource).provider})? Confirm or cancel."
    )
    op_id, ts = slack.confirmation()
    assert (await slack.click(views.CONFIRM, op_id, ts)).status_code == 200

    final = await slack.final_message()
    assert final["text"].startswith(f"{resource}: :white_check_mark: Stopped in ")
    updates = [c.args["text"] for c in slack.fake.calls("chat.update")]
    assert updates == [*(f"Stopping {resource}: {p}" for p in progress), final["text"]]
    timeline = block_texts(final)
    for state in provider_states:
        assert f"`{state}`" in timeline
    # The ephemeral confirmation was replaced: no live button is left behind.
    [ephemeral] = slack.fake.ephemeral_messages(CHANNEL, BOB)
    assert ephemeral["text"] == f"Confirmed: stopping {resource}. Progress follows."
    assert "actions" not in block_texts(ephemeral)
    op = slack.store.get_operation(op_id)
    assert op is not None and op.state == OpState.STOPPED


async def test_double_click_acts_once(slack: Slack) -> None:
    """A second click on Confirm gets an ephemeral explanation and sends no second stop."""
    await slack.command("dev-eu")
    await slack.reply()
    op_id, ts = slack.confirmation()
    await slack.click(views.CONFIRM, op_id, ts)
    await slack.click(views.CONFIRM, op_id, ts)
    await slack.final_message()
    explanation = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "already handled" in c.args.get("text", "")
    )
    assert explanation.args["response_type"] == "ephemeral"
    assert explanation.args["replace_original"] is False
    accepted = [e for e in slack.store.audit_log() if e.action == "stop.accepted"]
    assert len(accepted) == 1
    assert len(slack.fake.calls("chat.postMessage")) == 1


async def test_click_by_another_user_changes_nothing(slack: Slack) -> None:
    """Only the requester's click confirms; anyone else is told so, ephemerally."""
    await slack.command("dev-eu")
    await slack.reply()
    op_id, ts = slack.confirmation()
    await slack.click(views.CONFIRM, op_id, ts, user=ALICE)
    reply = await slack.reply(2)
    assert reply.args["text"] == "Only <@U0BOB> can confirm this stop of dev-eu."
    op = slack.store.get_operation(op_id)
    assert op is not None and op.state == OpState.AWAITING_CONFIRMATION


async def test_expired_confirmation_does_not_stop(slack: Slack) -> None:
    """A click after ten minutes is told the confirmation expired; the cluster keeps running."""
    await slack.command("dev-eu")
    await slack.reply()
    op_id, ts = slack.confirmation()
    slack.sims.hub.clock.advance(11 * 60)
    await slack.click(views.CONFIRM, op_id, ts)
    reply = await slack.reply(2)
    assert reply.args["text"] == "This confirmation expired. Run `/stop dev-eu` again."
    assert slack.fake.calls("chat.postMessage") == []
    op = slack.store.get_operation(op_id)
    assert op is not None and op.state == OpState.CANCELLED


async def test_cancel_replaces_the_confirmation(slack: Slack) -> None:
    """Cancel replaces the ephemeral confirmation and nothing is stopped."""
    await slack.command("dev-eu")
    await slack.reply()
    op_id, ts = slack.confirmation()
    await slack.click(views.CANCEL, op_id, ts)
    reply = await slack.reply(2)
    assert reply.args == {"text": "Cancelled: dev-eu was not stopped.", "replace_original": True}
    assert slack.fake.calls("chat.postMessage") == []


async def test_locked_resource_is_refused_with_owner(slack: Slack) -> None:
    """A cluster locked in Qovery by someone else is refused, naming the owner and reason."""
    await slack.command("staging-us")
    reply = await slack.reply()
    assert reply.args["text"] == (
        ":no_entry: Refused: staging-us is locked in qovery by Alice Martin "
        "(load test until Friday); it expires in 3d."
    )
    actions = [b for b in reply.args["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for a in actions for e in a["elements"]] == ["lock_ask_release"]


async def test_provider_error_is_shown_in_the_channel(slack: Slack) -> None:
    """A provider 500 on the stop ends the public message as Failed with the provider's words."""
    slack.sims.hub.faults.add(
        Fault(
            api="qovery",
            kind="status",
            method="POST",
            status=500,
            body={"message": "maintenance window"},
        )
    )
    await slack.command("dev-eu")
    await slack.reply()
    op_id, ts = slack.confirmation()
    await slack.click(views.CONFIRM, op_id, ts)
    final = await slack.final_message()
    assert final["text"] == (
        "dev-eu: :x: Failed: qovery: the provider failed on its side (internal error) (HTTP 500): "
        "maintenance window"
    )


async def test_not_in_channel_falls_back_to_response_url(slack: Slack) -> None:
    """Where the bot may not post, progress replaces the user's message and says how to invite it."""
    await slack.command("dev-eu", channel="C0OUT")
    await slack.reply()
    op_id, ts = slack.confirmation(channel="C0OUT")
    await slack.click(views.CONFIRM, op_id, ts, channel="C0OUT")
    await slack.fake.wait_for(RESPONSE_URL_METHOD, lambda c: "Stopped" in c.args.get("text", ""))
    [shown] = slack.fake.ephemeral_messages("C0OUT", BOB)
    assert shown["text"].startswith("dev-eu: :white_check_mark: Stopped in ")
    assert "Invite it with `/invite @Stopbot`" in block_texts(shown)
    assert slack.fake.messages("C0OUT") == []


async def test_a_refused_progress_post_does_not_keep_the_stop_back(slack: Slack) -> None:
    """Slack refusing the progress message for a reason the bot does not expect (a workspace
    policy): the confirmed stop still goes ahead, its progress shown to the user instead."""
    await slack.command("dev-eu")
    await slack.reply()
    op_id, ts = slack.confirmation()
    slack.fake.fail_next("chat.postMessage", "restricted_action")
    await slack.click(views.CONFIRM, op_id, ts)
    await slack.fake.wait_for(RESPONSE_URL_METHOD, lambda c: "Stopped" in c.args.get("text", ""))
    op = slack.store.get_operation(op_id)
    assert op is not None and op.state == OpState.STOPPED
    assert slack.fake.messages(CHANNEL) == []


async def test_final_state_past_the_response_url_s_life_goes_to_a_dm(slack: Slack) -> None:
    """Progress shown through a response URL: when the final state comes after Slack stopped
    taking that URL (thirty minutes, here across a restart), it reaches the requester in a
    DM instead of nowhere."""
    await slack.command("dev-eu", channel="C0OUT")
    await slack.reply()
    op_id, ts = slack.confirmation(channel="C0OUT")
    slack.service.sleep = _never_returns  # freeze following after the first poll
    await slack.click(views.CONFIRM, op_id, ts, channel="C0OUT")
    await slack.fake.wait_for(RESPONSE_URL_METHOD, lambda c: "Stopping" in c.args.get("text", ""))
    slack.stop()
    slack.fake.clock = lambda: time.time() + 31 * 60
    slack.start()  # resumes following, and the URL has expired
    dm = await slack.fake.wait_for(
        "chat.postMessage",
        lambda c: c.args.get("channel") == BOB and "Stopped" in c.args.get("text", ""),
    )
    assert dm.args["text"].startswith("dev-eu: :white_check_mark: Stopped in ")
    refused = [c for c in slack.fake.calls(RESPONSE_URL_METHOD) if c.status == 404]
    # The final state: Slack refused it there (nothing else was owed since the restart).
    assert [c.response for c in refused] == ["expired_url"]


async def test_status_command(slack: Slack) -> None:
    """`/stop status` shows the provider's state and lock."""
    await slack.command("status staging-us")
    reply = await slack.reply()
    assert reply.args["text"] == "staging-us: DEPLOYED (running)"
    assert "locked by Alice Martin: load test until Friday" in json.dumps(reply.args["blocks"])


def field(reply: dict[str, Any], name: str) -> str:
    """The value of a message's field ``name`` (a ``*name*\\nvalue`` field)."""
    return next(
        f["text"].removeprefix(f"*{name}*\n")
        for b in reply["blocks"]
        for f in b.get("fields", [])
        if f["text"].startswith(f"*{name}*\n")
    )


async def test_an_unreadable_provider_lock_is_unknown_not_none(slack: Slack) -> None:
    """Qovery answers 503: the confirmation and `/stop status` say its lock is unknown, with
    Qovery's error, where they used to say "none"."""
    slack.sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", count=None))
    unknown = (
        "unknown: qovery: the provider is unavailable, try again later (HTTP 503): injected fault"
    )
    confirmation = await slack.ask("dev-eu")
    assert confirmation.args["text"] == "Stop dev-eu (qovery)? Confirm or cancel."
    assert field(confirmation.args, "Provider lock") == unknown
    status = await slack.ask("status dev-eu")
    assert field(status.args, "Provider lock") == unknown
    assert field(status.args, "Status") == unknown


async def test_list_command_filters_by_provider_and_tag(slack: Slack) -> None:
    """`/stop list nova` lists the Nova servers with their live state."""
    await slack.command("list nova")
    reply = await slack.reply()
    assert reply.args["text"] == "3 resources on nova"
    listing = json.dumps(reply.args["blocks"])
    for name in ("web-1", "batch-2", "db-3"):
        assert f"*{name}* \\u00b7 nova" in listing
    await slack.command("list tag:env=prod")
    assert (await slack.reply(2)).args["text"] == "No resources match with tag env=prod."


async def test_history_command(slack: Slack) -> None:
    """`/stop history <resource>` lists the latest operations on it."""
    await slack.command("qa-old")
    await slack.reply()
    await slack.command("history qa-old")
    reply = await slack.reply(2)
    assert reply.args["text"] == "Latest stops for qa-old"
    assert "stopped already" in json.dumps(reply.args["blocks"])


async def test_forged_signature_is_refused_with_no_side_effect(slack: Slack) -> None:
    """A request signed with the wrong secret, or too old, gets 401 and changes nothing."""
    forged = await slack.command("dev-eu", secret="not-the-secret")
    stale = await slack.command("dev-eu", timestamp=int(time.time()) - 10 * 60)
    assert (forged.status_code, stale.status_code) == (401, 401)
    assert slack.store.recent_operations() == []
    assert slack.fake.calls(RESPONSE_URL_METHOD) == []


async def test_slack_retry_does_not_run_a_command_twice(slack: Slack) -> None:
    """A retried delivery of the same command (same trigger_id) records one operation, and
    shows its confirmation again as the first showed it: status and locks read anew, not
    left out (a provider lock shown as "none")."""
    slack.sims.hub["qovery"].set_lock(
        DEV_EU, owner="Bob Stone", reason="load test", ttl=dt.timedelta(days=1)
    )
    await slack.command("dev-eu", trigger_id="trigger-1")
    first = await slack.reply()
    await slack.command(
        "dev-eu",
        trigger_id="trigger-1",
        headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    again = await slack.reply(2)
    assert len(slack.store.recent_operations()) == 1
    assert again.args["blocks"] == first.args["blocks"]
    assert "by Bob Stone" in json.dumps(first.args["blocks"])


async def test_slack_retry_after_the_confirm_says_where_the_stop_is(slack: Slack) -> None:
    """A command redelivered once its stop is under way shows that, not a raw state."""
    await slack.command("dev-eu", trigger_id="trigger-1")
    await slack.reply()
    op_id, ts = slack.confirmation()
    slack.service.sleep = _never_returns  # the stop stays in progress
    await slack.click(views.CONFIRM, op_id, ts)
    await slack.fake.wait_for("chat.update")
    await slack.command("dev-eu", trigger_id="trigger-1")
    again = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text", "").startswith(":arrows")
    )
    assert again.args["text"] == ":arrows_counterclockwise: Confirmed, stopping"
    assert len(slack.store.recent_operations()) == 1


async def test_restart_resumes_progress_updates(slack: Slack) -> None:
    """A stop in flight when the bot stops is followed to the end by the next process."""
    await slack.command("dev-eu")
    await slack.reply()
    op_id, ts = slack.confirmation()
    slack.service.sleep = _never_returns  # freeze following after the first poll
    await slack.click(views.CONFIRM, op_id, ts)
    await slack.fake.wait_for("chat.update")
    slack.stop()
    store = open_store(slack.db)
    op = store.get_operation(op_id)
    store.close()
    assert op is not None and op.state == OpState.IN_PROGRESS and op.message_ts

    slack.start()  # a new process: resumes from the store
    final = await slack.final_message()
    assert final["ts"] == op.message_ts
    assert final["text"].startswith("dev-eu: :white_check_mark: Stopped")
    accepted = [e for e in slack.store.audit_log() if e.action == "stop.accepted"]
    assert len(accepted) == 1


async def test_a_progress_post_whose_answer_was_lost_is_found_not_posted_twice(
    slack: Slack,
) -> None:
    """Slack took the progress message but its answer never reached the bot (a process
    killed during the post, a connection cut): the next delivery finds the message by its
    metadata in the channel's history and updates it; no second message is posted."""
    await slack.command("dev-eu")
    await slack.reply()
    op_id, ts = slack.confirmation()
    post = slack.bot.client.chat_postMessage
    lost: list[str] = []

    async def answer_lost(**kwargs: Any) -> Any:
        posted = await post(**kwargs)
        if not lost:
            lost.append(str(posted["ts"]))
            raise aiohttp.ClientConnectionError("connection reset before the answer")
        return posted

    slack.bot.client.chat_postMessage = answer_lost  # type: ignore[method-assign]
    await slack.click(views.CONFIRM, op_id, ts)
    slack.time.sims.hub.clock.advance(2)  # past the outbox's back-off
    final = await slack.final_message()
    assert final["ts"] == lost[0]
    assert [m["ts"] for m in slack.fake.messages(CHANNEL)] == lost
    assert len(slack.fake.calls("chat.postMessage")) == 1
    [history] = slack.fake.calls("conversations.history")
    assert history.args["include_all_metadata"] in {True, "true", "1"}


async def test_a_stop_whose_preparation_a_restart_cut_short_is_told_to_its_asker_only(
    slack: Slack,
) -> None:
    """A /stop whose process died while preparing it (before any Confirm): the next process
    ends it, and says so to the person who asked; nothing is posted in the channel, which
    never saw the stop asked."""
    dead = Registration()
    dead.abandon()
    slack.store.register_process(dead)
    url = slack.fake.new_response_url(channel=CHANNEL, user=BOB)
    resource = slack.config.resource("dev-eu")
    op, _ = slack.store.create_operation(
        resource="dev-eu",
        provider=resource.provider,
        resource_id=resource.id,
        requested_by=BOB,
        source="slack",
        channel=CHANNEL,
        response_url=url,
        owner=dead.id,
        notify=True,
    )
    slack.stop()
    slack.start()  # its sweep ends what the dead process was preparing
    told = await slack.fake.wait_for(
        "chat.postMessage", lambda c: "interrupted" in c.args.get("text", "")
    )
    # The command's response_url has no message to replace (the preview never came):
    # the person is told directly.
    assert (told.args["channel"], told.args["text"]) == (
        BOB,
        "dev-eu: :x: Failed: interrupted by a restart while it was being prepared: nothing "
        "was stopped",
    )
    assert slack.store.get_operation(op.id).state == OpState.FAILED  # type: ignore[union-attr]
    assert slack.fake.messages(CHANNEL) == []
    assert len(slack.fake.calls("chat.postMessage")) == 1


async def _never_returns(seconds: float) -> None:
    await asyncio.Event().wait()


def test_timestamps_render_in_the_viewer_time_zone() -> None:
    """Times in messages use Slack's date token, so each viewer sees their own time zone."""
    at = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC)
    assert views.when(at) == (
        "<!date^1795636800^{date_short_pretty} at {time_secs}|2026-11-25 20:00 UTC>"
    )


async def test_rate_limited_update_is_retried_after_retry_after(slack: Slack) -> None:
    """A 429 from chat.update is retried after Retry-After; the final state still arrives."""
    slack.fake.fail_next("chat.update", "ratelimited", retry_after=0)
    await slack.command("dev-eu")
    await slack.reply()
    op_id, ts = slack.confirmation()
    await slack.click(views.CONFIRM, op_id, ts)
    final = await slack.final_message()
    assert final["text"].startswith("dev-eu: :white_check_mark: Stopped")
    statuses = [c.status for c in slack.fake.calls("chat.update")]
    assert statuses[0] == 429
    assert statuses[1:] == [200] * (len(statuses) - 1)


async def test_user_group_member_may_stop_and_others_are_refused(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """allowed_groups is resolved through usergroups.users.list; non-members are refused, audited."""
    harness = Slack(sims, tmp_path / "db", allowed_groups=["S0PLATFORM"])
    try:
        harness.fake.add_usergroup("S0PLATFORM", [ALICE])
        await harness.command("dev-eu", user=BOB)
        refusal = await harness.reply()
        assert refusal.args["text"] == (
            ":no_entry: Refused: you are not allowed to stop dev-eu (the global rule); "
            "ask an admin to add you"
        )
        await harness.command("dev-eu", user=ALICE)
        confirmation = await harness.reply(2)
        assert confirmation.args["text"] == "Stop dev-eu (qovery)? Confirm or cancel."
        refused = [e for e in harness.store.audit_log() if e.action == "stop.refused"]
        assert [(e.actor, e.resource) for e in refused] == [(BOB, "dev-eu")]
        assert harness.fake.calls("usergroups.users.list")[0].args["usergroup"] == "S0PLATFORM"
    finally:
        harness.close()


async def test_open_source_feldera_preview_offers_the_forced_stop(slack: Slack) -> None:
    """Feldera's open-source edition has no graceful stop: the preview of `/stop etl` says
    so before Confirm, offers "Force stop" with its meaning, and that stop succeeds."""
    await slack.command("etl")
    await slack.reply()
    [message] = slack.fake.ephemeral_messages(CHANNEL, BOB)
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    assert [e["text"]["text"] for e in actions["elements"]] == ["Force stop", "Cancel"]
    shown = block_texts(message)
    assert "a forced stop (no checkpoint) request to feldera" in shown
    assert (
        "feldera has no graceful stop (Open source edition): this is a forced stop. The "
        "compute is released at once, without a final checkpoint; the pipeline resumes from "
        "its latest periodic checkpoint."
    ) in shown
    op_id, ts = slack.confirmation()
    await slack.click(views.CONFIRM, op_id, ts)
    final = await slack.final_message()
    assert final["text"].startswith("etl: :white_check_mark: Stopped in ")
    op = slack.store.get_operation(op_id)
    assert op is not None and op.force


async def test_enterprise_feldera_preview_keeps_the_graceful_stop(slack: Slack) -> None:
    """Feldera Enterprise stops gracefully: the preview offers Confirm stop, no note."""
    section = json.loads(json.dumps(DEFAULT_SEED["feldera"]))
    section["enterprise"] = True
    slack.sims.hub["feldera"].seed(section)
    await slack.command("etl")
    await slack.reply()
    [message] = slack.fake.ephemeral_messages(CHANNEL, BOB)
    actions = next(b for b in message["blocks"] if b["type"] == "actions")
    assert [e["text"]["text"] for e in actions["elements"]] == ["Confirm stop", "Cancel"]
    assert "graceful" not in block_texts(message)
    op_id, _ = slack.confirmation()
    op = slack.store.get_operation(op_id)
    assert op is not None and not op.force


async def test_unknown_feldera_edition_is_said_before_confirm(slack: Slack) -> None:
    """When the edition cannot be read, the preview says so and how to force, before Confirm."""
    slack.sims.hub.faults.add(
        Fault(
            api="feldera",
            kind="status",
            status=500,
            path_contains="/v0/config",
            body={"message": "config store down"},
        )
    )
    await slack.command("etl")
    await slack.reply()
    [message] = slack.fake.ephemeral_messages(CHANNEL, BOB)
    assert (
        "could not tell whether feldera can stop gracefully (config store down): if it "
        "refuses, stop again with --force."
    ) in block_texts(message)


async def test_healthz(slack: Slack) -> None:
    """/healthz answers 200 with the store's state, the stops being followed and whether this
    process leads (on SQLite every process does: "sole")."""
    assert slack.server is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{slack.server.url}/healthz")
    assert (response.status_code, response.json()) == (
        200,
        {
            "status": "ok",
            "checks": {
                "store": "ok",
                "operations_in_flight": 0,
                "role": "sole",
                "scheduler": "running",
                "slack_token": "ok",
            },
        },
    )


async def test_healthz_reports_a_store_that_does_not_answer(slack: Slack) -> None:
    """A database that does not answer makes /healthz answer 503, with the store's words."""
    assert slack.server is not None
    slack.store.close()
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{slack.server.url}/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["store"] == f"error: the database {slack.db} is closed"


async def test_token_checked_once_at_start_not_per_request(slack: Slack) -> None:
    """auth.test is called at start-up; the commands after it do not call it again."""
    assert len(slack.fake.calls("auth.test")) == 1
    await slack.ask("dev-eu")
    await slack.ask("status dev-eu")
    assert len(slack.fake.calls("auth.test")) == 1


async def test_refused_token_makes_healthz_unhealthy(slack: Slack) -> None:
    """A token Slack refuses is reported at start, by /healthz (503), not first by a
    user's command."""
    slack.stop()
    slack.fake.tokens.clear()
    slack.start()
    assert slack.server is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{slack.server.url}/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["slack_token"] == "refused: invalid_auth"


async def test_healthz_reports_a_lost_slack_connection(slack: Slack) -> None:
    """In Socket Mode, a dropped websocket makes /healthz answer 503, naming it."""
    assert slack.server is not None

    async def disconnected() -> str:
        return "disconnected"

    slack.bot.slack_connection = disconnected
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{slack.server.url}/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["slack"] == "disconnected"


async def test_a_request_acked_by_its_listener_is_recorded_first_and_handled_again(
    slack: Slack,
) -> None:
    """A request the endpoint leaves to Bolt (as every request in Socket Mode) is recorded
    by its listener before the ack, as the payload Bolt parsed, and marked handled when
    its work ends; one a dead process recorded and never finished is handled by the next
    process, whose answer reaches the user."""
    slack.bot.answer_ahead = lambda body: None  # type: ignore[method-assign]
    await slack.command("status dev-eu")
    await slack.reply()
    [(kind,)] = slack.store.tuples("SELECT content_type FROM inbox")
    assert kind == PAYLOAD
    deadline = time.monotonic() + 5
    while slack.store.open_requests():  # the work's task ends just after its answer
        assert time.monotonic() < deadline, "the request was never marked handled"
        await asyncio.sleep(0.01)

    dead = Registration()
    dead.abandon()
    slack.store.register_process(dead)
    url = slack.fake.new_response_url(channel=CHANNEL, user=BOB)
    form = dict(
        parse_qsl(slash_command_body("/stop", "status web-1", BOB, CHANNEL, url, "t-dead").decode())
    )
    slack.store.receive([("cut-by-a-kill", json.dumps(form), PAYLOAD)], dead.id)
    slack.stop()
    slack.start()  # its sweep handles what the dead process answered
    answer = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text", "").startswith("web-1:")
    )
    assert answer.args["text"] == "web-1: ACTIVE (running)"
    assert slack.store.open_requests() == []


async def test_progress_timeline_shows_each_step_once_and_times_from_confirm(
    slack: Slack,
) -> None:
    """A stop read for 20 s before Confirm is "Stopped in 3s" (the provider's time), and its
    timeline names each step once in words: requested, confirmed, accepted by the
    provider, then the provider's own states; no internal state, no "stopped" twice."""
    await slack.command("spark")
    await slack.reply()
    op_id, ts = slack.confirmation()
    slack.sims.hub.clock.advance(20)
    await slack.click(views.CONFIRM, op_id, ts)
    final = await slack.final_message()
    assert final["text"] == "spark: :white_check_mark: Stopped in 3s"
    timeline = next(
        b["text"]["text"]
        for b in final["blocks"]
        if b["type"] == "section" and "text" in b and "requested" in b["text"]["text"]
    )
    assert re.sub(r"<!date\^[^>]*>", "T", timeline).splitlines() == [
        "requested · T",
        "confirmed · T · +0s",
        "accepted by okeanos · T · +0s",
        "`started` · T · +0s",
        "`stopped` · T · +3s",
    ]


async def test_savings_command_shows_hours_and_estimates(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """`/stop savings web-1 7d` answers with hours stopped and the estimate, its rate and
    source named; a bad period is answered with what to write."""
    slack = Slack(
        sims, tmp_path / "db", {"web-1": {"cost_per_hour": 0.5}}, savings={"currency": "EUR"}
    )
    try:
        stopped = slack.time.now()
        slack.sims.hub["nova"].set_state("6a1f0e2d-9b8c-4d7e-a6f5-1c2b3a4d5e01", "SHUTOFF")
        slack.store.audit("stopbot", "stop.stopped", resource="web-1")
        slack.sims.hub.clock.advance(4 * 3600)
        reply = await slack.ask("savings web-1 7d")
        assert reply.args["text"] == (
            "Savings of web-1, the last 7d: 4.0 h stopped, ≈ 2.00 EUR (estimate)"
        )
        line = reply.args["blocks"][2]["text"]["text"]
        assert line == (
            "• *web-1* (stopped now) · 4.0 h stopped · ≈ 2.00 EUR "
            "(0.50 EUR an hour, configured for web-1)"
        )
        check_blocks(reply.args["blocks"])
        assert slack.time.now() - stopped == dt.timedelta(hours=4)
        refused = await slack.ask("savings web-1 0d")
        assert refused.args["text"] == "a period is 7d, 30d or month (or a number of days: 90d)"
    finally:
        slack.close()


async def test_the_weekly_digest_is_posted_once(sims: SimulatorServer, tmp_path: Path) -> None:
    """Monday 09:00 Paris the leader owes the digest; the Slack face posts it once in its
    channel, the week's hours and estimates said to be estimates."""
    digest = {"channel": CHANNEL, "weekday": "monday", "at": "09:00", "timezone": "Europe/Paris"}
    slack = Slack(
        sims,
        tmp_path / "db",
        {"web-1": {"cost_per_hour": 0.5}},
        savings={"currency": "EUR", "digest": digest},
    )
    try:
        monday = dt.datetime(2027, 1, 18, 8, tzinfo=dt.UTC)  # 09:00 in Paris
        sims.hub.clock.advance((monday - slack.time.now()).total_seconds() - 3600)
        slack.sims.hub["nova"].set_state("6a1f0e2d-9b8c-4d7e-a6f5-1c2b3a4d5e01", "SHUTOFF")
        slack.store.audit("stopbot", "stop.stopped", resource="web-1")
        sims.hub.clock.advance(3600)
        posted = await slack.fake.wait_for(
            "chat.postMessage", lambda c: "Weekly savings" in c.args.get("text", "")
        )
        assert posted.args["channel"] == CHANNEL
        assert posted.args["text"] == (
            "Weekly savings of all resources, the last 7 days: 1.0 h stopped, ≈ 0.50 EUR (estimate)"
        )
        assert not slack.stopbot.owe_digest()  # claimed: no round owes it again
        digests = [
            c
            for c in slack.fake.calls("chat.postMessage")
            if "Weekly savings" in c.args.get("text", "")
        ]
        assert len(digests) == 1
    finally:
        slack.close()
