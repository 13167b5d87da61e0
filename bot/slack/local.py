"""Local mode: with no Slack credentials, the bot talks to a stand-in Slack on loopback.

The stand-in (``bot.slack.fake_api``) answers the Web API as Slack would and keeps what a
channel would show, so the whole bot runs on a fresh machine with nothing to sign up for.
Its workspace has one channel and a few people with different rights over the embedded
estate (:mod:`bot.estate` grants them), so a newcomer can try every path: a plain stop, a
lock someone else holds, an approval, an admin.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from bot.estate import (
    ESTATE_ADMIN,
    ESTATE_APPROVER,
    ESTATE_CHANNEL,
    ESTATE_PEOPLE,
    PROTECTED_RESOURCE,
)
from bot.slack.fake_api import FakeSlack, FakeSlackServer, SlackChannel, SlackUser

__all__ = [
    "LOCAL_ADMIN",
    "LOCAL_APPROVER",
    "LOCAL_CHANNEL",
    "LOCAL_DEVELOPER",
    "LOCAL_ROLES",
    "LOCAL_USERS",
    "PROTECTED_RESOURCE",
    "LocalSlack",
]

LOCAL_CHANNEL = SlackChannel(ESTATE_CHANNEL, "platform-team")
LOCAL_DEVELOPER = "U0LOCALDEV"
LOCAL_APPROVER = ESTATE_APPROVER
LOCAL_ADMIN = ESTATE_ADMIN
LOCAL_USERS = (
    SlackUser(LOCAL_DEVELOPER, "dana", real_name=ESTATE_PEOPLE[LOCAL_DEVELOPER], tz="Europe/Paris"),
    # Alice Martin holds the sample Qovery lock on staging-us: she may stop it, others may not.
    SlackUser("U0LOCALAPP", "alice", real_name=ESTATE_PEOPLE["U0LOCALAPP"], tz="Europe/Paris"),
    SlackUser(LOCAL_APPROVER, "priya", real_name=ESTATE_PEOPLE[LOCAL_APPROVER], tz="Asia/Kolkata"),
    SlackUser(
        LOCAL_ADMIN,
        "ada",
        real_name=ESTATE_PEOPLE[LOCAL_ADMIN],
        tz="America/New_York",
        is_admin=True,
    ),
)
LOCAL_ROLES = {
    LOCAL_DEVELOPER: "developer",
    "U0LOCALAPP": "developer, owns the staging-us lock",
    LOCAL_APPROVER: "approver",
    LOCAL_ADMIN: "admin",
}
"""What each local user may do, in words, for the playground's user picker."""


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
    def slack(self) -> FakeSlack:
        return self.server.slack

    @property
    def api_url(self) -> str:
        return self.server.api_url

    def banner(self, bot_url: str) -> str:
        return (
            "stopbot: local mode (no Slack credentials set): the bot talks to a stand-in "
            f"Slack Web API at {self.server.base_url}/api/ and the built-in simulators.\n"
            "stopbot: to try it in a browser page that stands in for a Slack channel, run "
            "`stopbot dev`.\n"
            "stopbot: to connect to a real workspace, set SLACK_BOT_TOKEN and SLACK_APP_TOKEN "
            "(Socket Mode) or SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (--http); see the README."
        )

    def stop(self) -> None:
        self.server.stop()
