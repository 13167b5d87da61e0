"""The HTTP layer every provider client shares: timeouts, safe retries, error mapping.

Retries are made only where a repeat cannot stop anything twice:

* connection errors (the request never reached the provider),
* 429 and 503 answers (the provider said it did not act), waiting for ``Retry-After``,
  unless the call takes them as answers (``no_retry``: Feldera's 503 to a stop means
  "cannot be done now", not "busy"),
* read timeouts, dropped connections, 408, 502 and 504 (a gateway's or a proxy's hiccup),
  for idempotent methods (GET) only. A 500 is the provider's own failure and is answered at
  once: asking again rarely helps, and Feldera's API says to return the error immediately.

A request that changes something whose answer is lost (a read timeout, a connection dropped
after it left) raises :class:`~providers.errors.AnswerLostError`: the provider may have
acted, and only reading its state says whether. Within :func:`sending_until`, such a request
leaves only while its sender's time to send it lasts (checked once it has its place in the
account's requests, right before it leaves), else :class:`~providers.errors.NotSentError`.

stamina does the back-off; ``stamina.set_testing(True)`` makes it instant in tests.

Observers registered with :func:`add_call_observer` see every attempt (provider, method,
endpoint, outcome, seconds): that is how the bot measures provider latency without this
package knowing anything about metrics.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pydantic_core
import stamina
from pydantic import BaseModel, Field

from providers.errors import (
    AuthError,
    ConflictError,
    DroppedError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    NotSentError,
    ProviderError,
    ProviderTimeoutError,
    UnavailableError,
    UnsupportedError,
)
from providers.pacing import RequestGate
from providers.transport import AiohttpTransport

T = TypeVar("T")

__all__ = [
    "ApiClient",
    "CallObserver",
    "ErrorDetails",
    "HttpSettings",
    "Retryable",
    "add_call_observer",
    "endpoint_of",
    "json_of",
    "parse_retry_after",
    "retried",
    "sending_until",
]

log = logging.getLogger(__name__)

USER_AGENT = "stopbot/0.1 (+https://github.com/stopbot)"
RETRYABLE_STATUSES = frozenset({429, 503})
TRANSIENT_STATUSES = frozenset({408, 502, 504})  # retried for idempotent methods only
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class HttpSettings(BaseModel):
    """Timeouts and retry bounds for provider calls (config key ``http``)."""

    timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for an answer.")
    connect_timeout: float = Field(default=5.0, gt=0)
    attempts: int = Field(default=4, ge=1, le=10, description="Tries per call, first included.")
    retry_budget: float = Field(default=30.0, gt=0, description="Seconds all tries may take.")
    wait_initial: float = Field(default=0.5, ge=0)
    wait_max: float = Field(default=10.0, ge=0)
    max_retry_after: float = Field(
        default=60.0, ge=0, description="A longer Retry-After is not waited for: we give up."
    )


class ErrorDetails(BaseModel):
    """What a provider said in an error body."""

    message: str
    code: str | None = None


ErrorParser = Callable[[httpx.Response], ErrorDetails]

CallObserver = Callable[[str, str, str, str, float], None]
"""Called after each attempt with (provider, method, endpoint, outcome, seconds).

