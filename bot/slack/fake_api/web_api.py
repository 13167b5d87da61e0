"""The fake Slack Web API: answers in Slack's own shapes, and records what the bot asked.

End-to-end tests point the bot's ``AsyncWebClient(base_url=server.api_url)`` at it, and the
local playground (``stopbot dev``) renders its channels. It keeps what a channel shows now
(posts, updates, deletes, ephemeral messages, response_url replies) and answers with Slack's
errors (``invalid_auth``, ``not_in_channel``, ``ratelimited``...). A method it does not
implement answers ``unknown_method``, so a new call the bot starts making fails a test loudly
instead of passing silently.

    GET|POST /api/<method>     Web API methods, https://docs.slack.dev/reference/methods
    POST     /response/<id>    response_url hooks minted by ``FakeSlack.new_response_url``

It also does what the Slack client does with the app's answers (shows an acknowledgement's
reply, closes or updates a modal), so the playground can show a channel as a member would
see it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.slack.fake_api.blocks import (
    MAX_MESSAGE_BLOCKS,
    MAX_VIEW_BLOCKS,
    InvalidBlocks,
    check_blocks,
)
from providers.threaded_server import ThreadedServer

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_TEAM_DOMAIN",
    "DEFAULT_TEAM_ID",
    "DEFAULT_TOKEN",
    "RESPONSE_URL_METHOD",
    "Call",
    "FakeSlack",
    "FakeSlackServer",
    "SlackChannel",
    "SlackUser",
]

DEFAULT_TOKEN = "xoxb-stopbot-fake-token"  # noqa: S105 - the fake's own made-up bot token
DEFAULT_TEAM_ID = "T0STOPBOT"
DEFAULT_TEAM_DOMAIN = "stopbot-playground"
DEFAULT_APP_ID = "A0STOPBOT"
DEFAULT_SCOPES = ("chat:write", "commands", "im:write", "users:read", "usergroups:read")
RESPONSE_URL_METHOD = "response_url"
"""The ``Call.method`` of a POST to a response URL."""

RESPONSE_URL_TTL, RESPONSE_URL_USES = 30 * 60.0, 5
"""A response URL takes five posts within thirty minutes
(https://docs.slack.dev/interactivity/handling-user-interaction#message_responses)."""
MAX_CONVERSATION_USERS = 8
SLACKBOT_USER_ID = "USLACKBOT"
TRIGGER_TTL = 3.0
"""Seconds a trigger_id may be exchanged for a modal (https://docs.slack.dev/interactivity/handling-user-interaction#modals)."""
MAX_VIEW_STACK = 3

# Form-encoded calls carry these as JSON strings. The value is Slack's error for a bad one.
_JSON_FIELDS = {
    "blocks": "invalid_blocks_format",
    "attachments": "invalid_attachments",
    "view": "invalid_arguments",
    "metadata": "invalid_metadata_format",
}
_CONTENT_FIELDS = ("text", "blocks", "attachments")
_VIEW_IDENTITY = (
    "id",
    "team_id",
    "state",
    "previous_view_id",
    "root_view_id",
    "app_id",
    "app_installed_team_id",
    "bot_id",
)
# Response URLs answer like incoming webhooks: an HTTP status and the error's name in plain text.
_HOOK_ERROR_STATUS = {
    "no_service": 404,
    "channel_not_found": 404,
    "message_not_found": 404,
    "expired_url": 404,
    "used_url": 404,
}

_T = TypeVar("_T")


@dataclass(frozen=True)
class Call:
    """One request the fake received, and what it answered."""

    method: str
    """The Web API method, or ``RESPONSE_URL_METHOD`` for a response URL post."""
    args: dict[str, Any]
    token: str | None
    at: float
    status: int
    response: dict[str, Any] | str
    path: str


@dataclass(frozen=True)
class SlackUser:
    """A workspace member, as ``users.info`` describes them."""

    id: str
    name: str
    real_name: str = ""
    display_name: str = ""
    tz: str = "UTC"
    is_admin: bool = False
    is_owner: bool = False
    is_bot: bool = False
    email: str | None = None

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"user {self.id}: unknown time zone {self.tz!r}") from exc

    def as_api(self, team_id: str, now: float) -> dict[str, Any]:
        """The ``user`` object of https://docs.slack.dev/reference/methods/users.info."""
        offset = datetime.fromtimestamp(now, ZoneInfo(self.tz)).utcoffset()
        real_name = self.real_name or self.name
        profile: dict[str, Any] = {
            "real_name": real_name,
            "real_name_normalized": real_name,
            "display_name": self.display_name,
            "display_name_normalized": self.display_name,
            "team": team_id,
        }
        if self.email is not None:
            profile["email"] = self.email
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "deleted": False,
            "real_name": real_name,
            "tz": self.tz,
            "tz_offset": int(offset.total_seconds()) if offset is not None else 0,
            "profile": profile,
            "is_admin": self.is_admin,
            "is_owner": self.is_owner,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": self.is_bot,
            "is_app_user": False,
        }


