"""The local playground without a browser: its JSON API drives the real bot through signed
Slack requests over loopback HTTP; the stand-in Slack's additions for it; `stopbot dev`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.playground.core import Playground
from bot.playground.dev import PlaygroundServer, run_dev
from bot.slack.fake_api import (
    DEFAULT_TOKEN,
    FakeSlack,
    FakeSlackServer,
    SlackChannel,
    SlackUser,
    block_actions_body,
    sign_request,
    view_closed_payload,
    view_submission_payload,
)
from bot.slack.local import LOCAL_ADMIN, LOCAL_APPROVER, LOCAL_CHANNEL, LOCAL_DEVELOPER
from providers.simulators.server import SimulatorServer
from tests.conftest import shared_path
from tests.helpers import FAST_STOPS, SimTime, clear_of_the_morning_start

CHANNEL = LOCAL_CHANNEL.id
DANA, ALICE = LOCAL_DEVELOPER, "U0LOCALAPP"
BOT = "U0STOPBOT"


@pytest.fixture
def served(sims: SimulatorServer) -> Iterator[PlaygroundServer]:
    """The playground on a free port, on the shared simulators with a frozen clock that the
    bot's polling moves instead of waiting."""
    sims.hub.clock.freeze()
    clear_of_the_morning_start(sims)
    with PlaygroundServer(sims=sims, stops=FAST_STOPS, sleep=SimTime(sims).sleep) as server:
        yield server


@pytest.fixture
async def page(served: PlaygroundServer) -> AsyncIterator[Page]:
    async with httpx.AsyncClient(base_url=served.url) as client:
        yield Page(served.playground, client)


class Page:
    """What the page's script does: JSON posts to the playground's API."""

    def __init__(self, playground: Playground, client: httpx.AsyncClient) -> None:
        self.playground = playground
        self.slack = playground.slack
        self.client = client

    async def post(self, path: str, body: Any, expect: int = 200) -> dict[str, Any]:
        response = await self.client.post(path, json=body)
        assert response.status_code == expect, response.text
        result: dict[str, Any] = response.json()
        return result

    async def type(self, text: str, user: str = DANA, channel: str = CHANNEL) -> dict[str, Any]:
        return await self.post(
            "/playground/message", {"user": user, "channel": channel, "text": text}
        )

    async def reply(self, n: int = 1, user: str = DANA) -> dict[str, Any]:
        """The n-th (1-based) ephemeral message someone else showed ``user``, once it came:
        a command's replies arrive through its response_url after the acknowledgement."""

        def others() -> list[dict[str, Any]]:
            return [m for m in self.slack.ephemeral_messages(CHANNEL, user) if m["user"] != user]

        await self.slack.wait_for_ephemeral(CHANNEL, user, lambda _: len(others()) >= n)
        return others()[n - 1]

    async def click(
        self, message: dict[str, Any], action_id: str, user: str = DANA, *, ephemeral: bool
    ) -> dict[str, Any]:
        """Click the button with ``action_id`` in ``message``, by its position, as the page."""
        for b, block in enumerate(message["blocks"]):
            for e, element in enumerate(block.get("elements") or []):
                if element.get("action_id") == action_id:
                    return await self.post(
                        "/playground/click",
                        {
                            "user": user,
                            "channel": CHANNEL,
                            "message_ts": message["ts"],
                            "block": b,
                            "element": e,
                            "ephemeral": ephemeral,
                        },
                    )
        raise AssertionError(f"no {action_id} button in {message['text']!r}")

    async def state(self) -> dict[str, Any]:
        response = await self.client.get("/playground/state")
        assert response.status_code == 200
        result: dict[str, Any] = response.json()
        return result


def final(message: dict[str, Any]) -> bool:
    return any(marker in message["text"] for marker in ("Stopped", "Failed", "Refused"))


# -- the stop, as a person does it in the page ---------------------------------------------


async def test_command_shows_the_confirmation_only_to_its_user(page: Page) -> None:
    """A typed `/stop dev-eu` reaches the bot signed as Slack would; the confirmation is
    ephemeral, after the user's own echo, and nobody else sees either."""
    assert await page.type("/stop dev-eu") == {"ok": True}
    await page.reply()
    echo, confirmation = page.slack.ephemeral_messages(CHANNEL, DANA)
    assert (echo["user"], echo["text"]) == (DANA, "/stop dev-eu")
    assert (confirmation["user"], confirmation["text"]) == (
        BOT,
        "Stop dev-eu (qovery)? Confirm or cancel.",
    )
    assert page.slack.ephemeral_messages(CHANNEL, ALICE) == []
    assert page.slack.messages(CHANNEL) == []
    [delivery] = (await page.state())["deliveries"]
    assert {k: delivery[k] for k in ("kind", "user", "summary", "status", "error")} == {
        "kind": "slash_command",
        "user": DANA,
        "summary": "/stop dev-eu",
        "status": 200,
        "error": None,
    }


