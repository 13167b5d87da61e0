"""How the terminal names people and writes commands.

The core names people by id (a Slack user or group, ``cli:<login>``, ``schedule:<name>``)
and commands as a verb and its arguments (:mod:`bot.text`). A terminal shows a person by
name where one is known, in this order: the configuration's ``names`` (set by whoever runs
the bot), then, with ``SLACK_BOT_TOKEN`` set, the real name Slack gives the user
(``users.info``: never the display name, which anyone sets to anything, a colleague's
included); else the id as it is. Commands are ``stopbot …`` where the terminal has them,
else the Slack command, said to be Slack's.

Audit entries keep their sentences as words (ids in them bare): :meth:`Names.in_words`
names the people it knows in them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from bot.config import Settings, StopbotConfig
from bot.models import SYSTEM
from bot.text import Command, Person, Text

__all__ = ["CLI_VERBS", "Names", "command", "people_in"]

log = logging.getLogger(__name__)

CLI_VERBS = frozenset({"stop", "status", "list", "history", "locks"})

LOOKUP_TIMEOUT = 5.0
"""Seconds the terminal waits for Slack's names at most: past that, ids are shown."""
LOOKUP_MOST = 50
"""Users looked up in Slack per command at most (one users.info each, four at a time)."""


def command(cmd: Command) -> str:
    """A command to type, as this terminal's (or, for what only Slack does, Slack's)."""
    typed = " ".join(word for word in (cmd.verb, cmd.args) if word)
    return f"`stopbot {typed}`" if cmd.verb in CLI_VERBS else f"`/stop {typed}` in Slack"


def people_in(texts: Iterable[Text | None]) -> set[str]:
    """The ids of the people these sentences name."""
    return {part.id for text in texts if text for part in text.parts if isinstance(part, Person)}


class Names:
    """The names the terminal knows, by id (see the module's docstring)."""

    def __init__(self, known: Mapping[str, str] | None = None) -> None:
        self.known = {person: name for person, name in (known or {}).items() if name}
        self._ids = (
            re.compile(
                r"\b(?:"
                + "|".join(re.escape(i) for i in sorted(self.known, key=len, reverse=True))
                + r")\b"
            )
            if self.known
            else None
        )

    def __call__(self, person: str) -> str:
        """``person``'s name, else the id itself."""
        return self.known.get(person, person)

    def words(self, text: Text | None) -> str:
        """A sentence of the core for the terminal: people by name, commands as typed here."""
        return text.render(str, lambda p: self(p.id), command) if text else ""

    def in_words(self, words: str) -> str:
        """Words stored as such (an audit entry's detail), each id of a known person in
        them replaced by the name."""
        if self._ids is None:
            return words
        return self._ids.sub(lambda m: self.known[m.group(0)], words)

    @classmethod
    async def look_up(
        cls, ids: Iterable[str], config: StopbotConfig | None, settings: Settings
    ) -> Names:
        """The names of ``ids`` the configuration gives, and Slack's for the rest when a
        bot token is set (a failed or slow lookup leaves the id: it is logged, not fatal)."""
        known = dict(config.names) if config is not None else {}
        token = settings.slack_bot_token
        # Stopbot's own actors (cli:<login>, schedule:<name>, stopbot) are no Slack users.
        wanted = sorted({i for i in ids if i not in known and ":" not in i and i != SYSTEM})
        wanted = wanted[:LOOKUP_MOST]
        if token is not None and wanted:
            try:
                found = await asyncio.wait_for(
                    _slack_names(token.get_secret_value(), settings.slack_api_url, wanted),
                    LOOKUP_TIMEOUT,
                )
            except TimeoutError:
                log.warning("Slack's users.info did not answer in time: people shown by id")
            else:
                known.update(found)
        return cls(known)


async def _slack_names(token: str, api_url: str | None, ids: list[str]) -> dict[str, str]:
    """Each id's real name in Slack (``users.info``), where Slack knows it as a user."""
    from aiohttp import ClientError
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    kwargs: dict[str, Any] = {"token": token, "timeout": int(LOOKUP_TIMEOUT)}
    if api_url:
        kwargs["base_url"] = api_url if api_url.endswith("/") else api_url + "/"
    client = AsyncWebClient(**kwargs)
    gate = asyncio.Semaphore(4)

    async def name_of(user: str) -> tuple[str, str | None]:
        async with gate:
            try:
                answer = await client.users_info(user=user)
            except SlackApiError as exc:  # a user group, a deleted user, a bad token
                log.info("users.info %s: %s", user, exc.response.get("error"))
                return user, None
            except (ClientError, OSError) as exc:
                log.info("users.info %s: %s", user, exc)
                return user, None
        found = answer.get("user") or {}
        profile = found.get("profile") or {}
        name = found.get("real_name") or profile.get("real_name") or found.get("name")
        return user, str(name) if name else None

    named = await asyncio.gather(*(name_of(user) for user in ids))
    return {user: name for user, name in named if name}
