"""The fake Slack Web API, driven through slack_sdk's real clients over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import httpx
import pytest
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.slack.fake_api import (
    DEFAULT_TOKEN,
    RESPONSE_URL_METHOD,
    FakeSlack,
    FakeSlackServer,
    SlackChannel,
    SlackUser,
    block_actions_body,
    block_actions_payload,
    sign_request,
    slash_command_body,
)
from tests.conftest import shared_path

NOW = 1700000000.0001  # 2023-11-14, winter time in both Athens and New York
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "Stop *db-1*?"}}]
BOT_FIELDS = {"type": "message", "user": "U0STOPBOT", "bot_id": "B0STOPBOT", "app_id": "A0STOPBOT"}


@pytest.fixture
def fake() -> FakeSlack:
    return FakeSlack(
        clock=lambda: NOW,
        users=[
            SlackUser(
                "U1ALICE",
                "alice",
                real_name="Alice Liddell",
                display_name="ali",
                tz="Europe/Athens",
                is_admin=True,
            ),
            SlackUser("U2BOB", "bob", tz="America/New_York"),
        ],
        channels=[SlackChannel("C1OPS", "ops"), SlackChannel("C2RANDOM", "random", member=False)],
        usergroups={"S1ONCALL": ["U1ALICE", "U2BOB"]},
    )


@pytest.fixture
def server(fake: FakeSlack) -> Iterator[FakeSlackServer]:
    with FakeSlackServer(fake) as server:
        yield server


@pytest.fixture
def client(server: FakeSlackServer) -> AsyncWebClient:
    return AsyncWebClient(token=DEFAULT_TOKEN, base_url=server.api_url)


async def slack_error(call: Any) -> SlackApiError:
    """The SlackApiError an awaited client call raises."""
    with pytest.raises(SlackApiError) as info:
        await call
    return info.value


def bot_message(ts: str, text: str, **extra: Any) -> dict[str, Any]:
    return BOT_FIELDS | {"team": "T0STOPBOT", "text": text, "ts": ts} | extra


# -- auth ------------------------------------------------------------------------------------


async def test_auth_test_answers_like_slack(client: AsyncWebClient) -> None:
    """auth.test gives the bot's identity and the granted scopes in x-oauth-scopes."""
    response = await client.auth_test()
    assert response.data == {
        "ok": True,
        "url": "https://stopbot-playground.slack.com/",
        "team": "Stopbot Playground",
        "user": "stopbot",
        "team_id": "T0STOPBOT",
        "user_id": "U0STOPBOT",
        "bot_id": "B0STOPBOT",
    }
    assert response.headers["x-oauth-scopes"] == (
        "chat:write,commands,im:write,users:read,usergroups:read"
    )


async def test_wrong_token_is_invalid_auth(server: FakeSlackServer) -> None:
    """A token the fake does not accept gets invalid_auth with HTTP 200, as Slack answers."""
    client = AsyncWebClient(token="xoxb-not-ours", base_url=server.api_url)
    error = await slack_error(client.chat_postMessage(channel="C1OPS", text="hi"))
    assert error.response.status_code == 200
    assert error.response.data == {"ok": False, "error": "invalid_auth"}
    assert server.slack.messages("C1OPS") == []


def test_missing_token_is_not_authed(server: FakeSlackServer) -> None:
    """A call with no token at all gets not_authed, and is still recorded."""
    response = httpx.post(f"{server.api_url}auth.test")
    assert (response.status_code, response.json()) == (200, {"ok": False, "error": "not_authed"})
    [call] = server.slack.calls("auth.test")
    assert (call.token, call.status, call.path) == (None, 200, "/api/auth.test")


def test_token_in_form_body_is_accepted(server: FakeSlackServer) -> None:
    """A token sent as a form field authenticates like the Authorization header."""
    response = httpx.post(f"{server.api_url}auth.test", data={"token": DEFAULT_TOKEN})
    assert response.json()["ok"] is True
    assert server.slack.calls()[0].token == DEFAULT_TOKEN
    assert server.slack.calls()[0].args == {}


