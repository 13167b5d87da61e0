"""Locks and approvals end to end, through signed Slack requests to the bot's real endpoint."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.approvals import APPROVAL_REQUEST
from bot.models import Actor, OpState
from bot.slack import views
from bot.slack.fake_api import RESPONSE_URL_METHOD, Call
from bot.store import open_store
from bot.text import Person, Text
from bot.text import say as text_of
from providers.simulators.common import Fault
from providers.simulators.server import SimulatorServer
from tests.slack_harness import ADMIN, ALICE, BOB, CAROL, CHANNEL, Slack, block_texts

DEV_EU = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01"
CAROL_APPROVES = {"dev-eu": {"approval": {"required": True, "approvers": [CAROL]}}}


@pytest.fixture
async def guarded(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Slack]:
    """dev-eu needs Carol's approval."""
    harness = Slack(sims, tmp_path / "stopbot.db", resources=CAROL_APPROVES)
    yield harness
    harness.close()


async def say(slack: Slack, text: str, user: str = BOB) -> Call:
    return await slack.ask(text, user)


def recipient(slack: Slack, channel: str | None) -> str | None:
    """Who a post went to: the person of a DM (posted to their id, or to the DM's own id
    from conversations.open), else the channel."""
    dms = {c.id: c.user for c in slack.fake.channels() if c.user is not None}
    return dms.get(channel or "", channel)


async def dm_to(slack: Slack, user: str, contains: str) -> dict[str, Any]:
    """The DM Stopbot sent ``user`` whose text contains ``contains``."""
    call = await slack.fake.wait_for(
        "chat.postMessage",
        lambda c: (
            recipient(slack, c.args.get("channel")) == user and contains in c.args.get("text", "")
        ),
    )
    assert isinstance(call.response, dict)
    channel = call.response["channel"]
    return next(m for m in slack.fake.messages(channel) if m["ts"] == call.response["ts"]) | {
        "channel": channel
    }


async def request_and_confirm(slack: Slack, resource: str, user: str = BOB) -> str:
    await say(slack, resource, user)
    op_id, ts = slack.confirmation(user=user)
    await slack.click(views.CONFIRM, op_id, ts, user=user)
    return op_id


async def approval_message(slack: Slack) -> dict[str, Any]:
    await slack.fake.wait_for("chat.postMessage", lambda c: "Approval needed" in c.args["text"])
    [message] = slack.messages_with_action(CHANNEL, views.APPROVE)
    return message


# -- locks ----------------------------------------------------------------------------


async def test_bot_lock_blocks_others_but_not_its_owner(slack: Slack) -> None:
    """A lock set from Slack refuses everyone else's stop, naming owner, reason and expiry."""
    locked = await say(slack, "lock dev-eu 4h demo at 3pm", user=ALICE)
    assert locked.args["text"].startswith(":lock: Locked dev-eu for 4h, until <!date^")
    refusal = await say(slack, "dev-eu")
    assert refusal.args["text"] == (
        ":no_entry: Refused: dev-eu is locked by <@U0ALICE> (demo at 3pm); it expires in 4h. "
        "Ask them to unlock it."
    )
    own = await say(slack, "dev-eu", user=ALICE)
    assert own.args["text"] == "Stop dev-eu (qovery)? Confirm or cancel."
    assert "your own lock on it is left in place" in block_texts(own.args)


async def test_locking_a_locked_resource(slack: Slack) -> None:
    """Someone else's lock refuses a new one; the owner's second lock extends theirs."""
    await say(slack, "lock dev-eu 2h", user=ALICE)
    refused = await say(slack, "lock dev-eu 1h mine now")
    assert refused.args["text"].startswith("dev-eu is already locked by <@U0ALICE>")
    extended = await say(slack, "lock dev-eu 1d", user=ALICE)
    assert extended.args["text"].startswith(":lock: Extended your lock on dev-eu for 1d, until")
    lock = slack.store.get_lock("dev-eu")
    assert lock is not None and lock.expires_at == slack.time.now() + dt.timedelta(days=1)


