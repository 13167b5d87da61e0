"""One fan-out over the providers: the statuses and provider locks of many resources,
read only, for every face and duty that shows them (a dry run, the lists and locks of
Slack and the terminal, a schedule's drift watch).

Each provider is read in bulk (:meth:`~providers.base.Provider.statuses_and_locks`, or
:meth:`~providers.base.Provider.statuses` for statuses alone: one call per account where
its API allows it), all providers at once, and none is waited for past a timeout: one slow
provider leaves its own resources unknown, not the others. A lock read that failed is kept
as its error, so that nobody is told "no lock" when the lock could not be read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from pydantic import Field

from providers.base import Provider, ProviderLock, Resource, ResourceStatus, StatusAndLock
from providers.errors import ProviderError, ProviderTimeoutError
from providers.lean import Lean

__all__ = ["READ_TIMEOUT", "Reading", "read", "read_locks", "statuses"]

log = logging.getLogger(__name__)

READ_TIMEOUT = 10.0
"""Seconds a provider's bulk read may take, its retries included."""


class Reading(Lean):
    """One resource as its provider showed it: its status and its provider lock, each
    known, or why not."""

    resource: Resource
    status: ResourceStatus | None = None
    status_error: str | None = Field(default=None, description="Why the status is unknown.")
    lock: ProviderLock | None = Field(default=None, description="None: none, if read.")
    lock_error: str | None = Field(
        default=None, description="Why the provider lock is unknown (its read failed)."
    )

    @classmethod
    def of(cls, resource: Resource, answer: StatusAndLock) -> Reading:
        status, lock = answer
        reading = cls(resource=resource)
        if isinstance(status, ResourceStatus):
            reading.status = status
        else:
            reading.status_error = str(status)
        if isinstance(lock, BaseException):
            reading.lock_error = str(lock)
        else:
            reading.lock = lock
        return reading


async def read(
    providers: Mapping[str, Provider],
    resources: Sequence[Resource],
    *,
    within: float = READ_TIMEOUT,
) -> dict[str, Reading]:
    """The status and provider lock of each of ``resources``, by resource name; each
    provider's read bounded to ``within`` seconds."""
    answers = await asyncio.gather(
        *(
            _read_one(providers[name], group, within)
            for name, group in _by_provider(resources).items()
        )
    )
    return {reading.resource.name: reading for answer in answers for reading in answer}


async def statuses(
    providers: Mapping[str, Provider],
    resources: Sequence[Resource],
    *,
    within: float = READ_TIMEOUT,
) -> dict[str, ResourceStatus]:
    """The status of each of ``resources`` that could be read, by resource name (statuses
    alone: cheaper than :func:`read` where the locks cost reads of their own). A provider
    that failed, or took longer than ``within``, leaves its resources out, and is logged."""
    answers = await asyncio.gather(
        *(
            _statuses_one(providers[name], group, within)
            for name, group in _by_provider(resources).items()
        )
    )
    return {name: status for answer in answers for name, status in answer.items()}


def _by_provider(resources: Sequence[Resource]) -> dict[str, list[Resource]]:
    groups: dict[str, list[Resource]] = {}
    for r in resources:
        groups.setdefault(r.provider, []).append(r)
    return groups


async def _statuses_one(
    provider: Provider, resources: Sequence[Resource], within: float
) -> dict[str, ResourceStatus]:
    try:
        found = await asyncio.wait_for(provider.statuses(resources), within)
    except (ProviderError, TimeoutError) as exc:
        error = str(exc) or f"waited {within:g} s"
        log.warning("status read failed", extra={"provider": provider.name, "error": error})
        return {}
    return {r.name: found[r.id] for r in resources if r.id in found}


async def read_locks(
    providers: Mapping[str, Provider],
    resources: Sequence[Resource],
    *,
    within: float = READ_TIMEOUT,
) -> dict[str, Reading]:
    """As :func:`read`, for the resources of providers that hold locks of their own."""
    held = [r for r in resources if providers[r.provider].has_locks]
    return await read(providers, held, within=within)


async def _read_one(
    provider: Provider,
    resources: Sequence[Resource],
    within: float,
) -> list[Reading]:
    try:
        answers = await asyncio.wait_for(provider.statuses_and_locks(resources), within)
    except TimeoutError:
        failed: BaseException = ProviderTimeoutError(provider.name, f"waited {within:g} s")
        # A provider with no locks of its own has none, answered or not.
        lock: BaseException | None = failed if provider.has_locks else None
        return [Reading.of(r, (failed, lock)) for r in resources]
    return [Reading.of(r, answers[r.id]) for r in resources]
