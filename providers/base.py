"""The Provider interface and the models every provider speaks.

A provider keeps its own state names (``state``: Qovery ``STOP_QUEUED``, Nova
``ACTIVE/powering-off``, Feldera ``Stopping`` ...) and maps them to a small common
:class:`Phase`, so the bot can reason about any of them the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from providers.errors import ProviderError
from providers.lean import Lean
from providers.pacing import RequestGate, RequestLimits

__all__ = [
    "CostRange",
    "DiscoverFilter",
    "DiscoveredResource",
    "GracefulStop",
    "Phase",
    "Provider",
    "ProviderConfigBase",
    "ProviderLock",
    "Resource",
    "ResourceStatus",
    "StatusAndLock",
    "StopAccepted",
    "UsageSignal",
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


class Resource(Lean):
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


class ResourceStatus(Lean):
    """A resource's status as the provider reported it."""

    provider: str
    resource_id: str
    state: str = Field(description="The provider's own state name, shown to users as is.")
    phase: Phase
    terminal: bool = Field(description="True when the provider will not move on by itself.")
    message: str | None = Field(default=None, description="The provider's error, if any.")
    observed_at: dt.datetime = Field(default_factory=utcnow)


class ProviderLock(Lean):
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


class StopAccepted(Lean):
    """The provider took the stop (or start) request (HTTP 202); the action goes on on its
    side."""

    provider: str
    resource_id: str
    status: ResourceStatus | None = Field(
        default=None, description="The status the provider answered with, when it sends one."
    )
    message: str | None = None


class CostRange(Lean):
    """What a provider says a resource costs while it runs: a range (Qovery's cluster cost
    is one; a single figure is a range of one), in ``currency``, for ``hours`` of running."""

    low: float = Field(ge=0)
    high: float = Field(ge=0)
    currency: str
    hours: float = Field(gt=0, description="The period the figures are for, in hours.")
    source: str = Field(description="Where the figures come from, for the reader.")

    @property
    def per_hour(self) -> tuple[float, float]:
        return self.low / self.hours, self.high / self.hours


class DiscoveredResource(BaseModel):
    """A resource found by :meth:`Provider.list`, for discovery and config help."""

    provider: str
    id: str
    name: str
    state: str
    phase: Phase
    options: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="The provider's own tags and metadata, as key -> value (a tag that is "
        "one word is read as word -> 'true').",
    )


class UsageSignal(BaseModel):
    """A sign that someone uses a resource now, as the provider's API shows it: a fact, not
    a verdict (how recent a deployment must be to count is the bot's rule).

    ``kind`` is ``deployed`` (``at`` the last deployment, ``by`` who, where the API says)
    or ``ingesting`` (``detail`` what moved, in the provider's words)."""

    model_config = ConfigDict(frozen=True)

    kind: str
    at: dt.datetime | None = None
    by: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class GracefulStop:
    """Whether an account's gentle stop exists: ``available`` None when it could not be told
    (the read failed), with ``why`` in the provider's words (an edition, an error)."""

    available: bool | None
    why: str | None = None


# A status read and a lock read, each its answer or the exception it raised.
StatusAndLock = tuple[ResourceStatus | BaseException, ProviderLock | BaseException | None]


