"""The Provider interface and the models every provider speaks.

A provider keeps its own state names (``state``: Qovery ``STOP_QUEUED``, Nova
``ACTIVE/powering-off``, Feldera ``Stopping`` ...) and maps them to a small common
:class:`Phase`, so the bot can reason about any of them the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from providers.pacing import RequestLimits

__all__ = [
    "DiscoveredResource",
    "Phase",
    "Provider",
    "ProviderConfigBase",
    "ProviderLock",
    "Resource",
    "ResourceStatus",
    "StatusAndLock",
    "StopAccepted",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """The one clock of the providers package (time-machine moves it in tests)."""
    return dt.datetime.now(dt.UTC)


class Phase(StrEnum):
    """The common life phases every provider state maps to."""

    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    UNKNOWN = "unknown"


class Resource(BaseModel):
    """One thing the bot can stop, as the configuration names it.

    ``options`` carries what a provider needs beyond the id (the ~okeanos
    ``lambda_instance_id``, say).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    provider: str
    id: str
    options: Mapping[str, str] = Field(default_factory=dict)
    tags: Mapping[str, str] = Field(default_factory=dict)


class ResourceStatus(BaseModel):
    """A resource's status as the provider reported it."""

    provider: str
    resource_id: str
    state: str = Field(description="The provider's own state name, shown to users as is.")
    phase: Phase
    terminal: bool = Field(description="True when the provider will not move on by itself.")
    message: str | None = Field(default=None, description="The provider's error, if any.")
    observed_at: dt.datetime = Field(default_factory=utcnow)


class ProviderLock(BaseModel):
    """A lock the provider itself holds on a resource (Qovery ``cluster_lock``, Nova ``locked``)."""

    owner: str | None = None
    reason: str | None = None
    locked_at: dt.datetime | None = None
    ttl: dt.timedelta | None = Field(default=None, description="None: never expires by time.")

    @property
    def expires_at(self) -> dt.datetime | None:
        if self.locked_at is None or self.ttl is None:
            return None
        return self.locked_at + self.ttl

    def is_expired(self, now: dt.datetime | None = None) -> bool:
        expires = self.expires_at
        return expires is not None and expires <= (now or utcnow())


class StopAccepted(BaseModel):
    """The provider took the stop request (HTTP 202); the stop goes on on its side."""

    provider: str
    resource_id: str
    status: ResourceStatus | None = Field(
        default=None, description="The status the provider answered with, when it sends one."
    )
    message: str | None = None


class DiscoveredResource(BaseModel):
    """A resource found by :meth:`Provider.list`, for discovery and config help."""

    provider: str
    id: str
    name: str
    state: str
    phase: Phase
    options: dict[str, str] = Field(default_factory=dict)


# A status read and a lock read, each its answer or the exception it raised.
StatusAndLock = tuple[ResourceStatus | BaseException, ProviderLock | BaseException | None]


class Provider(ABC):
    """One provider account: the API calls the bot makes, and nothing else.

    Errors are raised as the tree in :mod:`providers.errors`.
    """

    type: ClassVar[str]
    supports_force: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def stop(self, resource: Resource, *, force: bool = False) -> StopAccepted:
        """Ask the provider to stop ``resource``.

        Raises :class:`~providers.errors.AlreadyStoppedError` when it is stopped already.
        """

    @abstractmethod
    async def status(self, resource: Resource) -> ResourceStatus:
        """The current status of one resource."""

    async def statuses(self, resources: Sequence[Resource]) -> dict[str, ResourceStatus]:
        """Statuses of many resources, keyed by resource id.

        Providers with a list endpoint override this so a polling round costs one
        call per account rather than one per resource. A resource whose status
        could not be read is left out of the result.
        """
        results = await asyncio.gather(*(self.status(r) for r in resources), return_exceptions=True)
        return {
            r.id: s
            for r, s in zip(resources, results, strict=True)
            if isinstance(s, ResourceStatus)
        }

    async def lock(self, resource: Resource) -> ProviderLock | None:
        """The provider-side lock on ``resource``, or None (the default: no such concept)."""
        return None

    async def status_and_lock(self, resource: Resource) -> StatusAndLock:
        """:meth:`status` and :meth:`lock` together, each an answer or the exception it
        raised. Both reads go out at once; providers whose one read carries both (Qovery's
        ClusterStatus, Nova's server) override this to make one call, not two."""
        status, lock = await asyncio.gather(
            self.status(resource), self.lock(resource), return_exceptions=True
        )
        return status, lock

    async def statuses_and_locks(self, resources: Sequence[Resource]) -> dict[str, StatusAndLock]:
        """Many resources' statuses and provider locks, keyed by resource id: what a
        scheduled run reads once, before its stops, instead of once a resource.

        The statuses come from :meth:`statuses` (one list call per account where the
        provider has one), each lock from :meth:`lock`, which calls nothing for a provider
        without locks. Providers whose list carries the locks too (Qovery's cluster status
        list, Nova's ``servers/detail``) override this with that one list. A resource the
        answer leaves out is left out here, for the caller to read on its own.
        """
        statuses = await self.statuses(resources)
        found = [r for r in resources if r.id in statuses]
        locks = await asyncio.gather(*(self.lock(r) for r in found), return_exceptions=True)
        return {r.id: (statuses[r.id], lock) for r, lock in zip(found, locks, strict=True)}

    @abstractmethod
    async def list(self) -> list[DiscoveredResource]:
        """Every resource of this account that could be stopped."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections."""


class ProviderConfigBase(BaseModel):
    """What every provider entry of ``stopbot.yaml`` has; each provider module extends it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    requests: RequestLimits = Field(
        default_factory=RequestLimits,
        description="What the provider allows this account: requests in flight, a second.",
    )