async def test_lock_longer_than_the_maximum_is_refused(slack: Slack) -> None:
    """A lock past locks.max_duration is refused with the maximum."""
    reply = await say(slack, "lock dev-eu 30d")
    assert reply.args["text"] == (
        "30d is longer than the maximum lock of 7d. Lock it for less, and extend it later."
    )
    assert slack.store.get_lock("dev-eu") is None


async def test_lock_expires_by_time(slack: Slack) -> None:
    """After its duration the lock is gone without anyone removing it."""
    await say(slack, "lock dev-eu 90m", user=ALICE)
    slack.sims.hub.clock.advance(90 * 60)
    reply = await say(slack, "dev-eu")
    assert reply.args["text"] == "Stop dev-eu (qovery)? Confirm or cancel."


async def test_unlock_rules(slack: Slack) -> None:
    """Only the owner unlocks; an admin needs --force, and the owner is told."""
    await say(slack, "lock dev-eu 4h", user=ALICE)
    assert (await say(slack, "unlock dev-eu")).args["text"] == (
        "dev-eu is locked by <@U0ALICE>, not you: only they can unlock it."
    )
    assert (await say(slack, "unlock dev-eu", user=ADMIN)).args["text"] == (
        "dev-eu is locked by <@U0ALICE>, not you: only they can unlock it. "
        "As an admin you may add `--force`."
    )
    assert (await say(slack, "unlock dev-eu --force")).args["text"] == (
        "Only admins can remove someone else's lock with `--force`."
    )
    assert (await say(slack, "unlock dev-eu --force", user=ADMIN)).args["text"] == (
        ":unlock: dev-eu is unlocked."
    )
    await dm_to(slack, ALICE, "Your lock on dev-eu was removed by <@U0ADMIN> (admin).")
    assert [e.detail for e in slack.store.audit_log() if e.action == "lock.removed"] == [
        {"forced": True}
    ]


async def test_locks_lists_bot_and_provider_locks(slack: Slack) -> None:
    """/stop locks shows Stopbot's locks and the providers' own."""
    await say(slack, "lock dev-eu 4h demo", user=ALICE)
    reply = await say(slack, "locks")
    assert reply.args["text"] == "3 active locks"
    listing = block_texts(reply.args)
    assert (
        "*dev-eu* \\u00b7 Stopbot lock by <@U0ALICE> \\u00b7 demo \\u00b7 expires in 4h" in listing
    )
    assert (
        "*staging-us* \\u00b7 qovery lock locked by Alice Martin: load test until Friday" in listing
    )
    assert "*batch-2* \\u00b7 nova lock locked: kernel upgrade in progress (no expiry)" in listing


QOVERY_503 = "qovery: the provider is unavailable, try again later (HTTP 503): injected fault"


async def test_locks_whose_provider_cannot_be_read_are_listed_as_unknown(slack: Slack) -> None:
    """Qovery answers 503: /stop locks lists its clusters' locks as unknown, with its error,
    instead of leaving them out; Nova's lock is listed as usual."""
    slack.sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", count=None))
    reply = await say(slack, "locks")
    assert reply.args["text"] == "1 active lock; the qovery locks could not be read"
    assert [b["text"]["text"] for b in reply.args["blocks"]] == [
        "*1 active lock; the qovery locks could not be read*",
        "• *batch-2* · nova lock locked: kernel upgrade in progress (no expiry)\n"
        f"• *dev-eu, staging-us, qa-old* · qovery lock unknown: {QOVERY_503}",
    ]


async def test_ask_to_release_when_the_lock_cannot_be_read_says_so(slack: Slack) -> None:
    """Refused by Alice's Qovery lock, Bob asks her to release it while Qovery answers 503:
    he is told the lock could not be read, not that it is gone, and nobody is asked."""
    refusal = await say(slack, "staging-us")
    op_id = refusal.args["blocks"][-1]["elements"][0]["value"]
    slack.sims.hub.faults.add(Fault(api="qovery", kind="status", method="GET", count=None))
    await slack.click(
        views.ASK_RELEASE, op_id, slack.fake.ephemeral_messages(CHANNEL, BOB)[-1]["ts"]
    )
    told = await slack.reply(2)
    assert told.args["text"] == (
        f"Could not read the qovery lock on staging-us ({QOVERY_503}): try again in a moment."
    )
    assert [e for e in slack.store.audit_log() if e.action == "lock.release_asked"] == []


