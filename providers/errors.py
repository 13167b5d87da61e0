"""Every failure a provider call can end in, as one small tree.

    ProviderError                 any failure talking to a provider; carries its own message
    ├── AuthError                 401: credentials missing, wrong or expired
    ├── ForbiddenError            403: authenticated, but not allowed
    ├── NotFoundError             404: unknown resource (or not deployed where we said)
    ├── ConflictError             409 and kin: the resource cannot take this action now
    │   ├── AlreadyStoppedError   ... because it is already stopped (not an error for the bot)
    │   ├── AlreadyRunningError   ... a start, because it runs already (nor is this)
    │   └── LockedError           ... because the provider holds a lock on it
    ├── InvalidRequestError       400, 405, 422 and other 4xx: the request itself is wrong
    │   └── UnsupportedError      501: the provider's edition cannot do this (Feldera OSS)
    ├── UnavailableError          429, 5xx, connection refused: try again later
    ├── NotSentError              never sent: its sender's time to send it ran out first
    └── AnswerLostError           the request left but no answer came back: the provider
        │                         may or may not have acted (never sent again blindly)
        ├── ProviderTimeoutError  ... no answer within the configured timeout
        └── DroppedError          ... the connection dropped before the answer was read

The bot shows ``str(error)`` to users: it names the provider, what happened, and
the provider's own message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the models import this tree: only their type is needed here
    from providers.base import ProviderLock

__all__ = [
    "AlreadyRunningError",
    "AlreadyStoppedError",
    "AnswerLostError",
    "AuthError",
    "ConflictError",
    "DroppedError",
    "ForbiddenError",
    "InvalidRequestError",
    "LockedError",
    "NotFoundError",
    "NotSentError",
    "ProviderError",
    "ProviderTimeoutError",
    "UnavailableError",
    "UnsupportedError",
]


class ProviderError(Exception):
    """A provider call failed. ``message`` is the provider's own words when it gave any."""

    summary = "the provider call failed"

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.message = message
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{self.provider}: {self.what()}{status}: {self.message}"

    def what(self) -> str:
        """What happened, in words (the class's ``summary``; some say more by status)."""
        return self.summary


class AuthError(ProviderError):
    summary = "authentication failed, check the provider's credentials"


class ForbiddenError(ProviderError):
    summary = "the provider refused access"


class NotFoundError(ProviderError):
    summary = "not found"


class ConflictError(ProviderError):
    summary = "the resource cannot take this action right now"


class AlreadyStoppedError(ConflictError):
    summary = "already stopped"


class AlreadyRunningError(ConflictError):
    summary = "already running"


class LockedError(ConflictError):
    """The provider refused because it holds a lock; ``lock`` is that lock (whose, why)
    when the provider showed it."""

    summary = "locked on the provider side"

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        lock: ProviderLock | None = None,
    ) -> None:
        super().__init__(
            provider, message, status_code=status_code, code=code, retry_after=retry_after
        )
        self.lock = lock


class InvalidRequestError(ProviderError):
    summary = "the provider rejected the request"


class UnsupportedError(InvalidRequestError):
    summary = "not supported by this provider"


class UnavailableError(ProviderError):
    summary = "the provider is unavailable, try again later"

    def what(self) -> str:
        """A 429 is a limit, a 500 the provider's own failure: neither is "unavailable"."""
        if self.status_code == 429:
            return "the provider is limiting requests (too many at once), try again later"
        if self.status_code == 500:
            return "the provider failed on its side (internal error)"
        return self.summary


class NotSentError(ProviderError):
    """A request that changes something was held back: the moment it could leave came after
    the time its sender was given to send it (see :func:`providers.http.sending_until`).
    Nothing reached the provider."""

    summary = "not sent in time"


class AnswerLostError(ProviderError):
    """A request that changes something left, and its answer never came: whether the
    provider acted is unknown until its state is read."""

    summary = "the provider's answer was lost"


class ProviderTimeoutError(AnswerLostError):
    summary = "the provider did not answer in time"


class DroppedError(AnswerLostError):
    summary = "the connection to the provider dropped before its answer"