``endpoint`` is the path with ids replaced by ``{id}`` (see :func:`endpoint_of`);
``outcome`` is the HTTP status as text, or ``timeout``, ``connect_error``, ``dropped``
or ``error`` when no status came back.
"""

_observers: list[CallObserver] = []
# A path segment that names one object rather than a collection: anything with a digit
# (uuids, numeric ids, "<uuid>-<epoch>" execution ids), but not API versions like v2.1.
_ID_SEGMENT = re.compile(r"^(?!v\d+(\.\d+)*$).*\d")


def add_call_observer(observer: CallObserver) -> Callable[[], None]:
    """Have ``observer`` told of every provider call attempt; returns its removal."""
    _observers.append(observer)

    def remove() -> None:
        if observer in _observers:
            _observers.remove(observer)

    return remove


def endpoint_of(path: str) -> str:
    """``/organization/8d2c…/cluster/0b9e…/stop`` → ``/organization/{id}/cluster/{id}/stop``,
    so latency can be grouped by endpoint without one series per resource."""
    path = urlsplit(path).path  # absolute URLs too (Nova's come from the service catalog)
    return "/".join("{id}" if _ID_SEGMENT.match(part) else part for part in path.split("/"))


def _notify(provider: str, method: str, url: str, outcome: str, seconds: float) -> None:
    for observer in list(_observers):
        try:
            observer(provider, method, endpoint_of(url), outcome, seconds)
        except Exception:  # a broken observer must never break a provider call
            log.exception("provider call observer failed")


_send_allowed: ContextVar[Callable[[], bool] | None] = ContextVar(
    "provider_send_allowed", default=None
)


@contextmanager
def sending_until(allowed: Callable[[], bool]) -> Iterator[None]:
    """Requests that change something, made within, leave only while ``allowed()`` says
    so: a sender that won the right to send a stop has a bounded time to send it, after
    which another process may judge it lost and send it again. A process held up past
    that time (paused, starved, waiting for its place) must then not send it at all."""
    token = _send_allowed.set(allowed)
    try:
        yield
    finally:
        _send_allowed.reset(token)


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


def json_of(response: httpx.Response) -> Any:
    """The JSON body of ``response`` (UTF-8, as every provider API sends it), parsed by
    pydantic-core's parser: twice as fast as the standard library's on the lists a polling
    round reads (a few MB of Nova servers a round on a night of 10,000 stops). ValueError
    when it is not JSON."""
    return pydantic_core.from_json(response.content)


def default_error_parser(response: httpx.Response) -> ErrorDetails:
    text = response.text.strip()
    return ErrorDetails(message=text[:500] or response.reason_phrase or "no details")


class Retryable(Exception):
    """A try that may be retried; carries the error to raise if tries run out."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


async def retried(
    send: Callable[[], Awaitable[T]], settings: HttpSettings, *, on: type[Retryable]
) -> T:
    """``send()``, tried again on an ``on`` failure as ``settings`` allow (back-off,
    ``Retry-After`` up to ``max_retry_after``, attempts, a time budget); once tries run
    out, the failure's error is raised.

    The first try goes without a retry context: stamina's (a tenacity AsyncRetrying, its
    state, a Future, a Condition...) is a reference cycle of ~50 objects a call, which
    only a full garbage collection frees, with the answer of each try: at 10,000 stops,
    260 calls a second and their pages of servers or clusters. A failure that may be
    retried is handed to a retry context as its first attempt, so the back-off,
    Retry-After and attempts are stamina's as before.
    """

    def backoff(exc: Exception) -> bool | float:
        if not isinstance(exc, on):
            return False
        retry_after = exc.error.retry_after
        if retry_after is None:
            return True
        return retry_after if retry_after <= settings.max_retry_after else False

    try:
        return await send()
    except on as exc:
        if settings.attempts <= 1 or backoff(exc) is False:
            raise exc.error from None
        first: Retryable | None = exc
    try:
        async for attempt in stamina.retry_context(
            on=backoff,
            attempts=settings.attempts,
            timeout=settings.retry_budget,
            wait_initial=settings.wait_initial,
            wait_max=settings.wait_max,
        ):
            with attempt:
                if first is not None:
                    failed, first = first, None
                    raise failed
                return await send()
    except on as exc:
        raise exc.error from None
    raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover


class _Retryable(Retryable):
    """Internal: a response that may be retried."""


