"""The App Home tab (bot/slack/home.py, bot/world.py) through signed Slack requests: opened
(app_home_opened) it is published (views.publish) with the person's world, valid Block Kit
within a view's 100 blocks however much it holds; its buttons act through their twins'
handlers, so the same rules and the same audit (an unauthorised click is refused)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.models import OpState
from bot.slack import home
from bot.slack.fake_api import app_home_opened_body, block_actions_body, view_block_actions_payload
from bot.slack.fake_api.blocks import MAX_VIEW_BLOCKS, check_blocks
from bot.slack.wording import Mrkdwn
from bot.world import NextRun, world_of
from providers.simulators.server import SimulatorServer
from tests.slack_harness import ADMIN, ALICE, BOB, CAROL, TOKEN, Slack

JSON_TYPE = {"Content-Type": "application/json"}
NIGHTLY = {
    "name": "nightly",
    "cron": "0 20 * * 1-5",
    "timezone": "Europe/Paris",
    "select": {"tags": {"env": "dev"}},
    "channel": "C0DEV",
}


@pytest.fixture
async def slack(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Slack]:
    harness = Slack(
        sims,
        tmp_path / "db",
        {
            "dev-eu": {"approval": {"required": True, "approvers": [CAROL]}},
            "web-1": {"allowed_users": [BOB, ALICE], "cost_per_hour": 0.5},
        },
        schedules=[NIGHTLY],
        savings={"currency": "EUR"},
    )
    yield harness
    harness.close()


async def open_home(slack: Slack, user: str, published: int = 1) -> dict[str, Any]:
    """``user`` opens the Home tab: the ``published``-th Home published for them."""
    response = await slack.post(app_home_opened_body(user), headers=JSON_TYPE)
    assert response.status_code == 200, response.text
    return await published_home(slack, user, published)


async def published_home(slack: Slack, user: str, n: int) -> dict[str, Any]:
    def nth(_: Any) -> bool:
        return len([c for c in slack.fake.calls("views.publish") if c.args["user_id"] == user]) >= n

    await slack.fake.wait_for("views.publish", nth)
    found = slack.fake.home(user)
    assert found is not None
    check_blocks(found["blocks"], most=MAX_VIEW_BLOCKS)
    return found


async def click(slack: Slack, user: str, view: dict[str, Any], action: str, value: str) -> None:
    block = next(
        b["block_id"]
        for b in view["blocks"]
        if b["type"] == "actions"
        and any(e["action_id"] == action and e["value"] == value for e in b["elements"])
    )
    payload = view_block_actions_payload(user, view, action, value, block_id=block)
    response = await slack.post(block_actions_body(payload))
    assert response.status_code == 200, response.text


def texts(view: dict[str, Any]) -> str:
    return json.dumps(view["blocks"], ensure_ascii=False)


async def test_opening_the_home_publishes_the_person_s_world(slack: Slack) -> None:
    """Bob's Home: his lock with Extend and Unlock, the stop he asked for and its state, the
    next run on the resources he owns or locked, savings this month; nothing waits for him."""
    await slack.stopbot.locks.lock("spark", BOB, dt.timedelta(hours=4), "demo <@U0ALICE>")
    await slack.ask("qa-old")  # already stopped: decided at once
    view = await open_home(slack, BOB)
    assert view["type"] == "home"
    shown = texts(view)
    assert ":lock: *spark* until" in shown
    assert "demo &lt;@U0ALICE&gt;" in shown and "<@U0ALICE>" not in shown
    buttons = [
        (e["action_id"], e["value"].split("|")[0])
        for b in view["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    ]
    assert buttons == [
        ("home_extend:1h", "spark"),
        ("home_extend:1d", "spark"),
        ("home_unlock", "spark"),
    ]
    assert "*qa-old* · stopped already" in shown
    assert "*nightly* stops web-1, spark" in shown
    assert "Nothing waits for your approval." in shown
    assert "Nothing was stopped by Stopbot this month yet." in shown
    # The Messages tab opened: nothing published.
    messages = app_home_opened_body(BOB, tab="messages")
    assert (await slack.post(messages, headers=JSON_TYPE)).status_code == 200
    assert len(slack.fake.calls("views.publish")) == 1


async def test_an_event_stopbot_does_not_subscribe_to_is_refused(slack: Slack) -> None:
    """Another event, or one with no user, is a 400: nothing is published."""
    body = json.loads(app_home_opened_body(BOB))
    for event in ({**body["event"], "type": "message"}, {**body["event"], "user": ""}):
        response = await slack.post(
            json.dumps({**body, "event": event}).encode(), headers=JSON_TYPE
        )
        assert response.status_code == 400
    assert slack.fake.calls("views.publish") == []


async def test_a_home_with_many_locks_approvals_and_runs_stays_valid(slack: Slack) -> None:
    """60 locks, 12 wake leases, 30 approvals waiting, 20 stops asked, 15 schedules and a
    notice: the Home is valid
    Block Kit within 100 blocks, and says how many more there are."""
    store = slack.store
    now = slack.time.now()
    for i in range(60):
        store.set_lock(f"res-{i:02d}", BOB, now + dt.timedelta(hours=1 + i), "x" * 400)
    world = await world_of(slack.stopbot, slack.config.actor(BOB))
    for i in range(30):
        op, _ = store.create_operation(
            resource=f"res-{i}",
            provider="nova",
            resource_id=f"s{i}",
            requested_by=ALICE,
            source="slack",
            state=OpState.AWAITING_APPROVAL,
        )
        world.approvals.append(op)
    world.asked = [world.approvals[0]] * 20
    world.runs = [
        NextRun(f"schedule-{i}", now, tuple(f"res-{j:02d}" for j in range(60))) for i in range(15)
    ][:10]
    from bot.models import Lease, LeaseState

    world.leases = [
        Lease(
            id=f"w{i}",
            resource=f"res-{i:02d}",
            owner=BOB,
            state=LeaseState.ACTIVE,
            created_at=now,
            ends_at=now + dt.timedelta(hours=2),
        )
        for i in range(12)
    ]
    view = home.home_view(world, notice=Mrkdwn("x" * 2900))
    check_blocks(view["blocks"], most=MAX_VIEW_BLOCKS)
    assert len(view["blocks"]) <= MAX_VIEW_BLOCKS
    shown = texts(view)
    assert f"… and {60 - home.MAX_HOME_LOCKS} more locks" in shown
    assert f"… and {30 - home.MAX_HOME_APPROVALS} more requests" in shown
    # And published as is by the fake Web API, which refuses what Slack refuses.
    client = AsyncWebClient(token=TOKEN, base_url=slack.fake_server.api_url)
    published = await client.views_publish(user_id=BOB, view=view)
    assert published["ok"] and slack.fake.home(BOB) is not None


async def test_unlock_on_the_home_is_slash_unlock(slack: Slack) -> None:
    """Unlock acts as `/stop unlock` (same audit, the Home says what it said); the same
    click by someone else is refused by the same rule and changes nothing."""
    await slack.stopbot.locks.lock("spark", BOB, dt.timedelta(hours=4), None)
    view = await open_home(slack, BOB)
    # Alice sends Bob's Unlock (a forged click on his Home's button): refused.
    await click(slack, ALICE, view, home.HOME_UNLOCK, "spark")
    refused = await published_home(slack, ALICE, 1)
    assert "spark is locked by <@U0BOB>, not you: only they can unlock it." in texts(refused)
    assert slack.store.get_lock("spark") is not None
    await click(slack, BOB, view, home.HOME_UNLOCK, "spark")
    after = await published_home(slack, BOB, 2)
    assert ":unlock: spark is unlocked." in texts(after)
    assert "You hold no lock." in texts(after)
    assert slack.store.get_lock("spark") is None
    removed = [e for e in slack.store.audit_log(resource="spark") if e.action == "lock.removed"]
    assert [(e.actor, e.detail) for e in removed] == [(BOB, {"forced": False})]


async def test_extend_on_the_home_is_the_warning_s_extend(slack: Slack) -> None:
    """Extend 1h moves the lock an hour from the expiry shown; a second click on the same
    Home extends nothing more (the warning's rule)."""
    locked = await slack.stopbot.locks.lock("spark", BOB, dt.timedelta(hours=4), None)
    expires = locked.lock.expires_at
    view = await open_home(slack, BOB)
    value = f"spark|1h|{expires.isoformat()}"
    await click(slack, BOB, view, "home_extend:1h", value)
    after = await published_home(slack, BOB, 2)
    assert "Extended: your lock on spark now expires" in texts(after)
    lock = slack.store.get_lock("spark")
    assert lock is not None and lock.expires_at == expires + dt.timedelta(hours=1)
    await click(slack, BOB, view, "home_extend:1h", value)
    again = await published_home(slack, BOB, 3)
    assert "already runs until" in texts(again)
    lock = slack.store.get_lock("spark")
    assert lock is not None and lock.expires_at == expires + dt.timedelta(hours=1)


async def test_approvals_on_the_home_go_through_the_approval_rules(slack: Slack) -> None:
    """A stop of dev-eu waits for Carol: it is on her Home, not on Bob's (the requester) nor
    Ada's. Bob clicking Approve (forged) is refused, the request still pending; Carol's
    Approve releases the stop, audited as hers."""
    await slack.ask("dev-eu", user=BOB)
    op_id, ts = slack.confirmation()
    await slack.click("stop_confirm", op_id, ts)
    await slack.fake.wait_for("chat.postMessage", lambda c: "Approve" in json.dumps(c.args))
    carol = await open_home(slack, CAROL)
    assert "wants to stop *dev-eu*" in texts(carol)
    for user in (BOB, ADMIN):
        assert "Nothing waits for your approval." in texts(await open_home(slack, user))
    await click(slack, BOB, carol, home.HOME_APPROVE, op_id)
    refused = await published_home(slack, BOB, 2)
    assert "wants to stop *dev-eu*" not in texts(refused)
    approval = slack.store.approval(op_id)
    assert approval is not None and approval.status == "pending"
    assert [e for e in slack.store.audit_log() if e.action.startswith("approval.approve")] == []
    await click(slack, CAROL, carol, home.HOME_APPROVE, op_id)
    after = await published_home(slack, CAROL, 2)
    assert "Nothing waits for your approval." in texts(after)
    approval = slack.store.approval(op_id)
    assert approval is not None and approval.status == "approved"
    voted = [e for e in slack.store.audit_log() if e.action.startswith("approval.approve")]
    assert [(e.action, e.actor) for e in voted] == [
        ("approval.approve", CAROL),
        ("approval.approved", CAROL),
    ]


def leased(slack: Slack, resource: str, owner: str) -> str:
    """A wake of ``resource`` by ``owner`` for 2h, up, its lease open: the lease's id."""
    from bot.models import Action

    op, _ = slack.store.create_operation(
        resource=resource,
        provider="nova",
        resource_id=resource,
        requested_by=owner,
        source="slack",
        action=Action.START,
        lease_seconds=7200,
    )
    slack.store.transition(op.id, OpState.STARTED, allowed_from=[OpState.REQUESTED], actor=owner)
    assert slack.store.open_lease(op.id) is not None
    return op.id


async def test_wake_leases_on_the_home_act_as_the_lease_warning_s_buttons(slack: Slack) -> None:
    """Bob's wake lease is on his Home with Extend 1h and Stop now, the lease warning's
    buttons: Alice's forged Extend is refused by the same rule, Bob's moves it an hour.
    Many leases keep the Home within its 100 blocks."""
    lease_id = leased(slack, "web-1", BOB)
    before = slack.store.leases()[0].ends_at
    view = await open_home(slack, BOB)
    assert "*web-1* is up until" in texts(view)
    await click(slack, ALICE, view, home.HOME_LEASE_EXTEND, lease_id)
    await published_home(slack, ALICE, 1)
    assert slack.store.leases()[0].ends_at == before
    await click(slack, BOB, view, home.HOME_LEASE_EXTEND, lease_id)
    after = await published_home(slack, BOB, 2)
    assert "Extended: web-1 stays up until" in texts(after)
    assert slack.store.leases()[0].ends_at == before + dt.timedelta(hours=1)

    for i in range(12):
        leased(slack, f"res-{i:02d}", BOB)
    world = await world_of(slack.stopbot, slack.config.actor(BOB))
    many = home.home_view(world)
    check_blocks(many["blocks"], most=MAX_VIEW_BLOCKS)
    assert f"… and {13 - home.MAX_HOME_LEASES} more leases" in texts(many)
