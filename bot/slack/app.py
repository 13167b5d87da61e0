"""The Slack face: a Bolt ``AsyncApp`` whose listeners translate Slack to the workflow.

Every listener acks first (Slack gives three seconds) and does provider work after,
answering through the ``response_url``. Bolt verifies each request's signature and
timestamp before any listener runs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from slack_bolt.middleware.authorization.async_single_team_authorization import (
    AsyncSingleTeamAuthorization,
)
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import reads
from bot.config import UnknownResourceError
from bot.metrics import Metrics
from bot.models import Action, Actor, Operation, OpState
from bot.reads import Reading
from bot.savings import SavingsError, Selection, parse_period
from bot.slack import buttons, commands, savings_views, views
from bot.slack.approvals import ApprovalHandlers
from bot.slack.discovery_views import refreshed
from bot.slack.environments import EnvironmentHandlers
from bot.slack.home import HomeHandlers
from bot.slack.inbox import Handling, Inbox, defer, track
from bot.slack.leases import LeaseHandlers
from bot.slack.locking import LockHandlers
from bot.slack.progress import NO_POST_ERRORS, SlackProgress, delivered_before, delivery_tag
from bot.slack.replies import Respond, replace, tell
from bot.slack.schedules import ScheduleHandlers, SlackScheduleNotifier
from bot.slack.wording import Mrkdwn, code, md, mrkdwn
from bot.stopbot import Face, Stopbot
from bot.store import StoreUnavailableError
from bot.workflow import Preview, Unshown
from providers.base import Resource
from providers.errors import ProviderError

__all__ = ["Respond", "SlackBot", "make_client"]  # Respond: for the handler modules

log = logging.getLogger(__name__)

AFTER_ACK_CONCURRENCY = 64


def make_client(token: str, base_url: str | None = None) -> AsyncWebClient:
    """A Web API client that waits out 429s (Retry-After) and retries dropped connections."""
    kwargs: dict[str, Any] = {"token": token}
    if base_url:
        kwargs["base_url"] = base_url if base_url.endswith("/") else base_url + "/"
    client = AsyncWebClient(**kwargs)
    client.retry_handlers.extend(
        [AsyncRateLimitErrorRetryHandler(max_retry_count=3), AsyncConnectionErrorRetryHandler()]
    )
    return client


class AfterAck:
    """When a listener's post-ack work may run: once the server has had no request to
    answer for ``quiet`` seconds (or after ``max_wait`` at most), and at most ``limit``
    listeners at once.

    Slack's three seconds are for the ack; the work after it answers through the
    response URL, valid for thirty minutes. In a burst, answering every request first
    and working after keeps each ack as fast as the server can parse and check it:
    the work's SQLite commits and JSON would otherwise sit between the acks.
    """

    def __init__(self, limit: int, *, quiet: float = 0.01, max_wait: float = 1.0) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._answering = 0
        self._open = asyncio.Event()
        self._open.set()
        self._quiet_timer: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.quiet = quiet
        self.max_wait = max_wait
        self._last_answered = 0.0

    def idle_for(self) -> float:
        """Seconds since the server last answered a request (0 while it answers one)."""
        if self._answering:
            return 0.0
        return asyncio.get_running_loop().time() - self._last_answered

    def begin(self) -> None:
        """A request is being answered (call :meth:`end` once its response is out)."""
        self._answering += 1
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        if self._open.is_set():
            self._open.clear()
            # Under a load that never pauses, the work still goes every max_wait.
            self._deadline = asyncio.get_running_loop().call_later(self.max_wait, self._let_go)

    def end(self) -> None:
        self._answering -= 1
        if not self._answering:
            loop = asyncio.get_running_loop()
            self._last_answered = loop.time()
            self._quiet_timer = loop.call_later(self.quiet, self._let_go)

    def _let_go(self) -> None:
        for timer in (self._quiet_timer, self._deadline):
            if timer is not None:
                timer.cancel()
        self._quiet_timer = self._deadline = None
        self._open.set()

    async def enter(self) -> None:
        """Wait for the turn of one listener's post-ack work (then :meth:`leave`)."""
        if not self._open.is_set():
            await self._open.wait()
        await self._slots.acquire()

    def leave(self) -> None:
        self._slots.release()

    async def opened(self) -> None:
        """Wait until post-ack work may start (without taking a slot)."""
        if not self._open.is_set():
            await self._open.wait()


