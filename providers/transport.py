"""The HTTP transport under every provider client: httpx's interface, aiohttp's wire.

httpx is the providers' client (its requests, responses and errors are what
:mod:`providers.http` and the tests speak), but its own transport, httpcore over anyio,
costs 1.5 to 2 ms of CPU a request: on a night of 10,000 stops, more than the stops' own
work (bench/README.md). :class:`AiohttpTransport` sends httpx's requests with aiohttp's
client instead (a C parser, one connection pool per provider account, HTTP/1.1 with
keep-alive), and turns its answers and failures back into httpx's: a refused connection
is ``httpx.ConnectError``, a connection dropped mid-answer ``httpx.RemoteProtocolError``,
a timeout the matching ``httpx.TimeoutException``, so the retry rules of
:mod:`providers.http` read the same either way.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]


KEEPALIVE = 4.0
"""Seconds an idle connection is kept for the next request: less than the 5 s after which
common servers close one (uvicorn's, Apache's). The server closing it first would race
the next request: aiohttp learns of the close from the event loop, which a busy night can
keep from noticing it in time, and a stop sent on a connection closed under it fails
(httpcore polled each socket before reusing it, at a cost in CPU on every request)."""

_RECEIVED = re.compile(r"received (\d+) of (\d+) bytes")


def _incomplete(exc: aiohttp.ClientPayloadError) -> str:
    """An answer cut short, in the words httpx's own transport uses for it."""
    said = "peer closed connection without sending complete message body"
    counts = _RECEIVED.search(str(exc))
    if counts is None:
        return said
    return f"{said} (received {counts[1]} bytes, expected {counts[2]})"


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests sent by one ``aiohttp.ClientSession`` (made at the first request, on
    the running event loop). ``connections``: the pool's size, the account's requests in
    flight (its gate lets no more go at once, so no request waits for the pool)."""

    def __init__(self, *, connections: int = 10) -> None:
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.connections, ttl_dns_cache=300, keepalive_timeout=KEEPALIVE
                ),
                # httpx's headers are sent as they are: no defaults of aiohttp's added but
                # what HTTP/1.1 needs (Host, Content-Length).
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        session = self._session_now()
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=None,
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
                compress=None,
                auto_decompress=False,
            ) as answer:
                content = await answer.read()
                headers = [
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.raw_headers
                ]
                status = answer.status
                reason = answer.reason
        except aiohttp.ServerTimeoutError as exc:  # (before the generic ClientError)
            kind: Any = (
                httpx.ConnectTimeout
                if isinstance(exc, aiohttp.ConnectionTimeoutError)
                else httpx.ReadTimeout
            )
            raise kind(str(exc) or "timed out", request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout("timed out", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ClientPayloadError as exc:
            raise httpx.RemoteProtocolError(_incomplete(exc), request=request) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise httpx.RemoteProtocolError(
                "server disconnected without sending a response", request=request
            ) from exc
        except aiohttp.ClientOSError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(str(exc), request=request) from exc
        return httpx.Response(
            status,
            headers=headers,
            content=content,
            request=request,
            extensions={"reason_phrase": (reason or "").encode("latin-1", "replace")},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
