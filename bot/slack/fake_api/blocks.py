"""Block Kit's limits, checked as Slack checks them: what it refuses with ``invalid_blocks``.

The fake Web API refuses such messages and modals as Slack would, and tests check the bot's
views against the same limits without a server.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_MESSAGE_BLOCKS", "MAX_VIEW_BLOCKS", "TEXT_TYPES", "InvalidBlocks", "check_blocks"]


class InvalidBlocks(ValueError):
    """Blocks past Block Kit's limits: Slack's ``invalid_blocks``."""


# Block Kit's limits, which Slack enforces with ``invalid_blocks``: a message holds at most
# 50 blocks and a modal 100 (https://docs.slack.dev/reference/block-kit/blocks), and each
# block and element has its own (the pages of each, under block-kit/).
MAX_MESSAGE_BLOCKS, MAX_VIEW_BLOCKS = 50, 100
_TEXT_LIMITS = {"section": 3000, "header": 150, "field": 2000, "button": 75, "option": 75}


def check_blocks(blocks: Any, *, most: int = MAX_MESSAGE_BLOCKS) -> None:
    """Refuse blocks past Block Kit's limits as Slack does (``invalid_blocks``): too many
    blocks, a ``block_id`` repeated in a message or over 255 characters, an ``action_id``
    repeated in a block, and text, fields, elements or options past their lengths."""
    if not isinstance(blocks, list) or len(blocks) > most:
        raise InvalidBlocks()
    block_ids: set[str] = set()
    for block in blocks:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidBlocks()
        block_id = block.get("block_id")
        if block_id is not None:
            _require(isinstance(block_id, str) and len(block_id) <= 255)
            _require(block_id not in block_ids)
            block_ids.add(block_id)
        kind = block["type"]
        if kind == "section":
            fields = block.get("fields") or []
            _require(block.get("text") is not None or bool(fields))
            if block.get("text") is not None:
                _check_text(block["text"], _TEXT_LIMITS["section"])
            _require(isinstance(fields, list) and len(fields) <= 10)
            for field in fields:
                _check_text(field, _TEXT_LIMITS["field"])
            if block.get("accessory") is not None:
                _check_element(block["accessory"])
        elif kind == "header":
            _check_text(block.get("text"), _TEXT_LIMITS["header"], plain=True)
        elif kind == "context":
            elements = block.get("elements")
            _require(isinstance(elements, list) and 0 < len(elements) <= 10)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                raise InvalidBlocks()
            action_ids = [e.get("action_id") for e in elements if isinstance(e, dict)]
            named = [a for a in action_ids if a is not None]
            _require(len(named) == len(set(named)))
            for element in elements:
                _check_element(element)


def _require(condition: bool) -> None:
    if not condition:
        raise InvalidBlocks()


def _check_text(text: Any, most: int, *, plain: bool = False) -> None:
    _require(isinstance(text, dict) and isinstance(text.get("text"), str))
    _require(text["type"] == "plain_text" if plain else text.get("type") in TEXT_TYPES)
    _require(0 < len(text["text"]) <= most)


def _check_element(element: Any) -> None:
    _require(isinstance(element, dict))
    action_id = element.get("action_id")
    _require(action_id is None or (isinstance(action_id, str) and len(action_id) <= 255))
    if element.get("type") == "button":
        _check_text(element.get("text"), _TEXT_LIMITS["button"], plain=True)
        _require(len(str(element.get("value", ""))) <= 2000)
    elif element.get("type") == "static_select":
        options = element.get("options") or []
        _require(isinstance(options, list) and len(options) <= 100)
        for option in options:
            _require(isinstance(option, dict))
            _check_text(option.get("text"), _TEXT_LIMITS["option"])
            _require(len(str(option.get("value", ""))) <= 150)


TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})