async def test_confirm_click_follows_the_stop_to_stopped(page: Page) -> None:
    """Clicking Confirm posts the public progress message, updated in place to Stopped."""
    await page.type("/stop dev-eu")
    await page.click(await page.reply(), "stop_confirm", ephemeral=True)
    done = await page.slack.wait_for_message(CHANNEL, final)
    assert done["text"].startswith("dev-eu: :white_check_mark: Stopped in ")
    assert [m["ts"] for m in page.slack.messages(CHANNEL)] == [done["ts"]]
    timeline = json.dumps(done["blocks"])
    for state in ("STOP_QUEUED", "STOPPING", "STOPPED"):
        assert f"`{state}`" in timeline
    state = await page.state()
    dev_eu = next(r for r in state["resources"] if r["name"] == "dev-eu")
    assert (dev_eu["status"], dev_eu["settled"]) == ("STOPPED", True)
    assert [d["kind"] for d in state["deliveries"]] == ["slash_command", "block_actions"]


async def test_a_stopped_resource_is_woken_again_in_the_page(page: Page) -> None:
    """Stop, then `/stop wake`, in the same page: the estate comes back without restarting
    anything, and the progress message follows it to Running."""
    await page.type("/stop dev-eu")
    await page.click(await page.reply(), "stop_confirm", ephemeral=True)
    await page.slack.wait_for_message(CHANNEL, final)
    await page.type("/stop wake dev-eu")
    confirmation = await page.reply(2)
    assert confirmation["text"] == "Wake dev-eu (qovery)? Confirm or cancel."
    await page.click(confirmation, "stop_confirm", ephemeral=True)
    woken = await page.slack.wait_for_message(
        CHANNEL, lambda m: m["text"].startswith("dev-eu: :white_check_mark: Running")
    )
    assert "`DEPLOYED`" in json.dumps(woken["blocks"])
    state = await page.state()
    dev_eu = next(r for r in state["resources"] if r["name"] == "dev-eu")
    assert (dev_eu["status"], dev_eu["settled"]) == ("DEPLOYED", True)


async def test_acknowledgement_reply_is_shown_ephemeral(page: Page) -> None:
    """The text a command is acknowledged with shows as the bot's ephemeral message."""
    await page.type("/stop help")
    reply = await page.reply()
    assert reply["user"] == BOT
    assert reply["text"].startswith("*Stopbot* stops cloud resources safely.")


async def test_unknown_command_is_explained_and_not_sent(page: Page) -> None:
    """A slash command the app does not have gets Slackbot's explanation; the bot hears nothing."""
    await page.type("/deploy dev-eu")
    reply = await page.reply()
    assert (reply["user"], reply["text"]) == (
        "USLACKBOT",
        "`/deploy` is not a valid command. The only app in this workspace is Stopbot, whose "
        "command is `/stop`: try `/stop help`.",
    )
    assert (await page.state())["deliveries"] == []


async def test_plain_text_is_an_ordinary_message(page: Page) -> None:
    """Text that is not a command is posted in the channel as the user."""
    await page.type("anyone using dev-eu tonight?", user=ALICE)
    [message] = page.slack.messages(CHANNEL)
    assert (message["user"], message["text"]) == (ALICE, "anyone using dev-eu tonight?")


async def test_a_refused_signature_is_reported_like_slack(page: Page) -> None:
    """When the bot refuses the request (here: signed with another secret, so 401), the user
    is told `dispatch_failed`, as Slack does, and nothing happens."""
    page.playground.local.signing_secret = "not-the-bots-secret"
    await page.type("/stop dev-eu")
    assert (await page.reply())["text"] == '`/stop` failed with the error "dispatch_failed".'
    [delivery] = (await page.state())["deliveries"]
    assert (delivery["status"], delivery["error"]) == (401, "dispatch_failed")
    assert page.playground.store.recent_operations() == []


async def test_locked_resource_is_refused(page: Page) -> None:
    """staging-us, locked in Qovery by Alice, is refused to Dana with the owner named."""
    await page.type("/stop staging-us")
    assert (await page.reply())["text"] == (
        ":no_entry: Refused: staging-us is locked in qovery by Alice Martin "
        "(load test until Friday); it expires in 3d."
    )


async def test_approver_approves_and_the_stop_follows(page: Page) -> None:
    """spark needs Priya's approval: her Approve click starts the stop, followed to Stopped."""
    await page.type("/stop spark")
    await page.click(await page.reply(), "stop_confirm", ephemeral=True)
    request = await page.slack.wait_for_message(
        CHANNEL, lambda m: "approval_approve" in json.dumps(m.get("blocks", []))
    )
    await page.click(request, "approval_approve", user=LOCAL_APPROVER, ephemeral=False)
    done = await page.slack.wait_for_message(CHANNEL, final)
    assert done["text"].startswith("spark: :white_check_mark: Stopped in ")


# -- modals: any modal the bot opens, with listeners a test adds to the real app -------------


FORM = {
    "type": "modal",
    "callback_id": "test_form",
    "notify_on_close": True,
    "title": {"type": "plain_text", "text": "Why?"},
    "submit": {"type": "plain_text", "text": "Send"},
    "blocks": [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "Tell the requester why."},
            "accessory": {
                "type": "button",
                "action_id": "hint",
                "value": "h",
                "text": {"type": "plain_text", "text": "Examples"},
            },
        },
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Reason"},
            "element": {"type": "plain_text_input", "action_id": "text"},
        },
        {
            "type": "input",
            "block_id": "when",
            "optional": True,
            "label": {"type": "plain_text", "text": "When"},
            "element": {
                "type": "static_select",
                "action_id": "pick",
                "options": [
                    {"text": {"type": "plain_text", "text": "Now"}, "value": "now"},
                    {"text": {"type": "plain_text", "text": "Tonight"}, "value": "tonight"},
                ],
            },
        },
    ],
}
OPEN_BUTTON = [
    {
        "type": "actions",
        "block_id": "form",
        "elements": [
            {
                "type": "button",
                "action_id": "open_form",
                "value": "x",
                "text": {"type": "plain_text", "text": "Open"},
            }
        ],
    }
]


