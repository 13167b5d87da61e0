"""The Slack face: a Bolt ``AsyncApp`` whose listeners translate Slack to the workflow.

Every listener acks first (Slack gives three seconds) and does provider work after,
answering through the ``response_url``. Bolt verifies each request's signature and
timestamp before any listener runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import StopbotConfig, UnknownResourceError
from bot.metrics import Metrics
from bot.models import Actor, Operation, OpState
from bot.schedules import ScheduleEngine, ScheduleRunner
from bot.slack import commands, views
from bot.slack.approvals import ApprovalHandlers
from bot.slack.locking import LockHandlers
from bot.slack.progress import MessageProgress, NullProgress, ResponseUrlProgress
from bot.slack.schedules import ScheduleHandlers, SlackScheduleNotifier
from bot.store import Store
from bot.workflow import Preview, ProgressListener, StopService
from providers.base import Provider, ProviderLock, Resource, ResourceStatus
from providers.errors import ProviderError

__all__ = ["SlackBot", "make_client"]

log = logging.getLogger(__name__)

Respond = Callable[..., Awaitable[Any]]
INVITE_NOTE = (
    "Stopbot is not a member of this channel, so progress is shown here only to you. "
    "Invite it with `/invite @Stopbot` to post progress for everyone."
)
AFTER_ACK_CONCURRENCY = 64
NO_POST_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived"})


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


def _guarded(
    func: Callable[..., Awaitable[None]],
    after_ack: asyncio.Semaphore | None = None,
) -> Callable[..., Awaitable[None]]:
    """Whatever goes wrong inside a listener, the user gets words, not silence or a trace.

    With ``after_ack``, the work a listener does after acking waits its turn: in a burst,
    the acks of newer requests are not queued behind the slow work of older ones.
    """

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> None:
        ack = kwargs.get("ack")
        queued = False
        if ack is not None and after_ack is not None:

            async def ack_then_queue(*a: Any, **k: Any) -> Any:
                nonlocal queued
                answer = await ack(*a, **k)
                await after_ack.acquire()
                queued = True
                return answer

            kwargs["ack"] = ack_then_queue
        try:
            await func(*args, **kwargs)
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.exception("listener failed", extra={"ref": ref})
            respond: Respond | None = kwargs.get("respond")
            if respond is not None:
                text = (
                    f"Sorry, something went wrong on Stopbot's side (reference {ref}). "
                    "Nothing was stopped by this request; try again, or tell your Stopbot admin."
                )
                try:
                    await respond(text=text, response_type="ephemeral", replace_original=False)
                except Exception:
                    log.exception("could not tell the user about failure %s", ref)
        finally:
            if queued and after_ack is not None:
                after_ack.release()

    return wrapper


class SlackBot:
    """The Bolt app and what its listeners need."""

    def __init__(
        self,
        config: StopbotConfig,
        store: Store,
        providers: dict[str, Provider],
        service: StopService,
        *,
        token: str,
        signing_secret: str | None,
        api_url: str | None = None,
        housekeeping_interval: float = 30.0,
        schedule_tick: float | None = 30.0,
    ) -> None:
        self.config = config
        self.store = store
        self.providers = providers
        self.service = service
        self.client = make_client(token, api_url)
        self.signing_secret = signing_secret
        # Socket Mode requests come over the app-token websocket and carry no signature;
        # every HTTP request is verified.
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret or "",
            request_verification_enabled=signing_secret is not None,
        )
        self.metrics = Metrics(store)
        self.app.use(self.metrics.count_commands)
        # Socket Mode sets this: /healthz reports the websocket's state.
        self.slack_connection: Callable[[], Awaitable[str]] | None = None
        self._names: dict[str, tuple[float, frozenset[str]]] = {}
        self._lookups: dict[str, asyncio.Future[frozenset[str]]] = {}
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        service.policy.group_members = self.group_members
        # At most this many listeners work after their ack at once (see _guarded).
        self._after_ack = asyncio.Semaphore(AFTER_ACK_CONCURRENCY)
        self.no_post_errors = NO_POST_ERRORS
        self.approvals = ApprovalHandlers(self)
        self.locks = LockHandlers(self)
        self.engine = ScheduleEngine(config, store, service, SlackScheduleNotifier(self))
        self.schedule_handlers = ScheduleHandlers(self, self.engine)
        # None: no scheduler in this process (its owner ticks the engine itself).
        self.scheduler = ScheduleRunner(self.engine, schedule_tick) if schedule_tick else None
        self._housekeeping: asyncio.Task[None] | None = None
        self.housekeeping_interval = housekeeping_interval
        self._register()

    # -- identities -----------------------------------------------------------------

    async def actor(self, user_id: str) -> Actor:
        """The user, with the names a provider lock may carry (real and display name)."""
        identities = self.config.identities.get(user_id, {})
        cached = self._names.get(user_id)
        if cached and time.monotonic() - cached[0] < 600:
            return Actor(id=user_id, names=cached[1], identities=identities)
        lookup = self._lookups.get(user_id)
        if lookup is None:  # one users.info per user at a time, however many requests wait
            lookup = asyncio.ensure_future(self._names_of(user_id))
            self._lookups[user_id] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(user_id, None))
        return Actor(id=user_id, names=await asyncio.shield(lookup), identities=identities)

    async def _names_of(self, user_id: str) -> frozenset[str]:
        names: set[str] = set()
        try:
            info = await self.client.users_info(user=user_id)
            user = info.get("user") or {}
            profile = user.get("profile") or {}
            for name in (
                user.get("real_name"),
                profile.get("real_name"),
                profile.get("display_name"),
                user.get("name"),
            ):
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
        self, user_id: str, text: str, blocks: list[dict[str, Any]] | None = None
    ) -> tuple[str, str] | None:
        """Post to a user's DM with the bot; (channel, ts), or None when Slack refused."""
        try:
            posted = await self.client.chat_postMessage(
                channel=user_id, text=text, blocks=blocks or views.message(text)[1]
            )
        except SlackApiError as exc:
            log.warning("DM failed", extra={"user": user_id, "error": exc.response.get("error")})
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

    def listener_for(self, op: Operation) -> ProgressListener:
        """Where an operation shows its progress; used again when resuming after a restart."""
        if op.channel and op.message_ts:
            return MessageProgress(
                self.client,
                op.channel,
                op.message_ts,
                self.config.stops.progress_interval.total_seconds(),
            )
        if op.response_url:
            return ResponseUrlProgress(op.response_url, INVITE_NOTE)
        return NullProgress()

    async def post_progress(self, op: Operation, response_url: str | None) -> ProgressListener:
        """Post the public progress message, or fall back to the clicked message's
        ``response_url`` (kept with the operation, so a restart can resume there)."""
        text, blocks = views.progress(op, self.store.transitions(op.id), None)
        if op.channel:
            try:
                posted = await self.client.chat_postMessage(
                    channel=op.channel, text=text, blocks=blocks
                )
            except SlackApiError as exc:
                if exc.response.get("error") not in NO_POST_ERRORS:
                    raise
            else:
                ts, channel = str(posted["ts"]), str(posted["channel"])
                self.store.update_operation(op.id, message_ts=ts, channel=channel)
                return MessageProgress(
                    self.client, channel, ts, self.config.stops.progress_interval.total_seconds()
                )
        listener: ProgressListener
        if response_url:
            self.store.update_operation(op.id, response_url=response_url)
            listener = ResponseUrlProgress(response_url, INVITE_NOTE)
            await listener.progress(op, self.store.transitions(op.id), None)
            return listener
        posted_dm = await self.dm(op.requested_by, text, blocks)  # e.g. after an approval
        if posted_dm is None:
            return NullProgress()
        channel, ts = posted_dm
        self.store.update_operation(op.id, message_ts=ts, channel=channel)
        return MessageProgress(
            self.client, channel, ts, self.config.stops.progress_interval.total_seconds()
        )

    async def start_stop(self, op: Operation, response_url: str | None) -> None:
        """Show the progress message and submit the stop, followed in the background."""
        listener = await self.post_progress(op, response_url)
        self.service.start(op.id, listener, await self.actor(op.requested_by))

    # -- housekeeping ---------------------------------------------------------------

    async def tick(self) -> None:
        """Time-driven duties: expire approval requests, warn owners of expiring locks."""
        await self.approvals.expire()
        await self.locks.warn_expiring()

    def start_housekeeping(self, interval: float) -> None:
        async def loop() -> None:
            while True:
                try:
                    await self.tick()
                except Exception:
                    log.exception("housekeeping failed; trying again next round")
                await asyncio.sleep(interval)

        self._housekeeping = asyncio.create_task(loop(), name="housekeeping")

    async def stop_housekeeping(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)
            self._housekeeping = None

    # -- listeners ------------------------------------------------------------------

    def _register(self) -> None:
        self.app.command("/stop")(self.guarded(self.on_stop))
        self.app.action(views.CONFIRM)(self.guarded(self.on_confirm))
        self.app.action(views.CANCEL)(self.guarded(self.on_cancel))
        self.approvals.register()
        self.locks.register()
        self.schedule_handlers.register()

    def guarded(self, func: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """A listener that answers failures in words and queues its post-ack work."""
        return _guarded(func, self._after_ack)

    async def open_session(self) -> None:
        """One HTTP session for every Web API call, opened in the serving loop: a new
        session (and TCP connection) per call cost most of the bot's time in a burst."""
        if self.client.session is None:
            self.client.session = aiohttp.ClientSession()

    async def close_session(self) -> None:
        session, self.client.session = self.client.session, None
        if session is not None:
            await session.close()

    def rebuild_schedules(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.rebuild()

    async def on_stop(self, ack: Any, command: dict[str, Any], respond: Respond) -> None:
        try:
            parsed = commands.parse(command.get("text") or "")
        except commands.UsageError as exc:
            await ack(response_type="ephemeral", text=str(exc))
            return
        if isinstance(parsed, commands.Help):
            await ack(response_type="ephemeral", text=commands.HELP)
            return
        await ack()
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
        elif isinstance(parsed, commands.ScheduleCommand):
            await self.schedule_handlers.command(parsed, user, command.get("channel_id"), respond)
        log.info("command handled", extra={"user": user, "command": type(parsed).__name__})

    @staticmethod
    async def _unknown(exc: UnknownResourceError, respond: Respond) -> None:
        hint = " Use `/stop list` to see them all." if not exc.suggestions else ""
        await respond(text=f"{exc}{hint}", response_type="ephemeral")

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
        await respond(text=text, blocks=blocks, response_type="ephemeral")

    async def on_confirm(self, ack: Any, body: dict[str, Any], respond: Respond) -> None:
        await ack()
        op_id, actor = self.action_of(body)
        result = self.service.confirm(op_id, await self.actor(actor))
        if not result.ok or result.operation is None:
            await respond(text=result.message, response_type="ephemeral", replace_original=False)
            return
        op = result.operation
        if result.needs_approval:
            await respond(text=result.message, replace_original=True)
            await self.approvals.post_request(op)
            return
        await respond(
            text=f"Confirmed: stopping {op.resource}. Progress follows in the channel.",
            replace_original=True,
        )
        await self.start_stop(op, body.get("response_url"))

    async def on_cancel(self, ack: Any, body: dict[str, Any], respond: Respond) -> None:
        await ack()
        op_id, actor = self.action_of(body)
        result = self.service.cancel(op_id, await self.actor(actor))
        if result.ok:
            await respond(text=result.message, replace_original=True)
        else:
            await respond(text=result.message, response_type="ephemeral", replace_original=False)

    @staticmethod
    def action_of(body: dict[str, Any]) -> tuple[str, str]:
        """The operation id a button carries, and who clicked."""
        return str(body["actions"][0]["value"]), str(body["user"]["id"])

    async def _read(
        self, resource: Resource
    ) -> tuple[ResourceStatus | None, str | None, ProviderLock | None]:
        provider = self.providers[resource.provider]
        status_result, lock_result = await asyncio.gather(
            provider.status(resource), provider.lock(resource), return_exceptions=True
        )
        status = status_result if isinstance(status_result, ResourceStatus) else None
        error = str(status_result) if isinstance(status_result, ProviderError) else None
        lock = lock_result if isinstance(lock_result, ProviderLock) else None
        for result in (status_result, lock_result):
            if isinstance(result, BaseException) and not isinstance(result, ProviderError):
                raise result
        return status, error, lock

    async def show_status(self, ref: str, respond: Respond) -> None:
        resource = await self.resolve(ref, respond)
        if resource is None:
            return
        status, error, lock = await self._read(resource)
        text, blocks = views.status(
            resource,
            status,
            error,
            lock,
            self.store.get_lock(resource.name),
            self.service.clock(),
        )
        await respond(text=text, blocks=blocks, response_type="ephemeral")

    async def show_list(self, selector: str | None, respond: Respond) -> None:
        resources = self.config.all_resources()
        title = "configured"
        if selector and selector.startswith("tag:"):
            key, _, value = selector[4:].partition("=")
            resources = [r for r in resources if r.tags.get(key) == value]
            title = f"with tag {key}={value}"
        elif selector:
            if selector not in self.providers:
                known = ", ".join(sorted(self.providers))
                await respond(
                    text=f"No provider named `{selector}`. Known providers: {known}. "
                    "Or filter by tag: `/stop list tag:env=dev`.",
                    response_type="ephemeral",
                )
                return
            resources = [r for r in resources if r.provider == selector]
            title = f"on {selector}"
        by_provider: dict[str, list[Resource]] = {}
        for r in resources:
            by_provider.setdefault(r.provider, []).append(r)
        results = await asyncio.gather(
            *(self.providers[p].statuses(rs) for p, rs in by_provider.items()),
            return_exceptions=True,
        )
        statuses: dict[tuple[str, str], ResourceStatus] = {}
        for p, result in zip(by_provider, results, strict=True):
            if isinstance(result, dict):
                statuses.update({(p, rid): s for rid, s in result.items()})
        rows = []
        for r in resources:
            lock = self.store.get_lock(r.name)
            rows.append((r, statuses.get((r.provider, r.id)), f"<@{lock.owner}>" if lock else None))
        text, blocks = views.resources_list(rows, title)
        await respond(text=text, blocks=blocks, response_type="ephemeral")

    async def show_history(self, ref: str | None, respond: Respond) -> None:
        name = None
        if ref is not None:
            resource = await self.resolve(ref, respond)
            if resource is None:
                return
            name = resource.name
        ops = self.store.recent_operations(resource=name, limit=10)
        text, blocks = views.history(ops, f"for {name}" if name else "")
        await respond(text=text, blocks=blocks, response_type="ephemeral")
