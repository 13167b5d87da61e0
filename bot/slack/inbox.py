"""Requests answered before they are handled, kept until they are.

Slack gets its answer before the work: the HTTP endpoint answers a click or a `/stop`
ahead of Bolt (bot/slack/server.py), and every listener acks before its work (in Socket
Mode too, over the websocket); a process killed in between would drop the click silently.
So the request is recorded in the store before the answer leaves (by the endpoint for what
it answers ahead, by the listener's guard for the rest), and marked handled once the
listener's work is over. A process taking over a dead one's open requests handles them
again: one the endpoint recorded, as it came, signed afresh with the signing secret (its
signature was checked on arrival; Bolt checks it again, and would refuse one older than
five minutes); one a listener recorded, as the payload Bolt parsed (Bolt's Socket Mode
requests are not signed).

A request seen again byte for byte (a redelivery) is answered and not handled twice. A
request whose handling was cut three times (it may be what kills the process) is dropped,
logged.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot.store import StoreUnavailableError
from bot.store.base import OpenRequest

if TYPE_CHECKING:
    from bot.slack.app import SlackBot

__all__ = ["MAX_ATTEMPTS", "PAYLOAD", "Handling", "Inbox", "defer", "track"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
PAYLOAD = "application/x-stopbot-payload"
"""The content type of a request recorded as the payload Bolt parsed (see the docstring)."""
REPLAY_WAIT = 60.0  # seconds a sweep waits for the requests it handles again


class Handling:
    """One request's handling in this process: Bolt's dispatch and the work it spawned."""

    def __init__(self, inbox: Inbox, request_id: str) -> None:
        self.inbox = inbox
        self.request_id = request_id
        self.pending = 0
        self.dispatched = False
        self.deferred = False  # its work met a database that did not answer: again later
        self._ending = False
        self.over = asyncio.Event()
        self.token: contextvars.Token[Handling | None] | None = None

    def started(self, task: asyncio.Task[None]) -> None:
        self.pending += 1
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.pending -= 1
        if not task.cancelled():  # cancelled: shutting down, the next process handles it
            self._check()

    def dispatch_over(self) -> None:
        self.dispatched = True
        self._check()

    def _check(self) -> None:
        if not self.dispatched or self.pending or self._ending:
            return
        self._ending = True
        if self.deferred:
            self.inbox.deferred.add(self.request_id)
            self.over.set()
            return
        # Queued now, committed off the loop (on PostgreSQL a round trip the loop would
        # otherwise wait through, behind a run's writes); the lane runs it before the
        # store closes. Over once recorded.
        store = self.inbox.bot.store
        try:
            marking = store.submit(partial(store.handled, self.request_id))
        except StoreUnavailableError as exc:  # closed: the next process handles it again
            log.warning("could not record a request as handled: %s", exc)
            self.over.set()
            return
        marking.add_done_callback(self._marked)

    def _marked(self, marking: asyncio.Future[None]) -> None:
        self.over.set()
        error = None if marking.cancelled() else marking.exception()
        if isinstance(error, StoreUnavailableError):  # recorded at the next sweep
            log.warning("could not record a request as handled yet: %s", error)
            self.inbox.unmarked.add(self.request_id)
        elif error is not None:
            log.error("could not record a request as handled", exc_info=error)


_CURRENT: contextvars.ContextVar[Handling | None] = contextvars.ContextVar(
    "stopbot_request", default=None
)


def defer() -> bool:
    """The request being handled met a database that did not answer: this process handles
    it again once the database answers (its next sweep). False when no recorded request is
    being handled."""
    handling = _CURRENT.get()
    if handling is None:
        return False
    handling.deferred = True
    return True


def track(task: asyncio.Task[None]) -> None:
    """A listener's work, spawned while handling a recorded request: the request is
    handled once it ends."""
    handling = _CURRENT.get()
    if handling is not None:
        handling.started(task)


class Inbox:
    def __init__(self, bot: SlackBot) -> None:
        self.bot = bot
        self._waiting: list[tuple[str, str, str, asyncio.Future[str]]] = []
        self.deferred: set[str] = set()
        # Handled while the database did not answer: recorded as handled at a sweep.
        self.unmarked: set[str] = set()
        self._recording = False  # a recording is off the loop now

    async def receive(self, body: str, content_type: str) -> tuple[str, str]:
        """Record a request before answering it: (its id, "new" | "open" | "done").

        The requests of a burst that arrive in one turn of the event loop, or while the
        previous recording commits, are recorded in one transaction: a commit each put
        the last ack of 200 10 ms or more behind on SQLite, and on PostgreSQL each is the
        server's fsync, a run's commits beside it."""
        request_id = hashlib.sha256(body.encode("utf-8")).hexdigest()
        recorded: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append((request_id, body, content_type, recorded))
        if len(self._waiting) == 1 and not self._recording:
            asyncio.get_running_loop().call_soon(self._record)
        return request_id, await recorded

    def _record(self) -> None:
        if self._recording or not self._waiting:
            return
        self._recording = True
        # Off the loop where the store has a server to wait for (Store.receive_now): the
        # loop goes on answering while the database commits; each answer leaves after it.
        waiting, self._waiting = self._waiting, []
        store = self.bot.store
        requests = [(rid, body, kind) for rid, body, kind, _ in waiting]
        recording = asyncio.ensure_future(store.receive_now(requests, self.bot.service.registry.id))

        def recorded(done: asyncio.Future[list[str]]) -> None:
            self._recording = False
            if self._waiting:  # came in meanwhile: recorded together, now
                self._record()
            if done.cancelled():  # shutting down: nothing recorded, nothing answered
                for *_, future in waiting:
                    future.cancel()
                return
            error = done.exception()
            for index, (*_, future) in enumerate(waiting):
                if future.done():
                    continue
                if error is not None:  # each request fails as its own recording would
                    future.set_exception(error)
                else:
                    future.set_result(done.result()[index])

        recording.add_done_callback(recorded)

    async def record(self, body: dict[str, Any]) -> Handling | None:
        """Record a request a listener is about to ack that the endpoint did not record (a
        Socket Mode request, or one Bolt answers in line), before the ack; its handling, or
        None when this very payload was recorded already (a redelivery: no work again). The
        handling ends with the work the listener spawns (see :func:`track`)."""
        current = _CURRENT.get()
        if current is not None:
            return current
        request_id, seen = await self.receive(json.dumps(body, sort_keys=True), PAYLOAD)
        if seen != "new":
            return None
        handling = Handling(self, request_id)
        handling.token = _CURRENT.set(handling)
        return handling

    @staticmethod
    def acked(handling: Handling) -> None:
        """A listener acked and spawned its work: the request is handled when that ends
        (and what follows in this task is another request's)."""
        handling.dispatch_over()
        if handling.token is not None:
            _CURRENT.reset(handling.token)
            handling.token = None

    def handle(self, request_id: str, raw_body: str, headers: Mapping[str, str]) -> Handling:
        """Bolt's whole handling (verification, listener, work) of a recorded request, once
        the burst of answers is over (see :class:`bot.slack.app.AfterAck`)."""
        handling = Handling(self, request_id)

        async def dispatch() -> None:
            from bot.slack.app import bolt_request

            _CURRENT.set(handling)
            await self.bot.after_ack.opened()
            try:
                response = await self.bot.app.async_dispatch(bolt_request(raw_body, headers))
            except Exception:
                log.exception("Bolt failed on a request already answered")
            else:
                if response.status != 200:
                    log.error(
                        "Bolt answered %d to a request Slack was already answered 200 for: %s",
                        response.status,
                        response.body[:200],
                    )
            handling.dispatch_over()

        task = asyncio.create_task(dispatch(), name="dispatch-after-ack")
        self.bot.keep(task)
        return handling

    def handle_payload(self, request_id: str, payload: dict[str, Any]) -> Handling:
        """Bolt's handling of a request recorded as its payload (see :meth:`record`)."""
        handling = Handling(self, request_id)

        async def dispatch() -> None:
            _CURRENT.set(handling)
            try:
                await self.bot.app.async_dispatch(
                    AsyncBoltRequest(body=payload, mode="socket_mode")
                )
            except Exception:
                log.exception("Bolt failed on a request handled again")
            handling.dispatch_over()

        task = asyncio.create_task(dispatch(), name="dispatch-again")
        self.bot.keep(task)
        return handling

    async def replay(self) -> int:
        """Handle again the requests that processes now dead answered but did not finish,
        and this process's own that met a database that did not answer (a sweep: at
        start, and every few seconds); how many."""
        secret = self.bot.signing_secret
        verifier = SignatureVerifier(secret) if secret else None
        registry = self.bot.service.registry
        store = self.bot.store
        unmarked = list(self.unmarked)

        def read() -> tuple[set[str], list[OpenRequest]]:
            # In the store's lane (every replica sweeps every few seconds; on PostgreSQL
            # each read is a round trip the loop, answering Slack, would wait through).
            for request_id in unmarked:
                store.handled(request_id)
            return registry.live(), store.open_requests()

        live, rows = await store.off_loop(read)
        self.unmarked.difference_update(unmarked)
        started = []
        for row in rows:
            if row["owner"] == registry.id:
                if row["id"] not in self.deferred:
                    continue
                self.deferred.discard(row["id"])
            elif not registry.orphaned(row["owner"], live) or not await store.off_loop(
                partial(registry.take, "inbox", row["id"], row["owner"])
            ):
                continue
            if await store.off_loop(partial(store.retry_request, row["id"])) > MAX_ATTEMPTS:
                log.error(
                    "a request was cut %d times while handled: dropped",
                    MAX_ATTEMPTS,
                    extra={"request": row["id"]},
                )
                await store.off_loop(partial(store.handled, row["id"]))
                continue
            body = str(row["body"])
            log.info("handling a request again", extra={"request": row["id"]})
            if row["content_type"] == PAYLOAD:
                started.append(self.handle_payload(row["id"], json.loads(body)))
                continue
            if verifier is None:  # recorded by an HTTP endpoint this process does not have
                continue
            now = str(int(time.time()))
            headers = {
                "content-type": str(row["content_type"] or "application/x-www-form-urlencoded"),
                "x-slack-request-timestamp": now,
                "x-slack-signature": str(verifier.generate_signature(timestamp=now, body=body)),
            }
            started.append(self.handle(row["id"], body, headers))
        if started:
            waits = [asyncio.ensure_future(h.over.wait()) for h in started]
            _, late = await asyncio.wait(waits, timeout=REPLAY_WAIT)
            for wait in late:
                wait.cancel()
        return len(started)