@pytest.fixture
async def form(page: Page) -> AsyncIterator[list[dict[str, Any]]]:
    """A button that opens FORM, and what its submissions and closings told the app."""
    app, seen = page.playground.bot.app, []

    @app.action("open_form")
    async def open_form(ack: Any, body: dict[str, Any], client: Any) -> None:
        await ack()
        await client.views_open(trigger_id=body["trigger_id"], view=FORM)

    @app.view("test_form")
    async def submitted(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = view["state"]["values"]
        seen.append({"user": body["user"]["id"], "values": values})
        typed = values["reason"]["text"]["value"]
        thanks = FORM | {"title": {"type": "plain_text", "text": "Thanks"}}
        if typed == "because":
            await ack(response_action="errors", errors={"reason": "Say more than that."})
        elif typed in {"update", "push"}:
            await ack(response_action=typed, view=thanks)
        elif typed == "clear":
            await ack(response_action="clear")
        else:
            await ack()

    @app.view_closed("test_form")
    async def closed(ack: Any, body: dict[str, Any]) -> None:
        seen.append({"closed_by": body["user"]["id"]})
        await ack()

    @app.action("hint")
    async def hint(ack: Any, body: dict[str, Any]) -> None:
        seen.append({"clicked_in": body["container"], "view": body["view"]["id"]})
        await ack()

    client = AsyncWebClient(
        token=page.playground.local.token, base_url=page.playground.local.api_url
    )
    await client.chat_postMessage(channel=CHANNEL, text="Open the form", blocks=OPEN_BUTTON)
    yield seen


async def open_form(page: Page, user: str = DANA) -> dict[str, Any]:
    """Click Open, and the modal the bot opens (after its acknowledgement) for ``user``."""
    opened = len(page.slack.calls("views.open"))
    await page.click(page.slack.messages(CHANNEL)[0], "open_form", user=user, ephemeral=False)
    await page.slack.wait_for("views.open", lambda _: len(page.slack.calls("views.open")) > opened)
    [view] = page.slack.open_views(user)
    return view


async def test_modal_opens_for_the_clicking_user_only(page: Page, form: list[Any]) -> None:
    """A modal the bot opens with a click's trigger_id shows to that user alone."""
    view = await open_form(page)
    assert view["title"]["text"] == "Why?"
    assert page.slack.open_views(ALICE) == []
    [entry] = (await page.state())["slack"]["views"]
    assert (entry["user"], entry["view"]["id"], entry["errors"]) == (DANA, view["id"], {})


async def test_required_input_is_checked_before_sending(page: Page, form: list[Any]) -> None:
    """An empty required input is refused in the dialog, as Slack's client does; the bot
    hears nothing."""
    view = await open_form(page)
    await page.post("/playground/view/submit", {"user": DANA, "view_id": view["id"], "values": {}})
    assert form == []
    [entry] = (await page.state())["slack"]["views"]
    assert entry["errors"] == {"reason": "Please complete this required field."}


async def test_submission_carries_the_values_and_closes(page: Page, form: list[Any]) -> None:
    """Submitting sends view_submission with Slack's state shape; an empty ack closes it."""
    view = await open_form(page)
    await page.post(
        "/playground/view/submit",
        {
            "user": DANA,
            "view_id": view["id"],
            "values": {"reason": {"text": "nightly savings"}, "when": {"pick": "tonight"}},
        },
    )
    assert form == [
        {
            "user": DANA,
            "values": {
                "reason": {"text": {"type": "plain_text_input", "value": "nightly savings"}},
                "when": {
                    "pick": {
                        "type": "static_select",
                        "selected_option": {
                            "text": {"type": "plain_text", "text": "Tonight"},
                            "value": "tonight",
                        },
                    }
                },
            },
        }
    ]
    assert page.slack.open_views(DANA) == []


async def test_errors_and_updates_from_the_app_stay_in_the_modal(
    page: Page, form: list[Any]
) -> None:
    """response_action errors shows the app's words by the input; update replaces the view."""
    view = await open_form(page)
    body = {"user": DANA, "view_id": view["id"], "values": {"reason": {"text": "because"}}}
    await page.post("/playground/view/submit", body)
    [entry] = (await page.state())["slack"]["views"]
    assert entry["errors"] == {"reason": "Say more than that."}
    body["values"] = {"reason": {"text": "update"}}
    await page.post("/playground/view/submit", body)
    [entry] = (await page.state())["slack"]["views"]
    assert (entry["view"]["id"], entry["view"]["title"]["text"], entry["errors"]) == (
        view["id"],
        "Thanks",
        {},
    )


@pytest.mark.parametrize(("typed", "open_titles"), [("push", ["Why?", "Thanks"]), ("clear", [])])
async def test_push_and_clear_from_the_app(
    page: Page, form: list[Any], typed: str, open_titles: list[str]
) -> None:
    """response_action push stacks a view on the submitted one; clear closes them all."""
    view = await open_form(page)
    body = {"user": DANA, "view_id": view["id"], "values": {"reason": {"text": typed}}}
    await page.post("/playground/view/submit", body)
    assert [v["title"]["text"] for v in page.slack.open_views(DANA)] == open_titles


async def test_button_in_a_modal_sends_the_view(page: Page, form: list[Any]) -> None:
    """A button inside a modal sends block_actions whose container is the view."""
    view = await open_form(page)
    await page.post("/playground/view/click", {"user": DANA, "view_id": view["id"], "block": 0})
    assert form == [{"clicked_in": {"type": "view", "view_id": view["id"]}, "view": view["id"]}]


async def test_closing_tells_the_app_when_it_asked(page: Page, form: list[Any]) -> None:
    """Closing a notify_on_close modal sends view_closed, and the modal goes."""
    view = await open_form(page)
    await page.post("/playground/view/close", {"user": DANA, "view_id": view["id"]})
    assert form == [{"closed_by": DANA}]
    assert page.slack.open_views(DANA) == []
    closed = await page.post(
        "/playground/view/close", {"user": DANA, "view_id": view["id"]}, expect=400
    )
    assert closed == {"error": "That dialog is closed already; nothing was sent to the bot."}


# -- the side panel ----------------------------------------------------------------------


async def test_injected_fault_fails_the_stop_with_the_providers_words(page: Page) -> None:
    """A repeated HTTP 500 on dev-eu's stop request ends the stop as Failed, in the channel."""
    answer = await page.post(
        "/playground/faults",
        {"resource": "dev-eu", "kind": "http_500", "stop_only": True, "repeat": True},
    )
    assert answer["fault"] == {
        "api": "qovery",
        "kind": "status",
        "method": "POST",
        "path_contains": "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01",
        "status": 500,
        "body": {"message": "fault injected from the playground"},
        "retry_after": None,
        "seconds": 0.0,
        "count": None,
    }
    assert [f["resource"] for f in (await page.state())["faults"]] == ["dev-eu"]
    await page.type("/stop dev-eu")
    await page.click(await page.reply(), "stop_confirm", ephemeral=True)
    done = await page.slack.wait_for_message(CHANNEL, final)
    assert done["text"] == (
        "dev-eu: :x: Failed: qovery: the provider failed on its side (internal error) (HTTP 500): "
        "fault injected from the playground"
    )
    cleared = await page.client.delete("/playground/faults")
    assert (cleared.status_code, (await page.state())["faults"]) == (200, [])


@pytest.mark.parametrize(
    ("resource", "provider_lock", "bot_lock_owner"),
    [
        ("dev-eu", "locked by Alice Martin: held from the playground", None),
        ("web-1", "locked: held from the playground by Alice Martin", None),
        ("etl", None, ALICE),
    ],
)
async def test_lock_as_someone_else_then_unlock(
    page: Page, resource: str, provider_lock: str | None, bot_lock_owner: str | None
) -> None:
    """Locking as Alice uses the provider's lock where it has one, else a Stopbot lock;
    Unlock removes it; the panel shows both."""
    await page.post("/playground/lock", {"resource": resource, "owner": ALICE})
    row = next(r for r in (await page.state())["resources"] if r["name"] == resource)
    assert row["provider_lock"] == provider_lock
    assert (row["bot_lock"] or {}).get("owner") == bot_lock_owner
    await page.post("/playground/unlock", {"resource": resource})
    row = next(r for r in (await page.state())["resources"] if r["name"] == resource)
    assert (row["provider_lock"], row["bot_lock"]) == (None, None)


async def test_lock_by_someone_else_refuses_dana(page: Page) -> None:
    """A Stopbot lock Alice holds on etl refuses Dana's stop, naming Alice."""
    await page.post("/playground/lock", {"resource": "etl", "owner": ALICE})
    await page.type("/stop etl --force")
    refusal = (await page.reply())["text"]
    assert refusal.startswith(
        ":no_entry: Refused: etl is locked by <@U0LOCALAPP> (held from the playground)"
    )


async def test_skip_ahead_expires_the_confirmation(page: Page) -> None:
    """Skipping eleven minutes moves the bot's clock too: Confirm is then refused as expired."""
    await page.type("/stop dev-eu")
    confirmation = await page.reply()
    await page.post("/playground/clock", {"seconds": 660})
    assert (await page.state())["clock_offset"] == 660
    await page.click(confirmation, "stop_confirm", ephemeral=True)
    reply = await page.slack.wait_for(
        "response_url", lambda c: "expired" in str(c.args.get("text", ""))
    )
    assert reply.args["text"] == "This confirmation expired. Run `/stop dev-eu` again."
    # Only the sample schedule's messages, which the skip brought: Dana's stop posted none.
    assert [t for t in _texts(page) if not t.startswith("office-hours ")] == []


async def test_events_stream_pushes_each_change(page: Page) -> None:
    """The live stream sends the state at once, then again after a change, without a reload."""
    async with asyncio.timeout(10), page.client.stream("GET", "/playground/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        states = _states(events)
        first = await anext(states)
        assert first["slack"]["messages"] == {}
        await page.type("hello from the test", user=ALICE)
        second = await anext(states)
        assert [m["text"] for m in second["slack"]["messages"][CHANNEL]] == ["hello from the test"]


async def _states(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    event = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "state":
            yield json.loads(line.removeprefix("data: "))


async def test_page_and_assets_are_served(page: Page) -> None:
    """The page and its scripts are served as they are in the package (no build step)."""
    index = await page.client.get("/")
    assert index.status_code == 200
    assert "<title>Stopbot playground</title>" in index.text
    for asset, kind in (
        ("app.js", "javascript"),
        ("blocks.js", "javascript"),
        ("style.css", "css"),
    ):
        response = await page.client.get(f"/static/{asset}")
        assert (response.status_code, kind in response.headers["content-type"]) == (200, True)
    health = await page.client.get("/healthz")
    assert health.json()["status"] == "ok"


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        (
            "/playground/message",
            {"user": "U0NOBODY", "channel": CHANNEL, "text": "/stop dev-eu"},
            "No user 'U0NOBODY' in the playground (known: U0LOCALDEV, U0LOCALAPP, U0LOCALAPV, "
            "U0LOCALADM).",
        ),
        (
            "/playground/message",
            {"user": DANA, "channel": "C0ELSEWHERE", "text": "hi"},
            "No conversation 'C0ELSEWHERE' for this user; pick one from the list.",
        ),
        (
            "/playground/message",
            {"user": DANA, "channel": CHANNEL, "text": "   "},
            "Type a message, or a command such as `/stop dev-eu`.",
        ),
        (
            "/playground/message",
            {"user": DANA, "channel": CHANNEL},
            "Bad request: text: Field required.",
        ),
        (
            "/playground/click",
            {"user": DANA, "channel": CHANNEL, "message_ts": "1.000001", "block": 0},
            "That message is gone (deleted or replaced); nothing was sent to the bot.",
        ),
        (
            "/playground/faults",
            {"resource": "dev-eu", "kind": "meteor"},
            "Bad request: kind: Input should be 'http_500', 'http_503', 'http_429', 'slow' or "
            "'drop'.",
        ),
        (
            "/playground/lock",
            {"resource": "prod-db", "owner": ALICE},
            "No resource 'prod-db' (known: dev-eu, staging-us, qa-old, web-1, batch-2, db-3, "
            "spark, flink, etl, analytics, archive).",
        ),
        (
            "/playground/clock",
            {"seconds": 0},
            "Skip between 1 second and 86400 seconds.",
        ),
    ],
    ids=[
        "unknown-user",
        "unknown-channel",
        "empty-text",
        "missing-field",
        "message-gone",
        "unknown-fault",
        "unknown-resource",
        "no-skip",
    ],
)
async def test_bad_requests_are_answered_in_words(
    page: Page, path: str, body: dict[str, Any], error: str
) -> None:
    """A request the playground cannot act on gets 400 and a sentence; nothing is sent."""
    assert await page.post(path, body, expect=400) == {"error": error}
    assert (await page.state())["deliveries"] == []


async def test_only_json_from_this_host_is_accepted(page: Page) -> None:
    """A form post (what another site could send) gets 415; a foreign Host header gets 400."""
    form = await page.client.post("/playground/message", data={"user": DANA, "text": "x"})
    assert (form.status_code, form.json()) == (
        415,
        {"error": "Send the request as JSON (Content-Type: application/json)."},
    )
    rebound = await page.client.get("/playground/state", headers={"Host": "evil.example"})
    assert rebound.status_code == 400
    assert page.slack.messages(CHANNEL) == []


async def test_choosing_in_a_menu_sends_the_option_to_the_bot(page: Page) -> None:
    """A static_select in a message: choosing an option is a block_actions request with
    the option chosen, which the bot answers (here: a Keep menu naming no known schedule);
    an option the menu does not have is refused before the bot hears of it."""
    keep = json.dumps({"s": "nightly", "r": "dev-eu", "d": "1h"})
    menu = {
        "type": "static_select",
        "action_id": "schedule_keep:dev-eu",
        "placeholder": {"type": "plain_text", "text": "Keep dev-eu"},
        "options": [
            {"text": {"type": "plain_text", "text": "Keep dev-eu for 1 hour"}, "value": keep}
        ],
    }
    ts = page.slack.add_message(
        CHANNEL, "Tonight's stops", user=DANA, blocks=[{"type": "actions", "elements": [menu]}]
    )
    choice = {"user": DANA, "channel": CHANNEL, "message_ts": ts, "block": 0, "element": 0}
    refused = await page.post("/playground/click", {**choice, "option": "other"}, expect=400)
    assert refused == {"error": "Choose one of the menu's options; nothing was sent."}
    await page.post("/playground/click", {**choice, "option": keep})
    answer = await page.reply()
    assert answer["text"] == "No schedule named `nightly` (known: office-hours)."
    [delivery] = (await page.state())["deliveries"]
    assert delivery["kind"] == "block_actions"


async def test_click_on_a_non_button_is_refused(page: Page) -> None:
    """A position that holds no button is refused, and the bot hears nothing."""
    await page.type("/stop dev-eu")
    confirmation = await page.reply()
    refused = await page.post(
        "/playground/click",
        {
            "user": DANA,
            "channel": CHANNEL,
            "message_ts": confirmation["ts"],
            "block": 0,
            "element": 0,
            "ephemeral": True,
        },
        expect=400,
    )
    assert refused == {
        "error": "That is not a button or a menu (the message changed); nothing was sent."
    }
    assert len((await page.state())["deliveries"]) == 1


def test_playground_config_grants_the_local_roles(served: PlaygroundServer) -> None:
    """Ada is an admin and spark needs Priya's approval, in the playground's configuration."""
    config = served.playground.config
    assert config.admins == [LOCAL_ADMIN]
    approval = config.approval_for("spark")
    assert approval is not None and approval.approvers == [LOCAL_APPROVER]
    assert config.approval_for("dev-eu") is None


# -- the stand-in Slack's additions ----------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    slack = FakeSlack(
        users=[SlackUser("U1", "una"), SlackUser("U2", "tom")],
        channels=[SlackChannel("C1", "ops")],
    )
    with FakeSlackServer(slack):
        yield slack


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=DEFAULT_TOKEN, base_url=f"{fake.base_url}/api/")


