"""Answering Slack ahead of Bolt: which requests the server answers itself, that its answer
is the one Bolt gives, and that Bolt still does the work afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from slack_bolt.async_app import AsyncBoltRequest
from slack_bolt.request.internals import parse_body
from slack_sdk.signature import SignatureVerifier

from bot.models import OpState
from bot.slack import commands, views
from bot.slack.app import bolt_request
from bot.slack.fake_api import (
    block_actions_body,
    block_actions_payload,
    sign_request,
    slash_command_body,
)
from bot.slack.server import FORM, KEEP_ALIVE, _answer_ahead, _form, build_http_app, http_config
from tests.conftest import shared_path
from tests.slack_harness import BOB, CHANNEL, SECRET, Slack

URL = "https://hooks.slack.com/commands/T0/1/x"


def _command(text: str) -> bytes:
    return slash_command_body("/stop", text, BOB, CHANNEL, URL, "trigger-1")


def _click(action_id: str, value: str = "op-1") -> bytes:
    payload = block_actions_payload(
        BOB, CHANNEL, action_id, value, response_url=URL, message_ts="1.2", is_ephemeral=True
    )
    return block_actions_body(payload)


def _headers(body: bytes, *, secret: str = SECRET, age: int = 0) -> dict[str, str]:
    signed = sign_request(secret, body, int(time.time()) - age)
    return {k.lower(): v for k, v in signed.items()} | {"content-type": FORM}


class Decider:
    """Stands for the bot's decision: records what it was asked about."""

    def __init__(self) -> None:
        self.asked: list[Mapping[str, Any]] = []

    def __call__(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        self.asked.append(body)
        return {"text": "ahead"}


VERIFIER = SignatureVerifier(SECRET)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(_command("dev-eu"), {"x-slack-signature": "v0=00"}, id="forged signature"),
        pytest.param(_command("dev-eu"), {"age": 10 * 60}, id="replayed after 10 minutes"),
        pytest.param(_command("dev-eu"), {"content-type": "application/json"}, id="not a form"),
        pytest.param(b'{"type":"url_verification","challenge":"c"}', {}, id="JSON body"),
        pytest.param(b"command=%2Fstop&text=\xff", {}, id="not UTF-8"),
        pytest.param(_command("dev-eu") + b"&text=prod", {}, id="a field twice"),
        pytest.param(b"payload=%7Bnot+json", {}, id="payload not JSON"),
        pytest.param(
            block_actions_body({"type": "block_actions", "user": {"id": BOB}, "actions": []}),
            {},
            id="click without an action",
        ),
    ],
)
def test_what_only_bolt_can_answer_is_left_to_it(body: bytes, headers: dict[str, Any]) -> None:
    """Unsigned, stale, non-form requests, and bodies Bolt would read otherwise than the
    server, are never answered ahead: the bot is not even asked."""
    age = headers.pop("age", 0)
    decide = Decider()
    assert _answer_ahead(decide, VERIFIER, body, _headers(body, age=age) | headers) is None
    assert decide.asked == []


def test_a_command_is_decided_on_the_form_bolt_reads() -> None:
    body = _command("dev-eu --reason 'nightly & quiet' ü+")
    decide = Decider()
    assert _answer_ahead(decide, VERIFIER, body, _headers(body)) == {"text": "ahead"}
    assert decide.asked == [dict(parse_qsl(body.decode(), keep_blank_values=True))]
    assert decide.asked[0]["text"] == "dev-eu --reason 'nightly & quiet' ü+"


def test_a_click_is_decided_on_its_payload() -> None:
    body = _click(views.CONFIRM)
    payload = json.loads(dict(parse_qsl(body.decode()))["payload"])
    decide = Decider()
    assert _answer_ahead(decide, VERIFIER, body, _headers(body)) == {"text": "ahead"}
    assert decide.asked == [payload]


@given(
    st.dictionaries(st.text(min_size=1), st.text(), max_size=6),
    st.booleans(),
)
def test_form_decodes_as_the_standard_library_does(fields: dict[str, str], plus: bool) -> None:
    """yarl's decoder gives what `parse_qsl` (Bolt's) gives, for any text, spaces as `+`
    or `%20`."""
    body = urlencode(fields).replace("+", "%20" if not plus else "+")
    assert _form(body) == dict(parse_qsl(body, keep_blank_values=True))


