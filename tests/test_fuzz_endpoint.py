"""Thousands of hostile requests to the real endpoint, generated (hypothesis): commands typed
with mentions, links and entities, clicks on the bot's own buttons with their values kept or
crafted, deny modals, bodies no Slack client sends, and forged or stale signatures.

Whatever comes, no answer is a 5xx, nothing is logged with a traceback, no message says
something went wrong, no payload the fake Slack records carries live markup but the bot's
own mentions and dates, and a forged or stale request gets 401 and leaves no trace.
Derandomized, so CI runs the same requests every time.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.slack.fake_api import (
    block_actions_body,
    block_actions_payload,
    sign_request,
    slash_command_body,
)
from bot.slack.wording import escape
from bot.store import open_store
from providers.simulators.server import SimulatorServer
from tests.hostile import HOSTILE, live_markup, live_markup_in_calls
from tests.slack_harness import ADMIN, ALICE, BOB, CAROL, CHANNEL, SECRET, Slack

PEOPLE = (BOB, ALICE, ADMIN, CAROL)
FORM = "application/x-www-form-urlencoded"
RESOURCES = ("web-1", "etl", "spark", "dev-eu", "staging-us")
MOVES_PER_EXAMPLE = 25
EXAMPLES = 80  # 2,000 requests
NIGHTLY = {
    "name": "nightly",
    "cron": "0 20 * * *",
    "timezone": "UTC",
    "select": {"resources": ["web-1", "etl"]},
    "channel": CHANNEL,
    "warn_before": "1d",
    "until": "07:00",
}

# -- what people type -----------------------------------------------------------------------

hostile = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(alphabet=st.sampled_from("<>&@!#|^*_`~: aZ\n"), max_size=40),
    st.text(max_size=30),
)
# Chosen by a wide integer's remainder: sampled_from (and a narrow range) favours the
# first, and a run would then stop little else.
spread = st.integers(0, 2**32)
resources = spread.map(lambda i: RESOURCES[i % len(RESOURCES)])
names = st.one_of(resources, resources, hostile.map(lambda t: t.strip() or "x"))
typed_commands = st.one_of(
    st.builds("{} {}".format, names, hostile),
    # dev-eu asks Carol's approval: requests to approve and deny, modals to submit.
    st.builds("{} {}".format, st.sampled_from(["dev-eu", "spark", "etl"]), hostile),
    st.builds("{} --override-lock {}".format, names, hostile),
    st.builds("lock {} {} {}".format, names, st.sampled_from(["1h", "2d", "9y", "x"]), hostile),
    st.builds("unlock {}".format, names),
    st.builds("unlock {} --force".format, names),
    st.builds("status {}".format, names),
    st.builds("list {}".format, st.one_of(st.just(""), hostile, st.just("tag:env=dev"))),
    st.builds("history {}".format, names),
    st.sampled_from(["locks", "help", "schedule list", "schedule exceptions", "dry-run nightly"]),
    st.builds("schedule skip {}".format, st.one_of(st.just("nightly"), hostile)),
    st.builds("schedule snooze {} 1h".format, st.one_of(st.just("nightly"), hostile)),
    st.builds('schedule add {} "0 20 * * *" UTC tag:env={}'.format, hostile, hostile),
    hostile,
)
people = st.sampled_from(PEOPLE)
crafted_values = st.one_of(
    hostile,
    st.sampled_from(["", "|", "web-1|1h", "web-1|9y|x", "{}", "[]", "null", '{"r": 1}']),
    st.builds(lambda r, a, k: json.dumps({"r": r, "a": a, "k": k}), names, hostile, hostile),
    st.builds(lambda s, r, d: json.dumps({"s": s, "r": r, "d": d}), hostile, names, hostile),
)


# -- the harness ------------------------------------------------------------------------------


class Fuzzer:
    """Sends requests the way Slack would (or would never), and keeps what to check."""

    def __init__(self, slack: Slack, client: httpx.Client) -> None:
        assert slack.server is not None
        self.slack = slack
        self.client = client
        self.url = f"{slack.server.url}/slack/events"
        self.forged = 0
        self.sent = 0
        self.buttons: list[tuple[str, str | None, dict[str, Any], dict[str, Any]]] = []
        self.refreshed = -1
        # Collected, not raised: hypothesis would replay a failing example, and the bot's
        # state has moved on since.
        self.problems: list[str] = []
        self.dm_users: dict[str, str] = {}

    def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        self.sent += 1
        response = self.client.post(self.url, content=body, headers=headers)
        if response.status_code >= 500:
            self.problems.append(f"{response.status_code} {response.text[:200]} for {body[:200]!r}")
        if response.headers.get("content-type", "").startswith("application/json"):
            answer = response.json()
            if isinstance(answer, dict) and isinstance(answer.get("text"), str):
                live = live_markup(answer["text"], PEOPLE)
                if live:
                    self.problems.append(f"live markup {live} in the answer to {body[:200]!r}")
        return response

    def signed(self, body: bytes, content_type: str = FORM) -> httpx.Response:
        return self.post(
            body, {**sign_request(SECRET, body, int(time.time())), "Content-Type": content_type}
        )

    def command(self, text: str, user: str, as_slack: bool) -> None:
        url = self.slack.fake.new_response_url(channel=CHANNEL, user=user)
        wire = escape(text) if as_slack else text
        body = slash_command_body("/stop", wire, user, CHANNEL, url, uuid.uuid4().hex)
        self.signed(body)

    def live_buttons(self) -> list[tuple[str, str | None, dict[str, Any], dict[str, Any]]]:
        """(channel, ephemeral user, message, element) of every button and menu shown now;
        read again every few moves (a snapshot copies the whole workspace)."""
        if self.refreshed != self.sent // 10:
            self.refreshed = self.sent // 10
            shot = self.slack.fake.snapshot(calls=0)
            self.dm_users = {c["id"]: c["user"] for c in shot["channels"] if c["is_im"]}
            shown = [(c, None, m) for c, ms in shot["messages"].items() for m in ms]
            shown += [
                (e["channel"], e["user"], m) for e in shot["ephemeral"] for m in e["messages"]
            ]
            self.buttons = [
                (channel, user, message, element)
                for channel, user, message in shown
                for block in message.get("blocks", [])
                if block.get("type") == "actions"
                for element in block.get("elements", [])
            ]
        return self.buttons

    def click(
        self,
        shown: tuple[str, str | None, dict[str, Any], dict[str, Any]],
        user: str,
        value: str | None,
        option: int | None,
        anyone: bool,
    ) -> None:
        """``user`` clicks (``anyone``), or whoever the message is shown to: an ephemeral's
        or a DM's user, anyone in the channel."""
        channel, ephemeral_user, message, element = shown
        if not anyone:
            user = ephemeral_user or self.dm_users.get(channel) or user
        url = self.slack.fake.new_response_url(
            channel=channel,
            user=ephemeral_user or user,
            message_ts=message["ts"],
            is_ephemeral=ephemeral_user is not None,
        )
        payload = block_actions_payload(
            user,
            channel,
            element["action_id"],
            element.get("value", "") if value is None else value,
            response_url=url,
            message=message,
            is_ephemeral=ephemeral_user is not None,
            trigger_id=self.slack.fake.new_trigger_id(user),
        )
        if element.get("type") == "static_select":
            action = payload["actions"][0]
            action["type"] = "static_select"
            del action["value"]
            options = element.get("options", [])
            if option is not None and options:
                action["selected_option"] = options[option % len(options)]
            elif value is not None:
                action["selected_option"] = {"value": value}
        self.signed(block_actions_body(payload))

    def deny_modals(self) -> list[dict[str, Any]]:
        return [
            c.response["view"]
            for c in self.slack.fake.calls("views.open")
            if isinstance(c.response, dict) and c.response.get("ok")
        ]

    def submit(self, view: dict[str, Any], user: str, reason: str) -> None:
        payload = {
            "type": "view_submission",
            "team": {"id": "T0STOPBOT"},
            "user": {"id": user},
            "trigger_id": uuid.uuid4().hex,
            "view": view
            | {
                "state": {
                    "values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
                }
            },
        }
        self.signed(block_actions_body(payload))

    def forge(self, how: int) -> None:
        """A lock command that would leave a trace, sent unsigned, mis-signed or stale."""
        self.forged += 1
        user = PEOPLE[how % len(PEOPLE)]
        url = self.slack.fake.new_response_url(channel=CHANNEL, user=user)
        body = slash_command_body(
            "/stop", f"lock web-1 1h FORGED-{self.forged}", user, CHANNEL, url, uuid.uuid4().hex
        )
        now = int(time.time())
        headers = [
            {},
            sign_request("not-the-secret", body, now),
            sign_request(SECRET, body, now - 600),
            sign_request(SECRET, body, now + 600),
            {**sign_request(SECRET, body, now), "X-Slack-Request-Timestamp": "1e9"},
            {**sign_request(SECRET, body, now), "X-Slack-Signature": "v0=" + "0" * 64},
            sign_request(SECRET, body + b"&x=1", now),
        ][how % 7]
        response = self.post(body, {**headers, "Content-Type": FORM})
        if response.status_code != 401:
            self.problems.append(f"a forged request got {response.status_code}")


