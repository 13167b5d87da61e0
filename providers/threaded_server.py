"""An ASGI app served by uvicorn from a background thread, on a loopback port.

The simulators, the stand-in Slack and the tests' bot all run this way: bound to a free
port (port 0) before the thread starts, so the address is known at once, and stopped
with uvicorn's own graceful exit.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Literal, Self

import uvicorn
from starlette.types import ASGIApp

__all__ = ["ThreadedServer"]


class ThreadedServer:
    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "server",
        lifespan: Literal["auto", "on", "off"] = "off",
        sock: socket.socket | None = None,
        graceful_shutdown: int | None = None,
    ) -> None:
        """``sock``: a listening socket bound already (its port wins over ``port``);
        ``graceful_shutdown``: seconds requests in progress get at a stop."""
        self.app = app
        self.host = host
        self.port = sock.getsockname()[1] if sock is not None else port
        self.name = name
        self.lifespan = lifespan
        self._sock = sock
        self.graceful_shutdown = graceful_shutdown
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def config(self) -> uvicorn.Config:
        """How uvicorn serves the app, in a thread here or in the foreground elsewhere."""
        return uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan=self.lifespan,
            access_log=False,
            timeout_graceful_shutdown=self.graceful_shutdown,
        )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        """Bind, serve in a thread, and return the base URL once requests are answered."""
        sock = self._sock
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            self.port = sock.getsockname()[1]
        server = uvicorn.Server(self.config())
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True
        )
        self._thread.start()
        while not server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the {self.name} server failed to start")
            threading.Event().wait(0.01)
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