async def test_unknown_method(client: AsyncWebClient) -> None:
    """A method the fake does not implement answers unknown_method."""
    error = await slack_error(client.api_call("chat.scheduleMessage", json={"channel": "C1OPS"}))
    assert error.response.data == {"ok": False, "error": "unknown_method"}


# -- recording -------------------------------------------------------------------------------


async def test_json_call_is_recorded(client: AsyncWebClient, fake: FakeSlack) -> None:
    """A JSON call is recorded with its arguments, token and time."""
    await client.chat_postMessage(channel="C1OPS", text="hi", blocks=BLOCKS)
    [call] = fake.calls("chat.postMessage")
    assert call.method == "chat.postMessage"
    assert call.args == {"channel": "C1OPS", "text": "hi", "blocks": BLOCKS}
    assert (call.token, call.at, call.status) == (DEFAULT_TOKEN, NOW, 200)
    assert call.response == {
        "ok": True,
        "channel": "C1OPS",
        "ts": "1700000000.000100",
        "message": bot_message("1700000000.000100", "hi", blocks=BLOCKS),
    }


def test_form_call_decodes_json_fields(server: FakeSlackServer) -> None:
    """A form-encoded call's blocks arrive as a JSON string and are recorded parsed."""
    response = httpx.post(
        f"{server.api_url}chat.postMessage",
        data={"channel": "C1OPS", "text": "hi", "blocks": json.dumps(BLOCKS)},
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    )
    assert response.json()["message"]["blocks"] == BLOCKS
    assert server.slack.calls("chat.postMessage")[0].args == {
        "channel": "C1OPS",
        "text": "hi",
        "blocks": BLOCKS,
    }


def test_malformed_blocks_are_refused(server: FakeSlackServer) -> None:
    """Blocks that are not JSON get Slack's invalid_blocks_format."""
    response = httpx.post(
        f"{server.api_url}chat.postMessage",
        data={"channel": "C1OPS", "blocks": "[{"},
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    )
    assert response.json() == {"ok": False, "error": "invalid_blocks_format"}


def _button(action_id: str, text: str = "Go", value: str = "v") -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        "value": value,
    }


def _section(text: str, block_id: str | None = None) -> dict[str, Any]:
    block = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    return block | ({"block_id": block_id} if block_id else {})


def _menu(value: str) -> dict[str, Any]:
    option = {"text": {"type": "plain_text", "text": "x"}, "value": value}
    return {"type": "static_select", "action_id": "pick", "options": [option]}