async def test_answers_ahead_are_bolts_own(slack: Slack) -> None:
    """For each request the server answers ahead, Bolt, asked in line, answers the same
    bytes: help, a usage error, a stop, a click."""
    ahead: list[str] = []
    handle = slack.bot.inbox.handle
    slack.bot.inbox.handle = lambda key, raw, headers: (  # type: ignore[method-assign]
        ahead.append(raw),
        handle(key, raw, headers),
    )[1]

    async def both(send: Any) -> None:
        first = await send()
        answer_ahead = slack.bot.answer_ahead
        slack.bot.answer_ahead = lambda body: None  # type: ignore[method-assign]
        try:
            second = await send()
        finally:
            slack.bot.answer_ahead = answer_ahead  # type: ignore[method-assign]
        assert first.status_code == 200
        assert (first.headers["content-type"], first.content) == (
            second.headers["content-type"],
            second.content,
        )

    await both(lambda: slack.command("help"))
    await both(lambda: slack.command("status"))
    await both(lambda: slack.command("dev-eu"))
    await slack.ask("dev-eu")
    op_id, ts = slack.confirmation()
    await both(lambda: slack.click(views.CANCEL, op_id, ts))
    assert len(ahead) == 5  # one answer each, and the stop asked to show the confirmation


async def test_bolt_does_the_work_of_a_request_answered_ahead(slack: Slack) -> None:
    """`/stop dev-eu` and Confirm are answered ahead, then Bolt's listeners stop dev-eu."""
    await slack.ask("dev-eu")
    op_id, ts = slack.confirmation()
    response = await slack.click(views.CONFIRM, op_id, ts)
    assert (response.status_code, response.text) == (200, "")
    await slack.final_message()
    operation = slack.store.get_operation(op_id)
    assert operation is not None and operation.state is OpState.STOPPED


def test_the_bot_answers_ahead_only_what_it_knows(slack: Slack) -> None:
    """Routed buttons get an empty ack, /stop its own answer; an unknown action id, another
    kind of request, or any request while the token is not accepted: Bolt's to answer."""
    bot = slack.bot
    click = json.loads(dict(parse_qsl(_click(views.CONFIRM).decode()))["payload"])
    unknown = json.loads(dict(parse_qsl(_click("nobody_listens").decode()))["payload"])
    assert bot.auth_state == "ok"
    assert bot.answer_ahead(click) == {}
    assert bot.answer_ahead(unknown) is None
    assert bot.answer_ahead({"command": "/stop", "text": "dev-eu"}) == {}
    assert bot.answer_ahead({"command": "/stop", "text": "help"}) == {
        "text": commands.HELP,
        "response_type": "ephemeral",
    }
    assert bot.answer_ahead({"command": "/other", "text": ""}) is None
    assert bot.answer_ahead({"type": "view_submission", "view": {}}) is None
    bot.auth_state = "refused: invalid_auth"
    assert bot.answer_ahead(click) is None


async def test_bolt_refusing_later_is_logged(
    slack: Slack, caplog: pytest.LogCaptureFixture
) -> None:
    """Should Bolt refuse a request that was answered ahead (here, a click no listener
    takes), the refusal is logged: it cannot reach Slack any more."""
    slack.bot.answer_ahead = lambda body: {}  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="bot.slack.app"):
        response = await slack.post(_click("nobody_listens"))
        assert (response.status_code, response.text) == (200, "")
        for _ in range(200):
            if caplog.records:
                break
            await asyncio.sleep(0.01)
    assert [r.getMessage() for r in caplog.records] == [
        'Bolt answered 404 to a request Slack was already answered 200 for: {"error": "unhandled request"}'
    ]


async def test_a_command_mentioning_payload_is_a_command(slack: Slack) -> None:
    """Bolt alone reads any form mentioning "payload" as an interaction and finds nothing
    in it (Slack would show "dispatch_failed"); the bot reads it as the command it is."""
    reply = await slack.ask("dev-eu payload service is broken")
    assert reply.args["text"] == "Stop dev-eu (qovery)? Confirm or cancel."


@pytest.mark.parametrize("text", ["dev-eu nightly", "dev-eu payload deploy"])
def test_bolt_request_reads_a_command_as_bolt_would_without_the_word(text: str) -> None:
    """Body and context as Bolt builds them for a command that does not mention "payload"."""
    body = _command(text).decode()
    request = bolt_request(body, _headers(body.encode()))
    expected = AsyncBoltRequest(body=_command("dev-eu nightly").decode(), headers={})
    assert request.body == {**expected.body, "text": text}
    assert request.raw_body == body
    assert dict(request.context) == dict(expected.context)


def _shared_body(name: str) -> bytes:
    """A body from ../shared/slack: a form as is, a JSON payload as Slack posts it (the
    way Bolt's own tests build it: ``payload=`` and the quoted JSON)."""
    text = shared_path("slack", name).read_text()
    if name.endswith(".json"):
        return f"payload={quote(json.dumps(json.loads(text)))}".encode()
    return text.encode()