async def test_owner_warned_before_expiry_and_extends(slack: Slack) -> None:
    """The owner gets one DM before the lock expires; Extend pushes the expiry, once
    however often it is clicked."""
    await say(slack, "lock dev-eu 40m", user=ALICE)
    slack.sims.hub.clock.advance(15 * 60)
    warning = await dm_to(slack, ALICE, "Your lock on dev-eu expires")
    [extend_1h, _] = next(b for b in warning["blocks"] if b["type"] == "actions")["elements"]
    for _ in range(2):
        await slack.click_message(
            extend_1h["action_id"], extend_1h["value"], warning, ALICE, channel=warning["channel"]
        )
    await slack.fake.wait_for(RESPONSE_URL_METHOD, lambda c: "Extended" in c.args.get("text", ""))
    again = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "nothing to extend" in c.args.get("text", "")
    )
    assert again.args["response_type"] == "ephemeral"
    lock = slack.store.get_lock("dev-eu")
    assert lock is not None
    assert lock.expires_at - slack.time.now() == dt.timedelta(minutes=85)
    warnings = [c for c in slack.fake.calls("chat.postMessage") if "expires" in c.args["text"]]
    assert len(warnings) == 1


async def test_a_lock_warning_dm_whose_answer_was_lost_is_found_not_sent_twice(
    slack: Slack,
) -> None:
    """Slack took the lock's expiry warning but its answer never reached the bot (a kill
    during the post, a connection cut): the next try opens the owner's DM, finds the
    warning there by the delivery it is tagged with, and sends no second one. A first try
    asks Slack's history nothing."""
    post = slack.bot.client.chat_postMessage
    lost: list[str] = []
    warned = threading.Event()  # set in the bot's server thread

    async def answer_lost(**kwargs: Any) -> Any:
        posted = await post(**kwargs)
        if "expires" in str(kwargs.get("text", "")) and not lost:
            lost.append(str(posted["ts"]))
            warned.set()
            raise aiohttp.ClientConnectionError("connection reset before the answer")
        return posted

    await say(slack, "lock dev-eu 40m", user=ALICE)
    assert slack.fake.calls("conversations.history") == []
    slack.bot.client.chat_postMessage = answer_lost  # type: ignore[method-assign]
    slack.sims.hub.clock.advance(15 * 60)
    assert await asyncio.to_thread(warned.wait, 30), "no warning was posted"
    # The failed try recorded (its back-off counted from the clock as it was then), and
    # only then the clock moved past that back-off: moved before, the retry would be due
    # at the moved time plus the back-off, which a frozen clock never reaches.
    deadline = time.monotonic() + 30
    while not any(o.key.startswith("lock-warning") and o.attempts for o in slack.store.owed()):
        assert time.monotonic() < deadline, slack.store.owed()
        await asyncio.sleep(0.01)
    slack.sims.hub.clock.advance(5)  # past the outbox's back-off
    [looked] = [await slack.fake.wait_for("conversations.history")]
    warnings = [c for c in slack.fake.calls("chat.postMessage") if "expires" in c.args["text"]]
    assert len(warnings) == 1
    channel = warnings[0].response["channel"]  # type: ignore[index]
    assert looked.args["channel"] == channel
    [message] = [m for m in slack.fake.messages(channel) if "expires" in m["text"]]
    assert message["ts"] == lost[0]
    assert message["metadata"]["event_type"] == "stopbot_message"
    deadline = time.monotonic() + 30
    while any(o.key.startswith("lock-warning") for o in slack.store.owed()):
        assert time.monotonic() < deadline, slack.store.owed()
        await asyncio.sleep(0.01)
    assert len(slack.fake.calls("conversations.history")) == 1


