"""Local mode: with no Slack credentials, the bot talks to a stand-in Slack on loopback.

The stand-in (``bot.slack.fake_api``) answers the Web API as Slack would and keeps what a
channel would show, so the whole bot runs on a fresh machine with nothing to sign up for.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from bot.slack.fake_api import FakeSlack, FakeSlackServer, SlackChannel, SlackUser

__all__ = ["LOCAL_CHANNEL", "LOCAL_USERS", "LocalSlack"]

LOCAL_CHANNEL = SlackChannel("C0LOCAL01", "platform-team")
LOCAL_USERS = (
    SlackUser("U0LOCALDEV", "dana", real_name="Dana Developer", tz="Europe/Paris"),
    SlackUser("U0LOCALAPP", "alice", real_name="Alice Martin", tz="Europe/Paris"),
    SlackUser("U0LOCALADM", "ada", real_name="Ada Admin", tz="America/New_York", is_admin=True),
)


@dataclass
class LocalSlack:
    server: FakeSlackServer
    token: str
    signing_secret: str

    @classmethod
    def start(cls) -> LocalSlack:
        token = f"xoxb-local-{secrets.token_hex(8)}"
        server = FakeSlackServer(
            FakeSlack(tokens=[token], users=LOCAL_USERS, channels=[LOCAL_CHANNEL])
        )
        server.start()
        return cls(server, token, secrets.token_hex(16))

    @property
    def api_url(self) -> str:
        return self.server.api_url

    def banner(self, bot_url: str) -> str:
        return (
            "stopbot: local mode (no Slack credentials set): the bot talks to a stand-in "
            f"Slack Web API at {self.server.base_url}/api/ and the built-in simulators.\n"
            "stopbot: to connect to a real workspace, set SLACK_BOT_TOKEN and SLACK_APP_TOKEN "
            "(Socket Mode) or SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (--http); see the README."
        )

    def stop(self) -> None:
        self.server.stop()
