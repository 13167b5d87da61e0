"""Requests no Slack client sends, text longer than Stopbot keeps, and buttons carrying values
Stopbot never wrote: each gets a 4xx or words for the user, never a 5xx, a traceback or a
change."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from bot.locks import LockError
from bot.models import Actor, OpState
from bot.slack import schedule_views as sv
from bot.slack import views
from bot.slack.buttons import STALE
from bot.slack.fake_api import (
    RESPONSE_URL_METHOD,
    block_actions_body,
    block_actions_payload,
    sign_request,
)
from bot.slack.server import MAX_BODY
from bot.text import TooLongError
from providers.simulators.server import SimulatorServer
from tests.slack_harness import BOB, CAROL, CHANNEL, SECRET, Slack

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """Every record logged with a traceback, the server's own (uvicorn's) included."""
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(caplog.handler)
    try:
        yield caplog.records
    finally:
        uvicorn.removeHandler(caplog.handler)


def with_traceback(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.exc_info or "Traceback" in r.getMessage()]


def raw_post(slack: Slack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    assert slack.server is not None
    return httpx.post(f"{slack.server.url}/slack/events", content=body, headers=headers, timeout=60)


def signed(body: bytes, content_type: str = FORM) -> dict[str, str]:
    return {**sign_request(SECRET, body, int(time.time())), "Content-Type": content_type}


def command(text: str, **fields: str) -> bytes:
    form = {"command": "/stop", "user_id": BOB, "channel_id": CHANNEL, "text": text}
    form |= {"response_url": "https://hooks.slack.com/commands/T0/1/x", **fields}
    return urlencode(form).encode()


def nothing_happened(slack: Slack) -> None:
    assert slack.store.recent_operations() == []
    assert slack.store.audit_log() == []


# -- item 10: requests no Slack client sends --------------------------------------------------


@pytest.mark.parametrize("timestamp", ["abc", "1e9", "", "12.5", "0x10", "9" * 30])
def test_a_timestamp_that_is_no_number_is_an_invalid_signature(
    slack: Slack, tracebacks: list[logging.LogRecord], timestamp: str
) -> None:
    """X-Slack-Request-Timestamp `abc`, `1e9`, empty…: 401 like any bad signature, no trace."""
    body = command("lock web-1 1h")
    headers = {**signed(body), "X-Slack-Request-Timestamp": timestamp}
    response = raw_post(slack, body, headers)
    assert (response.status_code, response.json()) == (401, {"error": "invalid signature"})
    assert with_traceback(tracebacks) == []
    nothing_happened(slack)


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        pytest.param(b"command=%2Fstop&text=\xff\xfe", FORM, 400, id="not UTF-8"),
        pytest.param(
            json.dumps({"command": "/stop", "user_id": BOB, "text": "lock web-1 1h"}).encode(),
            "application/json",
            400,
            id="a command as JSON",
        ),
        pytest.param(b"[1, 2]", "application/json", 400, id="a JSON list"),
        pytest.param(os.urandom(5_000_000), FORM, 413, id="5 MB of random bytes"),
        pytest.param(b"x" * (MAX_BODY + 1), FORM, 413, id="one byte too many"),
        pytest.param(b"", FORM, 400, id="empty"),
        # Slack escapes it (%00, \u0000); PostgreSQL's text cannot hold it, and on it the
        # request's recording, with every request of its burst, failed.
        pytest.param(command("help") + b"&x=\x00", FORM, 400, id="a raw NUL character"),
        pytest.param(b"hello=world", FORM, 400, id="neither a command nor an interaction"),
        pytest.param(command("help", authorizations="x"), FORM, 400, id="a field bolt indexes"),
        pytest.param(
            urlencode({"command": "/stop", "user_id": BOB, "text": "help"}).encode(),
            FORM,
            400,
            id="a command with nowhere to answer",
        ),
        pytest.param(urlencode({"payload": "[]"}).encode(), FORM, 400, id="a payload list"),
        pytest.param(
            urlencode({"payload": json.dumps({"type": "shortcut", "user": {"id": BOB}})}).encode(),
            FORM,
            400,
            id="an interaction the bot has no listener for",
        ),
        pytest.param(
            block_actions_body({"type": "block_actions", "user": "U0BOB", "actions": "x"}),
            FORM,
            400,
            id="a click of the wrong shape",
        ),
        pytest.param(
            block_actions_body(
                {"type": "view_submission", "user": {"id": BOB}, "view": {"id": "V1"}}
            ),
            FORM,
            400,
            id="a submission without its view's callback",
        ),
    ],
)
def test_signed_bodies_slack_never_sends_are_refused(
    slack: Slack,
    tracebacks: list[logging.LogRecord],
    body: bytes,
    content_type: str,
    status: int,
) -> None:
    """Validly signed, but no Slack request: a 4xx saying why, no traceback, nothing done."""
    response = raw_post(slack, body, signed(body, content_type))
    assert response.status_code == status
    assert response.json()["error"]
    assert with_traceback(tracebacks) == []
    nothing_happened(slack)


def test_unsigned_and_stale_requests_change_nothing(
    slack: Slack, tracebacks: list[logging.LogRecord]
) -> None:
    """A lock command unsigned, signed with another secret or ten minutes old: 401, no lock."""
    body = command("lock web-1 1h forged")
    for headers in (
        {"Content-Type": FORM},
        {**sign_request("another-secret", body, int(time.time())), "Content-Type": FORM},
        {**sign_request(SECRET, body, int(time.time()) - 600), "Content-Type": FORM},
    ):
        assert raw_post(slack, body, headers).status_code == 401
    assert slack.store.active_locks() == []
    assert with_traceback(tracebacks) == []


# -- item 11: text longer than Stopbot keeps ----------------------------------------------------


async def test_a_reason_too_long_is_refused_at_once_and_nothing_recorded(slack: Slack) -> None:
    """A 501-character stop or lock reason gets the limit in the ack; no operation, no lock."""
    for text in ("web-1 " + "x" * 501, "lock web-1 1h " + "x" * 501):
        response = await slack.command(text)
        assert response.json() == {
            "response_type": "ephemeral",
            "text": "A reason is 500 characters at most (this one has 501): shorten it.",
        }
    assert slack.store.recent_operations() == []
    assert slack.store.active_locks() == []


async def test_a_command_too_long_is_refused(slack: Slack) -> None:
    response = await slack.command("web-1 " + "x " * 2000)
    assert response.json()["text"] == (
        "That command is 4,005 characters long, and a command is 4,000 at most."
    )


async def test_the_core_refuses_long_reasons_whatever_the_face(slack: Slack) -> None:
    """The workflow and the lock rule refuse a long reason themselves (the CLI, a future
    face): nothing is recorded."""
    with pytest.raises(TooLongError):
        await slack.service.prepare("web-1", Actor(id=BOB), source="cli", reason="x" * 501)
    assert slack.store.recent_operations() == []
    with pytest.raises(LockError, match="500 characters at most"):
        await slack.stopbot.locks.lock("web-1", BOB, dt.timedelta(hours=1), "x" * 501)
    assert slack.store.active_locks() == []


@pytest.fixture
async def guarded(sims: SimulatorServer, tmp_path: Any) -> Any:
    harness = Slack(
        sims, tmp_path / "db", resources={"dev-eu": {"approval": {"approvers": [CAROL]}}}
    )
    yield harness
    harness.close()


async def test_a_deny_reason_too_long_is_refused_in_the_modal(guarded: Slack) -> None:
    """The modal caps the reason (max_length); a longer one submitted anyway is an error
    under the field, and the request stays open."""
    await guarded.ask("dev-eu")
    op_id, ts = guarded.confirmation()
    await guarded.click(views.CONFIRM, op_id, ts)
    request = await guarded.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("Approval needed")
    )
    await guarded.click_message(views.DENY, op_id, request, CAROL)
    opened = await guarded.fake.wait_for("views.open", lambda c: True)
    view = opened.response["view"]  # type: ignore[index]
    assert view["blocks"][1]["element"]["max_length"] == 500
    values = {"reason": {"reason": {"type": "plain_text_input", "value": "x" * 501}}}
    response = await guarded.submit_view(view, CAROL, values)
    assert response.json() == {
        "response_action": "errors",
        "errors": {"reason": "A reason is 500 characters at most (this one has 501): shorten it."},
    }
    op = guarded.store.get_operation(op_id)
    assert op is not None and op.state == OpState.AWAITING_APPROVAL


# -- item 12: buttons carrying values Stopbot never wrote -----------------------------------------


async def click(
    slack: Slack,
    action_id: str,
    value: str | None,
    user: str = BOB,
    without: str | None = None,
    **action: Any,
) -> dict[str, Any]:
    """Click ``action_id`` carrying ``value`` (None: no value at all; ``action``: more of
    the action's fields; ``without``: a field of the payload left out) on a channel
    message; the answer the clicker got."""
    url = slack.fake.new_response_url(channel=CHANNEL, user=user, message_ts="1700000000.000100")
    payload = block_actions_payload(
        user,
        CHANNEL,
        action_id,
        value or "",
        response_url=url,
        message_ts="1700000000.000100",
        trigger_id=uuid.uuid4().hex,
    )
    if value is None:
        del payload["actions"][0]["value"]
    payload["actions"][0].update(action)
    if without is not None:
        del payload[without]
    response = await slack.post(block_actions_body(payload))
    assert response.status_code == 200, response.text
    path = url.removeprefix(slack.fake_server.base_url)
    answer = await slack.fake.wait_for(RESPONSE_URL_METHOD, lambda c: c.path == path)
    return answer.args


WARNED = "2026-11-25T20:00:00+00:00"


@pytest.mark.parametrize(
    ("action_id", "value", "action"),
    [
        pytest.param(views.CONFIRM, None, {}, id="confirm without a value"),
        pytest.param(views.APPROVE, None, {}, id="approve without a value"),
        pytest.param(views.ASK_RELEASE, None, {}, id="ask to release without a value"),
        pytest.param(f"{views.EXTEND}1h", "web-1", {}, id="extend without |"),
        pytest.param(f"{views.EXTEND}1h", "web-1|99d|" + WARNED, {}, id="extend by 99 days"),
        pytest.param(f"{views.EXTEND}1h", "web-1|1h|2026-11-25", {}, id="extend naive time"),
        pytest.param(f"{views.EXTEND}1h", "nowhere|1h|" + WARNED, {}, id="extend unknown"),
        pytest.param(views.RELEASE, "not json", {}, id="release not JSON"),
        pytest.param(views.RELEASE, '{"r": "web-1"}', {}, id="release missing keys"),
        pytest.param(
            views.RELEASE, json.dumps({"r": "web-1", "a": BOB, "k": "x"}), {}, id="release kind"
        ),
        pytest.param(
            views.KEEP, json.dumps({"r": "nowhere", "a": BOB, "k": "bot"}), {}, id="keep unknown"
        ),
        pytest.param(views.KEEP, "[1]", {}, id="keep not an object"),
        pytest.param(f"{sv.KEEP}:dev-eu", None, {}, id="schedule keep without a choice"),
        pytest.param(
            f"{sv.KEEP}:dev-eu",
            None,
            {"selected_option": {"value": "not json"}},
            id="schedule keep not JSON",
        ),
        pytest.param(
            f"{sv.KEEP}:dev-eu",
            None,
            {"selected_option": {"value": json.dumps({"s": "nightly", "r": "x", "d": "1h"})}},
            id="schedule keep unknown resource",
        ),
        pytest.param(sv.SNOOZE, "nightly|99y|" + WARNED, {}, id="snooze by garbage"),
        pytest.param(sv.DRIFT_STOP, "nowhere", {}, id="drift stop unknown resource"),
        pytest.param(sv.DRIFT_LEAVE, "nowhere", {}, id="drift leave not JSON"),
        pytest.param(
            sv.DRIFT_LEAVE, json.dumps({"s": "n", "r": "nowhere"}), {}, id="drift leave unknown"
        ),
    ],
)
async def test_a_crafted_button_is_no_longer_valid_and_changes_nothing(
    slack: Slack,
    tracebacks: list[logging.LogRecord],
    action_id: str,
    value: str | None,
    action: dict[str, Any],
) -> None:
    """The clicker is told the button is no longer valid (no error reference); nothing is
    recorded, no lock moves, nothing is logged with a traceback."""
    slack.store.set_lock("web-1", BOB, slack.time.now() + dt.timedelta(hours=1), "mine")
    before = slack.store.audit_log()
    answer = await click(slack, action_id, value, **action)
    assert (answer["text"], answer["response_type"]) == (STALE, "ephemeral")
    assert slack.store.audit_log() == before
    lock = slack.store.get_lock("web-1")
    assert lock is not None and lock.expires_at == slack.time.now() + dt.timedelta(hours=1)
    assert slack.store.recent_operations() == []
    assert with_traceback(tracebacks) == []


async def test_a_deny_without_a_trigger_is_no_longer_valid(guarded: Slack) -> None:
    """A Deny click that carries no trigger_id cannot open the form: stale, nothing done."""
    await guarded.ask("dev-eu")
    op_id, ts = guarded.confirmation()
    await guarded.click(views.CONFIRM, op_id, ts)
    await guarded.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("Approval needed")
    )
    answer = await click(guarded, views.DENY, op_id, user=CAROL, without="trigger_id")
    assert answer["text"] == STALE
    assert guarded.fake.calls("views.open") == []


async def test_a_submission_of_another_shape_of_state_changes_nothing(guarded: Slack) -> None:
    """A deny modal whose state is not the form's shape denies without a reason, or not at
    all when its operation is unknown: never a failure."""
    view = views.deny_modal(
        guarded.store.create_operation(
            resource="dev-eu",
            provider="qovery",
            resource_id="c",
            requested_by=BOB,
            source="slack",
        )[0]
    )
    response = await guarded.submit_view(view, CAROL, {"reason": "not a block"})
    assert response.json()["response_action"] == "errors"
    assert "already decided" in response.json()["errors"]["reason"]


async def test_a_message_button_clicked_in_a_modal_changes_nothing(
    slack: Slack, tracebacks: list[logging.LogRecord]
) -> None:
    """Stopbot's buttons are all on messages: one arriving from a modal (no response URL to
    answer on) is stale, said nowhere, and the confirmation stays pending (Cancel, clicked
    after it, still cancels)."""
    await slack.ask("web-1")
    op_id, ts = slack.confirmation()
    payload = block_actions_payload(
        BOB, CHANNEL, views.CONFIRM, op_id, response_url="", message_ts="1700000000.000100"
    )
    del payload["response_url"]
    payload["view"] = {"id": "V1", "type": "modal", "callback_id": "x"}
    assert (await slack.post(block_actions_body(payload))).status_code == 200
    await slack.click(views.CANCEL, op_id, ts)
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: c.args.get("text") == "Cancelled: web-1 was not stopped."
    )
    assert with_traceback(tracebacks) == []
