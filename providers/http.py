"""The HTTP layer every provider client shares: timeouts, safe retries, error mapping.

Retries are made only where a repeat cannot stop anything twice:

* connection errors (the request never reached the provider),
* 429 and 503 answers (the provider said it did not act), waiting for ``Retry-After``,
* read timeouts, and other 5xx, for idempotent methods (GET) only.

stamina does the back-off; ``stamina.set_testing(True)`` makes it instant in tests.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import stamina
from pydantic import BaseModel, Field

from providers.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    ProviderError,
    ProviderTimeoutError,
    UnavailableError,
    UnsupportedError,
)

__all__ = ["ApiClient", "ErrorDetails", "HttpSettings", "parse_retry_after"]

USER_AGENT = "stopbot/0.1 (+https://github.com/stopbot)"
RETRYABLE_STATUSES = frozenset({429, 503})
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


def default_error_parser(response: httpx.Response) -> ErrorDetails:
    text = response.text.strip()
    return ErrorDetails(message=text[:500] or response.reason_phrase or "no details")


class _Retryable(Exception):
    """Internal: a response that may be retried; carries the error if tries run out."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


class ApiClient:
    """An ``httpx.AsyncClient`` that speaks one provider's error dialect.

    :param provider: the provider's configured name, used in every error message.
    :param parse_error: turns an error response into the provider's own message and code.
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
    ) -> None:
        self.provider = provider
        self.settings = settings or HttpSettings()
        self.parse_error = parse_error
        timeout = httpx.Timeout(self.settings.timeout, connect=self.settings.connect_timeout)
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
            timeout=timeout,
            transport=transport,
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
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """Send one request, with retries where safe; return the response if its status is in
        ``ok``, raise the matching :class:`ProviderError` otherwise."""
        idempotent = method.upper() in IDEMPOTENT_METHODS

        def backoff(exc: Exception) -> bool | float:
            if not isinstance(exc, _Retryable):
                return False
            retry_after = exc.error.retry_after
            if retry_after is None:
                return True
            return retry_after if retry_after <= self.settings.max_retry_after else False

        try:
            async for attempt in stamina.retry_context(
                on=backoff,
                attempts=self.settings.attempts,
                timeout=self.settings.retry_budget,
                wait_initial=self.settings.wait_initial,
                wait_max=self.settings.wait_max,
            ):
                with attempt:
                    return await self._send_once(
                        method,
                        url,
                        params=params,
                        json=json,
                        data=data,
                        headers=headers,
                        ok=ok,
                        idempotent=idempotent,
                    )
        except _Retryable as exc:
            raise exc.error from None
        raise AssertionError("unreachable: stamina either returns or raises")  # pragma: no cover

    async def _send_once(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        data: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        ok: tuple[int, ...],
        idempotent: bool,
    ) -> httpx.Response:
        try:
            response = await self.http.request(
                method, url, params=params, json=json, data=data, headers=headers
            )
        except httpx.ConnectError as exc:
            raise _Retryable(self._unavailable(f"cannot connect: {exc}")) from exc
        except httpx.ConnectTimeout as exc:
            raise _Retryable(
                ProviderTimeoutError(self.provider, "connecting took too long")
            ) from exc
        except httpx.TimeoutException as exc:
            error: ProviderError = ProviderTimeoutError(
                self.provider, f"no answer within {self.settings.timeout:g}s"
            )
            if idempotent:
                raise _Retryable(error) from exc
            raise error from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            error = self._unavailable(f"the connection was dropped: {exc}")
            if idempotent:
                raise _Retryable(error) from exc
            raise error from exc
        except httpx.HTTPError as exc:
            raise self._unavailable(str(exc)) from exc
        if response.status_code in ok:
            return response
        error = self.error_for(response)
        if response.status_code in RETRYABLE_STATUSES or (
            idempotent and response.status_code >= 500
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
