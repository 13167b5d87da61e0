"""Serving the bot: HTTP mode (Starlette + uvicorn, ``POST /slack/events``) or Socket Mode,
with ``GET /healthz`` in both."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from slack_bolt import BoltResponse
from slack_bolt.adapter.starlette.async_handler import to_starlette_response
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from yarl import URL

from bot.metrics import metrics_route
from bot.slack.app import SlackBot, bolt_request

__all__ = ["build_http_app", "run_http", "run_socket_mode"]

log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"


def _malformed(body: bytes) -> bool:
    """An interaction payload no Slack client sends: not JSON, or missing the parts
    Bolt indexes into (a user; an action in block_actions; a view in view_* events)."""
    form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    if "payload" not in form:
        return False
    try:
        payload = json.loads(form["payload"][0])
    except json.JSONDecodeError:
        return True
    return _malformed_payload(payload)


def _malformed_payload(payload: Any) -> bool:
    if not isinstance(payload, dict) or not isinstance(payload.get("user", {}), dict):
        return True
    kind, actions = payload.get("type"), payload.get("actions")
    if kind == "block_actions":
        return not (
            isinstance(actions, list) and actions and all(isinstance(a, dict) for a in actions)
        )
    if kind in {"view_submission", "view_closed"}:
        return not isinstance(payload.get("view"), dict)
    return False


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
    :meth:`SlackBot.answer_ahead`), or None for Bolt to answer in line.

    Only a request signed as Slack signs it qualifies, in a form (Bolt reads a body
    starting with "{" as JSON), read as :func:`bolt_request` reads it.
    """
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != FORM or body[:1] == b"{":
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if verifier is not None and not verifier.is_valid_request(body, headers):
        return None
    form = _form(text)
    if form is None:
        return None
    if "payload" in form:
        try:
            parsed: Any = json.loads(form["payload"])
        except json.JSONDecodeError:
            return None
        if _malformed_payload(parsed):
            return None
    else:
        parsed = form
    return decide(parsed)


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
            body = await request.body()
            # The headers as Bolt takes them (a header sent twice: its first value), so
            # that both verify the same signature.
            headers = dict(request.headers)
            try:
                ahead = _answer_ahead(bot.answer_ahead, verifier, body, headers)
            except Exception:  # Bolt answers it, with the listeners' guard around it
                log.exception("answering ahead failed")
                ahead = None
            if ahead is None:
                return await answer(request)
            # Recorded before the answer leaves: a kill after it loses nothing.
            request_id, seen = bot.inbox.receive(body, headers.get("content-type", FORM))
            if seen == "new":
                bot.inbox.handle(request_id, body.decode("utf-8"), headers)
            return to_starlette_response(BoltResponse(status=200, body=ahead or ""))
        finally:
            bot.after_ack.end()

    async def answer(request: Request) -> Response:
        failure: Exception | None = None
        try:
            raw_body = (await request.body()).decode("utf-8")
            bolt_response = await bot.app.async_dispatch(bolt_request(raw_body, request.headers))
            response = to_starlette_response(bolt_response)
        except Exception as exc:  # Bolt parses the body before its own error handling
            failure = exc
        else:
            if response.status_code < 500:
                return response
        body = await request.body()
        if not _malformed(body):
            if failure is not None:
                raise failure  # a real failure: Starlette's 500, logged
            return response
        # Never a shape Slack sends, and Bolt failed on it: a 400 (401 unsigned), not a
        # 500. Checked only after a failure: parsing each payload twice cost a sixth of
        # an ack's time.
        if verifier is not None and not verifier.is_valid_request(body, dict(request.headers)):
            return JSONResponse({"error": "invalid request"}, status_code=401)
        return JSONResponse({"error": "malformed interaction payload"}, status_code=400)

    async def healthz(request: Request) -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            bot.store.tuples("SELECT 1")
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"error: {exc}"
        checks["operations_in_flight"] = len(bot.service.in_flight())
        if bot.scheduler is not None:
            checks["scheduler"] = "running" if bot.scheduler.running else "stopped"
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
        await bot.start_duties()
        yield
        await bot.stop_duties()
        await bot.close_session()
        bot.metrics.detach()

    routes = [Route("/healthz", healthz, methods=["GET"]), metrics_route(bot.metrics)]
    if slack_endpoint:
        routes.append(Route("/slack/events", events, methods=["POST"]))
    return Starlette(routes=routes, lifespan=lifespan)


async def run_http(bot: SlackBot, host: str, port: int, *, slack_endpoint: bool = True) -> None:
    config = uvicorn.Config(
        build_http_app(bot, slack_endpoint=slack_endpoint),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,  # uvicorn's lines go through our (JSON, redacting) logging
    )
    # Everything built so far lives as long as the process: keep it out of the garbage
    # collector's way, whose pauses otherwise stall acks in a burst.
    gc.collect()
    gc.freeze()
    await uvicorn.Server(config).serve()


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