async def test_ask_to_release_a_bot_lock(slack: Slack) -> None:
    """A refused user asks the owner; the owner releases; the asker is told and can stop."""
    await say(slack, "lock dev-eu 4h demo", user=ALICE)
    refusal = await say(slack, "dev-eu")
    op_id = refusal.args["blocks"][-1]["elements"][0]["value"]
    ephemeral = slack.fake.ephemeral_messages(CHANNEL, BOB)[-1]
    await slack.click(views.ASK_RELEASE, op_id, ephemeral["ts"])
    ask = await dm_to(slack, ALICE, "asks you to release your lock on dev-eu")
    await slack.click_message(
        views.RELEASE, ask["blocks"][-1]["elements"][0]["value"], ask, ALICE, channel=ask["channel"]
    )
    await dm_to(slack, BOB, "<@U0ALICE> released the lock on dev-eu")
    assert slack.store.get_lock("dev-eu") is None
    assert (await say(slack, "dev-eu")).args["text"] == "Stop dev-eu (qovery)? Confirm or cancel."


async def test_ask_to_release_answered_keep(slack: Slack) -> None:
    """An owner who keeps the lock: the asker is told, the lock stays."""
    await say(slack, "lock dev-eu 4h", user=ALICE)
    refusal = await say(slack, "dev-eu")
    op_id = refusal.args["blocks"][-1]["elements"][0]["value"]
    await slack.click(
        views.ASK_RELEASE, op_id, slack.fake.ephemeral_messages(CHANNEL, BOB)[-1]["ts"]
    )
    ask = await dm_to(slack, ALICE, "asks you to release")
    await slack.click_message(
        views.KEEP, ask["blocks"][-1]["elements"][1]["value"], ask, ALICE, channel=ask["channel"]
    )
    await dm_to(slack, BOB, "<@U0ALICE> keeps the lock on dev-eu for now.")
    assert slack.store.get_lock("dev-eu") is not None