class Provider(ABC):
    """One provider account: the API calls the bot makes, and nothing else.

    Errors are raised as the tree in :mod:`providers.errors`.
    """

    type: ClassVar[str]
    supports_force: ClassVar[bool] = False
    has_locks: ClassVar[bool] = False
    """Whether the provider holds locks of its own (:meth:`lock` is more than None)."""
    gate: RequestGate | None = None
    """The account's request limits, shared by every call to it (if it has any)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def stop(self, resource: Resource, *, force: bool = False) -> StopAccepted:
        """Ask the provider to stop ``resource``.

        Raises :class:`~providers.errors.AlreadyStoppedError` when it is stopped already.
        """

    @abstractmethod
    async def start(self, resource: Resource) -> StopAccepted:
        """Ask the provider to start ``resource`` again (a wake): the same error tree as
        :meth:`stop`, the same statuses and phases followed the other way, to running.

        Raises :class:`~providers.errors.AlreadyRunningError` when it runs already, and
        :class:`~providers.errors.LockedError` when the provider's lock refuses it.
        """

    def crowded(self, within: float) -> bool:
        """Whether a request to this account found every one of its slots taken in the last
        ``within`` seconds (:meth:`RequestGate.crowded`): then what can wait, waits."""
        return self.gate is not None and self.gate.crowded(within)

    def is_up(self, status: ResourceStatus) -> bool:
        """Whether a start is over: the resource runs and the provider will not move it on
        by itself. Providers whose running state is never terminal (~okeanos's ``started``
        flag) say so here."""
        return status.phase is Phase.RUNNING and status.terminal

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

    async def graceful_stop(self) -> GracefulStop:
        """Whether this account can stop gently (``stop(force=False)``), for providers that
        know a forced stop too: a preview offers the stop that works. The default: it can."""
        return GracefulStop(available=True)

    async def status_and_lock(self, resource: Resource) -> StatusAndLock:
        """:meth:`status` and :meth:`lock` together, each an answer or the exception it
        raised. Both reads go out at once; providers whose one read carries both (Qovery's
        ClusterStatus, Nova's server) override this to make one call, not two."""
        status, lock = await asyncio.gather(
            self.status(resource), self.lock(resource), return_exceptions=True
        )
        return status, lock

    async def statuses_and_locks(self, resources: Sequence[Resource]) -> dict[str, StatusAndLock]:
        """:meth:`status_and_lock` of many resources, keyed by resource id, every one of
        them there: reads only, in bulk where the provider allows it.

        Here the statuses come from :meth:`statuses` and the locks from :meth:`lock`, one
        by one; a resource the bulk read left out is read on its own, so that its failure
        says why. Providers whose bulk read carries the locks (Qovery's cluster statuses,
        Nova's server list) override this to make one call for all.
        """

        async def bulk() -> dict[str, ResourceStatus | BaseException]:
            try:
                return dict(await self.statuses(resources))
            except ProviderError as exc:
                return {r.id: exc for r in resources}

        found, locks = await asyncio.gather(
            bulk(), asyncio.gather(*(self.lock(r) for r in resources), return_exceptions=True)
        )
        left_out = [r for r in resources if r.id not in found]
        alone = await asyncio.gather(*(self.status(r) for r in left_out), return_exceptions=True)
        found.update({r.id: s for r, s in zip(left_out, alone, strict=True)})
        return {r.id: (found[r.id], lock) for r, lock in zip(resources, locks, strict=True)}

    async def _each_alone(self, resources: Sequence[Resource]) -> dict[str, StatusAndLock]:
        """:meth:`status_and_lock` of each of ``resources``, all at once: for those a bulk
        read left out, so that each one's own read says why."""
        reads = await asyncio.gather(*(self.status_and_lock(r) for r in resources))
        return {r.id: read for r, read in zip(resources, reads, strict=True)}

    async def cost(self, resource: Resource) -> CostRange | None:
        """What ``resource`` costs while it runs, where the provider's API tells (the
        default: it does not)."""
        return None

    async def usage(
        self, resource: Resource, *, sleep: Callable[[float], Awaitable[None]] | None = None
    ) -> list[UsageSignal]:
        """Signs of live use of ``resource`` where the provider's API has them (Qovery's
        last deployment, Feldera's input moving); the default: none. ``sleep`` is how to
        wait between two reads that tell something moving (the caller's clock; by
        default, asyncio's)."""
        return []

    async def usages(
        self,
        resources: Sequence[Resource],
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> dict[str, list[UsageSignal] | BaseException]:
        """:meth:`usage` of many resources, keyed by resource id, each its signs or the
        exception its read raised: all at once here; providers whose one list call
        carries the signs (Qovery's cluster statuses) override this to make one call."""
        found = await asyncio.gather(
            *(self.usage(r, sleep=sleep) for r in resources), return_exceptions=True
        )
        return {r.id: answer for r, answer in zip(resources, found, strict=True)}

    @abstractmethod
    async def list(self) -> list[DiscoveredResource]:
        """Every resource of this account that could be stopped."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release connections."""


class DiscoverFilter(BaseModel):
    """Which of an account's resources discovery keeps: all of these must hold."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, description="A glob over the provider's own name, e.g. 'dev-*'."
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Provider-side tags every resource must carry."
    )

    def keeps(self, found: DiscoveredResource) -> bool:
        if self.name is not None and not fnmatch.fnmatchcase(found.name, self.name):
            return False
        return all(found.tags.get(k) == v for k, v in self.tags.items())


class ProviderConfigBase(BaseModel):
    """What every provider entry of ``stopbot.yaml`` has; each provider module extends it."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="Which provider: each provider's model narrows it to its tag.")
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    requests: RequestLimits = Field(
        default_factory=RequestLimits,
        description="What the provider allows this account: requests in flight, a second.",
    )
    discover: bool | DiscoverFilter = Field(
        default=False,
        description="List this account's resources periodically so that schedules can "
        "select them by provider, tags and name: true for all, or a filter.",
    )

    def discover_filter(self) -> DiscoverFilter | None:
        """What discovery keeps of this account, or None when it is not discovered."""
        if self.discover is False:
            return None
        return self.discover if isinstance(self.discover, DiscoverFilter) else DiscoverFilter()
