"""Local mode: with no Slack credentials, the bot talks to a stand-in Slack on loopback.

The stand-in (``bot.slack.fake_api``) answers the Web API as Slack would and keeps what a
channel would show, so the whole bot runs on a fresh machine with nothing to sign up for.
Its workspace has one channel and a few people with different rights over the sample
estate (``local_config`` grants them), so a newcomer can try every path: a plain stop, a
lock someone else holds, an approval, an admin.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass
from typing import Any

from bot.slack.fake_api import FakeSlack, FakeSlackServer, SlackChannel, SlackUser
from providers.simulators.samples import sample_config

__all__ = [
    "LOCAL_ADMIN",
    "LOCAL_APPROVER",
    "LOCAL_CHANNEL",
    "LOCAL_DEVELOPER",
    "LOCAL_ROLES",
    "LOCAL_USERS",
    "PROTECTED_RESOURCE",
    "LocalSlack",
    "local_config",
]

LOCAL_CHANNEL = SlackChannel("C0LOCAL01", "platform-team")
LOCAL_DEVELOPER = "U0LOCALDEV"
LOCAL_APPROVER = "U0LOCALAPV"
LOCAL_ADMIN = "U0LOCALADM"
LOCAL_USERS = (
    SlackUser(LOCAL_DEVELOPER, "dana", real_name="Dana Developer", tz="Europe/Paris"),
    # Alice Martin holds the sample Qovery lock on staging-us: she may stop it, others may not.
    SlackUser("U0LOCALAPP", "alice", real_name="Alice Martin", tz="Europe/Paris"),
    SlackUser(LOCAL_APPROVER, "priya", real_name="Priya Patel", tz="Asia/Kolkata"),
    SlackUser(LOCAL_ADMIN, "ada", real_name="Ada Admin", tz="America/New_York", is_admin=True),
)
LOCAL_ROLES = {
    LOCAL_DEVELOPER: "developer",
    "U0LOCALAPP": "developer, owns the staging-us lock",
    LOCAL_APPROVER: "approver",
    LOCAL_ADMIN: "admin",
}
"""What each local user may do, in words, for the playground's user picker."""

PROTECTED_RESOURCE = "spark"
"""The sample resource whose stops wait for the approver (the shared batch cluster)."""


def local_config(base_url: str) -> dict[str, Any]:
    """The sample configuration for simulators at ``base_url``, with the local users' rights:
    Ada is an admin, and stopping ``PROTECTED_RESOURCE`` needs Priya's approval."""
    document = copy.deepcopy(sample_config(base_url))
    document["admins"] = [LOCAL_ADMIN]
    for resource in document["resources"]:
        if resource["name"] == PROTECTED_RESOURCE:
            resource["approval"] = {"required": True, "approvers": [LOCAL_APPROVER]}
    document.setdefault("schedules", []).append(OFFICE_HOURS | {"channel": LOCAL_CHANNEL.id})
    return document


OFFICE_HOURS: dict[str, Any] = {
    "name": "office-hours",
    "cron": "0 20 * * 1-5",
    "start_cron": "0 8 * * 1-5",
    "timezone": "UTC",
    "select": {"resources": ["dev-eu", "web-1", "spark", "etl"]},
    "warn_before": "15m",
}
"""The playground's office hours to try: stopped at 20:00 UTC on weekdays, started again
at 08:00 (skip ahead in the side panel to see a run, or `/stop schedule run office-hours`)."""


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