def bolt_request(raw_body: str, headers: Mapping[str, str]) -> AsyncBoltRequest:
    """Bolt's request for an HTTP body, read as Slack meant it.

    Bolt reads any form body that mentions "payload" as an interaction (``payload=...``)
    and, finding no such field, reads it as empty: `/stop dev-eu payload deploy broken`
    would match no listener, and Slack would show "dispatch_failed". Such a body is read
    as the form it is (its context built by Bolt, from the parsed body).
    """
    request = AsyncBoltRequest(body=raw_body, headers=dict(headers))
    if not request.body and raw_body and not raw_body.startswith("{"):
        form = dict(parse_qsl(raw_body, keep_blank_values=True))
        if form and "payload" not in form:
            request.body = form
            request.context = AsyncBoltRequest(body=form, mode="socket_mode").context
    return request


EarlyAck = Callable[[Callable[..., Awaitable[Any]], dict[str, Any]], Awaitable[bool]]


async def ack_at_once(ack: Callable[..., Awaitable[Any]], kwargs: dict[str, Any]) -> bool:
    """The early ack of most listeners: an empty 200, then the work."""
    await ack()
    return True


# What a guarded listener may ask for, by name (Bolt's names for them).
LISTENER_ARGS = ("ack", "body", "command", "view", "respond", "client")
Listener = Callable[..., Awaitable[None]]


def _guarded(
    func: Callable[..., Awaitable[None]],
    after_ack: AfterAck | None = None,
    background: set[asyncio.Task[None]] | None = None,
    *,
    early: EarlyAck | None = ack_at_once,
    observe: Callable[[dict[str, Any]], None] | None = None,
    record: Callable[[dict[str, Any]], Awaitable[Handling | None]] | None = None,
) -> Callable[..., Awaitable[None]]:
    """Whatever goes wrong inside a listener, the user gets words, not silence or a trace.

    Bolt runs with ``process_before_response=True``: it answers Slack when this wrapper
    returns. ``early`` acks inline, in the request's own turn of the event loop, and says
    whether work is left; the listener, which then takes no ``ack``, runs as a task of
    its own. A listener whose answer depends on its work (a modal's validation errors)
    takes ``ack`` and passes ``early=None``: it runs as a task, and the wrapper returns
    when it acks.
    (Bolt's own background mode polls every 10 ms for the ack, which under a burst of
    requests cost more than the requests themselves; a task switch before the ack puts
    each request behind every other one in the burst.)

    With ``after_ack``, the work after the ack waits its turn (see :class:`AfterAck`).
    ``background`` keeps the tasks, which the server drains on shutdown. ``observe`` sees
    each request's body first (the metrics count it). ``record`` records a request the
    endpoint did not (Socket Mode, or answered in line) before the early ack, so that a
    kill before its work ends loses nothing (see bot/slack/inbox.py); a redelivery of a
    request recorded already is acked and not worked on again.
    """

    def spawn(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=f"listener:{func.__name__}")
        if background is not None:
            background.add(task)
            task.add_done_callback(background.discard)
        track(task)
        return task

    wanted = list(inspect.signature(func).parameters)
    unknown = set(wanted) - set(LISTENER_ARGS)
    if unknown:
        raise TypeError(f"{func.__qualname__} asks for {sorted(unknown)}: not in LISTENER_ARGS")
    if early is not None and "ack" in wanted:
        raise TypeError(f"{func.__qualname__} takes `ack`, but the wrapper acks early for it")

    # Bolt injects arguments by the names of the function it is given (unwrapped): this
    # one names them all, and the listener gets the ones it asks for.
    async def wrapper(
        ack: Any, body: Any, command: Any, view: Any, respond: Any, client: Any
    ) -> None:
        if observe is not None:
            observe(body)
        given = {"ack": ack, "body": body, "command": command, "view": view}
        given |= {"respond": respond, "client": client}
        kwargs = {name: given[name] for name in wanted}
        if early is not None:
            try:
                handling = await record(body) if record is not None else None
            except StoreUnavailableError as exc:
                log.warning("a request could not be recorded: %s", exc)
                await _unrecorded(ack, command, respond)
                return
            if await _early_ack(early, ack, given) and (record is None or handling):
                spawn(_after(after_ack, _run_guarded(func, kwargs)))
            if handling is not None:
                Inbox.acked(handling)
        else:
            await _ack_from_task(func, kwargs, ack, after_ack, spawn)

    wrapper.__name__ = func.__name__
    wrapper.__qualname__ = func.__qualname__
    return wrapper


