"""``stopbot dev``: the whole bot in a browser page, no Slack workspace needed.

One process: the provider simulators and the stand-in Slack Web API on loopback ports of
their own (background threads), and on ``--port`` the page, its API and the real Bolt app
in HTTP mode. Always the embedded estate on the simulators (:mod:`bot.estate`), with
``stopbot.yaml``'s other keys laid over it (a file naming providers is refused): the page
can stop nothing real. The database is the bot's own (``STOPBOT_DB``, ``./stopbot.db`` by
default), kept between runs and shared with the CLI, which finds the running playground's
simulators through a note left beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import uvicorn

from bot.config import ConfigError, Settings, configured_database_url, read_config_document
from bot.durations import format_duration
from bot.estate import PlaygroundNote
from bot.playground.core import Playground, Sleep
from bot.playground.web import STATIC_DIR, build_app
from bot.runtime import uses_estate
from bot.slack.local import LOCAL_CHANNEL, LOCAL_ROLES, LOCAL_USERS
from bot.store import shown_location
from providers.simulators.server import SimulatorServer
from providers.threaded_server import ThreadedServer

__all__ = ["PlaygroundServer", "PortInUseError", "banner", "run_dev"]

EXIT_OK, EXIT_USAGE = 0, 2
GRACEFUL_SHUTDOWN_SECONDS = 1
"""The page's live stream never ends by itself: on Ctrl+C it is cut after this."""


class PortInUseError(OSError):
    """The port is taken (or the address cannot be bound); the message says what to do."""


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8 or localhost (IPv4 only: the page's Host check knows no IPv6 literal)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.version == 4 and address.is_loopback


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port), or PortInUseError in words."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUseError(
            f"cannot listen on {host}:{port}: {exc.strerror}. Is another `stopbot dev` "
            "(or another program) using it? Stop it, or pick another port with --port."
        ) from None
    sock.listen(128)
    return sock


