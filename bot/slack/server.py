"""Serving the bot: HTTP mode (Starlette + uvicorn, ``POST /slack/events``) or Socket Mode,
with ``GET /healthz`` in both."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from slack_bolt import BoltResponse
from slack_bolt.adapter.starlette.async_handler import to_starlette_response
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from yarl import URL

from bot.metrics import metrics_route
from bot.slack.app import SlackBot, bolt_request
from bot.slack.collector import QuietCollector
from bot.store import StoreUnavailableError

__all__ = ["KEEP_ALIVE", "build_http_app", "http_config", "run_http", "run_socket_mode"]

log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"


MAX_BODY = 256 * 1024
"""The largest request read, in bytes. Slack's largest, a modal submitted with every input
full, is a few tens of kilobytes."""
JSON = "application/json"
EVENTS = frozenset({"app_home_opened"})
"""The events Stopbot subscribes to (app-manifest.yml): the Home tab opened."""
# The interactions an app of buttons and modals gets: no shortcuts, menus of options
# loaded from the app, or legacy attachments.
INTERACTIONS = frozenset({"block_actions", "view_submission", "view_closed"})
# What Bolt reads, building a request's context, as an object, a list of objects, or an
# id (a string or an object), without checking its type first.
_OBJECTS = (
    "event",
    "view",
    "container",
    "message",
    "previous_message",
    "item",
    "assistant_thread",
    "function_data",
    "workflow_step",
)
_LISTS = ("authorizations", "response_urls", "actions")
_IDS = ("user", "team", "enterprise", "channel")


class Refused(Exception):
    """A request no Slack client sends: answered ``status`` (a 4xx), nothing done."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status

    def response(self) -> JSONResponse:
        return JSONResponse({"error": str(self)}, status_code=self.status)


@dataclass(frozen=True)
class SlackRequest:
    """A request signed by Slack and shaped as Slack sends it, read as Bolt reads it;
    ``ahead``: read as the server reads it too (see _answer_ahead)."""

    text: str
    body: dict[str, Any]
    ahead: bool = False


async def _body(request: Request) -> bytes:
    """The request's body; Refused (413) past MAX_BODY. The rest is read and dropped, so
    that the client gets the answer rather than a connection closed mid-upload."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_BODY:
            chunks.append(chunk)
    if size > MAX_BODY:
        raise Refused(413, f"a request is {MAX_BODY} bytes at most")
    return b"".join(chunks)


def _signed(verifier: SignatureVerifier, body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether Slack signed ``body`` (UTF-8) in the last five minutes. slack_sdk reads the
    timestamp with int(): one that is no number is no signature."""
    try:
        return verifier.is_valid_request(body, headers)
    except ValueError:
        return False


