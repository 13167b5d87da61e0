"""The playground's HTTP face: the page, its JSON API, a live stream, and the bot beside them.

    GET  /                       the page (static HTML/JS/CSS, no build step)
    GET  /static/...             its assets
    GET  /playground/state       everything the page shows, as JSON
    GET  /playground/events      the same, pushed on every change (server-sent events)
    POST /playground/message     a person types in a conversation (a slash command or text)
    POST /playground/click       a person clicks a button in a message
    POST /playground/view/...    a person submits, closes, or clicks in a modal
    POST /playground/home        a person opens Stopbot's Home tab; /home/click, a button on it
    POST /playground/faults      inject a provider fault; DELETE clears them
    POST /playground/lock        lock a resource as someone; /playground/unlock
    POST /playground/clock       skip ahead in time
    POST /slack/events, GET /healthz   the bot itself (``bot.slack.server.build_http_app``)

Every write takes JSON only, and only from a page served by this host: a JSON body cannot
be sent cross-site without a CORS preflight (which is never granted), and the Host check
stops DNS rebinding. The playground has no login; it listens on loopback only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bot.playground.core import FaultKind, Playground, PlaygroundError, dumps
from bot.slack.server import build_http_app

__all__ = ["HEARTBEAT_SECONDS", "STATIC_DIR", "build_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
HEARTBEAT_SECONDS = 1.0
"""How often the live stream looks again without a change in Slack: provider statuses move
with the simulators' clock, not by events."""
KEEPALIVE_EVERY = 15
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageBody(_Body):
    user: str
    channel: str
    text: str = Field(max_length=4000)


class ClickBody(_Body):
    user: str
    channel: str
    message_ts: str
    block: int = Field(ge=0)
    element: int | None = Field(default=None, ge=0)
    ephemeral: bool = False
    option: str | None = Field(default=None, description="the value chosen, for a menu")


class ViewBody(_Body):
    user: str
    view_id: str


class ViewSubmitBody(ViewBody):
    values: dict[str, dict[str, str | list[str] | None]] = Field(default_factory=dict)


class ViewClickBody(ViewBody):
    block: int = Field(ge=0)
    element: int | None = Field(default=None, ge=0)


class HomeBody(_Body):
    user: str


class HomeClickBody(HomeBody):
    block: int = Field(ge=0)
    element: int | None = Field(default=None, ge=0)


class FaultBody(_Body):
    resource: str
    kind: FaultKind
    stop_only: bool = True
    repeat: bool = False


class LockBody(_Body):
    resource: str
    owner: str


class UnlockBody(_Body):
    resource: str


class StartBody(_Body):
    resource: str


class ClockBody(_Body):
    seconds: float


Handler = Callable[[Any], Awaitable[dict[str, Any] | None]]


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _json_endpoint(model: type[_Body], act: Handler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that validates a JSON body with ``model``, then acts; errors in words."""

    async def endpoint(request: Request) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return _error("Send the request as JSON (Content-Type: application/json).", 415)
        try:
            body = model.model_validate_json(await request.body())
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            return _error(f"Bad request: {problems}.")
        try:
            answer = await act(body)
        except PlaygroundError as exc:
            return _error(str(exc))
        return JSONResponse(answer or {"ok": True})

    return endpoint


def build_app(playground: Playground) -> Starlette:
    """The page, its API and the bot's own endpoints, as one ASGI app."""
    bot_app = build_http_app(playground.bot)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        return Response(dumps(playground.state()), media_type="application/json")

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _stream(playground),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def message(body: MessageBody) -> None:
        await playground.type_message(body.user, body.channel, body.text)

    async def click(body: ClickBody) -> None:
        await playground.click(
            body.user,
            body.channel,
            body.message_ts,
            block=body.block,
            element=body.element,
            ephemeral=body.ephemeral,
            option=body.option,
        )

    async def view_submit(body: ViewSubmitBody) -> None:
        await playground.submit_view(body.user, body.view_id, body.values)

    async def view_close(body: ViewBody) -> None:
        await playground.close_view(body.user, body.view_id)

    async def view_click(body: ViewClickBody) -> None:
        await playground.click_in_view(
            body.user, body.view_id, block=body.block, element=body.element
        )

    async def open_home(body: HomeBody) -> None:
        await playground.open_home(body.user)

    async def home_click(body: HomeClickBody) -> None:
        await playground.click_in_home(body.user, block=body.block, element=body.element)

    async def add_fault(body: FaultBody) -> dict[str, Any]:
        fault = playground.inject_fault(
            body.resource, body.kind, stop_only=body.stop_only, repeat=body.repeat
        )
        return {"ok": True, "fault": fault.model_dump()}

    async def clear_faults(request: Request) -> Response:
        playground.clear_faults()
        return JSONResponse({"ok": True})

    async def lock(body: LockBody) -> dict[str, Any]:
        return {"ok": True, "lock": playground.lock(body.resource, body.owner)}

    async def unlock(body: UnlockBody) -> None:
        playground.unlock(body.resource)

    async def clock(body: ClockBody) -> None:
        playground.skip_ahead(body.seconds)

    async def start(body: StartBody) -> None:
        playground.start_resource(body.resource)

    async def reset(request: Request) -> Response:
        playground.reset_estate()
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A mounted app's lifespan does not run by itself: the bot resumes stops in flight
        # and stops following them in its own.
        try:
            async with bot_app.router.lifespan_context(bot_app):
                yield
        finally:
            await playground.aclose()

    routes = [
        Route("/", index, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/playground/state", state, methods=["GET"]),
        Route("/playground/events", events, methods=["GET"]),
        Route("/playground/message", _json_endpoint(MessageBody, message), methods=["POST"]),
        Route("/playground/click", _json_endpoint(ClickBody, click), methods=["POST"]),
        Route(
            "/playground/view/submit",
            _json_endpoint(ViewSubmitBody, view_submit),
            methods=["POST"],
        ),
        Route("/playground/view/close", _json_endpoint(ViewBody, view_close), methods=["POST"]),
        Route(
            "/playground/view/click", _json_endpoint(ViewClickBody, view_click), methods=["POST"]
        ),
        Route("/playground/home", _json_endpoint(HomeBody, open_home), methods=["POST"]),
        Route(
            "/playground/home/click", _json_endpoint(HomeClickBody, home_click), methods=["POST"]
        ),
        Route("/playground/faults", _json_endpoint(FaultBody, add_fault), methods=["POST"]),
        Route("/playground/faults", clear_faults, methods=["DELETE"]),
        Route("/playground/lock", _json_endpoint(LockBody, lock), methods=["POST"]),
        Route("/playground/unlock", _json_endpoint(UnlockBody, unlock), methods=["POST"]),
        Route("/playground/clock", _json_endpoint(ClockBody, clock), methods=["POST"]),
        Route("/playground/start", _json_endpoint(StartBody, start), methods=["POST"]),
        Route("/playground/reset", reset, methods=["POST"]),
        Mount("/", app=bot_app),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=ALLOWED_HOSTS)],
    )


async def _stream(playground: Playground) -> AsyncIterator[str]:
    """Server-sent events: the whole state whenever it differs from the last one sent."""
    last = ""
    version = -1
    quiet = 0
    while True:
        current = dumps(playground.state())
        if current != last:
            last, quiet = current, 0
            yield f"event: state\ndata: {current}\n\n"
        else:
            quiet += 1
            if quiet >= KEEPALIVE_EVERY:
                quiet = 0
                yield ": keep-alive\n\n"
        version = await playground.slack.wait_changed(version, HEARTBEAT_SECONDS)