@pytest.mark.parametrize(
    "blocks",
    [
        pytest.param([_section("x")] * 51, id="51 blocks"),
        pytest.param([_section("a", "b1"), _section("b", "b1")], id="block_id twice"),
        pytest.param([_section("a", "b" * 256)], id="block_id of 256"),
        pytest.param([_section("x" * 3001)], id="section text of 3001"),
        pytest.param(
            [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            id="header of 151",
        ),
        pytest.param(
            [{"type": "actions", "elements": [_button("extend"), _button("extend")]}],
            id="action_id twice in a block",
        ),
        pytest.param(
            [{"type": "actions", "elements": [_button("go", text="t" * 76)]}],
            id="button text of 76",
        ),
        pytest.param(
            [{"type": "actions", "elements": [_button("go", value="v" * 2001)]}],
            id="button value of 2001",
        ),
        pytest.param(
            [{"type": "actions", "elements": [_menu("v" * 151)]}], id="option value of 151"
        ),
        pytest.param(
            [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
            id="11 context elements",
        ),
    ],
)
async def test_blocks_past_block_kit_s_limits_are_refused(
    client: AsyncWebClient, blocks: list[dict[str, Any]]
) -> None:
    """Slack answers invalid_blocks for blocks past Block Kit's documented limits."""
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel="C1OPS", text="t", blocks=blocks)
    assert refused.value.response["error"] == "invalid_blocks"


async def test_blocks_at_block_kit_s_limits_are_taken(client: AsyncWebClient) -> None:
    """The same limits, reached and not passed: posted."""
    blocks = [
        {"type": "actions", "elements": [_button("a", text="t" * 75, value="v" * 2000)]},
        {"type": "actions", "elements": [_menu("v" * 150)]},
        *(_section("x" * 3000, f"b{i}") for i in range(48)),
    ]
    posted = await client.chat_postMessage(channel="C1OPS", text="t", blocks=blocks)
    assert posted["ok"] is True


async def test_wait_for_returns_a_call_made_meanwhile(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    """wait_for wakes up when the matching call arrives, and skips calls that do not match."""
    waiting = asyncio.ensure_future(
        fake.wait_for("chat.postMessage", lambda call: call.args["text"] == "second")
    )
    await client.chat_postMessage(channel="C1OPS", text="first")
    await client.chat_postMessage(channel="C1OPS", text="second")
    call = await waiting
    assert isinstance(call.response, dict)
    assert call.response["ts"] == "1700000000.000200"
    message = await fake.wait_for_message("C1OPS", lambda m: m["text"] == "first")
    assert message["ts"] == "1700000000.000100"


async def test_wait_for_times_out_with_what_it_saw(client: AsyncWebClient, fake: FakeSlack) -> None:
    """wait_for fails with the calls received so far when nothing matches in time."""
    await client.auth_test()
    with pytest.raises(
        TimeoutError, match=r"for a matching views.open call in vain; calls so far: auth.test$"
    ):
        await fake.wait_for("views.open", timeout=0.01)


# -- errors and injected faults --------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "error"),
    [
        ("C2RANDOM", "not_in_channel"),
        ("C404", "channel_not_found"),
        ("G3SECRET", "channel_not_found"),
    ],
)
async def test_posting_needs_a_channel_the_bot_is_in(
    client: AsyncWebClient, fake: FakeSlack, channel: str, error: str
) -> None:
    """Posting where the bot is not a member, or to a channel it cannot see, fails."""
    fake.add_channel("G3SECRET", "secret", member=False, is_private=True)
    failure = await slack_error(client.chat_postMessage(channel=channel, text="hi"))
    assert failure.response.data == {"ok": False, "error": error}


async def test_ratelimited_answers_429_with_retry_after(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    """An injected rate limit answers 429 + Retry-After once; slack_sdk raises without retry."""
    fake.fail_next("chat.postMessage", retry_after=7)
    error = await slack_error(client.chat_postMessage(channel="C1OPS", text="hi"))
    assert error.response.status_code == 429
    assert error.response.headers["Retry-After"] == "7"
    assert error.response.data == {"ok": False, "error": "ratelimited"}
    assert fake.messages("C1OPS") == []
    assert (await client.chat_postMessage(channel="C1OPS", text="hi"))["ok"] is True


async def test_injected_error_is_http_200(client: AsyncWebClient, fake: FakeSlack) -> None:
    """Any other injected error answers HTTP 200 with ok false, like Slack's own errors."""
    fake.fail_next("users.info", "fatal_error")
    error = await slack_error(client.users_info(user="U1ALICE"))
    assert error.response.status_code == 200
    assert "Retry-After" not in error.response.headers
    assert error.response.data == {"ok": False, "error": "fatal_error"}


# -- messages --------------------------------------------------------------------------------


async def test_post_update_delete_show_in_messages(client: AsyncWebClient, fake: FakeSlack) -> None:
    """A channel shows posts in order, updates in place (same ts), and forgets deletes."""
    first = await client.chat_postMessage(channel="C1OPS", text="one", blocks=BLOCKS)
    second = await client.chat_postMessage(channel="#ops", text="two")
    assert (first["ts"], second["ts"]) == ("1700000000.000100", "1700000000.000200")

    updated = await client.chat_update(channel="C1OPS", ts=first["ts"], text="one, stopped")
    assert updated.data == {
        "ok": True,
        "channel": "C1OPS",
        "ts": "1700000000.000100",
        "text": "one, stopped",
        "message": bot_message("1700000000.000100", "one, stopped", blocks=BLOCKS),
    }
    assert fake.messages("C1OPS") == [
        bot_message("1700000000.000100", "one, stopped", blocks=BLOCKS),
        bot_message("1700000000.000200", "two"),
    ]

    deleted = await client.chat_delete(channel="C1OPS", ts=second["ts"])
    assert deleted.data == {"ok": True, "channel": "C1OPS", "ts": "1700000000.000200"}
    assert [m["text"] for m in fake.messages("C1OPS")] == ["one, stopped"]


async def test_update_with_empty_blocks_removes_them(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    """An update with blocks=[] drops the message's blocks, as Slack does."""
    posted = await client.chat_postMessage(channel="C1OPS", text="one", blocks=BLOCKS)
    await client.chat_update(channel="C1OPS", ts=posted["ts"], text="plain", blocks=[])
    assert fake.messages("C1OPS") == [bot_message("1700000000.000100", "plain")]


async def test_update_and_delete_refusals(client: AsyncWebClient, fake: FakeSlack) -> None:
    """Unknown ts is message_not_found; someone else's message cannot be updated or deleted."""
    theirs = fake.add_message("C1OPS", "hello bot", user="U1ALICE")
    assert theirs == "1700000000.000100"
    cases = [
        (client.chat_update(channel="C1OPS", ts="1.2", text="x"), "message_not_found"),
        (client.chat_update(channel="C1OPS", ts=theirs, text="x"), "cant_update_message"),
        (client.chat_delete(channel="C1OPS", ts=theirs), "cant_delete_message"),
        (client.api_call("chat.postMessage", json={"channel": "C1OPS"}), "no_text"),
    ]
    for call, expected in cases:
        assert (await slack_error(call)).response.data == {"ok": False, "error": expected}
    assert fake.messages("C1OPS") == [
        {"type": "message", "user": "U1ALICE", "text": "hello bot", "ts": "1700000000.000100"}
    ]


async def test_ephemeral_messages_are_kept_apart(client: AsyncWebClient, fake: FakeSlack) -> None:
    """chat.postEphemeral answers message_ts and only its user sees the message."""
    response = await client.chat_postEphemeral(channel="C1OPS", user="U1ALICE", text="psst")
    assert response.data == {"ok": True, "message_ts": "1700000000.000100"}
    assert fake.ephemeral_messages("C1OPS", "U1ALICE") == [
        bot_message(response["message_ts"], "psst")
    ]
    assert fake.ephemeral_messages("C1OPS", "U2BOB") == []
    assert fake.messages("C1OPS") == []
    unknown = await slack_error(client.chat_postEphemeral(channel="C1OPS", user="U9", text="x"))
    assert unknown.response.data == {"ok": False, "error": "user_not_found"}


async def test_conversations_open_gives_a_stable_dm(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    """The same user always gets the same D channel, and posting to their id lands there."""
    first = await client.conversations_open(users="U1ALICE")
    again = await client.conversations_open(users=["U1ALICE"])
    assert first.data == {"ok": True, "channel": {"id": "D00000001"}}
    assert again.data == {
        "ok": True,
        "no_op": True,
        "already_open": True,
        "channel": {"id": "D00000001"},
    }
    posted = await client.chat_postMessage(channel="U1ALICE", text="your db stopped")
    assert posted["channel"] == "D00000001"
    assert [m["text"] for m in fake.messages("D00000001")] == ["your db stopped"]
    group = await client.conversations_open(users="U1ALICE,U2BOB")
    assert group.data == {"ok": True, "channel": {"id": "G00000001"}}
    missing = await slack_error(client.conversations_open(users="U9"))
    assert missing.response.data == {"ok": False, "error": "user_not_found"}


# -- users, groups, views --------------------------------------------------------------------


async def test_users_info(client: AsyncWebClient) -> None:
    """users.info describes a seeded user with their time zone's offset; others are unknown."""
    response = await client.users_info(user="U1ALICE")
    assert response.data == {
        "ok": True,
        "user": {
            "id": "U1ALICE",
            "team_id": "T0STOPBOT",
            "name": "alice",
            "deleted": False,
            "real_name": "Alice Liddell",
            "tz": "Europe/Athens",
            "tz_offset": 7200,
            "profile": {
                "real_name": "Alice Liddell",
                "real_name_normalized": "Alice Liddell",
                "display_name": "ali",
                "display_name_normalized": "ali",
                "team": "T0STOPBOT",
            },
            "is_admin": True,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": False,
            "is_app_user": False,
        },
    }
    bob = await client.users_info(user="U2BOB")
    assert (bob["user"]["real_name"], bob["user"]["tz_offset"]) == ("bob", -18000)
    missing = await slack_error(client.users_info(user="U9"))
    assert missing.response.data == {"ok": False, "error": "user_not_found"}


def test_add_user_rejects_unknown_time_zone(fake: FakeSlack) -> None:
    """A seeded user's time zone must be a real one."""
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        fake.add_user("U3", "carol", tz="Mars/Olympus")


async def test_usergroups_users_list(client: AsyncWebClient, fake: FakeSlack) -> None:
    """usergroups.users.list gives a group's members; an unknown group is no_such_subteam."""
    fake.add_usergroup("S2ADMINS", ["U1ALICE"])
    oncall = await client.usergroups_users_list(usergroup="S1ONCALL")
    assert oncall.data == {"ok": True, "users": ["U1ALICE", "U2BOB"]}
    admins = await client.usergroups_users_list(usergroup="S2ADMINS")
    assert admins.data == {"ok": True, "users": ["U1ALICE"]}
    missing = await slack_error(client.usergroups_users_list(usergroup="S9"))
    assert missing.response.data == {"ok": False, "error": "no_such_subteam"}


async def test_views_open_and_update(client: AsyncWebClient, fake: FakeSlack) -> None:
    """views.open records the view and gives it an id; views.update replaces it by id."""
    view = {
        "type": "modal",
        "callback_id": "stop",
        "title": {"type": "plain_text", "text": "Stop"},
        "blocks": BLOCKS,
    }
    opened = await client.views_open(trigger_id="1.2.x", view=view)
    assert opened.data == {
        "ok": True,
        "view": {
            "id": "V00000001",
            "team_id": "T0STOPBOT",
            "type": "modal",
            "blocks": BLOCKS,
            "private_metadata": "",
            "callback_id": "stop",
            "external_id": "",
            "clear_on_close": False,
            "notify_on_close": False,
            "title": {"type": "plain_text", "text": "Stop"},
            "state": {"values": {}},
            "hash": "1700000000.00000001",
            "previous_view_id": None,
            "root_view_id": "V00000001",
            "app_id": "A0STOPBOT",
            "app_installed_team_id": "T0STOPBOT",
            "bot_id": "B0STOPBOT",
        },
    }
    updated = await client.views_update(
        view_id="V00000001", hash="1700000000.00000001", view=view | {"blocks": []}
    )
    assert (updated["view"]["id"], updated["view"]["blocks"]) == ("V00000001", [])
    assert updated["view"]["hash"] == "1700000000.00000002"
    assert fake.views() == [updated["view"]]

    stale = await slack_error(
        client.views_update(view_id="V00000001", hash="1700000000.00000001", view=view)
    )
    assert stale.response.data == {"ok": False, "error": "hash_conflict"}
    unknown = await slack_error(client.views_update(view_id="V9", view=view))
    assert unknown.response.data == {"ok": False, "error": "not_found"}


# -- response_url ----------------------------------------------------------------------------


async def test_response_url_replaces_then_deletes_the_original(
    client: AsyncWebClient, fake: FakeSlack, server: FakeSlackServer
) -> None:
    """replace_original rewrites the clicked message in place; delete_original removes it."""
    posted = await client.chat_postMessage(channel="C1OPS", text="Stop db-1?", blocks=BLOCKS)
    url = fake.new_response_url(channel="C1OPS", user="U1ALICE", message_ts=posted["ts"])
    assert url.startswith(f"{server.base_url}/response/")

    webhook = AsyncWebhookClient(url)
    replaced = await webhook.send(text="Stopping db-1", replace_original=True)
    assert (replaced.status_code, replaced.body) == (200, "ok")
    assert fake.messages("C1OPS") == [bot_message("1700000000.000100", "Stopping db-1")]
    [call] = fake.calls(RESPONSE_URL_METHOD)
    assert call.args == {"text": "Stopping db-1", "replace_original": True}
    assert (call.token, call.response) == (None, "ok")

    deleted = await webhook.send(delete_original=True)
    assert (deleted.status_code, deleted.body) == (200, "ok")
    assert fake.messages("C1OPS") == []
    gone = await webhook.send(text="again", replace_original=True)
    assert (gone.status_code, gone.body) == (404, "message_not_found")


async def test_response_url_new_messages(fake: FakeSlack, server: FakeSlackServer) -> None:
    """in_channel posts a channel message; otherwise the reply is ephemeral to the user."""
    webhook = AsyncWebhookClient(fake.new_response_url(channel="C1OPS", user="U1ALICE"))
    await webhook.send(text="everyone sees this", response_type="in_channel")
    await webhook.send(text="only alice", blocks=BLOCKS)
    assert fake.messages("C1OPS") == [bot_message("1700000000.000100", "everyone sees this")]
    assert fake.ephemeral_messages("C1OPS", "U1ALICE") == [
        bot_message("1700000000.000200", "only alice", blocks=BLOCKS)
    ]


async def test_response_url_replaces_an_ephemeral_original(
    client: AsyncWebClient, fake: FakeSlack
) -> None:
    """A response URL minted for an ephemeral message replaces that ephemeral message."""
    posted = await client.chat_postEphemeral(channel="C1OPS", user="U1ALICE", text="Approve?")
    url = fake.new_response_url(
        channel="C1OPS", user="U1ALICE", message_ts=posted["message_ts"], is_ephemeral=True
    )
    await AsyncWebhookClient(url).send(text="Approved", replace_original=True)
    assert fake.ephemeral_messages("C1OPS", "U1ALICE") == [
        bot_message("1700000000.000100", "Approved")
    ]
    assert fake.messages("C1OPS") == []


def test_unknown_response_url_is_404(server: FakeSlackServer) -> None:
    """A response URL the fake never minted answers 404."""
    response = httpx.post(f"{server.base_url}/response/nope", json={"text": "hi"})
    assert (response.status_code, response.text) == (404, "no_service")


def test_new_response_url_needs_a_server() -> None:
    """Minting a response URL before the fake is served says what to do."""
    with pytest.raises(RuntimeError, match="start a FakeSlackServer first"):
        FakeSlack().new_response_url()


# -- what Slack sends to an app --------------------------------------------------------------


def test_sign_request_matches_slacks_published_vector() -> None:
    """sign_request reproduces the signature of Slack's worked example."""
    vector = json.loads(shared_path("slack", "signature_test_vector.json").read_text())
    headers = sign_request(
        vector["signing_secret"], vector["body"].encode(), int(vector["timestamp"])
    )
    assert headers == {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": vector["expected_signature"],
    }


def test_sign_request_passes_slack_sdks_verifier() -> None:
    """slack_sdk's own verifier accepts a request signed now."""
    body = b"token=x&text=stop"
    now = int(time.time())
    headers = sign_request("s3cret", body, now)
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )


def test_slash_command_body_is_byte_for_byte_slacks() -> None:
    """Built from the docs example's values, the body equals the signed docs example."""
    expected = shared_path("slack", "slash_command_body.docs_example.txt").read_bytes()
    fields = dict(parse_qsl(expected.decode(), keep_blank_values=True))
    body = slash_command_body(
        fields["command"],
        fields["text"],
        fields["user_id"],
        fields["channel_id"],
        fields["response_url"],
        fields["trigger_id"],
        team_id=fields["team_id"],
        team_domain=fields["team_domain"],
        channel_name=fields["channel_name"],
        user_name=fields["user_name"],
        verification_token=fields["token"],
    )
    assert body == expected


def test_slash_command_body_round_trips() -> None:
    """Parsing the form back gives every field as given."""
    body = slash_command_body(
        "/stop", "db-1 for 2h", "U1ALICE", "C1OPS", "http://x/response/1", "1.2.x"
    )
    assert dict(parse_qsl(body.decode(), keep_blank_values=True)) == {
        "token": "",
        "team_id": "T0STOPBOT",
        "team_domain": "stopbot-playground",
        "channel_id": "C1OPS",
        "channel_name": "",
        "user_id": "U1ALICE",
        "user_name": "",
        "command": "/stop",
        "text": "db-1 for 2h",
        "response_url": "http://x/response/1",
        "trigger_id": "1.2.x",
    }


def test_block_actions_payload_has_slacks_shape() -> None:
    """A click on a message carries the message; the keys are those Slack sends."""
    fixture = json.loads(
        shared_path("slack", "block_actions.button.message.bolt_tests.json").read_text()
    )
    message = bot_message("1700000000.000100", "Stop db-1?", blocks=BLOCKS)
    payload = block_actions_payload(
        "U1ALICE",
        "C1OPS",
        "approve",
        "req-1",
        response_url="http://x/response/1",
        message=message,
        block_id="decision",
        action_ts="1700000001.000000",
    )
    assert payload.keys() == fixture.keys()
    assert payload["container"] == {
        "type": "message",
        "message_ts": "1700000000.000100",
        "channel_id": "C1OPS",
        "is_ephemeral": False,
    }
    assert payload["message"] == message
    assert payload["actions"] == [
        {
            "action_id": "approve",
            "block_id": "decision",
            "text": {"type": "plain_text", "text": "Button"},
            "value": "req-1",
            "type": "button",
            "action_ts": "1700000001.000000",
        }
    ]
    assert payload["actions"][0].keys() == fixture["actions"][0].keys()


def test_ephemeral_block_actions_payload_has_no_message() -> None:
    """A click on an ephemeral message names it by ts only, as Slack does."""
    fixture = json.loads(
        shared_path("slack", "block_actions.button.ephemeral.bolt_tests.json").read_text()
    )
    payload = block_actions_payload(
        "U1ALICE", "C1OPS", "a", "v", response_url="u", message_ts="1.2", is_ephemeral=True
    )
    assert "message" not in payload
    assert payload["container"].keys() == fixture["container"].keys()
    assert payload["container"]["is_ephemeral"] is True


def test_block_actions_body_round_trips() -> None:
    """The body is one form field, payload, holding the payload as JSON."""
    payload = block_actions_payload("U1", "C1", "a", "v & w", response_url="u", message_ts="1.2")
    body = block_actions_body(payload)
    assert body.startswith(b"payload=")
    assert json.loads(parse_qs(body.decode())["payload"][0]) == payload


async def test_a_bolt_app_handles_the_built_requests(
    fake: FakeSlack, server: FakeSlackServer
) -> None:
    """A Bolt app verifies the signed requests, and its replies land in the fake channel."""
    app = AsyncApp(
        signing_secret="s3cret", client=AsyncWebClient(token=DEFAULT_TOKEN, base_url=server.api_url)
    )
    seen: list[str] = []

    @app.command("/stop")
    async def stop(ack: Any, command: dict[str, Any], say: Any) -> None:
        await ack()
        seen.append(command["text"])
        await say(text="Stop db-1?", blocks=BLOCKS)

    @app.action("approve")
    async def approve(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        seen.append(body["actions"][0]["value"])
        await respond(text="Approved", replace_original=True)

    now = int(time.time())
    url = fake.new_response_url(channel="C1OPS", user="U1ALICE")
    command = slash_command_body("/stop", "db-1", "U1ALICE", "C1OPS", url, "1.2.x")
    response = await app.async_dispatch(
        AsyncBoltRequest(body=command.decode(), headers=sign_request("s3cret", command, now))
    )
    assert response.status == 200
    posted = await fake.wait_for_message("C1OPS")

    click_url = fake.new_response_url(channel="C1OPS", user="U1ALICE", message_ts=posted["ts"])
    click = block_actions_body(
        block_actions_payload(
            "U1ALICE", "C1OPS", "approve", "req-1", response_url=click_url, message=posted
        )
    )
    response = await app.async_dispatch(
        AsyncBoltRequest(body=click.decode(), headers=sign_request("s3cret", click, now))
    )
    assert response.status == 200
    await fake.wait_for(RESPONSE_URL_METHOD)
    assert seen == ["db-1", "req-1"]
    assert fake.messages("C1OPS") == [bot_message(posted["ts"], "Approved")]
    forged = await app.async_dispatch(
        AsyncBoltRequest(body=click.decode(), headers=sign_request("wrong", click, now))
    )
    assert forged.status == 401
