"""Sentences the core says to people, as facts rather than markup.

The workflow, the lock and schedule rules explain themselves in sentences ("dev-eu is
locked by Alice (demo); ...", "run this command again"). Those sentences hold text that
nobody here controls: lock reasons, deny reasons, providers' messages. Were the core to
write them in Slack's mrkdwn, the Slack face could no longer tell its own mentions from a
reason typed to look like one (or like Slack's channel-wide notification), and a terminal
would print Slack's mention syntax to a person.

So a :class:`Text` is made of parts, each a fact: plain words (whoever wrote them), a
:class:`Person` (an id: a Slack user or group, ``cli:<login>``, ``schedule:<name>``) and
a :class:`Command` to type (a verb and its arguments). Each face renders them in its own
syntax: Slack escapes the words and mentions the people; the terminal prints names (or
ids) and ``stopbot`` commands. What is stored in the database is this structure as JSON
(:meth:`Text.stored`); rows written before it were plain strings, read back as plain words
(:meth:`Text.from_stored`), never as mentions.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = [
    "REASON_LIMIT",
    "Command",
    "Person",
    "Text",
    "TextError",
    "TooLongError",
    "check_length",
    "fields",
    "say",
    "too_long",
]

REASON_LIMIT = 500
"""The most characters of a reason someone gives (to stop, lock, deny): enough for a
sentence or two, and every audit entry and message that carries it stays small."""


@dataclass(frozen=True)
class Person:
    """Someone a sentence names, by id: a Slack user (``U…``, ``W…``) or user group
    (``S…``), or another actor (``cli:ana``, ``schedule:nightly``, ``stopbot``)."""

    id: str


@dataclass(frozen=True)
class Command:
    """A command for the reader to type: ``verb`` (``stop``, ``status``, ``schedule run``)
    and its arguments, in the grammar every face shares."""

    verb: str
    args: str = ""


Part = str | Person | Command


class Text:
    """A sentence as parts (see the module's docstring), immutable; :func:`say` builds one
    from a template, ``Text(a, b, …)`` and :meth:`join` from pieces."""

    __slots__ = ("parts",)

    parts: tuple[Part, ...]

    def __init__(self, *parts: Part | Text | None) -> None:
        merged: list[Part] = []
        for part in parts:
            for piece in part.parts if isinstance(part, Text) else (part,):
                if piece is None or piece == "":
                    continue
                if isinstance(piece, str) and merged and isinstance(merged[-1], str):
                    merged[-1] += piece
                else:
                    merged.append(piece)
        object.__setattr__(self, "parts", tuple(merged))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Text is immutable")

    def __reduce__(self) -> tuple[type[Text], tuple[Part, ...]]:
        # copy and deepcopy rebuild it from its parts (it has no setter they could use).
        return Text, self.parts

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Text) and other.parts == self.parts

    def __hash__(self) -> int:
        return hash(self.parts)

    def __bool__(self) -> bool:
        return bool(self.parts)

    def __repr__(self) -> str:
        return f"Text{self.parts!r}"

    def __str__(self) -> str:
        """Neutral words, for logs and tests: ids as they are, commands as typed words."""
        return self.render(str, lambda p: p.id, lambda c: f"{c.verb} {c.args}".strip())

    def render(
        self,
        words: Callable[[str], str],
        person: Callable[[Person], str],
        command: Callable[[Command], str],
    ) -> str:
        """The sentence in a face's syntax, given how it writes each kind of part."""
        out = []
        for part in self.parts:
            if isinstance(part, Person):
                out.append(person(part))
            elif isinstance(part, Command):
                out.append(command(part))
            else:
                out.append(words(part))
        return "".join(out)

    def join(self, items: Iterable[Part | Text]) -> Text:
        """``items`` with this text between them, as ``str.join``."""
        joined: list[Part | Text] = []
        for i, item in enumerate(items):
            if i:
                joined.append(self)
            joined.append(item)
        return Text(*joined)

    # -- storage --------------------------------------------------------------------

    def to_json(self) -> list[Any]:
        """The parts as JSON values: words as strings, people and commands as objects."""
        out: list[Any] = []
        for part in self.parts:
            if isinstance(part, Person):
                out.append({"person": part.id})
            elif isinstance(part, Command):
                out.append({"command": part.verb, "args": part.args})
            else:
                out.append(part)
        return out

    def stored(self) -> str:
        """The text as the database keeps it (see :meth:`from_stored`)."""
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_stored(cls, value: str) -> Text:
        """A column :meth:`stored` wrote, or an older row's string (see :meth:`legacy`)."""
        if value.startswith("["):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                parts = [_part(item) for item in parsed]
                if all(part is not None for part in parts):
                    return cls(*parts)
        return cls.legacy(value)

    @classmethod
    def legacy(cls, value: str) -> Text:
        """A sentence stored before sentences were parts, as words. The core then wrote
        Slack mentions into them, beside user text that may look the same: each becomes
        the bare id, so that nothing written before can mention anyone."""
        return cls(_LEGACY_MENTION.sub(r"\1", value))

    @classmethod
    def coerce(cls, value: Any) -> Text:
        """Pydantic's reading of a field: a Text, its JSON, or a stored column."""
        if isinstance(value, Text):
            return value
        if isinstance(value, str):
            return cls.from_stored(value)
        return cls.from_stored(json.dumps(value))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda text: text.to_json()
            ),
        )


