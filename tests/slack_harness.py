"""The Slack app under test: its real HTTP endpoint in a thread, a fake Slack, the simulators."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.slack.app import SlackBot
from bot.slack.fake_api import (
    RESPONSE_URL_METHOD,
    Call,
    FakeSlack,
    FakeSlackServer,
    SlackChannel,
    SlackUser,
    block_actions_body,
    block_actions_payload,
    sign_request,
    slash_command_body,
)
from bot.slack.server import build_http_app
from bot.slack.wording import escape
from bot.stopbot import Stopbot
from bot.store import open_store
from providers.base import Provider
from providers.registry import build_provider
from providers.simulators.server import SimulatorServer
from providers.threaded_server import ThreadedServer
from tests.helpers import SimTime, sample

TOKEN = "xoxb-test-token"
SECRET = "test-signing-secret"
CHANNEL = "C0DEV"
BOB, ALICE, ADMIN, CAROL = "U0BOB", "U0ALICE", "U0ADMIN", "U0CAROL"


class ClosingProviders:
    """The bot's app, closing its providers' connections once it has shut down, as
    `stopbot serve` does when its server ends: on the server's own loop, where they live."""

    def __init__(self, app: ASGIApp, providers: dict[str, Provider]) -> None:
        self.app = app
        self.providers = providers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                for provider in self.providers.values():
                    await provider.aclose()
            await send(message)

        await self.app(scope, receive, sending)


class AppServer(ThreadedServer):
    """The bot's ASGI app (with its lifespan) on a loopback port, like `stopbot serve --http`."""

    def __init__(self, app: Any) -> None:
        super().__init__(app, name="bot", lifespan="on")
        self.url = self.start()