VIEW = {"type": "modal", "title": {"type": "plain_text", "text": "T"}, "blocks": []}


async def test_trigger_opens_a_view_for_its_user_once(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    """A minted trigger_id opens a modal for its user; a second use is exchanged_trigger_id."""
    trigger = fake.new_trigger_id("U1")
    opened = await client.views_open(trigger_id=trigger, view=VIEW)
    assert fake.view_owner(opened["view"]["id"]) == "U1"
    assert [v["id"] for v in fake.open_views("U1")] == [opened["view"]["id"]]
    assert fake.open_views("U2") == []
    with pytest.raises(SlackApiError) as again:
        await client.views_open(trigger_id=trigger, view=VIEW)
    assert again.value.response.data == {"ok": False, "error": "exchanged_trigger_id"}


async def test_trigger_expires_after_three_seconds(client: AsyncWebClient) -> None:
    """A trigger_id older than three seconds is expired_trigger_id."""
    now = [1700000000.0]
    slack = FakeSlack(users=[SlackUser("U1", "una")], clock=lambda: now[0])
    with FakeSlackServer(slack) as server:
        late = AsyncWebClient(token=DEFAULT_TOKEN, base_url=server.api_url)
        trigger = slack.new_trigger_id("U1")
        now[0] += 3.5
        with pytest.raises(SlackApiError) as expired:
            await late.views_open(trigger_id=trigger, view=VIEW)
    assert expired.value.response.data == {"ok": False, "error": "expired_trigger_id"}


async def test_push_stacks_views_and_closing_the_root_closes_all(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    """views.push stacks on the user's modal (three at most); closing the root closes the stack,
    and a closed view can no longer be updated."""
    root = (await client.views_open(trigger_id=fake.new_trigger_id("U1"), view=VIEW))["view"]
    pushed = (await client.views_push(trigger_id=fake.new_trigger_id("U1"), view=VIEW))["view"]
    assert (pushed["previous_view_id"], pushed["root_view_id"]) == (root["id"], root["id"])
    third = fake.push_view("U1", VIEW, pushed["id"])
    with pytest.raises(ValueError, match="push_limit_reached"):
        fake.push_view("U1", VIEW, third["id"])
    updated = await client.views_update(view_id=pushed["id"], view=VIEW | {"blocks": []})
    assert (updated["view"]["id"], updated["view"]["root_view_id"]) == (pushed["id"], root["id"])
    fake.close_view(root["id"])
    assert fake.open_views("U1") == []
    with pytest.raises(SlackApiError) as gone:
        await client.views_update(view_id=root["id"], view=VIEW)
    assert gone.value.response.data == {"ok": False, "error": "not_found"}


async def test_reply_shows_ephemeral_or_in_channel(fake: FakeSlack) -> None:
    """An acknowledgement's reply is ephemeral to the user unless it says in_channel."""
    fake.show_reply("C1", "U1", {"text": "just you"})
    fake.show_reply("C1", "U1", {"text": "everyone", "response_type": "in_channel"})
    assert [m["text"] for m in fake.ephemeral_messages("C1", "U1")] == ["just you"]
    assert [m["text"] for m in fake.messages("C1")] == ["everyone"]
    with pytest.raises(ValueError, match="no_text"):
        fake.show_reply("C1", "U1", {"response_type": "ephemeral"})


async def test_wait_changed_wakes_on_a_change_and_times_out_quietly(fake: FakeSlack) -> None:
    """wait_changed returns the new version after a change, the same one after its timeout."""
    start = fake.version
    assert await fake.wait_changed(start, 0.01) == start
    waiting = asyncio.create_task(fake.wait_changed(start, 5))
    await asyncio.to_thread(fake.add_message, "C1", "hi", user="U1")
    assert await waiting == start + 1


async def test_snapshot_shows_the_workspace_without_secrets(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    """The snapshot lists conversations (DMs marked), messages, ephemerals and call outcomes;
    no call arguments and no token."""
    await client.chat_postMessage(channel="C1", text="posted")
    await client.chat_postEphemeral(channel="C1", user="U2", text="psst")
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C9", text="nowhere")
    dm = (await client.conversations_open(users="U1"))["channel"]["id"]
    snapshot = fake.snapshot()
    assert snapshot["channels"] == [
        {
            "id": "C1",
            "name": "ops",
            "member": True,
            "is_private": False,
            "is_im": False,
            "user": None,
        },
        {"id": dm, "name": "U1", "member": True, "is_private": False, "is_im": True, "user": "U1"},
    ]
    assert [m["text"] for m in snapshot["messages"]["C1"]] == ["posted"]
    assert [
        (e["channel"], e["user"], [m["text"] for m in e["messages"]]) for e in snapshot["ephemeral"]
    ] == [("C1", "U2", ["psst"])]
    assert [(c["method"], c["status"], c["ok"], c["error"]) for c in snapshot["calls"]] == [
        ("chat.postMessage", 200, True, None),
        ("chat.postEphemeral", 200, True, None),
        ("chat.postMessage", 200, False, "channel_not_found"),
        ("conversations.open", 200, True, None),
    ]
    assert DEFAULT_TOKEN not in json.dumps(snapshot)


def test_view_submission_payload_has_slacks_shape(fake: FakeSlack) -> None:
    """The built view_submission has the keys of a real one (Bolt's own test fixture)."""
    sample = json.loads(shared_path("slack", "view_submission.bolt_tests.json").read_text())
    view = sample["view"]
    payload = view_submission_payload("W111", view, view["state"]["values"])
    assert set(sample) <= set(payload)
    assert payload["view"] == view
    assert payload["type"] == "view_submission"
    closed = view_closed_payload("W111", view)
    assert (closed["type"], closed["view"]["id"], closed["is_cleared"]) == (
        "view_closed",
        "V111",
        False,
    )


async def test_bolt_routes_the_built_view_requests(fake: FakeSlack) -> None:
    """A Bolt app verifies and routes the built view_submission and view_closed requests."""
    client = AsyncWebClient(token=DEFAULT_TOKEN, base_url=f"{fake.base_url}/api/")
    app = AsyncApp(signing_secret="s3cret", client=client)
    seen: list[str] = []

    @app.view("form")
    async def submitted(ack: Any, view: dict[str, Any]) -> None:
        await ack()
        seen.append(view["state"]["values"]["b"]["a"]["value"])

    @app.view_closed("form")
    async def closed(ack: Any) -> None:
        await ack()
        seen.append("closed")

    view = VIEW | {"id": "V1", "callback_id": "form", "state": {"values": {}}}
    values = {"b": {"a": {"type": "plain_text_input", "value": "typed"}}}
    for payload in (view_submission_payload("U1", view, values), view_closed_payload("U1", view)):
        body = block_actions_body(payload)
        response = await app.async_dispatch(
            AsyncBoltRequest(body=body.decode(), headers=sign_request("s3cret", body, _now()))
        )
        assert response.status == 200
    assert seen == ["typed", "closed"]


def _now() -> int:
    return int(time.time())


# -- stopbot dev -------------------------------------------------------------------------


def test_taken_port_is_refused_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    """`stopbot dev` on a taken port exits 2 with what to do, before starting anything."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_dev(Settings(), port=port) == 2
    assert capsys.readouterr().err == (
        f"stopbot: cannot listen on 127.0.0.1:{port}: Address already in use. Is another "
        "`stopbot dev` (or another program) using it? Stop it, or pick another port with --port.\n"
    )


def test_only_loopback_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    """The playground refuses a non-loopback address: it has no login."""
    assert run_dev(Settings(), host="0.0.0.0", port=0) == 2  # noqa: S104 - refused, the point
    assert capsys.readouterr().err == (
        "stopbot: the playground listens on loopback only ('0.0.0.0' is not): it has no login, "
        "and anyone who reaches it can act as any user. Use 127.0.0.1.\n"
    )


def test_stopbot_dev_prints_where_to_go_and_quits_on_ctrl_c(tmp_path: Path) -> None:
    """Run as a user does: it prints the URL, the people and the resources, serves the page
    and the bot on STOPBOT_DB, which it keeps, and Ctrl+C ends it with exit code 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "STOPBOT_"))}
    env["STOPBOT_DB"] = str(tmp_path / "mine.db")
    code = "import sys; from bot.config import Settings; from bot.playground.dev import run_dev; sys.exit(run_dev(Settings(), port=0))"
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True
    ).start()
    try:
        printed = []
        while not printed or not printed[-1].startswith("Try "):
            printed.append(lines.get(timeout=60).rstrip("\n"))
        url = (
            printed[0].removeprefix("Stopbot playground: open ").removesuffix("/ in your browser.")
        )
        assert url.startswith("http://127.0.0.1:")
        assert "  Priya Patel      approver" in printed
        assert "  Ada Admin        admin" in printed
        assert "  dev-eu      qovery    DEPLOYED  -" in printed
        assert (
            "  staging-us  qovery    DEPLOYED  locked by Alice Martin: load test until Friday"
            in printed
        )
        assert "  spark       okeanos   started   needs approval by Priya Patel" in printed
        assert "<title>Stopbot playground</title>" in httpx.get(f"{url}/").text
        note = json.loads((tmp_path / "mine.db.playground.json").read_text())
        assert note["pid"] == process.pid
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert lines.get(timeout=10) == "stopbot: playground stopped.\n"
        assert process.stderr is not None
        assert process.stderr.read() == ""
        assert (tmp_path / "mine.db").exists()  # kept: `stopbot history` reads it
        assert not (tmp_path / "mine.db.playground.json").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _texts(page: Page) -> list[str]:
    return [str(m.get("text", "")) for m in page.slack.messages(CHANNEL)]