async def _unrecorded(ack: Any, command: Any, respond: Any) -> None:
    """Answer a request that could not be recorded (the database does not answer): it is
    not kept, so its sender is told that nothing was done."""
    if command is not None:  # a slash command's answer is shown to its sender
        await ack(response_type="ephemeral", text=OUTAGE_LOST)
        return
    await ack()
    try:
        if respond is not None and getattr(respond, "response_url", None):
            await tell(respond, OUTAGE_LOST)
    except Exception:
        log.exception("could not tell the user that the database does not answer")


async def _early_ack(
    early: EarlyAck, ack: Callable[..., Awaitable[Any]], kwargs: dict[str, Any]
) -> bool:
    try:
        return await early(ack, kwargs)
    except Exception:
        ref = _logged_failure("early ack failed")
        if getattr(ack, "response", None) is None:
            await ack(response_type="ephemeral", text=_sorry(ref))
        return False


async def _after(after_ack: AfterAck | None, work: Coroutine[Any, Any, None]) -> None:
    if after_ack is None:
        await work
        return
    try:
        await after_ack.enter()
    except BaseException:
        work.close()
        raise
    try:
        await work
    finally:
        after_ack.leave()


async def _ack_from_task(
    func: Callable[..., Awaitable[None]],
    kwargs: dict[str, Any],
    ack: Callable[..., Awaitable[Any]],
    after_ack: AfterAck | None,
    spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
) -> None:
    """The listener acks itself, in a task: return once it has (or has ended)."""
    acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    queued = False

    async def ack_then_queue(*a: Any, **k: Any) -> Any:
        nonlocal queued
        try:
            answer = await ack(*a, **k)
        finally:
            if not acked.done():
                acked.set_result(None)
        if after_ack is not None and not queued:
            await after_ack.enter()
            queued = True
        return answer

    kwargs["ack"] = ack_then_queue

    async def run() -> None:
        try:
            await _run_guarded(func, kwargs)
        finally:
            if queued and after_ack is not None:
                after_ack.leave()

    def ended(_: asyncio.Task[None]) -> None:
        if not acked.done():  # it ended without acking (it failed): Bolt answers 200
            acked.set_result(None)

    spawn(run()).add_done_callback(ended)
    await acked


def _logged_failure(what: str) -> str:
    """Log the exception being handled; the reference the user is given for it."""
    ref = uuid.uuid4().hex[:8]
    log.exception(what, extra={"ref": ref})
    return ref


OUTAGE_KEPT = Mrkdwn(
    "Stopbot's database is not answering right now. Your request is kept: Stopbot carries "
    "it out as soon as the database answers again."
)
OUTAGE_LOST = Mrkdwn(
    "Stopbot's database is not answering right now, so nothing was done. Try again in a minute."
)


def _sorry(ref: str) -> Mrkdwn:
    return md(
        "Sorry, something went wrong on Stopbot's side (reference {}). "
        "Nothing was stopped by this request; try again, or tell your Stopbot admin.",
        ref,
    )


async def _run_guarded(func: Callable[..., Awaitable[None]], kwargs: dict[str, Any]) -> None:
    try:
        await func(**kwargs)
    except buttons.StaleButton:
        log.info("a click Stopbot cannot act on", extra={"listener": func.__name__})
        respond: Respond | None = kwargs.get("respond")
        # Bolt's respond refuses (ValueError) when the request came with no response URL.
        if respond is not None and getattr(respond, "response_url", None):
            await tell(respond, buttons.STALE)
    except StoreUnavailableError as exc:
        # Recorded before its ack, the request is handled again once the database answers.
        kept = defer()
        log.warning("a request met a database that does not answer: %s", exc)
        respond = kwargs.get("respond")
        try:
            if respond is not None and getattr(respond, "response_url", None):
                await tell(respond, OUTAGE_KEPT if kept else OUTAGE_LOST)
        except Exception:
            log.exception("could not tell the user that the database does not answer")
    except Exception:
        ref = _logged_failure("listener failed")
        respond = kwargs.get("respond")
        try:
            if respond is not None:
                await tell(respond, _sorry(ref))
        except Exception:
            log.exception("could not tell the user about failure %s", ref)