@pytest.mark.parametrize(
    "name",
    [
        "slash_command_body.docs_example.txt",
        "slash_command_body.bolt_tests.txt",
        "block_actions.button.ephemeral.bolt_tests.json",
        "block_actions.button.message.bolt_tests.json",
        "view_submission.bolt_tests.json",
    ],
)
def test_slack_samples_are_read_as_bolt_reads_them(name: str) -> None:
    """Slack's and Bolt's sample bodies: what the bot is asked to decide on is, field for
    field, what Bolt parses from them."""
    body = _shared_body(name)
    decide = Decider()
    assert _answer_ahead(decide, VERIFIER, body, _headers(body)) == {"text": "ahead"}
    assert decide.asked == [parse_body(body.decode(), FORM)]


async def test_a_burst_of_clicks_on_one_confirmation_stops_once(slack: Slack) -> None:
    """Ten Confirm clicks at once, all answered ahead: their Bolt handling runs together
    after the burst, and Qovery gets one stop, the audit one acceptance."""
    await slack.ask("dev-eu")
    op_id, ts = slack.confirmation()
    slack.sims.hub.faults.reset_counts()
    clicks = await asyncio.gather(*(slack.click(views.CONFIRM, op_id, ts) for _ in range(10)))
    assert [(r.status_code, r.text) for r in clicks] == [(200, "")] * 10
    await slack.final_message()
    assert slack.sims.hub.faults.counts()["qovery"]["POST"] == 1
    accepted = [e for e in slack.store.audit_log() if e.action == "stop.accepted"]
    assert len(accepted) == 1


async def test_a_retried_command_in_a_burst_records_one_operation(slack: Slack) -> None:
    """Slack's retries of one `/stop dev-eu` (same trigger_id) arriving together, all
    answered ahead: one operation, which each delivery shows (Slack retried because it
    took an answer for lost)."""
    responses = await asyncio.gather(
        *(slack.command("dev-eu", trigger_id="trigger-burst") for _ in range(5))
    )
    assert [(r.status_code, r.text) for r in responses] == [(200, "")] * 5
    await slack.reply()
    for _ in range(20):  # let every retry's handling finish
        await asyncio.sleep(0.05)
    [op] = slack.store.recent_operations()
    shown = slack.fake.ephemeral_messages(CHANNEL, BOB)
    buttons = [next(b for b in m["blocks"] if b["type"] == "actions") for m in shown]
    assert [b["elements"][0]["value"] for b in buttons] == [op.id] * 5


async def test_a_header_sent_twice_is_read_as_bolt_reads_it(slack: Slack) -> None:
    """A forged signature followed by a valid one: the server and Bolt both read the first,
    so the request is refused (401), not answered 200 and then dropped by Bolt."""
    assert slack.server is not None
    body = _command("dev-eu")
    good = sign_request(SECRET, body, int(time.time()))
    headers = [
        ("Content-Type", FORM),
        ("X-Slack-Request-Timestamp", good["X-Slack-Request-Timestamp"]),
        ("X-Slack-Signature", "v0=" + "0" * 64),
        ("X-Slack-Signature", good["X-Slack-Signature"]),
    ]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{slack.server.url}/slack/events", content=body, headers=headers
        )
    assert response.status_code == 401
    assert slack.store.recent_operations() == []


def test_no_http_endpoint_without_a_signing_secret(slack: Slack) -> None:
    """Without a secret nothing could be verified: the endpoint is refused, not served."""
    slack.bot.signing_secret = None
    with pytest.raises(ValueError, match="needs a signing secret"):
        build_http_app(slack.bot)
    assert build_http_app(slack.bot, slack_endpoint=False) is not None  # Socket Mode's health


def test_the_server_keeps_idle_connections_past_a_load_balancers_timeout(slack: Slack) -> None:
    """uvicorn closes an idle connection after 5 s by default: a balancer that reuses it
    until its own 60 s sends a request on one the bot is closing, and answers 502. The
    bot's server keeps them 75 s unless told otherwise."""
    assert KEEP_ALIVE == 75
    assert http_config(slack.bot, "127.0.0.1", 0).timeout_keep_alive == 75
    assert http_config(slack.bot, "127.0.0.1", 0, keep_alive=650).timeout_keep_alive == 650


async def test_only_slacks_posts_skip_starlettes_router(slack: Slack) -> None:
    """A POST to /slack/events goes to the endpoint straight (the requests above); any other
    method there, and every other path, still go through Starlette's router."""
    assert slack.server is not None
    async with httpx.AsyncClient(base_url=slack.server.url) as client:
        assert (await client.get("/slack/events")).status_code == 405
        assert (await client.put("/slack/events", content=b"x")).status_code == 405
        assert (await client.post("/slack/event", content=b"x")).status_code == 404
        assert (await client.get("/healthz")).json()["status"] == "ok"
        unsigned = await client.post("/slack/events", content=b"command=%2Fstop")
        assert (unsigned.status_code, unsigned.json()) == (401, {"error": "invalid signature"})