class Slack:
    """The bot, behind its HTTP endpoint, talking to a fake Slack and the simulators."""

    def __init__(
        self,
        sims: SimulatorServer,
        db: Path | str,
        resources: dict[str, dict[str, Any]] | None = None,
        **config: Any,
    ) -> None:
        self.sims = sims
        sims.hub.clock.freeze()
        self.time = SimTime(sims)
        self.fake_server = FakeSlackServer(
            FakeSlack(
                tokens=[TOKEN],
                users=[
                    SlackUser(BOB, "bob", real_name="Bob Stone"),
                    SlackUser(ALICE, "alice", real_name="Alice Martin"),
                    SlackUser(ADMIN, "ada", real_name="Ada Admin"),
                    SlackUser(CAROL, "carol", real_name="Carol Approver"),
                ],
                channels=[
                    SlackChannel(CHANNEL, "dev"),
                    SlackChannel("C0OUT", "outside", member=False),
                ],
            )
        )
        self.fake_server.start()
        self.fake = self.fake_server.slack
        self.config = sample(sims, resources_patch=resources, **{"admins": [ADMIN], **config})
        self.db = db
        self.providers: dict[str, Provider] = {}
        self.server: AppServer | None = None
        self.start()

    def start(self) -> None:
        self.store = open_store(self.db, clock=self.time.now)
        self.providers = {
            p.name: build_provider(p, http=self.config.http) for p in self.config.providers
        }
        self.stopbot = Stopbot(
            self.config,
            self.store,
            self.providers,
            clock=self.time.now,
            sleep=self.time.sleep,
            housekeeping_interval=0.05,
            schedule_tick=0.05,
        )
        self.service = self.stopbot.service
        self.bot = SlackBot(
            self.stopbot,
            token=TOKEN,
            signing_secret=SECRET,
            api_url=self.fake_server.api_url,
        )
        self.server = AppServer(ClosingProviders(build_http_app(self.bot), self.providers))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.store.close()

    def close(self) -> None:
        """Stop the bot and the fake Slack (the simulators belong to their fixture)."""
        self.stop()
        self.fake_server.stop()

    async def post(
        self,
        body: bytes,
        *,
        secret: str = SECRET,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        assert self.server is not None
        signed = sign_request(secret, body, int(time.time()) if timestamp is None else timestamp)
        async with httpx.AsyncClient() as client:
            return await client.post(
                f"{self.server.url}/slack/events",
                content=body,
                headers={
                    **signed,
                    "Content-Type": "application/x-www-form-urlencoded",
                    **(headers or {}),
                },
            )

    async def command(
        self,
        text: str,
        user: str = BOB,
        channel: str = CHANNEL,
        trigger_id: str | None = None,
        **kw: Any,
    ) -> httpx.Response:
        url = self.fake.new_response_url(channel=channel, user=user)
        body = slash_command_body(
            "/stop", escape(text), user, channel, url, trigger_id or uuid.uuid4().hex
        )
        return await self.post(body, **kw)

    async def ask(self, text: str, user: str = BOB, channel: str = CHANNEL) -> Call:
        """Send ``/stop <text>`` and wait for the first answer to that very command."""
        url = self.fake.new_response_url(channel=channel, user=user)
        body = slash_command_body("/stop", escape(text), user, channel, url, uuid.uuid4().hex)
        response = await self.post(body)
        assert response.status_code == 200, response.text
        path = url.removeprefix(self.fake_server.base_url)
        return await self.fake.wait_for(RESPONSE_URL_METHOD, lambda c: c.path == path)

    async def reply(self, n: int = 1, user: str = BOB) -> Call:
        """The n-th response_url post (1-based) seen so far, waiting for it."""

        def nth(_: Call) -> bool:
            return len(self.fake.calls(RESPONSE_URL_METHOD)) >= n

        await self.fake.wait_for(RESPONSE_URL_METHOD, nth)
        return self.fake.calls(RESPONSE_URL_METHOD)[n - 1]

    def confirmation(self, user: str = BOB, channel: str = CHANNEL) -> tuple[str, str]:
        """The op id and ts of the latest ephemeral confirmation shown to ``user``."""
        message = self.fake.ephemeral_messages(channel, user)[-1]
        actions = next(b for b in message["blocks"] if b["type"] == "actions")
        return actions["elements"][0]["value"], message["ts"]

    async def click(
        self, action: str, op_id: str, ts: str, user: str = BOB, channel: str = CHANNEL
    ) -> httpx.Response:
        url = self.fake.new_response_url(
            channel=channel, user=user, message_ts=ts, is_ephemeral=True
        )
        payload = block_actions_payload(
            user,
            channel,
            action,
            op_id,
            response_url=url,
            message_ts=ts,
            is_ephemeral=True,
            block_id=f"confirm:{op_id}",
        )
        return await self.post(block_actions_body(payload))

    async def click_message(
        self,
        action: str,
        value: str,
        message: dict[str, Any],
        user: str,
        channel: str = CHANNEL,
    ) -> httpx.Response:
        """Click a button on a message everyone sees (a channel message or a DM)."""
        url = self.fake.new_response_url(channel=channel, user=user, message_ts=message["ts"])
        payload = block_actions_payload(
            user,
            channel,
            action,
            value,
            response_url=url,
            message=message,
            trigger_id=f"trigger-{uuid.uuid4().hex}",
        )
        return await self.post(block_actions_body(payload))

    async def submit_view(
        self, view: dict[str, Any], user: str, values: dict[str, Any]
    ) -> httpx.Response:
        """Submit a modal the bot opened, as Slack posts a view_submission."""
        payload = {
            "type": "view_submission",
            "team": {"id": "T0STOPBOT", "domain": "stopbot-playground"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0STOPBOT"},
            "api_app_id": "A0STOPBOT",
            "trigger_id": f"trigger-{uuid.uuid4().hex}",
            "view": {**view, "id": "V0TEST", "state": {"values": values}},
            "response_urls": [],
        }
        return await self.post(block_actions_body(payload))

    def messages_with_action(self, channel: str, action: str) -> list[dict[str, Any]]:
        """Messages in ``channel`` (or a DM id) that carry a button ``action``."""
        return [
            m
            for m in self.fake.messages(channel)
            if any(
                e.get("action_id") == action
                for b in m.get("blocks", [])
                if b.get("type") == "actions"
                for e in b.get("elements", [])
            )
        ]

    async def final_message(self, channel: str = CHANNEL) -> dict[str, Any]:
        return await self.fake.wait_for_message(
            channel,
            lambda m: any(
                marker in m.get("text", "")
                for marker in ("Stopped", "Failed", "Timed out", "Refused", "Already stopped")
            ),
        )


def block_texts(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks", []))