async def test_provider_lock_owner_recognised_through_identities(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """A Qovery lock owned by 'amartin' is Alice's when identities maps her to that name."""
    harness = Slack(sims, tmp_path / "db", identities={ALICE: {"qovery": "amartin"}})
    try:
        sims.hub["qovery"].set_lock(
            DEV_EU, owner="amartin", reason="perf test", ttl=dt.timedelta(days=1)
        )
        refusal = await say(harness, "dev-eu")
        assert refusal.args["text"] == (
            ":no_entry: Refused: dev-eu is locked in qovery by amartin (perf test); it expires in 1d."
        )
        own = await say(harness, "dev-eu", user=ALICE)
        assert own.args["text"] == "Stop dev-eu (qovery)? Confirm or cancel."
        op_id = refusal.args["blocks"][-1]["elements"][0]["value"]
        await harness.click(
            views.ASK_RELEASE, op_id, harness.fake.ephemeral_messages(CHANNEL, BOB)[-1]["ts"]
        )
        ask = await dm_to(harness, ALICE, "asks you to release your lock on dev-eu")
        assert "qovery lock by amartin (perf test)" in block_texts(ask)
    finally:
        harness.close()


@pytest.mark.parametrize(
    ("identities", "names"),
    [
        ({}, {"display_name": "amartin"}),  # a display name anyone may set
        ({ALICE: {"qovery": "amartin"}}, {"real_name": "amartin"}),  # qovery's names are mapped
    ],
    ids=["display name", "unmapped name"],
)
async def test_a_lock_owner_s_name_taken_by_someone_else_does_not_open_the_lock(
    sims: SimulatorServer, tmp_path: Path, identities: dict[str, Any], names: dict[str, str]
) -> None:
    """Carol names herself like the lock's owner: she is still refused. Display names are
    never trusted, and where identities are mapped for a provider only they count."""
    harness = Slack(sims, tmp_path / "db", identities=identities)
    try:
        harness.fake.add_user(CAROL, "carol", **names)
        sims.hub["qovery"].set_lock(
            DEV_EU, owner="amartin", reason="perf test", ttl=dt.timedelta(days=1)
        )
        refusal = await say(harness, "dev-eu", user=CAROL)
        assert refusal.args["text"] == (
            ":no_entry: Refused: dev-eu is locked in qovery by amartin (perf test); it expires in 1d."
        )
    finally:
        harness.close()


async def test_admin_override_is_audited_and_announced(slack: Slack) -> None:
    """An admin stops through a lock with --override-lock and a reason; all can see it."""
    await say(slack, "lock dev-eu 4h demo", user=ALICE)
    op_id = await request_and_confirm(slack, "dev-eu --override-lock owner on leave", ADMIN)
    final = await slack.final_message()
    assert final["text"].startswith("dev-eu: :white_check_mark: Stopped")
    assert (
        ":warning: A lock on dev-eu was overridden by <@U0ADMIN> (admin): owner on leave"
        in block_texts(final)
    )
    [override] = [e for e in slack.store.audit_log() if e.action == "lock.override"]
    assert (override.actor, override.operation_id, override.detail["reason"]) == (
        ADMIN,
        op_id,
        "owner on leave",
    )


async def test_provider_still_enforces_its_own_lock_on_override(slack: Slack) -> None:
    """Overriding a Qovery lock is the bot's decision only: Qovery's 409 is reported as is."""
    await request_and_confirm(slack, "staging-us --override-lock owner on leave", ADMIN)
    final = await slack.final_message()
    assert final["text"] == (
        "staging-us: :no_entry: Refused: qovery: locked on the provider side (HTTP 409): "
        "Cluster staging-us is locked by Alice Martin: load test until Friday "
        "(cluster status: DEPLOYED)"
    )


async def test_override_refused_for_non_admin_and_without_reason(slack: Slack) -> None:
    """--override-lock is for admins, and needs a reason."""
    bob = await say(slack, "staging-us --override-lock please")
    assert bob.args["text"].startswith(":no_entry: Refused: only admins can use --override-lock.")
    admin = await say(slack, "staging-us --override-lock", user=ADMIN)
    assert admin.args["text"].startswith(
        ":no_entry: Refused: --override-lock needs a reason, e.g. `/stop staging-us --override-lock"
    )


async def test_locked_nova_server_needs_an_admin(slack: Slack) -> None:
    """A Nova server with locked=true is refused to non-admins, as Nova itself does."""
    reply = await say(slack, "batch-2")
    assert reply.args["text"] == (
        ":no_entry: Refused: batch-2 is locked in nova (kernel upgrade in progress); "
        "only an admin can stop it."
    )
    admin = await say(slack, "batch-2", user=ADMIN)
    assert admin.args["text"] == "Stop batch-2 (nova)? Confirm or cancel."


# -- approvals ------------------------------------------------------------------------


async def test_approved_stop_runs_and_everyone_is_told(guarded: Slack) -> None:
    """Confirm asks Carol; her Approve closes the request and the stop runs to Stopped."""
    preview = await say(guarded, "dev-eu nightly")
    assert "needs 1 approval from <@U0CAROL> after you confirm" in block_texts(preview.args)
    op_id, ts = guarded.confirmation()
    await guarded.click(views.CONFIRM, op_id, ts)
    request = await approval_message(guarded)
    assert request["text"] == "Approval needed: <@U0BOB> wants to stop dev-eu."
    # The status read when the request went out, never "as shown to the requester".
    assert "*Current status*\\n`DEPLOYED` (running)" in block_texts(request)
    await guarded.click_message(views.APPROVE, op_id, request, CAROL)
    final = await guarded.final_message()
    assert final["text"].startswith("dev-eu: :white_check_mark: Stopped")
    [closed] = [m for m in guarded.fake.messages(CHANNEL) if m["ts"] == request["ts"]]
    assert closed["text"] == (
        "Stop of dev-eu requested by <@U0BOB>: :white_check_mark: Approved by <@U0CAROL>: "
        "stopping now."
    )
    assert '"actions"' not in block_texts(closed)
    await dm_to(guarded, BOB, "Your request to stop dev-eu was approved by <@U0CAROL>.")
    actions = [e.action for e in guarded.store.audit_log(resource="dev-eu")]
    assert actions[:5] == [
        "stop.requested",
        "stop.awaiting_confirmation",
        "approval.requested",
        "approval.approve",
        "approval.approved",
    ]


async def test_a_refused_channel_post_asks_the_approvers_by_dm(guarded: Slack) -> None:
    """Slack refusing the request in the channel for any reason (here, a workspace policy)
    still gets it to the approvers: Carol is asked in a DM."""
    await say(guarded, "dev-eu nightly")
    op_id, ts = guarded.confirmation()
    guarded.fake.fail_next("chat.postMessage", "restricted_action")
    await guarded.click(views.CONFIRM, op_id, ts)
    request = await dm_to(guarded, CAROL, "Approval needed: <@U0BOB> wants to stop dev-eu.")
    await guarded.click_message(views.APPROVE, op_id, request, CAROL, channel=request["channel"])
    final = await guarded.final_message()
    assert final["text"].startswith("dev-eu: :white_check_mark: Stopped")


async def test_a_request_posted_nowhere_is_said_to_the_requester(guarded: Slack) -> None:
    """Neither the channel nor Carol's DM takes the request: Bob is told at once, and to
    ask directly if it is urgent (the request stays owed, tried again later)."""
    await say(guarded, "dev-eu nightly")
    op_id, ts = guarded.confirmation()
    guarded.fake.fail_next("chat.postMessage", "restricted_action")
    guarded.fake.fail_next("chat.postMessage", "restricted_action")
    await guarded.click(views.CONFIRM, op_id, ts)
    told = await guarded.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "could not post" in c.args.get("text", "")
    )
    assert told.args == {
        "text": "Stopbot could not post the approval request for dev-eu yet (see its log); "
        "it keeps trying. Ask an approver directly if it is urgent; the request stays open "
        "until it expires.",
        "response_type": "ephemeral",
        "replace_original": False,
    }
    op = guarded.store.get_operation(op_id)
    assert op is not None and op.state == OpState.AWAITING_APPROVAL