def _read(
    verifier: SignatureVerifier | None, body: bytes, headers: Mapping[str, str]
) -> SlackRequest:
    """The request, checked: UTF-8 without NUL (else Refused 400: slack_sdk verifies
    signatures of text only, and the inbox keeps it as text), signed (else Refused 401), a
    form (a slash command, an interaction's payload, Slack's SSL check) or Slack's URL
    check in JSON, of the shape Slack sends (else Refused 400): Bolt, and the listeners,
    can read it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8") from None
    if "\x00" in text:  # Slack's forms and JSON escape it; a database's text cannot hold it
        raise Refused(400, "the body holds a NUL character")
    if verifier is not None and not _signed(verifier, body, headers):
        # As Bolt logs it (the logging redacts what the body holds of secrets).
        log.info(
            "Invalid request signature detected (timestamp: %s, body: %s)",
            headers.get("x-slack-request-timestamp"),
            text[:4000],
        )
        raise Refused(401, "invalid signature")
    content_type = headers.get("content-type", "")
    # As Bolt decides (parse_body): JSON by its content type or by its first character.
    if content_type.split(";")[0] == JSON or text.startswith("{"):
        parsed = _object(text)
        if parsed.get("type") == "event_callback":
            event = parsed.get("event")
            if not isinstance(event, dict) or event.get("type") not in EVENTS:
                raise Refused(400, "Stopbot subscribes to no such event")
            if not _named(event.get("user")):
                raise Refused(400, "an event without its user")
        elif parsed.get("type") != "url_verification":
            raise Refused(400, "neither an event nor Slack's URL check")
        return SlackRequest(text, _checked(parsed))
    form = _form(text)
    fields = form if form is not None else dict(parse_qsl(text, keep_blank_values=True))
    # Answered ahead only when the server reads the form as Bolt does: no field twice.
    ahead = form is not None and content_type.split(";")[0].strip().lower() == FORM
    if "payload" in fields:
        parsed = _object(fields["payload"])
        if not isinstance(parsed.get("type"), str) or parsed["type"] not in INTERACTIONS:
            raise Refused(400, "Stopbot has no listener for this interaction")
        return SlackRequest(text, _checked(parsed), ahead)
    if "command" not in fields and "ssl_check" not in fields:
        raise Refused(400, "neither a command nor an interaction")
    return SlackRequest(text, _checked(fields), ahead)


def _object(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError:
        raise Refused(400, "malformed JSON") from None
    if not isinstance(parsed, dict):
        raise Refused(400, "not a JSON object")
    return parsed


def _readable(body: Mapping[str, Any]) -> bool:
    """Whether Bolt builds its context from ``body`` without failing (see _OBJECTS)."""
    if any(key in body and not isinstance(body[key], dict) for key in _OBJECTS):
        return False
    for key in _LISTS:
        value = body.get(key)
        if key in body and not (
            isinstance(value, list) and all(isinstance(v, dict) for v in value)
        ):
            return False
    if any(body.get(key) is not None and not isinstance(body[key], str | dict) for key in _IDS):
        return False
    nested = [*body.get("authorizations", [])[:1], *([body["event"]] if "event" in body else [])]
    return all(_readable(inner) for inner in nested)


def _named(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def _checked(body: dict[str, Any]) -> dict[str, Any]:
    """``body``, if it has what Slack always sends with it and the listeners read (who,
    and where to answer); else Refused (400)."""
    if not _readable(body):
        raise Refused(400, "malformed request")
    kind = body.get("type")
    user = body.get("user")
    who = user.get("id") if isinstance(user, dict) else None
    if "command" in body:
        if not (_named(body.get("user_id")) and _url(body.get("response_url"))):
            raise Refused(400, "a command without its user or response URL")
    elif kind == "block_actions":
        actions = body.get("actions")
        if not (_named(who) and actions):
            raise Refused(400, "a click without its user or action")
        if not all(isinstance(action.get("action_id"), str) for action in actions):
            raise Refused(400, "an action without its id")
        # A click on a message has where to answer; one in a modal has the modal.
        where = body.get("response_url")
        if not (_url(where) or (where is None and "view" in body)):
            raise Refused(400, "a click with nowhere to answer")
    elif kind in {"view_submission", "view_closed"}:
        view = body.get("view") or {}
        if not (_named(who) and _named(view.get("type")) and _named(view.get("callback_id"))):
            raise Refused(400, "a modal's request without its user or view")
    return body


def _form(body: str) -> dict[str, str] | None:
    """A form-encoded body as Bolt reads it (``dict(parse_qsl(...))``), decoded by yarl's
    C unquoter: the standard library's costs 40-150 µs for a click's payload. None when
    it names a field twice (Bolt keeps the last, yarl the first)."""
    try:
        pairs = list(URL.build(query_string=body, encoded=True).query.items())
    except ValueError:
        return None
    form = dict(pairs)
    return form if len(form) == len(pairs) else None


def _answer_ahead(
    decide: Callable[[Mapping[str, Any]], dict[str, Any] | None],
    verifier: SignatureVerifier | None,
    body: bytes,
    headers: Mapping[str, str],
) -> dict[str, Any] | None:
    """Slack's answer for a request whose ack the bot knows without Bolt (see
    :meth:`SlackBot.answer_ahead`), or None for Bolt to answer in line (or for the
    endpoint to refuse, see :func:`_read`)."""
    try:
        request = _read(verifier, body, headers)
    except Refused:
        return None
    return decide(request.body) if request.ahead else None


def build_http_app(bot: SlackBot, *, slack_endpoint: bool = True) -> Starlette:
    """The ASGI app: Slack's endpoint (HTTP mode) and the health check.

    On start-up it resumes the stops a previous process left in flight; on shutdown
    it stops following them (they stay in the store for the next start).
    """
    if slack_endpoint and not bot.signing_secret:
        # Bolt alone would answer unverifiable requests (and fail on each): refuse instead.
        raise ValueError("the HTTP endpoint needs a signing secret to verify Slack's requests")
    verifier = SignatureVerifier(bot.signing_secret) if bot.signing_secret else None

    async def events(request: Request) -> Response:
        bot.after_ack.begin()  # listeners' post-ack work waits for the answers
        try:
            # The headers as Bolt takes them (a header sent twice: its first value), so
            # that both verify the same signature.
            headers = dict(request.headers)
            try:
                checked = _read(verifier, await _body(request), headers)
            except Refused as refused:
                return refused.response()
            try:
                ahead = bot.answer_ahead(checked.body) if checked.ahead else None
            except Exception:  # Bolt answers it, with the listeners' guard around it
                log.exception("answering ahead failed")
                ahead = None
            if ahead is None:
                return await answer(checked.text, headers)
            # Recorded before the answer leaves: a kill after it loses nothing.
            content_type = headers.get("content-type", FORM)
            try:
                request_id, seen = await bot.inbox.receive(checked.text, content_type)
            except StoreUnavailableError as exc:
                # Not recorded, so not kept: Bolt answers it in line, and its listener
                # tells the sender that nothing was done (see _run_guarded).
                log.warning("a request could not be recorded: %s", exc)
                return await answer(checked.text, headers)
            if seen == "new":
                bot.inbox.handle(request_id, checked.text, headers)
            return to_starlette_response(BoltResponse(status=200, body=ahead or ""))
        finally:
            bot.after_ack.end()

    async def answer(text: str, headers: Mapping[str, str]) -> Response:
        try:
            bolt_response = await bot.app.async_dispatch(bolt_request(text, headers))
        except Exception as exc:
            # _read let through only what Bolt reads: a shape it reads otherwise.
            log.warning("Bolt could not read a Slack request: refused", extra={"error": repr(exc)})
            return JSONResponse({"error": "malformed request"}, status_code=400)
        return to_starlette_response(bolt_response)

    checking: asyncio.Future[None] | None = None

    async def store_health() -> str:
        # In a thread: a database slow to answer (or busy with a run's writes) holds this
        # check, never the loop that answers Slack. Checks asked for while one is going
        # share it (200 probes at once are one round trip, not 200 threads in a queue).
        nonlocal checking
        if checking is None or checking.done():
            checking = asyncio.ensure_future(asyncio.to_thread(bot.store.health))
        try:
            await asyncio.shield(checking)
        except Exception as exc:
            return f"error: {exc}"
        return "ok"

    async def healthz(request: Request) -> JSONResponse:
        checks: dict[str, Any] = {"store": await store_health()}
        checks["operations_in_flight"] = len(bot.service.in_flight())
        # Which replica does the schedules and housekeeping: "leader", "follower", or
        # "sole" where every process does (SQLite).
        checks["role"] = bot.stopbot.leadership.role
        scheduler = bot.stopbot.scheduler
        if scheduler is not None:
            checks["scheduler"] = "running" if scheduler.running else "stopped"
        if bot.slack_connection is not None:
            checks["slack"] = await bot.slack_connection()
        if bot.auth_state is not None:
            checks["slack_token"] = bot.auth_state
        healthy = (
            checks["store"] == "ok"
            and checks.get("scheduler") != "stopped"
            and checks.get("slack", "connected") == "connected"
            and not checks.get("slack_token", "").startswith("refused")
        )
        return JSONResponse(
            {"status": "ok" if healthy else "unhealthy", "checks": checks},
            status_code=200 if healthy else 503,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        bot.metrics.attach()
        await bot.open_session()
        await bot.check_token()
        await bot.stopbot.start_duties()
        yield
        await bot.stop_duties()
        await bot.close_session()
        bot.metrics.detach()

    routes = [Route("/healthz", healthz, methods=["GET"]), metrics_route(bot.metrics)]
    if not slack_endpoint:
        return Starlette(routes=routes, lifespan=lifespan)
    routes.append(Route("/slack/events", events, methods=["POST"]))
    return _SlackFirst(events, routes=routes, lifespan=lifespan)


Endpoint = Callable[[Request], Awaitable[Response]]


class _SlackFirst(Starlette):
    """The app, Slack's requests taken first: a POST to /slack/events goes to its endpoint
    straight, without Starlette's middleware and router, which cost about 7 µs a request
    (measured in process: 16 µs for an endpoint that answers at once, 9 without them).
    During a run, uvicorn and Starlette are a third of the loop's time in a burst of acks.
    Everything else (health, metrics, the lifespan, another method on the endpoint's path)
    goes through them. An exception out of the endpoint reaches uvicorn, which logs it and
    answers 500, as Starlette's ServerErrorMiddleware does."""

    def __init__(self, endpoint: Endpoint, **starlette: Any) -> None:
        super().__init__(**starlette)
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/slack/events"
            and not scope.get("root_path")
        ):
            response = await self._endpoint(Request(scope, receive))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


