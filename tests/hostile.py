"""Hostile text, and a check that none of it reaches Slack as live markup.

Slack reads ``&``, ``<`` and ``>`` in mrkdwn as markup: a mention, a link, a notification
of the whole channel. In what the bot sends, every ``<…>`` must be one of its own (a mention
of someone it means to name, a date), and every ``&`` one of the three entities it
escapes with; ``plain_text`` is shown as is and is not checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from bot.slack.fake_api import Call

HOSTILE = (
    "<!channel>",
    "<!here> wake up",
    "<!everyone>",
    "<@U0EVIL>",
    "<!subteam^S0EVIL>",
    "<https://evil.example/x?a=1&b=2|click here>",
    "<#C0EVIL>",
    "R&D <ok> & more",
    "&lt;!channel&gt; &amp;",
    "*bold* _it_ `code` ~x~ > quote",
    "<mailto:a@evil.example|mail> <tel:+100|call>",
)
"""Text people type (or providers return) to make Slack mention, notify or link."""

_CONSTRUCT = re.compile(r"<[^<>]*>")
_ENTITY = re.compile(r"&(?:amp|lt|gt);")
_DATE = re.compile(r"<!date\^\d+\^\{[a-z_]+\}(?: (?:at )?\{[a-z_]+\})?\|[^<>|]+>")


def live_markup(text: str, people: Iterable[str] = ()) -> list[str]:
    """What in the mrkdwn ``text`` Slack would read as markup that the bot did not mean:
    any ``<…>`` but a mention of one of ``people`` (user or group ids) or a date, and any
    ``&``, ``<`` or ``>`` outside an entity or those."""
    allowed = {f"<@{p}>" for p in people} | {f"<!subteam^{p}>" for p in people}
    found = []
    for construct in _CONSTRUCT.findall(text):
        if construct not in allowed and not _DATE.fullmatch(construct):
            found.append(construct)
    rest = _ENTITY.sub("", _CONSTRUCT.sub("", text))
    found += [c for c in rest if c in "&<>"]
    return found


def mrkdwn_texts(value: Any, *, top: bool = True) -> Iterator[str]:
    """Every mrkdwn text in a message, a reply or a view as the Web API takes it: the
    notification ``text`` and each ``mrkdwn`` object's, never a ``plain_text``'s."""
    if isinstance(value, dict):
        if value.get("type") == "plain_text":
            return
        text = value.get("text")
        if isinstance(text, str) and (top or value.get("type") == "mrkdwn"):
            yield text
        for key, inner in value.items():
            if key != "text" or not isinstance(inner, str):
                yield from mrkdwn_texts(inner, top=False)
    elif isinstance(value, list):
        for inner in value:
            yield from mrkdwn_texts(inner, top=False)


def live_markup_in_calls(calls: Iterable[Call], people: Iterable[str]) -> list[tuple[str, str]]:
    """(method, offending markup) for every call to the fake Slack that carries any."""
    people = set(people)
    return [
        (call.method, found)
        for call in calls
        for text in mrkdwn_texts(call.args)
        for found in live_markup(text, people)
    ]