@pytest.mark.parametrize(
    ("clicker", "message"),
    [
        (BOB, "You cannot approve or deny your own stop request: another approver has to decide."),
        (ALICE, "Only the approvers of dev-eu (<@U0CAROL>) can decide this request."),
    ],
)
async def test_requester_and_non_approvers_cannot_approve(
    guarded: Slack, clicker: str, message: str
) -> None:
    """Self-approval and non-approvers get an ephemeral refusal; nothing changes."""
    op_id = await request_and_confirm(guarded, "dev-eu")
    request = await approval_message(guarded)
    await guarded.click_message(views.APPROVE, op_id, request, clicker)
    refusal = await guarded.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text") == message
    )
    assert (refusal.args["response_type"], refusal.args["replace_original"]) == ("ephemeral", False)
    op = guarded.store.get_operation(op_id)
    assert op is not None and op.state == OpState.AWAITING_APPROVAL


async def test_user_group_approver(sims: SimulatorServer, tmp_path: Path) -> None:
    """An approver listed through a user group (S…) may approve."""
    harness = Slack(
        sims, tmp_path / "db", resources={"dev-eu": {"approval": {"approvers": ["S0OPS"]}}}
    )
    try:
        harness.fake.add_usergroup("S0OPS", [ALICE])
        op_id = await request_and_confirm(harness, "dev-eu")
        request = await approval_message(harness)
        await harness.click_message(views.APPROVE, op_id, request, ALICE)
        final = await harness.final_message()
        assert final["text"].startswith("dev-eu: :white_check_mark: Stopped")
    finally:
        harness.close()