class PlaygroundServer:
    """The playground on a loopback port: in the foreground (``stopbot dev``) or from a
    background thread (tests). The port is bound first, so a taken one fails before
    anything starts."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        db_path: str | Path | None = None,
        sims: SimulatorServer | None = None,
        stops: Mapping[str, Any] | None = None,
        sleep: Sleep | None = None,
        file_document: Any = None,
        source: str = "<playground>",
    ) -> None:
        if not (STATIC_DIR / "index.html").is_file():
            raise ValueError(
                f"the playground's page is missing from this installation ({STATIC_DIR}): "
                "reinstall stopbot (pip install stopbot, or pip install -e . from a clone)."
            )
        if not _is_loopback(host):
            raise ValueError(
                f"the playground listens on loopback only ({host!r} is not): it has no "
                "login, and anyone who reaches it can act as any user. Use 127.0.0.1."
            )
        self.socket = _bind(host, port)
        self.host = host
        self.port = self.socket.getsockname()[1]
        try:
            kwargs: dict[str, Any] = {
                "db_path": db_path,
                "sims": sims,
                "stops": stops,
                "file_document": file_document,
                "source": source,
            }
            if sleep is not None:
                kwargs["sleep"] = sleep
            self.playground = Playground.start(**kwargs)
        except BaseException:
            self.socket.close()
            raise
        self.playground.bot_url = self.url
        self._served = ThreadedServer(
            build_app(self.playground),
            host=host,
            name="playground",
            lifespan="auto",
            sock=self.socket,
            graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve(self) -> None:
        """Serve until Ctrl+C (uvicorn's signal handlers end it gracefully)."""
        try:
            asyncio.run(uvicorn.Server(self._served.config()).serve(sockets=[self.socket]))
        finally:
            self.playground.close()

    def start(self) -> PlaygroundServer:
        """Serve from a background thread; returns once the server answers."""
        try:
            self._served.start()
        except BaseException:
            self.playground.close()
            raise
        return self

    def stop(self) -> None:
        self._served.stop()
        self.playground.close()

    def __enter__(self) -> PlaygroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def banner(playground: Playground, url: str) -> str:
    """What ``stopbot dev`` prints: where to go, who to be, what there is to stop."""
    lines = [
        f"Stopbot playground: open {url}/ in your browser.",
        "  The real bot (HTTP mode), the provider simulators, and a stand-in Slack; "
        f"database {playground.db_path} (kept: `stopbot history` reads it).",
        "  Nothing real can be stopped from here. Press Ctrl+C to quit.",
        "",
        "People (pick one in the page):",
    ]
    for user in LOCAL_USERS:
        lines.append(f"  {user.real_name:<16} {LOCAL_ROLES.get(user.id, '')}")
    lines += ["", "Resources:"]
    rows = [("RESOURCE", "PROVIDER", "STATUS", "LOCK / APPROVAL")]
    names = {u.id: u.real_name for u in LOCAL_USERS}
    for r in playground.resources():
        notes = [r["provider_lock"]] if r["provider_lock"] else []
        if r["approvers"]:
            who = ", ".join(names.get(a, a) for a in r["approvers"])
            notes.append(f"needs approval by {who}")
        rows.append((r["name"], r["provider"], r["status"], "; ".join(notes) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        lines.append(
            "  "
            + "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True))
            + "  "
            + row[3]
        )
    for schedule in playground.config.schedules:
        lines += [
            "",
            f"Schedule {schedule.name}: `{schedule.cron}` ({schedule.timezone}), warning "
            f"{format_duration(schedule.warn_before)} before, in #{LOCAL_CHANNEL.name}.",
        ]
    lines += [
        "",
        "Try `/stop dev-eu` in the page, then Confirm; `/stop wake dev-eu` brings it back. In "
        "another terminal, `stopbot status dev-eu` and `stopbot history` see the same estate "
        "and database.",
    ]
    return "\n".join(lines)


def run_dev(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the playground until Ctrl+C; the exit code (2: a bad host, a taken port, or a
    configuration it cannot use).

    It uses the configuration file (``STOPBOT_CONFIG``, else ``./stopbot.yaml`` if there is
    one) laid over the embedded estate, and the bot's database; never Slack credentials
    from the environment.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    path = settings.config_path()
    document = None
    aside = []
    if settings.stopbot_config is not None or path.exists():
        document = read_config_document(path)
        if not uses_estate(document):
            aside.append(
                f"the configuration {path} (it names providers: the playground runs on the "
                "built-in simulators only; leave providers: out to try its other keys here)"
            )
            document = None
    location = settings.store_location(configured_database_url(path))
    running = PlaygroundNote.running(location)
    if running is not None:
        raise ConfigError(
            str(path),
            [
                (
                    "",
                    f"another playground (pid {running.pid}) is running on the database "
                    f"{shown_location(location)}: stop it first, or set STOPBOT_DB to another file",
                )
            ],
        )
    try:
        server = PlaygroundServer(
            host=host,
            port=port,
            db_path=location,
            file_document=document,
            source=str(path),
        )
    except (PortInUseError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        print(f"stopbot: {exc}", file=err)
        return EXIT_USAGE
    note = PlaygroundNote(
        pid=os.getpid(),
        simulators_url=server.playground.sims.base_url,
        started=server.playground.started,
    )
    note.write(location)
    if settings.slack_bot_token is not None or settings.slack_app_token is not None:
        aside.append("the Slack credentials")
    if aside:
        print(f"stopbot: the playground leaves aside {' and '.join(aside)}.", file=err, flush=True)
    if document is not None:
        print(f"stopbot: configuration {path} on the built-in simulators.", file=out, flush=True)
    print(banner(server.playground, server.url), file=out, flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn shuts down, then re-raises
            server.serve()
    finally:
        note.remove(location)
    print("stopbot: playground stopped.", file=out, flush=True)
    return EXIT_OK