async def test_skipping_time_brings_the_sample_schedules_warning_then_its_run(page: Page) -> None:
    """The scheduler follows the playground's clock: skipping into the sample schedule's
    warning window posts its warning at once, and skipping past its fire runs it, to its
    summary (no wait for the wall clock)."""
    assert _texts(page) == []
    await page.post("/playground/clock", {"seconds": 150})  # 4-5 min ahead, warned 3 min before
    warning = await page.slack.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("office-hours stops ")
    )
    assert "unless someone skips it" in warning["text"]
    await page.post("/playground/clock", {"seconds": 180})
    summary = await page.slack.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("office-hours run done"), timeout=30
    )
    assert "stopped" in summary["text"]


async def test_a_schedule_added_22_minutes_ahead_fires_as_time_is_skipped(page: Page) -> None:
    """The first hour's case: a schedule 22 minutes ahead, Skip 10 min twice and 1 min
    twice (then the rest of its minute): its warning comes once the clock enters the
    warning window, and its run at the fire."""
    now = page.playground.stopbot.clock()
    fire = (now + dt.timedelta(minutes=22)).replace(second=0, microsecond=0)
    fire += dt.timedelta(minutes=1)
    cron = f"{fire.minute} {fire.hour} * * *"
    await page.type(f'/stop schedule add lunch "{cron}" UTC web-1 warn=15m', user=LOCAL_ADMIN)
    added = await page.slack.wait_for("response_url")
    assert added.args["text"].startswith(f"Added `lunch`: `{cron}` in UTC")
    await page.post("/playground/clock", {"seconds": 600})
    await page.slack.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("lunch stops ")
    )
    for seconds in (600, 60, 60):
        await page.post("/playground/clock", {"seconds": seconds})
    rest = (fire - page.playground.stopbot.clock()).total_seconds()
    if rest > 0:
        await page.post("/playground/clock", {"seconds": rest})
    summary = await page.slack.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("lunch run done"), timeout=30
    )
    assert "1 stopped" in summary["text"] or "already stopped" in summary["text"]


