"""Progress listeners that show a stop in Slack, within Slack's rate limits.

``chat.update`` is rate limited per channel (Slack's "special" tier, about one a
second), so updates are coalesced: at most one per ``interval``, always the latest
state, and the final state at once. 429 answers are retried by slack_sdk's
rate-limit handler, which waits for ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import stamina
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.models import Operation, Transition
from bot.slack import views
from bot.slack.wording import Mrkdwn
from providers.base import ResourceStatus

__all__ = ["MessageProgress", "NullProgress", "ResponseUrlProgress"]

log = logging.getLogger(__name__)

Snapshot = tuple[Operation, list[Transition], ResourceStatus | None]


class _Coalescing:
    """Send the latest snapshot at most once per ``interval``; final snapshots at once."""

    def __init__(self, interval: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.monotonic = monotonic
        self._latest: Snapshot | None = None
        self._last_sent = float("-inf")
        self._pending: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None:
        self._latest = (op, timeline, status)
        if op.state.final:
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
            await self._flush()
            return
        if self._pending is not None:
            return  # the pending flush will send this newer snapshot
        if self._last_sent == float("-inf"):
            await self._flush()  # the first state goes out at once
            return
        wait = self.interval - (self.monotonic() - self._last_sent)
        if wait <= 0:
            await self._flush()
        elif not math.isinf(wait):
            self._pending = asyncio.create_task(self._flush_later(wait))
        # with an infinite interval, only the first and the final states are sent

    async def _flush_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._pending = None
        await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            snapshot, self._latest = self._latest, None
            if snapshot is None:
                return
            self._last_sent = self.monotonic()
            text, blocks = views.progress(*snapshot)
            await self.send(text, blocks, snapshot[0])

    async def send(self, text: Mrkdwn, blocks: list[dict[str, Any]], op: Operation) -> None:
        raise NotImplementedError


class MessageProgress(_Coalescing):
    """Updates the public progress message in the channel with ``chat.update``."""

    def __init__(self, client: AsyncWebClient, channel: str, ts: str, interval: float) -> None:
        super().__init__(interval)
        self.client = client
        self.channel = channel
        self.ts = ts

    async def send(self, text: Mrkdwn, blocks: list[dict[str, Any]], op: Operation) -> None:
        """One update; the final one is tried again a few times over a minute or two
        when Slack is busy or out of reach (after slack_sdk's own rate-limit retries),
        since no later update would replace it."""
        try:
            async for attempt in stamina.retry_context(
                on=_transient,
                attempts=FINAL_ATTEMPTS if op.state.final else 1,
                wait_initial=2.0,
                wait_max=30.0,
                timeout=120.0,
            ):
                with attempt:
                    await self.client.chat_update(
                        channel=self.channel, ts=self.ts, text=text, blocks=blocks
                    )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            error = exc.response.get("error") if isinstance(exc, SlackApiError) else str(exc)
            log.warning("chat.update failed", extra={"operation": op.id, "error": error})


FINAL_ATTEMPTS = 4
TRANSIENT_ERRORS = frozenset({"ratelimited", "fatal_error", "internal_error", "request_timeout"})


def _transient(exc: Exception) -> bool:
    """A failure worth another try: Slack busy or failing, or the connection."""
    if isinstance(exc, SlackApiError):
        return exc.response.get("error") in TRANSIENT_ERRORS
    return isinstance(exc, aiohttp.ClientError | TimeoutError)


Fallback = Callable[[Mrkdwn, list[dict[str, Any]]], Awaitable[object]]


class ResponseUrlProgress(_Coalescing):
    """Where the bot may not post in the channel: replace the user's message through the
    command's ``response_url`` (Slack allows five uses in 30 minutes, so only the
    first and the final state are sent). A final state Slack no longer takes there (the
    URL expired, say, after a long stop) goes to ``fallback`` (a DM to the requester)."""

    def __init__(self, response_url: str, note: Mrkdwn, fallback: Fallback | None = None) -> None:
        super().__init__(interval=float("inf"))
        self.webhook = AsyncWebhookClient(response_url)
        self.note = note
        self.fallback = fallback

    async def send(self, text: Mrkdwn, blocks: list[dict[str, Any]], op: Operation) -> None:
        noted = [*blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": self.note}]}]
        try:
            answer = await self.webhook.send(text=text, blocks=noted, replace_original=True)
            error = None if answer.status_code == 200 else f"{answer.status_code} {answer.body}"
        except Exception as exc:  # the user's Slack client going away must not stop the stop
            error = str(exc) or type(exc).__name__
        if error is None:
            return
        log.warning("response_url update failed", extra={"operation": op.id, "error": error})
        if op.state.final and self.fallback is not None:
            await self.fallback(text, blocks)


class NullProgress:
    """For operations with nowhere to show progress (all is still in the audit log)."""

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None:
        return None