class TextError(Exception):
    """An error whose message is for the user, as a :class:`Text` (``str()`` of it is
    the neutral words, for logs)."""

    def __init__(self, text: Text) -> None:
        super().__init__(str(text))
        self.text = text


class TooLongError(TextError, ValueError):
    """Text someone wrote that is longer than Stopbot keeps; nothing was recorded."""


def too_long(what: str, text: str | None, limit: int = REASON_LIMIT) -> Text | None:
    """Why ``text`` (``what``: "A reason") is refused, or None when it is short enough."""
    if text is None or len(text) <= limit:
        return None
    return say(
        "{} is {:,} characters at most (this one has {:,}): shorten it.", what, limit, len(text)
    )


def check_length(what: str, text: str | None, limit: int = REASON_LIMIT) -> None:
    """Raise TooLongError when ``text`` is longer than ``limit`` (see :func:`too_long`)."""
    refused = too_long(what, text, limit)
    if refused is not None:
        raise TooLongError(refused)


def _part(item: Any) -> Part | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("person"), str) and len(item) == 1:
        return Person(item["person"])
    if (
        isinstance(item, dict)
        and isinstance(item.get("command"), str)
        and isinstance(item.get("args"), str)
        and len(item) == 2
    ):
        return Command(item["command"], item["args"])
    return None


# Slack's user and group mentions (a user's or a group's id in angle brackets), labelled or not.
_LEGACY_MENTION = re.compile(r"<(?:@|!subteam\^)([A-Z0-9]+)(?:\|[^>]*)?>")
_FORMATTER = string.Formatter()


def fields(template: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
    """``template`` (``str.format``'s syntax) piece by piece: each literal as a ``str``,
    each field as a ``(value, format spec)`` pair, its conversion applied. The builders of
    sentences (:func:`say`) and of mrkdwn (``bot.slack.wording.md``) render the values."""
    auto = 0
    for literal, field, spec, conversion in _FORMATTER.parse(template):
        if literal:
            yield literal
        if field is None:
            continue
        if field == "":
            field, auto = str(auto), auto + 1
        value, _ = _FORMATTER.get_field(field, args, kwargs)
        if conversion:
            value = _FORMATTER.convert_field(value, conversion)
        yield value, spec or ""


def say(template: str, /, *args: Any, **kwargs: Any) -> Text:
    """A :class:`Text` from a ``str.format`` template: ``say("{} is locked by {who}",
    name, who=Person(owner))``. A field given a Person, a Command or a Text becomes
    those parts; anything else is formatted (with its format spec) as words."""
    parts: list[Part | Text] = []
    for piece in fields(template, args, kwargs):
        if isinstance(piece, str):
            parts.append(piece)
            continue
        value, spec = piece
        parts.append(value if isinstance(value, Text | Person | Command) else format(value, spec))
    return Text(*parts)
