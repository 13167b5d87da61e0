"""What Slack sends to an app: slash commands, block actions, view submissions and closes,
signed as Slack signs them, so a test or the playground can drive a Bolt app over real HTTP.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from bot.slack.fake_api.web_api import DEFAULT_APP_ID, DEFAULT_TEAM_DOMAIN, DEFAULT_TEAM_ID

__all__ = [
    "app_home_opened_body",
    "block_actions_body",
    "block_actions_payload",
    "sign_request",
    "slash_command_body",
    "view_block_actions_payload",
    "view_closed_payload",
    "view_submission_payload",
]


def sign_request(signing_secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The headers Slack signs a request to an app with.

    https://docs.slack.dev/authentication/verifying-requests-from-slack/
    """
    basestring = f"v0:{timestamp}:".encode() + body
    digest = hmac.new(signing_secret.encode(), basestring, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def slash_command_body(
    command: str,
    text: str,
    user_id: str,
    channel_id: str,
    response_url: str,
    trigger_id: str,
    *,
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    channel_name: str = "",
    user_name: str = "",
    verification_token: str = "",
) -> bytes:
    """A slash command's form-encoded body, fields in the order Slack sends them.

    https://docs.slack.dev/interactivity/implementing-slash-commands
    """
    return urlencode(
        {
            "token": verification_token,
            "team_id": team_id,
            "team_domain": team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
    ).encode()


def block_actions_payload(
    user_id: str,
    channel_id: str,
    action_id: str,
    value: str,
    *,
    response_url: str,
    message_ts: str | None = None,
    message: Mapping[str, Any] | None = None,
    is_ephemeral: bool = False,
    block_id: str = "actions",
    button_text: str = "Button",
    user_name: str = "",
    channel_name: str = "",
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
    trigger_id: str = "1700000000.1.fake",
    action_ts: str | None = None,
) -> dict[str, Any]:
    """The payload of a button click on a message, as Slack sends it.

    https://docs.slack.dev/reference/interaction-payloads/block_actions-payload
    ``message`` is the clicked message (Slack includes it unless the message is
    ephemeral); ``message_ts`` defaults to its ``ts``.
    """
    if message_ts is None:
        if message is None:
            raise ValueError("a block action needs the clicked message or its message_ts")
        message_ts = str(message["ts"])
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id,
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": is_ephemeral,
        },
        "trigger_id": trigger_id,
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": channel_name},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": button_text},
                "value": value,
                "type": "button",
                "action_ts": action_ts if action_ts is not None else f"{time.time():.6f}",
            }
        ],
    }
    if message is not None and not is_ephemeral:
        payload["message"] = copy.deepcopy(dict(message))
    return payload


def block_actions_body(payload: Mapping[str, Any]) -> bytes:
    """An interaction's form-encoded body: ``payload=<JSON>``, as Slack posts it."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def _user_and_team(user_id: str, user_name: str, team_id: str, team_domain: str) -> dict[str, Any]:
    return {
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "team": {"id": team_id, "domain": team_domain},
    }


def view_block_actions_payload(
    user_id: str,
    view: Mapping[str, Any],
    action_id: str,
    value: str,
    *,
    block_id: str,
    button_text: str = "Button",
    user_name: str = "",
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
    trigger_id: str = "1700000000.1.fake",
    action_ts: str | None = None,
) -> dict[str, Any]:
    """The payload of a button click inside a modal: the container is the view, and the
    payload carries the view (with what the user entered so far) instead of a message.

    https://docs.slack.dev/reference/interaction-payloads/block_actions-payload
    """
    return {
        "type": "block_actions",
        **_user_and_team(user_id, user_name, team_id, team_domain),
        "api_app_id": api_app_id,
        "container": {"type": "view", "view_id": view["id"]},
        "trigger_id": trigger_id,
        "enterprise": None,
        "is_enterprise_install": False,
        "view": copy.deepcopy(dict(view)),
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": button_text},
                "value": value,
                "type": "button",
                "action_ts": action_ts if action_ts is not None else f"{time.time():.6f}",
            }
        ],
    }


def view_submission_payload(
    user_id: str,
    view: Mapping[str, Any],
    values: Mapping[str, Any],
    *,
    user_name: str = "",
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
    trigger_id: str = "1700000000.1.fake",
) -> dict[str, Any]:
    """What Slack sends when the user presses a modal's submit button.

    https://docs.slack.dev/reference/interaction-payloads/view-interactions-payload#view_submission
    ``values`` is ``view.state.values``: ``{block_id: {action_id: {"type": ..., "value": ...}}}``.
    """
    submitted = copy.deepcopy(dict(view)) | {"state": {"values": copy.deepcopy(dict(values))}}
    return {
        "type": "view_submission",
        **_user_and_team(user_id, user_name, team_id, team_domain),
        "api_app_id": api_app_id,
        "token": "",
        "trigger_id": trigger_id,
        "view": submitted,
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


def view_closed_payload(
    user_id: str,
    view: Mapping[str, Any],
    *,
    user_name: str = "",
    team_id: str = DEFAULT_TEAM_ID,
    team_domain: str = DEFAULT_TEAM_DOMAIN,
    api_app_id: str = DEFAULT_APP_ID,
) -> dict[str, Any]:
    """What Slack sends when the user closes a modal opened with ``notify_on_close``.

    https://docs.slack.dev/reference/interaction-payloads/view-interactions-payload#view_closed
    """
    return {
        "type": "view_closed",
        **_user_and_team(user_id, user_name, team_id, team_domain),
        "api_app_id": api_app_id,
        "token": "",
        "view": copy.deepcopy(dict(view)),
        "is_cleared": False,
        "is_enterprise_install": False,
        "enterprise": None,
    }


def app_home_opened_body(
    user_id: str,
    *,
    tab: str = "home",
    team_id: str = DEFAULT_TEAM_ID,
    api_app_id: str = DEFAULT_APP_ID,
    event_id: str | None = None,
) -> bytes:
    """The Events API request Slack sends when ``user_id`` opens the app's Home tab (or
    its Messages tab, ``tab="messages"``), as JSON.

    https://docs.slack.dev/reference/events/app_home_opened
    """
    now = time.time()
    body = {
        "token": "verification-token-unused",
        "team_id": team_id,
        "api_app_id": api_app_id,
        "event": {
            "type": "app_home_opened",
            "user": user_id,
            "channel": f"D0{user_id[1:]}",
            "tab": tab,
            "event_ts": f"{now:.6f}",
        },
        "type": "event_callback",
        "event_id": event_id or f"Ev{int(now * 1e6)}",
        "event_time": int(now),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team_id,
                "user_id": "U0STOPBOT",
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }
    return json.dumps(body).encode("utf-8")
