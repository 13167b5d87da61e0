"""The ``/stop`` grammar: text in, one command out, or a usage error worded for the user."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

__all__ = [
    "HELP",
    "Help",
    "History",
    "ListResources",
    "Status",
    "StopCommand",
    "UsageError",
    "parse",
]

HELP = """*Stopbot* stops cloud resources safely. Commands:
• `/stop <resource> [--force] [reason…]`: stop a resource, after you confirm
• `/stop status <resource>`: its current status and locks
• `/stop list [provider | tag:key=value]`: configured resources and their status
• `/stop history [resource]`: the latest stops, from the audit log
• `/stop help`: this message
A resource is named as in the configuration, or as `provider:id`. `--force` is Feldera's \
forced stop (no checkpoint)."""

RESERVED = frozenset({"help", "status", "list", "history"})


class UsageError(ValueError):
    """Malformed input: the message says what was expected."""


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Status:
    resource: str


@dataclass(frozen=True)
class ListResources:
    selector: str | None = None


@dataclass(frozen=True)
class History:
    resource: str | None = None


@dataclass(frozen=True)
class StopCommand:
    resource: str
    force: bool = False
    reason: str | None = None


Command = Help | Status | ListResources | History | StopCommand


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        # An unbalanced quote in a free-text reason is not worth refusing the command.
        return text.split()


def parse(text: str) -> Command:
    """Parse the text after ``/stop``."""
    words = _words(text.strip())
    if not words or words[0].lower() in {"help", "-h", "--help"}:
        return Help()
    head, rest = words[0].lower(), words[1:]
    if head == "status":
        if len(rest) != 1:
            raise UsageError("Usage: `/stop status <resource>` (one resource name).")
        return Status(rest[0])
    if head == "list":
        if len(rest) > 1:
            raise UsageError("Usage: `/stop list [provider | tag:key=value]`.")
        selector = rest[0] if rest else None
        if selector and selector.startswith("tag:") and "=" not in selector:
            raise UsageError("A tag filter looks like `tag:key=value`, e.g. `tag:env=dev`.")
        return ListResources(selector)
    if head == "history":
        if len(rest) > 1:
            raise UsageError("Usage: `/stop history [resource]`.")
        return History(rest[0] if rest else None)
    resource = words[0]
    if resource.startswith("-"):
        raise UsageError(
            f"`{resource}` is not a resource. Usage: `/stop <resource> [--force] [reason…]`."
        )
    force = False
    reason_words: list[str] = []
    for word in words[1:]:
        if word == "--force":
            force = True
        elif word.startswith("--") and not reason_words:
            raise UsageError(f"Unknown option `{word}`. The only option is `--force`.")
        else:
            reason_words.append(word)
    return StopCommand(resource, force=force, reason=" ".join(reason_words) or None)
