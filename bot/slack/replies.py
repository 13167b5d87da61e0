"""Answers to the user who typed a command or clicked a button."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Respond", "tell"]

Respond = Callable[..., Awaitable[Any]]
"""Bolt's ``respond``: a post to the request's response URL."""


async def tell(respond: Respond, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
    """Say ``text`` to that user only, beside what they typed or clicked (a click's message
    stays as it is: Slack would otherwise replace it by default in some clients)."""
    extra = {"blocks": blocks} if blocks is not None else {}
    await respond(text=text, response_type="ephemeral", replace_original=False, **extra)
