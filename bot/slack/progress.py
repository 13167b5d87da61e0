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
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.models import Operation, Transition
from bot.slack import views
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

    async def send(self, text: str, blocks: list[dict[str, Any]], op: Operation) -> None:
        raise NotImplementedError


class MessageProgress(_Coalescing):
    """Updates the public progress message in the channel with ``chat.update``."""

    def __init__(self, client: AsyncWebClient, channel: str, ts: str, interval: float) -> None:
        super().__init__(interval)
        self.client = client
        self.channel = channel
        self.ts = ts

    async def send(self, text: str, blocks: list[dict[str, Any]], op: Operation) -> None:
        try:
            await self.client.chat_update(
                channel=self.channel, ts=self.ts, text=text, blocks=blocks
            )
        except SlackApiError as exc:
            log.warning(
                "chat.update failed",
                extra={"operation": op.id, "error": exc.response.get("error")},
            )


class ResponseUrlProgress(_Coalescing):
    """Where the bot may not post in the channel: replace the user's message through the
    command's ``response_url`` (Slack allows five uses in 30 minutes, so only the
    first and the final state are sent)."""

    def __init__(self, response_url: str, note: str) -> None:
        super().__init__(interval=float("inf"))
        self.webhook = AsyncWebhookClient(response_url)
        self.note = note

    async def send(self, text: str, blocks: list[dict[str, Any]], op: Operation) -> None:
        blocks = [*blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": self.note}]}]
        try:
            await self.webhook.send(text=text, blocks=blocks, replace_original=True)
        except Exception:  # the user's Slack client going away must not stop the stop
            log.warning("response_url update failed", extra={"operation": op.id})


class NullProgress:
    """For operations with nowhere to show progress (all is still in the audit log)."""

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None:
        return None