@dataclass(frozen=True)
class SlackChannel:
    """A conversation, and whether the bot is in it (Slack refuses posts when it is not).

    A private channel the bot is not in is invisible to it: ``channel_not_found``.
    """

    id: str
    name: str
    member: bool = True
    is_private: bool = False
    user: str | None = None
    """For a direct message: the person on the other side."""


@dataclass
class _Hook:
    """What a response URL belongs to: where replies go, and the message it may replace;
    when it was minted and how often it was used."""

    channel: str | None
    user: str | None
    message_ts: str | None
    is_ephemeral: bool
    issued_at: float = 0.0
    uses: int = 0


@dataclass
class _Trigger:
    user: str
    issued_at: float
    used: bool = False


@dataclass(frozen=True)
class _Fault:
    error: str
    status: int
    retry_after: int


class _SlackError(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _error(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


class FakeSlack:
    """The fake workspace: users, channels and their messages, plus every call received.

    Safe to read from a test's thread while the server answers in its own.

    :param tokens: the bot tokens it accepts; any other gets ``invalid_auth``.
    :param clock: seconds since the epoch, for message timestamps and ``Call.at``; a test
        passes a fixed one to get known ``ts`` values.
    """

    def __init__(
        self,
        *,
        tokens: Iterable[str] = (DEFAULT_TOKEN,),
        team_id: str = DEFAULT_TEAM_ID,
        team_name: str = "Stopbot Playground",
        team_domain: str = DEFAULT_TEAM_DOMAIN,
        bot_user_id: str = "U0STOPBOT",
        bot_id: str = "B0STOPBOT",
        bot_name: str = "stopbot",
        app_id: str = DEFAULT_APP_ID,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        users: Iterable[SlackUser] = (),
        channels: Iterable[SlackChannel] = (),
        usergroups: Mapping[str, Iterable[str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = set(tokens)
        self.team_id = team_id
        self.team_name = team_name
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.app_id = app_id
        self.scopes = tuple(scopes)
        self.clock = clock
        self.base_url = ""
        """Where the fake is served; ``FakeSlackServer`` sets it. Response URLs live under it."""

        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._users: dict[str, SlackUser] = {}
        self._channels: dict[str, SlackChannel] = {}
        self._messages: dict[str, list[dict[str, Any]]] = {}
        self._ephemeral: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._views: dict[str, dict[str, Any]] = {}
        self._view_users: dict[str, str | None] = {}
        self._closed_views: set[str] = set()
        self._homes: dict[str, dict[str, Any]] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._conversations: dict[frozenset[str], str] = {}
        self._hooks: dict[str, _Hook] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._counters: dict[str, int] = {}
        self._last_ts = 0
        self._version = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.history": self._conversations_history,
            "conversations.open": self._conversations_open,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "views.open": self._views_open,
            "views.push": self._views_push,
            "views.update": self._views_update,
            "views.publish": self._views_publish,
        }
        self.app = Starlette(
            routes=[
                Route("/api/{method}", self._api, methods=["GET", "POST"]),
                Route("/response/{hook_id}", self._response_url, methods=["POST"]),
            ]
        )

        self._users[bot_user_id] = SlackUser(bot_user_id, bot_name, is_bot=True)
        for user in users:
            self._users[user.id] = user
        for channel in channels:
            self._channels[channel.id] = channel
        for usergroup_id, members in (usergroups or {}).items():
            self._usergroups[usergroup_id] = list(members)

    # -- seeding ---------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str = "",
        display_name: str = "",
        tz: str = "UTC",
        is_admin: bool = False,
        is_owner: bool = False,
        email: str | None = None,
    ) -> SlackUser:
        user = SlackUser(
            user_id,
            name,
            real_name=real_name,
            display_name=display_name,
            tz=tz,
            is_admin=is_admin,
            is_owner=is_owner,
            email=email,
        )
        with self._lock:
            self._users[user_id] = user
        return user

    def add_channel(
        self, channel_id: str, name: str, member: bool = True, *, is_private: bool = False
    ) -> SlackChannel:
        """Add a channel, or change one's membership (its messages stay)."""
        channel = SlackChannel(channel_id, name, member=member, is_private=is_private)
        with self._lock:
            self._channels[channel_id] = channel
        return channel

    def add_usergroup(self, usergroup_id: str, users: Iterable[str]) -> None:
        with self._lock:
            self._usergroups[usergroup_id] = list(users)

    def add_message(
        self, channel: str, text: str, *, user: str, blocks: list[dict[str, Any]] | None = None
    ) -> str:
        """Put a message someone else wrote in a channel; returns its ``ts``."""
        with self._lock:
            if channel not in self._channels:
                raise ValueError(f"unknown channel {channel!r}: add_channel it first")
            ts = self._next_ts()
            message: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts}
            if blocks is not None:
                message["blocks"] = copy.deepcopy(blocks)
            self._messages.setdefault(channel, []).append(message)
            self._changed()
        return ts

    # -- test controls ---------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        error: str = "ratelimited",
        *,
        status: int | None = None,
        retry_after: int = 1,
    ) -> None:
        """Answer ``method``'s next call with ``{"ok": false, "error": error}``.

        ``ratelimited`` comes as Slack sends it, HTTP 429 with ``Retry-After``
        (https://docs.slack.dev/apis/web-api/rate-limits); any other error with HTTP 200.
        Calling it twice fails the next two calls.
        """
        if status is None:
            status = 429 if error == "ratelimited" else 200
        with self._lock:
            self._faults.setdefault(method, deque()).append(_Fault(error, status, retry_after))

    def new_response_url(
        self,
        *,
        channel: str | None = None,
        user: str | None = None,
        message_ts: str | None = None,
        is_ephemeral: bool = False,
    ) -> str:
        """A response URL, as Slack puts in a slash command or an interaction payload.

        :param channel: where ``in_channel`` and ephemeral replies go.
        :param user: who sees ephemeral replies.
        :param message_ts: the message (an ephemeral one if ``is_ephemeral``) that
            ``replace_original`` and ``delete_original`` act on.
        """
        if not self.base_url:
            raise RuntimeError("the fake is not served yet: start a FakeSlackServer first")
        hook_id = secrets.token_urlsafe(12)
        with self._lock:
            self._hooks[hook_id] = _Hook(channel, user, message_ts, is_ephemeral, self.clock())
        return f"{self.base_url}/response/{hook_id}"

    def new_trigger_id(self, user: str) -> str:
        """A trigger_id, as Slack puts in a command or an interaction ``user`` started.

        A modal opened with it belongs to ``user``. As in Slack, it can be exchanged once
        (``exchanged_trigger_id``) and within ``TRIGGER_TTL`` seconds (``expired_trigger_id``).
        """
        with self._lock:
            self._user(user)
            trigger_id = f"{int(self.clock())}.{len(self._triggers) + 1}.{secrets.token_hex(8)}"
            self._triggers[trigger_id] = _Trigger(user, self.clock())
        return trigger_id

    # -- what the Slack client does --------------------------------------------------------

    def add_ephemeral(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        author: str = SLACKBOT_USER_ID,
        blocks: list[dict[str, Any]] | None = None,
    ) -> str:
        """Show ``user`` alone a message from ``author`` (Slackbot by default), as the Slack
        client shows a slash command's invocation or its failure; returns its ``ts``."""
        with self._lock:
            if channel not in self._channels:
                raise ValueError(f"unknown channel {channel!r}: add_channel it first")
            ts = self._next_ts()
            message: dict[str, Any] = {"type": "message", "user": author, "text": text, "ts": ts}
            if blocks is not None:
                message["blocks"] = copy.deepcopy(blocks)
            self._ephemeral.setdefault((channel, user), []).append(message)
            self._changed()
        return ts

    def show_reply(self, channel: str, user: str, reply: Mapping[str, Any]) -> None:
        """Show the body an app acknowledged a slash command with, as Slack does: ephemeral
        unless ``response_type`` is ``in_channel``.

        https://docs.slack.dev/interactivity/implementing-slash-commands#responding_immediately
        Raises ``ValueError`` (with Slack's error name) for a body Slack would not show.
        """
        with self._lock:
            try:
                self._apply_response(_Hook(channel, user, None, False), dict(reply))
            except _SlackError as exc:
                raise ValueError(exc.error) from None
            self._changed()

    def view_owner(self, view_id: str) -> str | None:
        """Who sees the view: the user whose trigger_id opened it (None for any other)."""
        with self._lock:
            return self._view_users.get(view_id)

    def close_view(self, view_id: str) -> None:
        """The user closed a modal, or the app's answer to a submission closed it. Closing
        the root view closes the views pushed on it too."""
        with self._lock:
            view = self._views.get(view_id)
            if view is None:
                raise ValueError(f"unknown view {view_id!r}")
            for other in self._views.values():
                if other["id"] == view_id or (
                    view["root_view_id"] == view_id and other["root_view_id"] == view_id
                ):
                    self._closed_views.add(other["id"])
            self._changed()

    def close_views(self, user: str) -> None:
        """Close every modal ``user`` has open (an app's ``response_action: clear``)."""
        with self._lock:
            for view_id, owner in self._view_users.items():
                if owner == user:
                    self._closed_views.add(view_id)
            self._changed()

    def update_view(self, view_id: str, view: Mapping[str, Any]) -> dict[str, Any]:
        """Replace an open view's content (an app's ``response_action: update``)."""
        with self._lock:
            try:
                updated = self._views_update({"view_id": view_id, "view": dict(view)})
            except _SlackError as exc:
                raise ValueError(exc.error) from None
            self._changed()
            return dict(updated["view"])

    def push_view(
        self, user: str, view: Mapping[str, Any], previous_view_id: str
    ) -> dict[str, Any]:
        """Open ``view`` on top of ``previous_view_id`` (an app's ``response_action: push``).

        Raises ``ValueError("push_limit_reached")`` past Slack's three stacked views."""
        with self._lock:
            previous = self._views.get(previous_view_id)
            if previous is None:
                raise ValueError(f"unknown view {previous_view_id!r}")
            try:
                stored = self._push(dict(view), user, previous)
            except _SlackError as exc:
                raise ValueError(exc.error) from None
            self._changed()
            return copy.deepcopy(stored)

    def set_view_state(self, view_id: str, values: Mapping[str, Any]) -> None:
        """What the user entered in a modal's inputs (``view.state.values``)."""
        with self._lock:
            view = self._views.get(view_id)
            if view is None:
                raise ValueError(f"unknown view {view_id!r}")
            view["state"] = {"values": copy.deepcopy(dict(values))}
            self._changed()

    def notify(self) -> None:
        """Wake whoever waits for a change (``wait_changed``): for a watcher that shows more
        than the workspace, such as the playground's side panel, after a change of its own."""
        with self._lock:
            self._changed()

    # -- what happened ---------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """The calls received so far, oldest first; only ``method``'s if given."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """What ``channel`` shows now, oldest first (thread replies carry ``thread_ts``)."""
        with self._lock:
            return copy.deepcopy(self._messages.get(channel, []))

    def ephemeral_messages(self, channel: str, user: str) -> list[dict[str, Any]]:
        """The ephemeral messages only ``user`` sees in ``channel``, oldest first."""
        with self._lock:
            return copy.deepcopy(self._ephemeral.get((channel, user), []))

    def channels(self) -> list[SlackChannel]:
        with self._lock:
            return list(self._channels.values())

    def views(self) -> list[dict[str, Any]]:
        """The views opened so far, as last updated."""
        with self._lock:
            return copy.deepcopy(list(self._views.values()))

    def home(self, user: str) -> dict[str, Any] | None:
        """The Home tab published for ``user`` last, if any."""
        with self._lock:
            found = self._homes.get(user)
            return copy.deepcopy(found) if found is not None else None

    def open_views(self, user: str | None = None) -> list[dict[str, Any]]:
        """The modals still open (``user``'s only if given), oldest first: a pushed view
        comes after the one it was pushed on."""
        with self._lock:
            return [
                copy.deepcopy(view)
                for view_id, view in self._views.items()
                if view_id not in self._closed_views
                and (user is None or self._view_users.get(view_id) == user)
            ]

    @property
    def version(self) -> int:
        """A counter moved by every change to what the workspace shows and every call."""
        with self._lock:
            return self._version

    async def wait_changed(
        self,
        version: int,
        timeout: float,  # noqa: ASYNC109 - the caller's bound, e.g. a live stream's heartbeat
    ) -> int:
        """The version once it moved past ``version``; the unchanged one after ``timeout``."""

        def moved() -> int | None:
            current = self.version
            return current if current != version else None

        try:
            return await self._wait(moved, "a change", timeout)
        except TimeoutError:
            return self.version

    def snapshot(self, *, calls: int = 50) -> dict[str, Any]:
        """Everything the workspace shows, as JSON: users, conversations, messages,
        ephemeral messages (with whom each is for), open modals (with their user), and the
        latest ``calls`` calls (method and outcome only: no arguments, no tokens)."""
        with self._lock:
            now = self.clock()
            return {
                "version": self._version,
                "team": {"id": self.team_id, "name": self.team_name, "domain": self.team_domain},
                "bot_user_id": self.bot_user_id,
                "users": [u.as_api(self.team_id, now) for u in self._users.values()],
                "channels": [
                    {
                        "id": c.id,
                        "name": c.name,
                        "member": c.member,
                        "is_private": c.is_private,
                        "is_im": c.user is not None,
                        "user": c.user,
                    }
                    for c in self._channels.values()
                ],
                "messages": copy.deepcopy(self._messages),
                "ephemeral": [
                    {"channel": channel, "user": user, "messages": copy.deepcopy(messages)}
                    for (channel, user), messages in self._ephemeral.items()
                ],
                "homes": [
                    {"user": user, "view": copy.deepcopy(view)}
                    for user, view in self._homes.items()
                ],
                "views": [
                    {"user": self._view_users.get(view_id), "view": copy.deepcopy(view)}
                    for view_id, view in self._views.items()
                    if view_id not in self._closed_views
                ],
                "calls": [_call_summary(c) for c in self._calls[-calls:]] if calls else [],
            }

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a default bound: a test must fail, not hang
    ) -> Call:
        """The first call to ``method`` matching ``predicate``, waiting for it if need be."""

        def find() -> Call | None:
            return next((c for c in self.calls(method) if predicate is None or predicate(c)), None)

        return await self._wait(find, f"a matching {method} call", timeout)

    async def wait_for_message(
        self,
        channel: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a default bound: a test must fail, not hang
    ) -> dict[str, Any]:
        """The first message ``channel`` shows matching ``predicate``, waiting if need be."""

        def find() -> dict[str, Any] | None:
            messages = self.messages(channel)
            return next((m for m in messages if predicate is None or predicate(m)), None)

        return await self._wait(find, f"a matching message in {channel}", timeout)

    async def wait_for_ephemeral(
        self,
        channel: str,
        user: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a default bound: a test must fail, not hang
    ) -> dict[str, Any]:
        """The first ephemeral message ``user`` sees in ``channel`` matching ``predicate``."""

        def find() -> dict[str, Any] | None:
            messages = self.ephemeral_messages(channel, user)
            return next((m for m in messages if predicate is None or predicate(m)), None)

        return await self._wait(
            find, f"a matching ephemeral message for {user} in {channel}", timeout
        )

    async def _wait(self, find: Callable[[], _T | None], what: str, seconds: float) -> _T:
        # The server answers from its own thread: it wakes this loop after every change.
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(waiter)
        try:
            async with asyncio.timeout(seconds):
                while (found := find()) is None:
                    await waiter[1].wait()
                    waiter[1].clear()
        except TimeoutError:
            seen = ", ".join(c.method for c in self.calls()) or "none"
            raise TimeoutError(
                f"waited {seconds}s for {what} in vain; calls so far: {seen}"
            ) from None
        finally:
            with self._lock:
                self._waiters.discard(waiter)
        return found

    def _changed(self) -> None:
        """Count a change and wake every waiter (called with the lock held, from any thread)."""
        self._version += 1
        for loop, event in self._waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    # -- HTTP ------------------------------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        body = await request.body()
        token = _bearer_token(request.headers.get("authorization", ""))
        with self._lock:
            headers: dict[str, str] = {}
            try:
                args = _parse_args(
                    dict(request.query_params), request.headers.get("content-type", ""), body
                )
            except _SlackError as exc:
                args, status, answer = {}, 200, _error(exc.error)
            else:
                form_token = args.pop("token", None)
                if token is None and isinstance(form_token, str) and form_token:
                    token = form_token
                status, answer, headers = self._answer(method, args, token)
            self._record(method, args, token, status, answer, request.url.path)
        return JSONResponse(answer, status_code=status, headers=headers)

    def _answer(
        self, method: str, args: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        handler = self._methods.get(method)
        if handler is None:
            return 200, _error("unknown_method"), {}
        if token is None:
            return 200, _error("not_authed"), {}
        if token not in self.tokens:
            return 200, _error("invalid_auth"), {}
        headers = {"x-oauth-scopes": ",".join(self.scopes)}
        faults = self._faults.get(method)
        if faults:
            fault = faults.popleft()
            if fault.status == 429:
                headers["Retry-After"] = str(fault.retry_after)
            return fault.status, _error(fault.error), headers
        try:
            return 200, handler(copy.deepcopy(args)), headers
        except _SlackError as exc:
            return 200, _error(exc.error), headers

    async def _response_url(self, request: Request) -> Response:
        """A post to a response URL, applied as Slack does.

        https://docs.slack.dev/interactivity/handling-user-interaction#message_responses
        Slack answers these in plain text: ``ok``, or the error's name.
        """
        body = await request.body()
        with self._lock:
            payload: dict[str, Any] = {}
            try:
                hook = self._hooks.get(request.path_params["hook_id"])
                if hook is None:
                    raise _SlackError("no_service")
                if self.clock() - hook.issued_at > RESPONSE_URL_TTL:
                    raise _SlackError("expired_url")
                if hook.uses >= RESPONSE_URL_USES:
                    raise _SlackError("used_url")
                hook.uses += 1
                payload = _json_object(body, "invalid_payload")
                self._apply_response(hook, payload)
                status, answer = 200, "ok"
            except _SlackError as exc:
                status, answer = _HOOK_ERROR_STATUS.get(exc.error, 400), exc.error
            self._record(RESPONSE_URL_METHOD, payload, None, status, answer, request.url.path)
        return PlainTextResponse(answer, status_code=status)

    def _apply_response(self, hook: _Hook, payload: dict[str, Any]) -> None:
        if payload.get("delete_original"):
            self._original_list(hook).remove(self._original(hook))
            return
        content = _content(payload)
        if payload.get("replace_original"):
            original = self._original(hook)
            for key in _CONTENT_FIELDS:
                original.pop(key, None)
            original.update({"text": ""} | content)
            return
        if hook.channel is None:
            raise _SlackError("channel_not_found")
        message = self._bot_message(content, self._next_ts())
        if payload.get("response_type") == "in_channel":
            self._messages.setdefault(hook.channel, []).append(message)
        elif hook.user is None:
            raise _SlackError("user_not_found")
        else:
            self._ephemeral.setdefault((hook.channel, hook.user), []).append(message)

    def _original_list(self, hook: _Hook) -> list[dict[str, Any]]:
        if hook.channel is None or hook.message_ts is None:
            raise _SlackError("message_not_found")
        if hook.is_ephemeral:
            return self._ephemeral.get((hook.channel, hook.user or ""), [])
        return self._messages.get(hook.channel, [])

    def _original(self, hook: _Hook) -> dict[str, Any]:
        for message in self._original_list(hook):
            if message["ts"] == hook.message_ts:
                return message
        raise _SlackError("message_not_found")

    def _record(
        self,
        method: str,
        args: dict[str, Any],
        token: str | None,
        status: int,
        answer: dict[str, Any] | str,
        path: str,
    ) -> None:
        self._calls.append(
            Call(
                method=method,
                args=copy.deepcopy(args),
                token=token,
                at=self.clock(),
                status=status,
                response=copy.deepcopy(answer),
                path=path,
            )
        )
        self._changed()

    # -- state helpers (called with the lock held) -----------------------------------------

    def _next_ts(self) -> str:
        """The clock's time, moved 100 µs past the previous ts when the clock has not moved."""
        micros = max(round(self.clock() * 1_000_000), self._last_ts + 100)
        self._last_ts = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _next_id(self, prefix: str) -> str:
        self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return f"{prefix}{self._counters[prefix]:08d}"

    def _channel(self, ref: Any, *, require_member: bool) -> SlackChannel:
        """The channel an argument names: an id, ``#name``, or a user id (their DM)."""
        if not isinstance(ref, str) or not ref:
            raise _SlackError("channel_not_found")
        if ref in self._users:
            return self._open_conversation([ref])[0]
        if ref.startswith("#"):
            found = next((c for c in self._channels.values() if c.name == ref[1:]), None)
        else:
            found = self._channels.get(ref)
        if found is None or (found.is_private and not found.member):
            raise _SlackError("channel_not_found")
        if require_member and not found.member:
            raise _SlackError("not_in_channel")
        return found

    def _user(self, ref: Any) -> SlackUser:
        user = self._users.get(ref) if isinstance(ref, str) else None
        if user is None:
            raise _SlackError("user_not_found")
        return user

    def _open_conversation(self, user_ids: list[str]) -> tuple[SlackChannel, bool]:
        """The DM (or group DM) with these users, and whether it was opened just now."""
        key = frozenset(user_ids)
        existing = self._conversations.get(key)
        if existing is not None:
            return self._channels[existing], False
        if len(key) == 1:
            (user_id,) = key
            channel = SlackChannel(self._next_id("D"), user_id, user=user_id)
        else:
            names = "--".join(sorted(self._users[u].name for u in key))
            channel = SlackChannel(self._next_id("G"), f"mpdm-{names}-1", is_private=True)
        self._channels[channel.id] = channel
        self._conversations[key] = channel.id
        return channel, True

    def _find_message(self, channel: str, ts: Any) -> dict[str, Any]:
        for message in self._messages.get(channel, []):
            if message["ts"] == ts:
                return message
        raise _SlackError("message_not_found")

    def _bot_message(self, content: dict[str, Any], ts: str) -> dict[str, Any]:
        return {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "text": "",
            "ts": ts,
        } | content

    # -- Web API methods -------------------------------------------------------------------

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/auth.test"""
        return {
            "ok": True,
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
        }

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/chat.postMessage"""
        channel = self._channel(args.get("channel"), require_member=True)
        message = self._bot_message(_content(args), self._next_ts())
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        if args.get("metadata") is not None:
            message["metadata"] = _metadata(args["metadata"])
        self._messages.setdefault(channel.id, []).append(message)
        return {
            "ok": True,
            "channel": channel.id,
            "ts": message["ts"],
            "message": copy.deepcopy(message),
        }

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/chat.update

        Fields not sent are kept, as Slack keeps a message's blocks when only text changes.
        """
        channel = self._channel(args.get("channel"), require_member=False)
        message = self._find_message(channel.id, args.get("ts"))
        if message.get("user") != self.bot_user_id:
            raise _SlackError("cant_update_message")
        for key, value in _content(args).items():
            if value == []:
                message.pop(key, None)
            else:
                message[key] = value
        return {
            "ok": True,
            "channel": channel.id,
            "ts": message["ts"],
            "text": message["text"],
            "message": copy.deepcopy(message),
        }

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/chat.delete"""
        channel = self._channel(args.get("channel"), require_member=False)
        message = self._find_message(channel.id, args.get("ts"))
        if message.get("user") != self.bot_user_id:
            raise _SlackError("cant_delete_message")
        self._messages[channel.id].remove(message)
        return {"ok": True, "channel": channel.id, "ts": message["ts"]}

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/chat.postEphemeral"""
        channel = self._channel(args.get("channel"), require_member=True)
        user = self._user(args.get("user"))
        message = self._bot_message(_content(args), self._next_ts())
        self._ephemeral.setdefault((channel.id, user.id), []).append(message)
        return {"ok": True, "message_ts": message["ts"]}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/conversations.history: newest first,
        from ``oldest`` (exclusive), at most ``limit``; each message's ``metadata`` only
        with ``include_all_metadata``. The bot must be a member (else not_in_channel)."""
        channel = self._channel(args.get("channel"), require_member=True)
        try:
            oldest = float(args.get("oldest") or 0)
            limit = int(args.get("limit") or 100)
        except (TypeError, ValueError):
            raise _SlackError("invalid_arguments") from None
        with_metadata = str(args.get("include_all_metadata")).lower() in {"true", "1"}
        found = [
            copy.deepcopy(m)
            for m in reversed(self._messages.get(channel.id, []))
            if float(m["ts"]) > oldest and "thread_ts" not in m
        ]
        if not with_metadata:
            for message in found:
                message.pop("metadata", None)
        return {"ok": True, "messages": found[: max(1, min(limit, 999))], "has_more": False}

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/conversations.open"""
        if args.get("channel"):
            channel = self._channel(args["channel"], require_member=False)
            return {"ok": True, "no_op": True, "already_open": True, "channel": {"id": channel.id}}
        users = args.get("users") or []
        user_ids = users.split(",") if isinstance(users, str) else list(users)
        user_ids = [u.strip() for u in user_ids if u.strip()]
        if not user_ids:
            raise _SlackError("users_list_not_supplied")
        if len(user_ids) > MAX_CONVERSATION_USERS:
            raise _SlackError("too_many_users")
        for user_id in user_ids:
            self._user(user_id)
        channel, opened = self._open_conversation(user_ids)
        answer: dict[str, Any] = {"ok": True, "channel": {"id": channel.id}}
        if not opened:
            answer |= {"no_op": True, "already_open": True}
        return answer

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/users.info"""
        user = self._user(args.get("user"))
        return {"ok": True, "user": user.as_api(self.team_id, self.clock())}

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/usergroups.users.list"""
        users = self._usergroups.get(args.get("usergroup", ""))
        if users is None:
            raise _SlackError("no_such_subteam")
        return {"ok": True, "users": list(users)}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/views.open

        A trigger_id from ``new_trigger_id`` opens the view for its user, once and in time;
        any other trigger_id is accepted and opens a view nobody in particular sees.
        """
        view = args.get("view")
        if not args.get("trigger_id") or not isinstance(view, dict):
            raise _SlackError("invalid_arguments")
        user = self._exchange_trigger(str(args["trigger_id"]))
        return {"ok": True, "view": copy.deepcopy(self._open_view(view, user))}

    def _views_push(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/views.push: on top of the trigger's
        user's open modal."""
        view = args.get("view")
        if not args.get("trigger_id") or not isinstance(view, dict):
            raise _SlackError("invalid_arguments")
        user = self._exchange_trigger(str(args["trigger_id"]))
        mine = [
            v
            for view_id, v in self._views.items()
            if user and view_id not in self._closed_views and self._view_users[view_id] == user
        ]
        if not mine:
            raise _SlackError("not_found")
        return {"ok": True, "view": copy.deepcopy(self._push(view, user, mine[-1]))}

    def _push(
        self, view: dict[str, Any], user: str | None, previous: dict[str, Any]
    ) -> dict[str, Any]:
        stacked = [
            v
            for view_id, v in self._views.items()
            if view_id not in self._closed_views and v["root_view_id"] == previous["root_view_id"]
        ]
        if len(stacked) >= MAX_VIEW_STACK:
            raise _SlackError("push_limit_reached")
        return self._open_view(view, user, previous=previous)

    def _exchange_trigger(self, trigger_id: str) -> str | None:
        trigger = self._triggers.get(trigger_id)
        if trigger is None:
            return None
        if trigger.used:
            raise _SlackError("exchanged_trigger_id")
        if self.clock() - trigger.issued_at > TRIGGER_TTL:
            raise _SlackError("expired_trigger_id")
        trigger.used = True
        return trigger.user

    def _open_view(
        self, view: dict[str, Any], user: str | None, previous: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        _check_blocks(view.get("blocks", []), most=MAX_VIEW_BLOCKS)
        view_id = self._next_id("V")
        stored = {
            "id": view_id,
            "team_id": self.team_id,
            "type": view.get("type", "modal"),
            "blocks": [],
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "clear_on_close": False,
            "notify_on_close": False,
        } | view
        stored |= {
            "id": view_id,
            "state": {"values": {}},
            "hash": self._view_hash(),
            "previous_view_id": previous["id"] if previous else None,
            "root_view_id": previous["root_view_id"] if previous else view_id,
            "app_id": self.app_id,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self._views[view_id] = stored
        self._view_users[view_id] = user
        return stored

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/views.update"""
        view = args.get("view")
        if not isinstance(view, dict):
            raise _SlackError("invalid_arguments")
        if args.get("view_id"):
            stored = self._views.get(args["view_id"])
        elif args.get("external_id"):
            external_id = args["external_id"]
            stored = next(
                (v for v in self._views.values() if v["external_id"] == external_id), None
            )
        else:
            raise _SlackError("invalid_arguments")
        if stored is None or stored["id"] in self._closed_views:
            raise _SlackError("not_found")
        if args.get("hash") and args["hash"] != stored["hash"]:
            raise _SlackError("hash_conflict")
        # The app sends the view's content; Slack keeps the view's identity and lineage.
        kept = {key: stored[key] for key in _VIEW_IDENTITY}
        stored.update(view)
        stored |= kept | {"hash": self._view_hash()}
        return {"ok": True, "view": copy.deepcopy(stored)}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        """https://docs.slack.dev/reference/methods/views.publish: ``user_id``'s Home tab,
        a view of type ``home`` (at most 100 blocks), replacing the one published before
        (``hash`` given: only if it is still that one's)."""
        view = args.get("view")
        user = args.get("user_id")
        if isinstance(view, str):  # slack_sdk sends the view as JSON in a form field
            view = json.loads(view)
        if not user or not isinstance(view, dict) or view.get("type") != "home":
            raise _SlackError("invalid_arguments")
        if str(user) not in self._users:
            raise _SlackError("user_not_found")
        _check_blocks(view.get("blocks", []), most=MAX_VIEW_BLOCKS)
        previous = self._homes.get(str(user))
        if args.get("hash") and (previous is None or args["hash"] != previous["hash"]):
            raise _SlackError("hash_conflict")
        stored: dict[str, Any] = {
            "id": previous["id"] if previous else self._next_id("V"),
            "team_id": self.team_id,
            "type": "home",
            "blocks": [],
            "private_metadata": "",
            "callback_id": "",
            "external_id": "",
            "state": {"values": {}},
            "app_id": self.app_id,
            "bot_id": self.bot_id,
        } | view
        stored["hash"] = self._view_hash()
        self._homes[str(user)] = stored
        return {"ok": True, "view": copy.deepcopy(stored)}

    def _view_hash(self) -> str:
        return f"{int(self.clock())}.{self._next_id('')}"


def _call_summary(call: Call) -> dict[str, Any]:
    """A call as the playground lists it: what was asked and how it went, nothing secret."""
    ok = call.status == 200 and (
        call.response == "ok" or (isinstance(call.response, dict) and call.response.get("ok"))
    )
    error = None
    if not ok:
        error = call.response if isinstance(call.response, str) else call.response.get("error")
    return {"method": call.method, "at": call.at, "status": call.status, "ok": ok, "error": error}


def _bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _parse_args(query: dict[str, str], content_type: str, body: bytes) -> dict[str, Any]:
    """A call's arguments: query string, then a JSON or form body (whose JSON fields are
    decoded), as Slack reads them."""
    args: dict[str, Any] = dict(query)
    media_type = content_type.split(";")[0].strip().lower()
    if body and media_type == "application/json":
        args |= _json_object(body, "invalid_json")
    elif body:
        args |= dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    for key, error in _JSON_FIELDS.items():
        if isinstance(args.get(key), str):
            try:
                args[key] = json.loads(args[key])
            except ValueError as exc:
                raise _SlackError(error) from exc
    return args


def _json_object(body: bytes, error: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise _SlackError(error) from exc
    if not isinstance(data, dict):
        raise _SlackError(error)
    return data


def _metadata(value: Any) -> dict[str, Any]:
    """A message's metadata as Slack takes it: an event type and a payload object."""
    if not (
        isinstance(value, dict)
        and isinstance(value.get("event_type"), str)
        and value["event_type"]
        and isinstance(value.get("event_payload"), dict)
    ):
        raise _SlackError("invalid_metadata_format")
    return {"event_type": value["event_type"], "event_payload": value["event_payload"]}


def _content(args: Mapping[str, Any]) -> dict[str, Any]:
    """A message's text, blocks and attachments from a call; Slack wants at least one."""
    content = {key: args[key] for key in _CONTENT_FIELDS if args.get(key) is not None}
    if "blocks" in content:
        if not isinstance(content["blocks"], list):
            raise _SlackError("invalid_blocks_format")
        _check_blocks(content["blocks"], most=MAX_MESSAGE_BLOCKS)
    if "text" in content:
        content["text"] = str(content["text"])
    if not any(content.values()):
        raise _SlackError("no_text")
    return content


def _check_blocks(blocks: Any, *, most: int) -> None:
    try:
        check_blocks(blocks, most=most)
    except InvalidBlocks:
        raise _SlackError("invalid_blocks") from None


class FakeSlackServer(ThreadedServer):
    """A ``FakeSlack`` on a loopback port, served from a background thread.

    ``with FakeSlackServer() as server: AsyncWebClient(token=..., base_url=server.api_url)``
    """

    def __init__(
        self, slack: FakeSlack | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.slack = slack if slack is not None else FakeSlack()
        super().__init__(self.slack.app, host=host, port=port, name="fake-slack")

    @property
    def api_url(self) -> str:
        """The Web API root, as slack_sdk wants its ``base_url``: methods are appended."""
        return f"{self.base_url}/api/"

    def start(self) -> str:
        url = super().start()
        self.slack.base_url = url  # response URLs are minted under it
        return url