class ActionRouter:
    """Every button and menu of the bot behind one Bolt listener.

    Bolt tries its listeners in order, and each try builds the whole set of listener
    arguments: with a listener a button, the last button cost a dozen tries before its
    ack. One listener, matched by an anchored pattern of the known action ids, then a
    dictionary lookup, makes every click cost two (the command's listener, then this
    one). Unknown action ids still match no listener (Bolt answers 404, as for anything
    it has no listener for).
    """

    def __init__(self) -> None:
        self._exact: dict[str, Listener] = {}
        self._prefixes: list[tuple[str, Listener]] = []

    def add(self, action_id: str, listener: Listener, *, prefix: bool = False) -> None:
        """``prefix``: every action id starting with ``action_id`` (ids that carry data)."""
        if action_id in self._exact or any(p == action_id for p, _ in self._prefixes):
            raise ValueError(f"two listeners for the action {action_id!r}")
        if prefix:
            self._prefixes.append((action_id, listener))
        else:
            self._exact[action_id] = listener

    def pattern(self) -> re.Pattern[str]:
        exact = [f"{re.escape(a)}$" for a in self._exact]
        prefixes = [re.escape(p) for p, _ in self._prefixes]
        return re.compile("^(?:" + "|".join(exact + prefixes) + ")")

    def find(self, action_id: str) -> Listener | None:
        found = self._exact.get(action_id)
        if found is None:
            found = next((ln for p, ln in self._prefixes if action_id.startswith(p)), None)
        return found