class ApiClient:
    """An ``httpx.AsyncClient`` that speaks one provider's error dialect.

    :param provider: the provider's configured name, used in every error message.
    :param parse_error: turns an error response into the provider's own message and code.
    :param gate: the account's request limits, shared by every call of this client.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        settings: HttpSettings | None = None,
        headers: Mapping[str, str] | None = None,
        parse_error: ErrorParser = default_error_parser,
        transport: httpx.AsyncBaseTransport | None = None,
        gate: RequestGate | None = None,
    ) -> None:
        self.provider = provider
        self.settings = settings or HttpSettings()
        self.gate = gate or RequestGate()
        self.parse_error = parse_error
        timeout = httpx.Timeout(self.settings.timeout, connect=self.settings.connect_timeout)
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
            timeout=timeout,
            # The gate decides how many requests are in flight: the pool keeps them all.
            limits=httpx.Limits(
                max_connections=None,
                max_keepalive_connections=self.gate.limits.max_in_flight,
            ),
            transport=transport or AiohttpTransport(connections=self.gate.limits.max_in_flight),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[None, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        no_retry: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Send one request, with retries where safe; return the response if its status is in
        ``ok``, raise the matching :class:`ProviderError` otherwise (at once for a status
        in ``no_retry``). ``files`` sends a multipart form (``(None, value)``: a plain
        field)."""
        idempotent = method.upper() in IDEMPOTENT_METHODS

        async def send() -> httpx.Response:
            return await self._send_once(
                method,
                url,
                params=params,
                json=json,
                data=data,
                files=files,
                headers=headers,
                ok=ok,
                idempotent=idempotent,
                no_retry=no_retry,
            )

        return await retried(send, self.settings, on=_Retryable)

    async def _send_once(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        data: Mapping[str, str] | None,
        files: Mapping[str, tuple[None, str]] | None,
        headers: Mapping[str, str] | None,
        ok: tuple[int, ...],
        idempotent: bool,
        no_retry: frozenset[int],
    ) -> httpx.Response:
        async with self.gate.slot():
            allowed = None if idempotent else _send_allowed.get()
            if allowed is not None and not allowed():
                raise NotSentError(
                    self.provider,
                    f"{method.upper()} {endpoint_of(url)} held back: its time to be sent ran out",
                )
            started = time.perf_counter()
            outcome: str | None = None  # stays None when cancelled: no answer, and no failure
            try:
                response = await self.http.request(
                    method, url, params=params, json=json, data=data, files=files, headers=headers
                )
                # httpx binds the response's stream to the response, a reference cycle:
                # the answer (a polling round's list: megabytes) would wait for a full
                # garbage collection. Its body is read already; its stream is that body.
                response.stream = httpx.ByteStream(response.content)
                outcome = str(response.status_code)
            except httpx.ConnectError as exc:
                outcome = "connect_error"
                raise _Retryable(self._unavailable(f"cannot connect: {exc}")) from exc
            except httpx.ConnectTimeout as exc:  # the request never left either
                outcome = "timeout"
                raise _Retryable(
                    self._unavailable("cannot connect: connecting took too long")
                ) from exc
            except httpx.TimeoutException as exc:
                outcome = "timeout"
                error: ProviderError = ProviderTimeoutError(
                    self.provider, f"no answer within {self.settings.timeout:g}s"
                )
                if idempotent:
                    raise _Retryable(error) from exc
                raise error from exc
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                outcome = "dropped"
                if idempotent:
                    raise _Retryable(
                        self._unavailable(f"the connection was dropped: {exc}")
                    ) from exc
                # The request may have reached the provider and been acted on: whoever
                # sent it reads the provider's state to know.
                raise DroppedError(self.provider, str(exc)) from exc
            except httpx.HTTPError as exc:
                outcome = "error"
                raise self._unavailable(str(exc)) from exc
            finally:
                if outcome is not None and _observers:
                    _notify(
                        self.provider, method.upper(), url, outcome, time.perf_counter() - started
                    )
            if response.status_code == 429:
                self.gate.slow_down(parse_retry_after(response.headers.get("Retry-After")))
            else:
                self.gate.answered()
        if response.status_code in ok:
            return response
        error = self.error_for(response)
        status = response.status_code
        if status not in no_retry and (
            status in RETRYABLE_STATUSES or (idempotent and status in TRANSIENT_STATUSES)
        ):
            raise _Retryable(error)
        raise error

    def _unavailable(self, message: str) -> UnavailableError:
        return UnavailableError(self.provider, message)

    def error_for(self, response: httpx.Response) -> ProviderError:
        """The exception for an error response, with the provider's own message."""
        try:
            details = self.parse_error(response)
        except Exception:  # a malformed error body must not hide the error itself
            details = default_error_parser(response)
        status = response.status_code
        kind: type[ProviderError]
        if status == 401:
            kind = AuthError
        elif status == 403:
            kind = ForbiddenError
        elif status == 404:
            kind = NotFoundError
        elif status == 409:
            kind = ConflictError
        elif status == 501:
            kind = UnsupportedError
        elif status == 429 or status >= 500:
            kind = UnavailableError
        else:
            kind = InvalidRequestError
        return kind(
            self.provider,
            details.message,
            status_code=status,
            code=details.code,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
