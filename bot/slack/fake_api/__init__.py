"""A fake Slack, for tests, benchmarks and the playground: three parts, one module each.

- :mod:`~bot.slack.fake_api.web_api`: the Web API the bot calls (``FakeSlack``, served by
  ``FakeSlackServer``), answering in Slack's shapes and recording each call (``Call``);
- :mod:`~bot.slack.fake_api.payloads`: what Slack sends to an app (slash commands, block
  actions, view submissions, the Home tab opened), signed as Slack signs them;
- :mod:`~bot.slack.fake_api.blocks`: Block Kit's limits, which the Web API enforces.
"""

from bot.slack.fake_api.blocks import check_blocks
from bot.slack.fake_api.payloads import (
    app_home_opened_body,
    block_actions_body,
    block_actions_payload,
    sign_request,
    slash_command_body,
    view_block_actions_payload,
    view_closed_payload,
    view_submission_payload,
)
from bot.slack.fake_api.web_api import (
    DEFAULT_TOKEN,
    RESPONSE_URL_METHOD,
    Call,
    FakeSlack,
    FakeSlackServer,
    SlackChannel,
    SlackUser,
)

__all__ = [
    "DEFAULT_TOKEN",
    "RESPONSE_URL_METHOD",
    "Call",
    "FakeSlack",
    "FakeSlackServer",
    "SlackChannel",
    "SlackUser",
    "app_home_opened_body",
    "block_actions_body",
    "block_actions_payload",
    "check_blocks",
    "sign_request",
    "slash_command_body",
    "view_block_actions_payload",
    "view_closed_payload",
    "view_submission_payload",
]
