"""How the Slack face writes: mrkdwn in which only Stopbot's own markup is live.

Slack reads ``&``, ``<`` and ``>`` in mrkdwn as markup: ``<!channel>`` notifies a whole
channel, ``<@U…>`` mentions someone, ``<https://…|click>`` is a link. So every piece of
text Stopbot did not write itself (a reason, a lock's owner or reason, a provider's
message, a name typed in a command) has exactly those three characters escaped, and
nothing else: Slack shows other HTML entities literally.
https://docs.slack.dev/messaging/formatting-message-text#escaping

* :class:`Mrkdwn` is text that is mrkdwn already; block builders and replies take only it,
  so that mypy finds any string that would reach Slack unescaped.
* :func:`md` writes a template of ours (trusted markup) with every value escaped, or
  rendered when it is one of the core's facts: a :class:`~bot.text.Text`, a
  :class:`~bot.text.Person` (a mention, only for a well-formed id), a
  :class:`~bot.text.Command` (`` `/stop …` ``).
* :func:`cut` shortens mrkdwn to a Block Kit limit without breaking an ``&amp;`` entity or
  a ``<…>`` construct; :func:`plain` caps ``plain_text`` (headers, labels), which Slack
  shows as is and which is never escaped.
* A slash command's ``text`` arrives escaped already (``&lt;``): :func:`unescape` reads it
  back to what the user typed, which is then escaped once, on the way out, like any text.
  A modal's input arrives as typed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from bot.text import Command, Person, Text, fields

__all__ = [
    "Mrkdwn",
    "code",
    "command",
    "counted",
    "cut",
    "escape",
    "md",
    "mention",
    "mrkdwn",
    "plain",
    "unescape",
    "when",
]


class Mrkdwn(str):
    """Text in Slack's mrkdwn whose every ``<…>`` and ``&…;`` is Stopbot's own. Adding or
    joining plain strings escapes them."""

    __slots__ = ()

    def __add__(self, other: str) -> Mrkdwn:
        return Mrkdwn(str.__add__(self, mrkdwn(other)))

    def __radd__(self, other: str) -> Mrkdwn:
        return Mrkdwn(str.__add__(mrkdwn(other), self))

    def join(self, items: Iterable[Any]) -> Mrkdwn:
        return Mrkdwn(str.join(self, (mrkdwn(item) for item in items)))


_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ESCAPED = re.compile(r"&(amp|lt|gt);")
_UNESCAPES = {"amp": "&", "lt": "<", "gt": ">"}


def escape(words: str) -> Mrkdwn:
    """``words`` as mrkdwn that shows them literally."""
    return Mrkdwn(words.translate(_ESCAPES))


def unescape(text: str) -> str:
    """What the user typed, from a slash command's ``text`` (Slack escapes ``&``, ``<``
    and ``>`` in it). One pass, so ``&amp;lt;`` is the typed ``&lt;``."""
    return _ESCAPED.sub(lambda m: _UNESCAPES[m.group(1)], text)


# Slack's ids: a user (U, or W in Enterprise Grid) or a user group (S), upper-case base 36.
_USER = re.compile(r"[UW][A-Z0-9]{2,40}")
_GROUP = re.compile(r"S[A-Z0-9]{2,40}")


def mention(person: Person) -> Mrkdwn:
    """A user or group mention for a well-formed Slack id; any other id (``cli:ana``,
    ``schedule:nightly``, something no Slack id looks like) as words."""
    if _USER.fullmatch(person.id):
        return Mrkdwn(f"<@{person.id}>")
    if _GROUP.fullmatch(person.id):
        return Mrkdwn(f"<!subteam^{person.id}>")
    return escape(person.id)


def command(cmd: Command) -> Mrkdwn:
    """A command to type, as code: `` `/stop dev-eu` ``, `` `/stop status dev-eu` ``."""
    words = cmd.args if cmd.verb == "stop" else f"{cmd.verb} {cmd.args}"
    return code(f"/stop {words}".strip())


def code(words: str) -> Mrkdwn:
    """``words`` as inline code (a backtick in them would end it: it becomes a quote)."""
    return Mrkdwn("`" + escape(words.replace("`", "'")) + "`")


def mrkdwn(value: Any) -> Mrkdwn:
    """Any value as mrkdwn: Mrkdwn as it is, the core's facts rendered, the rest escaped."""
    if isinstance(value, Mrkdwn):
        return value
    if isinstance(value, Text):
        return Mrkdwn(value.render(escape, mention, command))
    if isinstance(value, Person):
        return mention(value)
    if isinstance(value, Command):
        return command(value)
    return escape(str(value))


def md(template: str, /, *args: Any, **kwargs: Any) -> Mrkdwn:
    """A ``str.format`` template of Stopbot's own mrkdwn, each value through
    :func:`mrkdwn` (a value with a format spec is formatted first, then escaped)."""
    out: list[str] = []
    for piece in fields(template, args, kwargs):
        if isinstance(piece, str):
            out.append(piece)
            continue
        value, spec = piece
        out.append(escape(format(value, spec)) if spec else mrkdwn(value))
    return Mrkdwn("".join(out))


ELLIPSIS = "…"


def cut(text: Mrkdwn, limit: int) -> Mrkdwn:
    """``text`` in at most ``limit`` characters, ending with an ellipsis when shortened,
    never inside an entity (``&amp;``) or a ``<…>`` construct (a mention, a date): every
    ``&`` and ``<`` of a Mrkdwn starts one of those."""
    if len(text) <= limit:
        return text
    end = limit - len(ELLIPSIS)
    entity = text.rfind("&", max(end - len("&amp;"), 0), end)
    if entity != -1 and ";" not in text[entity:end]:
        end = entity
    construct = text.rfind("<", 0, end)
    if construct != -1 and ">" not in text[construct:end]:
        end = construct
    return Mrkdwn(text[:end] + ELLIPSIS)


def plain(text: str, limit: int) -> str:
    """A ``plain_text`` field (shown as is, never escaped) in at most ``limit`` characters."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def when(at: dt.datetime) -> Mrkdwn:
    """A time Slack shows in each viewer's own time zone: "today at 5:35:00 PM", "Dec 4,
    2026 at 9:00:00 AM" (a phrase of its own: never after "at" or "on")."""
    fallback = at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    stamp = int(at.timestamp())
    return Mrkdwn(f"<!date^{stamp}^{{date_short_pretty}} at {{time_secs}}|{fallback}>")


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """ "1 resource", "3 resources": never "1 resource(s)"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