junk_bodies = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=1, max_size=40).map(lambda b: b"command=%2Fstop&text=" + b + b"\xff"),
    # Big bodies of every byte value (not UTF-8), the same at each run.
    st.sampled_from([300_000, 1_000_000]).map(lambda n: bytes(range(256)) * (n // 256)),
    st.text(max_size=200).map(lambda t: t.encode()),
    st.text(max_size=100).map(lambda t: urlencode({"payload": t}).encode()),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    ).map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "user",
                "actions",
                "view",
                "team",
                "authorizations",
                "response_url",
                "event",
                "channel",
                "container",
            ]
        ),
        st.none()
        | st.integers()
        | st.text(max_size=10)
        | st.lists(st.integers(), max_size=2)
        | st.just({}),
        max_size=6,
    ).map(lambda d: urlencode({"payload": json.dumps({"type": "block_actions", **d})}).encode()),
    st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4).map(
        lambda d: urlencode({"command": "/stop", **d}).encode()
    ),
)


@st.composite
def moves(draw: st.DrawFn, fuzzer: Fuzzer) -> None:
    """One request, sent. What it is is drawn first; which button or modal it targets is
    drawn as an index into what the workspace shows then (so that the draws never depend
    on that state, as hypothesis requires)."""
    kind = draw(st.sampled_from(["type"] * 5 + ["click"] * 6 + ["deny", "junk", "forge"]))
    user = draw(people)
    if kind == "click":
        index, value = draw(spread), draw(st.none() | crafted_values)
        option, anyone = draw(st.none() | st.integers(0, 5)), draw(st.booleans())
        buttons = fuzzer.live_buttons()
        if buttons:
            fuzzer.click(buttons[index % len(buttons)], user, value, option, anyone)
    elif kind == "deny":
        index, reason = draw(spread), draw(hostile | st.just("x" * 600))
        submitter = draw(st.sampled_from([CAROL, user]))
        modals = fuzzer.deny_modals()
        if modals:
            fuzzer.submit(modals[index % len(modals)], submitter, reason)
    elif kind == "junk":
        body = draw(junk_bodies)
        fuzzer.signed(body, draw(st.sampled_from([FORM, "application/json", "text/plain"])))
    elif kind == "forge":
        fuzzer.forge(draw(st.integers(0, 6)))
    else:
        fuzzer.command(draw(typed_commands), user, as_slack=draw(st.booleans() | st.just(True)))