class SlackBot:
    """The Bolt app and what its listeners need: the assembled bot, seen from Slack."""

    def __init__(
        self,
        stopbot: Stopbot,
        *,
        token: str,
        signing_secret: str | None,
        api_url: str | None = None,
    ) -> None:
        self.stopbot = stopbot
        self.config = stopbot.config
        self.store = stopbot.store
        self.providers = stopbot.providers
        self.service = stopbot.service
        self.client = make_client(token, api_url)
        self.signing_secret = signing_secret
        # Socket Mode requests come over the app-token websocket and carry no signature;
        # every HTTP request is verified.
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret or "",
            request_verification_enabled=signing_secret is not None,
            # The listeners return once they ack (see _guarded): answer then, no polling.
            process_before_response=True,
        )
        self.metrics = Metrics(self.store, stopbot.savings)
        # Socket Mode sets this: /healthz reports the websocket's state.
        self.slack_connection: Callable[[], Awaitable[str]] | None = None
        # What check_token found: "ok", "refused: <error>", "unchecked" (None: not yet).
        self.auth_state: str | None = None
        self._names: dict[str, tuple[float, frozenset[str]]] = {}
        self._lookups: dict[str, asyncio.Future[frozenset[str]]] = {}
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        # At most this many listeners work after their ack at once (see _guarded).
        self.after_ack = AfterAck(AFTER_ACK_CONCURRENCY)
        self._listeners: set[asyncio.Task[None]] = set()
        self._actions = ActionRouter()
        self.no_post_errors = NO_POST_ERRORS
        self.approvals = ApprovalHandlers(self)
        self.locks = LockHandlers(self)
        self.lease_handlers = LeaseHandlers(self)
        self.progress = SlackProgress(self)
        self.inbox = Inbox(self)
        self.schedule_handlers = ScheduleHandlers(self, stopbot)
        self.home = HomeHandlers(self)
        self.environment_handlers = EnvironmentHandlers(self)
        notifier = SlackScheduleNotifier(self)
        stopbot.attach(
            Face(
                group_members=self.group_members,
                progress=self.progress,
                approvals=self.approvals,
                locks=self.locks,
                schedules=notifier,
                savings=notifier,
                discovery=notifier,
                leases=self.lease_handlers,
                # Requests dead processes answered are taken over first (a /stop being
                # prepared is prepared again).
                sweeps=[self.inbox.replay],
                environments=self.environment_handlers,
            )
        )
        self._register()

    # -- identities -----------------------------------------------------------------

    async def actor(self, user_id: str) -> Actor:
        """The user, with the Slack names a provider lock may carry (real name, username)."""
        cached = self._names.get(user_id)
        if cached and time.monotonic() - cached[0] < 600:
            return self.config.actor(user_id, cached[1])
        lookup = self._lookups.get(user_id)
        if lookup is None:  # one users.info per user at a time, however many requests wait
            lookup = asyncio.ensure_future(self._names_of(user_id))
            self._lookups[user_id] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(user_id, None))
        return self.config.actor(user_id, await asyncio.shield(lookup))

    async def _names_of(self, user_id: str) -> frozenset[str]:
        names: set[str] = set()
        try:
            info = await self.client.users_info(user=user_id)
            user = info.get("user") or {}
            profile = user.get("profile") or {}
            # Not the display name: anyone sets theirs to anything, a colleague's included.
            for name in (user.get("real_name"), profile.get("real_name"), user.get("name")):
                if name:
                    names.add(str(name))
        except SlackApiError as exc:
            log.warning(
                "users.info failed", extra={"user": user_id, "error": exc.response.get("error")}
            )
        frozen = frozenset(names)
        self._names[user_id] = (time.monotonic(), frozen)
        return frozen

    async def dm(
        self, user_id: str, text: Mrkdwn, blocks: list[dict[str, Any]] | None = None
    ) -> tuple[str, str] | None:
        """Post to a user's DM with the bot; (channel, ts), or None when Slack refused or
        could not be reached. A DM the outbox delivers is posted once across kills (see
        :func:`~bot.slack.progress.delivered_before`)."""
        found = await delivered_before(self.client, user_id)
        if found is not None:
            return user_id, found
        try:
            posted = await self.client.chat_postMessage(
                channel=user_id,
                text=text,
                blocks=blocks or views.message(text)[1],
                metadata=delivery_tag(),
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
            log.warning("DM failed", extra={"user": user_id, "error": error})
            return None
        return str(posted["channel"]), str(posted["ts"])

    async def group_members(self, group: str) -> frozenset[str]:
        cached = self._groups.get(group)
        if cached and time.monotonic() - cached[0] < 300:
            return cached[1]
        try:
            response = await self.client.usergroups_users_list(usergroup=group)
            members = frozenset(response.get("users") or [])
        except SlackApiError as exc:
            log.warning(
                "usergroups.users.list failed",
                extra={"group": group, "error": exc.response.get("error")},
            )
            members = frozenset()
        self._groups[group] = (time.monotonic(), members)
        return members

    # -- progress -------------------------------------------------------------------

    async def start_stop(self, op: Operation) -> None:
        """Submit the stop, followed in the background: nothing live, its progress is owed
        to Slack through the outbox (see bot/slack/progress.py), across restarts too."""
        self.service.start(op.id, Unshown(), await self.actor(op.requested_by))

    async def drain_listeners(self, grace: float = 5.0) -> None:
        """On shutdown, let listeners finish their post-ack work for a while, then cancel
        them (a stop already submitted is resumed from the store at the next start)."""
        pending = set(self._listeners)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            log.warning("cancelled %d listener(s) still working at shutdown", len(late))
            await asyncio.gather(*late, return_exceptions=True)

    # -- listeners ------------------------------------------------------------------

    def _register(self) -> None:
        # Bolt tries its listeners in this order, each try a full argument build: the
        # command, then every button through one router, then the modal.
        self.app.command("/stop")(self.guarded(self.on_stop, early=self.ack_command))
        self.action(views.CONFIRM, self.on_confirm)
        self.action(views.CANCEL, self.on_cancel)
        self.approvals.register()
        self.locks.register()
        self.lease_handlers.register()
        self.schedule_handlers.register()
        self.home.register()
        self.environment_handlers.register()
        self.app.action(self._actions.pattern())(self._route_action)
        self.approvals.register_views()

    def action(self, action_id: str, func: Listener, *, prefix: bool = False) -> None:
        """Route a button (or menu) to ``func``, guarded (see :class:`ActionRouter`)."""
        self._actions.add(action_id, self.guarded(func), prefix=prefix)

    async def _route_action(
        self, ack: Any, body: Any, command: Any, view: Any, respond: Any, client: Any
    ) -> None:
        action_id = str(body["actions"][0]["action_id"])
        listener = self._actions.find(action_id)
        if listener is None:  # cannot happen: Bolt matched the router's own pattern
            log.error("no listener for the action %r", action_id)
            await ack()
            return
        await listener(
            ack=ack, body=body, command=command, view=view, respond=respond, client=client
        )

    def guarded(
        self, func: Callable[..., Awaitable[None]], *, early: EarlyAck | None = ack_at_once
    ) -> Callable[..., Awaitable[None]]:
        """A listener that acks early, answers failures in words and queues its post-ack
        work (see :func:`_guarded`)."""
        return _guarded(
            func,
            self.after_ack,
            self._listeners,
            early=early,
            observe=self.count_request,
            record=self.inbox.record,
        )

    def count_request(self, body: dict[str, Any]) -> None:
        self.metrics.count_command(commands.request_name(body))

    async def check_token(self) -> None:
        """``auth.test`` once, at start: a refused token is reported now (log, /healthz)
        instead of at the first command. The answer also primes Bolt's single-workspace
        authorization, which otherwise calls auth.test on the first request, and once per
        request of a burst that arrives before the first answer."""
        try:
            answer = await self.client.auth_test()
        except SlackApiError as exc:
            self.auth_state = f"refused: {exc.response.get('error')}"
            log.error(
                "Slack refused the bot token (%s): check SLACK_BOT_TOKEN",
                exc.response.get("error"),
            )
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.auth_state = "unchecked"  # Bolt checks it again at the first request
            log.warning("could not reach Slack to check the bot token: %s", exc)
            return
        self.auth_state = "ok"
        # Bolt keeps the answer on its authorization middleware, which has no public way
        # in: where this Bolt has no such attribute, it simply asks at the first request.
        for middleware in getattr(self.app, "_async_middleware_list", []):
            if isinstance(middleware, AsyncSingleTeamAuthorization):
                middleware.auth_test_result = answer

    async def open_session(self) -> None:
        """One HTTP session for every Web API call, opened in the serving loop: a new
        session (and TCP connection) per call cost most of the bot's time in a burst."""
        if self.client.session is None:
            self.client.session = aiohttp.ClientSession()

    async def close_session(self) -> None:
        session, self.client.session = self.client.session, None
        if session is not None:
            await session.close()

    @staticmethod
    def command_answer(text: str) -> dict[str, Any]:
        """`/stop`'s ack: the grammar's error or the help in it, or empty while the work
        follows."""
        try:
            parsed = commands.parse(text)
        except commands.UsageError as exc:
            return {"text": exc.message, "response_type": "ephemeral"}
        if isinstance(parsed, commands.Help):
            return {"text": commands.HELP, "response_type": "ephemeral"}
        return {}

    @classmethod
    async def ack_command(cls, ack: Callable[..., Awaitable[Any]], kwargs: dict[str, Any]) -> bool:
        """The /stop listener's early ack: :meth:`command_answer`; whether work follows."""
        answer = cls.command_answer(kwargs["command"].get("text") or "")
        await ack(**answer)
        return not answer

    def answer_ahead(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """What Slack is answered for ``body`` (a request, parsed and verified), when the
        listener's ack is known without Bolt: a routed button's empty 200, or `/stop`'s
        answer. None: only Bolt can answer it (another kind of request, an action id no
        listener has, a workspace token not yet accepted), in line as usual.

        A request answered ahead goes through Bolt afterwards (:meth:`dispatch_later`),
        whose listener then acks the same answer into the void and does the work.
        """
        if self.auth_state != "ok":  # Bolt's authorization answers those requests itself
            return None
        if body.get("type") == "block_actions":
            actions = body.get("actions")
            if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
                return None
            routed = self._actions.find(str(actions[0].get("action_id")))
            return {} if routed is not None else None
        if body.get("command") == "/stop":
            return self.command_answer(str(body.get("text") or ""))
        return None

    def keep(self, task: asyncio.Task[None]) -> None:
        """Keep a task of a request's handling until it ends (drained on shutdown)."""
        self._listeners.add(task)
        task.add_done_callback(self._listeners.discard)

    async def stop_duties(self) -> None:
        """Stop working, let the listeners finish, and hand what this process owned to the
        next one at once."""
        await self.stopbot.stop_duties()
        await self.drain_listeners()
        await self.stopbot.aclose()

    async def on_stop(self, command: dict[str, Any], respond: Respond) -> None:
        """After :meth:`ack_command`, which refused what does not parse."""
        parsed = commands.parse(command.get("text") or "")
        user = str(command["user_id"])
        if isinstance(parsed, commands.StopCommand):
            await self.stop_requested(parsed, command, respond)
        elif isinstance(parsed, commands.Status):
            await self.show_status(parsed.resource, respond)
        elif isinstance(parsed, commands.ListResources):
            await self.show_list(parsed.selector, respond)
        elif isinstance(parsed, commands.History):
            await self.show_history(parsed.resource, respond)
        elif isinstance(parsed, commands.Lock):
            await self.locks.lock(parsed, user, respond)
        elif isinstance(parsed, commands.Unlock):
            await self.locks.unlock(parsed, user, respond)
        elif isinstance(parsed, commands.Locks):
            await self.locks.list(respond)
        elif isinstance(parsed, commands.Refresh):
            await tell(respond, refreshed(await self.stopbot.refresh()))
        elif isinstance(parsed, commands.Leases):
            await self.lease_handlers.command(parsed, user, respond)
        elif isinstance(parsed, commands.ScheduleCommand):
            await self.schedule_handlers.command(parsed, user, command.get("channel_id"), respond)
        elif isinstance(parsed, commands.SavingsCommand):
            await self.show_savings(parsed, respond)
        elif isinstance(parsed, commands.EnvironmentCommand):
            await self.environment_handlers.command(parsed, command, respond)
        log.info("command handled", extra={"user": user, "command": type(parsed).__name__})

    @staticmethod
    async def _unknown(exc: UnknownResourceError, respond: Respond) -> None:
        hint = " Use `/stop list` to see them all." if not exc.suggestions else ""
        # Also answers clicks: never in place of the clicked message.
        await tell(respond, md("{}{}", str(exc), Mrkdwn(hint)))

    async def resolve(self, ref: str, respond: Respond) -> Resource | None:
        try:
            return self.config.resource(ref)
        except UnknownResourceError as exc:
            await self._unknown(exc, respond)
            return None

    async def stop_requested(
        self, cmd: commands.StopCommand, command: dict[str, Any], respond: Respond
    ) -> None:
        actor = await self.actor(str(command["user_id"]))
        try:
            preview = await self.service.prepare(
                cmd.resource,
                actor,
                source="slack",
                reason=cmd.reason,
                force=cmd.force,
                override_lock=cmd.override_lock,
                channel=command.get("channel_id"),
                response_url=command.get("response_url"),
                idempotency_key=f"slack:{command.get('trigger_id')}"
                if command.get("trigger_id")
                else None,
                notify=True,
                action=Action.START if cmd.wake else Action.STOP,
                lease=cmd.lease,
            )
        except UnknownResourceError as exc:
            await self._unknown(exc, respond)
            return
        await self.answer_preview(preview, respond, actor.id)

    async def answer_preview(self, preview: Preview, respond: Respond, user: str) -> None:
        """The ephemeral confirmation, or why there is nothing to confirm."""
        if preview.operation.state == OpState.AWAITING_CONFIRMATION:
            text, blocks = views.confirmation(preview, self.service.clock())
        else:
            text, blocks = views.decided(preview)
        await tell(respond, text, blocks)

    async def on_confirm(self, body: dict[str, Any], respond: Respond) -> None:
        op_id, actor = self.action_of(body)
        # Progress goes to the clicked message where the bot may not post.
        url = body.get("response_url")
        confirm = partial(
            self.service.confirm,
            op_id,
            await self.actor(actor),
            response_url=str(url) if url else None,
        )
        result = await self.store.off_loop(confirm)
        if not result.ok or result.operation is None:
            await tell(respond, mrkdwn(result.message))
            return
        op = result.operation
        if result.needs_approval:
            await replace(respond, mrkdwn(result.message))
            if not await self.stopbot.approvals.ask_now(op.id):
                await tell(
                    respond,
                    md(
                        "Stopbot could not post the approval request for {} yet (see its "
                        "log); it keeps trying. Ask an approver directly if it is urgent; the "
                        "request stays open until it expires.",
                        op.resource,
                    ),
                )
            return
        said = (
            mrkdwn(result.message)
            if result.joined
            else md(
                "Confirmed: {} {}. Progress follows.",
                "waking" if op.action is Action.START else "stopping",
                op.resource,
            )
        )
        await replace(respond, said)
        # The progress message first, showing the stop confirmed; then the stop.
        await self.service.show_progress_now(op.id)
        await self.start_stop(op)

    async def on_cancel(self, body: dict[str, Any], respond: Respond) -> None:
        op_id, actor = self.action_of(body)
        result = self.service.cancel(op_id, await self.actor(actor))
        if result.ok:
            await replace(respond, mrkdwn(result.message))
        else:
            await tell(respond, mrkdwn(result.message))

    @staticmethod
    def action_of(body: dict[str, Any]) -> tuple[str, str]:
        """The value a button carries (an operation id, a name), and who clicked."""
        return buttons.value(body), buttons.clicker(body)

    async def operation_of(
        self, body: dict[str, Any], respond: Respond
    ) -> tuple[Operation, str] | None:
        """The operation a button carries and who clicked; None, the user told, when the
        operation is gone."""
        op_id, user = self.action_of(body)
        op = self.store.get_operation(op_id)
        if op is None:
            await tell(respond, Mrkdwn("This stop request no longer exists."))
            return None
        return op, user

    async def _read(self, resource: Resource) -> Reading:
        """Its status and provider lock, each known or why not (one call where the
        provider's one read carries both)."""
        answer = await self.providers[resource.provider].status_and_lock(resource)
        for result in answer:
            if isinstance(result, BaseException) and not isinstance(result, ProviderError):
                raise result
        return Reading.of(resource, answer)

    async def show_status(self, ref: str, respond: Respond) -> None:
        resource = await self.resolve(ref, respond)
        if resource is None:
            return
        read = await self._read(resource)
        text, blocks = views.status(
            resource,
            read.status,
            read.status_error,
            read.lock,
            self.store.get_lock(resource.name),
            self.service.clock(),
            read.lock_error,
        )
        await tell(respond, text, blocks)

    async def show_list(self, selector: str | None, respond: Respond) -> None:
        resources = self.config.all_resources()
        title = "configured or discovered" if self.stopbot.discovery.enabled else "configured"
        if selector and selector.startswith("tag:"):
            key, _, value = selector[4:].partition("=")
            resources = [r for r in resources if r.tags.get(key) == value]
            title = f"with tag {key}={value}"
        elif selector:
            if selector not in self.providers:
                known = ", ".join(sorted(self.providers))
                await tell(
                    respond,
                    md(
                        "No provider named {}. Known providers: {}. Or filter by tag: {}.",
                        code(selector),
                        known,
                        code("/stop list tag:env=dev"),
                    ),
                )
                return
            resources = [r for r in resources if r.provider == selector]
            title = f"on {selector}"
        statuses = await reads.statuses(self.providers, resources)
        rows = []
        for r in resources:
            lock = self.store.get_lock(r.name)
            rows.append((r, statuses.get(r.name), lock.owner if lock else None))
        text, blocks = views.resources_list(rows, title)
        await tell(respond, text, blocks)

    async def show_savings(self, cmd: commands.SavingsCommand, respond: Respond) -> None:
        """Hours stopped and estimated savings, for whoever asks (as `/stop history`)."""
        try:
            selection = Selection.parse(self.config, cmd.selection)
            since, period = parse_period(cmd.period, self.service.clock())
        except SavingsError as exc:
            await tell(respond, mrkdwn(exc.text))
            return
        found = await self.stopbot.savings.report(since, selection=selection)
        text, blocks = savings_views.report(found, period)
        await tell(respond, text, blocks)

    async def show_history(self, ref: str | None, respond: Respond) -> None:
        name = None
        if ref is not None:
            resource = await self.resolve(ref, respond)
            if resource is None:
                return
            name = resource.name
        ops = self.store.recent_operations(resource=name, limit=10)
        text, blocks = views.history(ops, f"for {name}" if name else "")
        await tell(respond, text, blocks)