async def test_skipping_past_the_grace_time_announces_the_missed_run(page: Page) -> None:
    """A fire the clock jumps past by more than the grace time (30 min) is announced as
    missed, never lost silently."""
    await page.post("/playground/clock", {"seconds": 45 * 60})
    missed = await page.slack.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("Missed the office-hours run due ")
    )
    assert "is past the grace time of 30m. Nothing was stopped" in missed["text"]
    assert not any(t.startswith("office-hours run") for t in _texts(page))


async def test_the_home_tab_opens_and_its_buttons_reach_the_bot(page: Page) -> None:
    """Opening the Home tab sends app_home_opened: the bot publishes Dana's Home, in the
    page's state; her lock's Unlock on it unlocks (through /stop unlock's rule), and the
    Home is published again saying so. A click before any Home is refused in words."""
    refused = await page.client.post(
        "/playground/home/click", json={"user": DANA, "block": 0, "element": 0}
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "Open the Home tab first: nothing is published there yet."
    expires = page.playground.stopbot.clock() + dt.timedelta(hours=2)
    assert page.playground.store.set_lock("etl", DANA, expires, "demo") is not None
    await page.post("/playground/home", {"user": DANA})
    await page.slack.wait_for("views.publish")
    [home] = (await page.state())["slack"]["homes"]
    assert home["user"] == DANA and home["view"]["type"] == "home"
    blocks = home["view"]["blocks"]
    where = next(
        (b, e)
        for b, block in enumerate(blocks)
        for e, element in enumerate(block.get("elements") or [])
        if element.get("action_id") == "home_unlock"
    )
    await page.post(
        "/playground/home/click", {"user": DANA, "block": where[0], "element": where[1]}
    )
    await page.slack.wait_for("views.publish", lambda c: "unlocked" in json.dumps(c.args))
    assert page.playground.store.get_lock("etl") is None
    [home] = (await page.state())["slack"]["homes"]
    assert ":unlock: etl is unlocked." in json.dumps(home["view"]["blocks"])


@pytest.mark.parametrize(
    ("frozen", "moved_to"),
    [
        ("2026-12-07T06:58:00+00:00", "2026-12-07T07:05:00+00:00"),  # a Monday, 07:58 in Paris
        ("2026-12-07T06:10:00+00:00", "2026-12-07T07:05:00+00:00"),
        ("2026-12-07T07:03:00+00:00", "2026-12-07T07:05:00+00:00"),
        ("2026-12-07T10:00:00+00:00", "2026-12-07T10:00:00+00:00"),
        ("2026-12-05T06:58:00+00:00", "2026-12-05T06:58:00+00:00"),  # a Saturday
    ],
)
def test_the_tests_clock_is_kept_clear_of_the_morning_start(
    sims: SimulatorServer, frozen: str, moved_to: str
) -> None:
    """The fixture's clock never sits in the hour before the estate's morning start (its
    warning would reach the tests whatever the wall clock says when they run)."""
    sims.hub.clock.freeze()
    sims.hub.clock.advance(dt.datetime.fromisoformat(frozen).timestamp() - sims.hub.clock.now())
    clear_of_the_morning_start(sims)
    now = dt.datetime.fromtimestamp(sims.hub.clock.now(), dt.UTC)
    assert now == dt.datetime.fromisoformat(moved_to)