@pytest.fixture
def tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(caplog.handler)
    try:
        yield caplog.records
    finally:
        uvicorn.removeHandler(caplog.handler)


def test_thousands_of_hostile_requests(
    sims: SimulatorServer, tmp_path: Path, tracebacks: list[logging.LogRecord]
) -> None:
    """2,000 requests, hostile, malformed, forged: no 5xx, no traceback, no apology, no
    live markup from anyone's text, and no trace of any forged request."""
    slack = Slack(
        sims,
        tmp_path / "stopbot.db",
        resources={"dev-eu": {"approval": {"approvers": [CAROL]}}},
        schedules=[NIGHTLY],
    )
    try:
        with httpx.Client(timeout=60) as client:
            fuzzer = Fuzzer(slack, client)

            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(st.data())
            def run(data: st.DataObject) -> None:
                for _ in range(MOVES_PER_EXAMPLE):
                    data.draw(moves(fuzzer))

            run()
        assert fuzzer.problems == []
        assert fuzzer.sent >= EXAMPLES * MOVES_PER_EXAMPLE * 0.9  # a few clicks find nothing
    finally:
        slack.close()  # the bot drains its listeners: every call is recorded by now
    calls = slack.fake.calls()
    assert live_markup_in_calls(calls, PEOPLE) == []
    said = json.dumps([c.args for c in calls])
    assert "went wrong" not in said
    assert "FORGED" not in said
    store = open_store(slack.db)
    try:
        assert "FORGED" not in json.dumps([e.model_dump(mode="json") for e in store.audit_log()])
        assert [lock for lock in store.active_locks() if "FORGED" in (lock.reason or "")] == []
    finally:
        store.close()
    assert [r.getMessage() for r in tracebacks if r.exc_info] == []