async def test_deny_with_a_reason_through_the_modal(guarded: Slack) -> None:
    """Deny opens a modal; its reason reaches the requester and the stop never happens."""
    op_id = await request_and_confirm(guarded, "dev-eu")
    request = await approval_message(guarded)
    await guarded.click_message(views.DENY, op_id, request, CAROL)
    opened = await guarded.fake.wait_for("views.open")
    view = opened.args["view"]
    assert (view["callback_id"], view["private_metadata"]) == (views.DENY_MODAL, op_id)
    response = await guarded.submit_view(
        view, CAROL, {"reason": {"reason": {"type": "plain_text_input", "value": "not tonight"}}}
    )
    assert response.status_code == 200
    await dm_to(guarded, BOB, "Your request to stop dev-eu was denied by <@U0CAROL>: not tonight.")
    [closed] = [m for m in guarded.fake.messages(CHANNEL) if m["ts"] == request["ts"]]
    assert closed["text"].endswith(":no_entry: Denied by <@U0CAROL>: not tonight")
    op = guarded.store.get_operation(op_id)
    assert op is not None and op.state == OpState.REFUSED
    assert op.detail == text_of("denied by {}: not tonight", Person("U0CAROL"))
    assert guarded.sims.hub.state()["qovery"]["clusters"][0]["status"] == "DEPLOYED"


async def test_deny_by_a_non_approver_opens_the_modal_and_says_why(guarded: Slack) -> None:
    """The modal opens at once (its trigger lasts three seconds); for Alice, who may not
    decide, it then says why instead of asking for a reason. Nothing changes."""
    op_id = await request_and_confirm(guarded, "dev-eu")
    request = await approval_message(guarded)
    await guarded.click_message(views.DENY, op_id, request, ALICE)
    opened = await guarded.fake.wait_for("views.open")
    assert opened.args["view"]["callback_id"] == views.DENY_MODAL
    updated = await guarded.fake.wait_for("views.update")
    assert updated.args["view_id"] == opened.response["view"]["id"]  # type: ignore[index]
    assert updated.args["view"] == views.deny_refused(
        "Only the approvers of dev-eu (<@U0CAROL>) can decide this request."
    )
    op = guarded.store.get_operation(op_id)
    assert op is not None and op.state == OpState.AWAITING_APPROVAL


async def test_expired_request_is_closed_and_requester_told(guarded: Slack) -> None:
    """Past expires_after the request closes by itself; a late Approve changes nothing."""
    op_id = await request_and_confirm(guarded, "dev-eu")
    request = await approval_message(guarded)
    guarded.sims.hub.clock.advance(31 * 60)
    await dm_to(guarded, BOB, "Your request to stop dev-eu expired before an approver decided.")
    await guarded.click_message(views.APPROVE, op_id, request, CAROL)
    late = await guarded.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: "already decided" in c.args.get("text", "")
    )
    assert late.args["text"] == (
        "This request to stop dev-eu was already decided (it is cancelled). Nothing was changed."
    )
    op = guarded.store.get_operation(op_id)
    assert op is not None and (op.state, op.detail) == (
        OpState.CANCELLED,
        Text("the approval request expired"),
    )


async def test_pending_approval_survives_a_restart(guarded: Slack) -> None:
    """A request pending when the bot restarts is approved afterwards and the stop runs."""
    op_id = await request_and_confirm(guarded, "dev-eu")
    request = await approval_message(guarded)
    guarded.stop()
    guarded.start()
    await guarded.click_message(views.APPROVE, op_id, request, CAROL)
    final = await guarded.final_message()
    assert final["text"].startswith("dev-eu: :white_check_mark: Stopped")


async def test_two_approvals_needed(sims: SimulatorServer, tmp_path: Path) -> None:
    """With min_approvals 2, one approval waits; the second distinct approver releases it."""
    harness = Slack(
        sims,
        tmp_path / "db",
        resources={
            "dev-eu": {"approval": {"approvers": [CAROL, ALICE], "min_approvals": 2}},
        },
    )
    try:
        op_id = await request_and_confirm(harness, "dev-eu")
        request = await approval_message(harness)
        await harness.click_message(views.APPROVE, op_id, request, CAROL)
        waiting = await harness.fake.wait_for(
            RESPONSE_URL_METHOD, lambda c: "waiting for more" in c.args.get("text", "")
        )
        assert waiting.args["text"] == (
            "Approved by <@U0CAROL> (1 of 2); waiting for more approvers."
        )
        await harness.click_message(views.APPROVE, op_id, request, CAROL)
        await harness.fake.wait_for(
            RESPONSE_URL_METHOD,
            lambda c: c.args.get("text") == "You have already approved this request.",
        )
        await harness.click_message(views.APPROVE, op_id, request, ALICE)
        final = await harness.final_message()
        assert final["text"].startswith("dev-eu: :white_check_mark: Stopped")
    finally:
        harness.close()