KEEP_ALIVE = 75
"""Seconds an idle connection is kept open. A load balancer reuses its idle connections to
the bot until its own idle timeout (AWS's ALB 60 s, nginx's upstream keep-alive 60 s): one
the bot closes first can be closed just as a request is sent on it, which the balancer
answers 502 (uvicorn's 5 s made that a request in a few hundred here, in a benchmark whose
client, as aiohttp does, reuses the connection idle the longest). Longer than theirs, the
balancer closes first."""


def http_config(
    bot: SlackBot,
    host: str,
    port: int,
    *,
    slack_endpoint: bool = True,
    keep_alive: int = KEEP_ALIVE,
) -> uvicorn.Config:
    return uvicorn.Config(
        build_http_app(bot, slack_endpoint=slack_endpoint),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,  # uvicorn's lines go through our (JSON, redacting) logging
        timeout_keep_alive=keep_alive,
    )


async def run_http(
    bot: SlackBot,
    host: str,
    port: int,
    *,
    slack_endpoint: bool = True,
    keep_alive: int = KEEP_ALIVE,
) -> None:
    config = http_config(bot, host, port, slack_endpoint=slack_endpoint, keep_alive=keep_alive)
    # Everything built so far lives as long as the process: keep it out of the garbage
    # collector's way, whose pauses otherwise stall acks in a burst.
    gc.collect()
    gc.freeze()
    # Full collections at quiet moments only (bot/slack/collector.py).
    collector = asyncio.create_task(
        QuietCollector(bot.after_ack.idle_for, busy=bot.service.following).run(),
        name="garbage-collector",
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)


async def run_socket_mode(bot: SlackBot, app_token: str, host: str, port: int) -> None:
    """Socket Mode for Slack (no public URL needed), and /healthz on ``host:port``."""
    import asyncio

    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    socket_handler = AsyncSocketModeHandler(bot.app, app_token)

    async def connection() -> str:
        connected = await socket_handler.client.is_connected()
        return "connected" if connected else "disconnected"

    bot.slack_connection = connection
    # Connect beside the health server, not before it: while Slack is unreachable (the client
    # retries on its own), /healthz is up and says "disconnected".
    connecting = asyncio.create_task(socket_handler.connect_async())  # type: ignore[no-untyped-call]
    try:
        await run_http(bot, host, port, slack_endpoint=False)
    finally:
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await asyncio.shield(socket_handler.close_async())  # type: ignore[no-untyped-call]
