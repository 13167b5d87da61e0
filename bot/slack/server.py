"""Serving the bot: HTTP mode (Starlette + uvicorn, ``POST /slack/events``) or Socket Mode,
with ``GET /healthz`` in both."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.slack.app import SlackBot

__all__ = ["build_http_app", "run_http", "run_socket_mode"]

log = logging.getLogger(__name__)


def build_http_app(bot: SlackBot, *, slack_endpoint: bool = True) -> Starlette:
    """The ASGI app: Slack's endpoint (HTTP mode) and the health check.

    On start-up it resumes the stops a previous process left in flight; on shutdown
    it stops following them (they stay in the store for the next start).
    """
    handler = AsyncSlackRequestHandler(bot.app)

    async def events(request: Request) -> Response:
        return await handler.handle(request)

    async def healthz(request: Request) -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            bot.store.db.execute("SELECT 1").fetchone()
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"error: {exc}"
        checks["operations_in_flight"] = len(bot.service.in_flight())
        if bot.scheduler is not None:
            checks["scheduler"] = "running" if bot.scheduler.running else "stopped"
        healthy = checks["store"] == "ok" and checks.get("scheduler") != "stopped"
        return JSONResponse(
            {"status": "ok" if healthy else "unhealthy", "checks": checks},
            status_code=200 if healthy else 503,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        resumed = await bot.service.resume(bot.listener_for)
        if resumed:
            log.info("resumed %d stop(s) in flight", len(resumed))
        bot.start_housekeeping(bot.housekeeping_interval)
        if bot.scheduler is not None:
            bot.scheduler.start()
        yield
        if bot.scheduler is not None:
            await bot.scheduler.stop()
        await bot.stop_housekeeping()
        await bot.service.aclose()

    routes = [Route("/healthz", healthz, methods=["GET"])]
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
    )
    await uvicorn.Server(config).serve()


async def run_socket_mode(bot: SlackBot, app_token: str, host: str, port: int) -> None:
    """Socket Mode for Slack (no public URL needed), and /healthz on ``host:port``."""
    import asyncio

    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    socket_handler = AsyncSocketModeHandler(bot.app, app_token)
    await socket_handler.connect_async()  # type: ignore[no-untyped-call]
    try:
        await run_http(bot, host, port, slack_endpoint=False)
    finally:
        await asyncio.shield(socket_handler.close_async())  # type: ignore[no-untyped-call]
