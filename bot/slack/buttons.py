"""Reading what a click carries, trusting none of it.

A button's value is Stopbot's own, but it comes back in a request: from a message posted
by an older version in another format, or crafted. Every listener reads its click through
these functions, which raise :class:`StaleButton` for anything Stopbot would not have
written; the listener's guard then tells the clicker the button is no longer valid, and
nothing changes (no error reference: nothing went wrong on Stopbot's side).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from bot.slack.wording import Mrkdwn

__all__ = [
    "STALE",
    "StaleButton",
    "clicked",
    "clicker",
    "fields",
    "moment",
    "selected",
    "value",
]

STALE = Mrkdwn("This button is no longer valid: nothing was changed.")
VALUE_LIMIT = 2000  # Slack's limit on a button's value


class StaleButton(Exception):
    """A click this bot cannot act on (see the module docstring)."""


def _dict(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise StaleButton
    return value


def clicked(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The action (button or menu) of a ``block_actions`` request, clicked on a message or
    on the Home tab (Stopbot's buttons are there only: a click in a modal has no response
    URL to answer on, and the Home answers by being published again)."""
    view = body.get("view")
    on_home = isinstance(view, dict) and view.get("type") == "home"
    if not on_home and not isinstance(body.get("response_url"), str):
        raise StaleButton
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions:
        raise StaleButton
    return _dict(actions[0])


def clicker(body: Mapping[str, Any]) -> str:
    """Who clicked (or submitted a modal): their user id."""
    user = _dict(body.get("user")).get("id")
    if not isinstance(user, str) or not user:
        raise StaleButton
    return user


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > VALUE_LIMIT:
        raise StaleButton
    return value


def value(body: Mapping[str, Any]) -> str:
    """A button's value: a non-empty string."""
    return _text(clicked(body).get("value"))


def selected(body: Mapping[str, Any]) -> str:
    """The value of the option chosen in a menu."""
    return _text(_dict(clicked(body).get("selected_option")).get("value"))


def fields(text: str, *keys: str) -> dict[str, str]:
    """A value written as a JSON object (``{"r": "dev-eu", ...}``): exactly those keys,
    each a non-empty string."""
    try:
        data = json.loads(text)
    except ValueError:
        raise StaleButton from None
    if not isinstance(data, dict) or set(data) != set(keys):
        raise StaleButton
    return {key: _text(data[key]) for key in keys}


def moment(text: str) -> dt.datetime:
    """A time a value carries, with its offset (as ``datetime.isoformat`` wrote it)."""
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise StaleButton from None
    if at.tzinfo is None:
        raise StaleButton
    return at