async def test_approval_by_dm(sims: SimulatorServer, tmp_path: Path) -> None:
    """post_to: dm sends each approver (group members expanded, requester excluded) a DM."""
    harness = Slack(
        sims,
        tmp_path / "db",
        resources={
            "dev-eu": {"approval": {"approvers": [CAROL, "S0OPS"], "post_to": "dm"}},
        },
    )
    try:
        harness.fake.add_usergroup("S0OPS", [ALICE, BOB])
        await request_and_confirm(harness, "dev-eu")
        await dm_to(harness, CAROL, "Approval needed")
        await dm_to(harness, ALICE, "Approval needed")
        asked = [
            recipient(harness, c.args["channel"])
            for c in harness.fake.calls("chat.postMessage")
            if "Approval needed" in c.args["text"]
        ]
        assert sorted(asked) == sorted([CAROL, ALICE])  # once each
    finally:
        harness.close()


async def recorded(slack: Slack, op_id: str, count: int) -> list[tuple[str, str]]:
    """The approval request's messages once ``count`` are recorded."""
    deadline = asyncio.get_running_loop().time() + 10
    while len(found := sorted(slack.store.approval_messages(op_id))) < count:
        assert asyncio.get_running_loop().time() < deadline, found
        await asyncio.sleep(0.01)
    return found


async def test_a_request_posted_but_not_recorded_is_found_not_posted_again(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """A process killed between an approval request's DMs and their record: the request,
    delivered again, finds each DM by its metadata in the DM's history and records it;
    nobody gets it twice."""
    harness = Slack(
        sims,
        tmp_path / "db",
        resources={
            "dev-eu": {"approval": {"approvers": [CAROL, "S0OPS"], "post_to": "dm"}},
        },
    )
    try:
        harness.fake.add_usergroup("S0OPS", [ALICE, BOB])
        op_id = await request_and_confirm(harness, "dev-eu")
        await dm_to(harness, CAROL, "Approval needed")
        await dm_to(harness, ALICE, "Approval needed")
        posted = await recorded(harness, op_id, 2)
        with harness.store.transaction() as conn:  # as if killed before the record
            conn.execute("DELETE FROM approval_messages")
        outbox = harness.stopbot.outbox
        harness.store.owe(outbox.message(APPROVAL_REQUEST, op_id, {"operation": op_id}))
        outbox.kick()  # delivered again, by the bot's loop

        assert await recorded(harness, op_id, 2) == posted
        asked = [
            recipient(harness, c.args["channel"])
            for c in harness.fake.calls("chat.postMessage")
            if "Approval needed" in c.args["text"]
        ]
        assert sorted(asked) == sorted([CAROL, ALICE])
    finally:
        harness.close()


async def test_concurrent_approve_and_deny_exactly_one_wins(
    tmp_path: Path, sims: SimulatorServer
) -> None:
    """An Approve and a Deny racing in two threads: one decides, the other is told it lost."""
    harness = Slack(
        sims,
        tmp_path / "db",
        resources=CAROL_APPROVES,
        admins=[ADMIN],
        approval={"required": False},
    )
    try:
        op_id = await request_and_confirm(harness, "dev-eu")
        await approval_message(harness)
        approvals = harness.stopbot.approvals
        carol = Actor(id=CAROL)
        harness.stopbot.policy.group_members = None
        results = await asyncio.gather(
            asyncio.to_thread(asyncio.run, approvals.approve(op_id, carol)),
            asyncio.to_thread(asyncio.run, approvals.deny(op_id, carol, "no")),
        )
        assert sorted(r.ok for r in results) == [False, True]
        store = open_store(harness.db)
        approval = store.approval(op_id)
        store.close()
        assert approval is not None and approval.status in {"approved", "denied"}
        loser = next(r for r in results if not r.ok)
        assert "already decided" in str(loser.message)
    finally:
        harness.close()
