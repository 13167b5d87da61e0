"""Answers to the user who typed a command or clicked a button, in mrkdwn only
(see :mod:`bot.slack.wording`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.slack.wording import Mrkdwn

__all__ = ["Respond", "replace", "replace_with", "tell", "tell_channel"]

Respond = Callable[..., Awaitable[Any]]
"""Bolt's ``respond``: a post to the request's response URL."""


async def tell(respond: Respond, text: Mrkdwn, blocks: list[dict[str, Any]] | None = None) -> None:
    """Say ``text`` to that user only, beside what they typed or clicked (a click's message
    stays as it is: Slack would otherwise replace it by default in some clients)."""
    extra = {"blocks": blocks} if blocks is not None else {}
    await respond(text=text, response_type="ephemeral", replace_original=False, **extra)


async def tell_channel(respond: Respond, text: Mrkdwn) -> None:
    """Say ``text`` to everyone in the channel, beside what was typed or clicked."""
    await respond(text=text, response_type="in_channel", replace_original=False)


async def replace(respond: Respond, text: Mrkdwn) -> None:
    """Replace the clicked message with ``text`` (its buttons go with it)."""
    await respond(text=text, replace_original=True)


async def replace_with(respond: Respond, text: Mrkdwn, blocks: list[dict[str, Any]]) -> None:
    """Replace the clicked message with another message (its own buttons, if any)."""
    await respond(text=text, blocks=blocks, replace_original=True)
