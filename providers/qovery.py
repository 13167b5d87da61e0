"""Qovery clusters: stop a cluster, follow its status, read its lock.

API reference: the Qovery OpenAPI spec (``Clusters`` tag). The calls made here:

    POST /organization/{organizationId}/cluster/{clusterId}/stop     -> 202 ClusterStatus, 409
    POST /organization/{organizationId}/cluster/{clusterId}/deploy   -> 201 ClusterStatus, 400
                                                                     (a wake)
    GET  /organization/{organizationId}/cluster/{clusterId}/status   -> ClusterStatus
    GET  /organization/{organizationId}/cluster/status               -> ClusterStatusResponseList
    GET  /organization/{organizationId}/cluster                      -> ClusterResponseList

Authentication is the spec's ``ApiKeyAuth`` scheme: ``Authorization: Token <token>``
(API tokens have no TTL, unlike the console's Bearer JWTs).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from providers.base import (
    CostRange,
    DiscoveredResource,
    Phase,
    Provider,
    ProviderConfigBase,
    ProviderLock,
    Resource,
    ResourceStatus,
    StatusAndLock,
    StopAccepted,
    UsageSignal,
)
from providers.errors import (
    AlreadyRunningError,
    AlreadyStoppedError,
    ConflictError,
    InvalidRequestError,
    LockedError,
    ProviderError,
)
from providers.http import ApiClient, ErrorDetails, HttpSettings
from providers.pacing import RequestGate

__all__ = [
    "CLUSTER_STATES",
    "QoveryConfig",
    "QoveryProvider",
    "cluster_phase",
    "parse_qovery_error",
]

log = logging.getLogger(__name__)

# Every value of the spec's ClusterStateEnum: (phase, terminal). "terminal" follows the
# official Qovery CLI, which stops polling on DEPLOYED, DELETED, STOPPED, CANCELED, READY,
# RESTARTED, INVALID_CREDENTIALS and any *_ERROR.
CLUSTER_STATES: dict[str, tuple[Phase, bool]] = {
    # Deploying brings the cluster (back) up: it runs, or is about to.
    "QUEUED": (Phase.RUNNING, False),
    "BUILDING": (Phase.RUNNING, False),
    "DEPLOYMENT_QUEUED": (Phase.RUNNING, False),
    "DEPLOYING": (Phase.RUNNING, False),
    "DEPLOYED": (Phase.RUNNING, True),
    "READY": (Phase.RUNNING, True),
    "RESTART_QUEUED": (Phase.RUNNING, False),
    "RESTARTING": (Phase.RUNNING, False),
    "RESTARTED": (Phase.RUNNING, True),
    "STOP_QUEUED": (Phase.STOPPING, False),
    "STOPPING": (Phase.STOPPING, False),
    "STOPPED": (Phase.STOPPED, True),
    # Deleting takes the cluster down for good; a deleted cluster runs and costs nothing,
    # so for a bot whose job is to stop spending it is as good as stopped.
    "DELETE_QUEUED": (Phase.STOPPING, False),
    "DELETING": (Phase.STOPPING, False),
    "DELETED": (Phase.STOPPED, True),
    "BUILD_ERROR": (Phase.FAILED, True),
    "DEPLOYMENT_ERROR": (Phase.FAILED, True),
    "RESTART_ERROR": (Phase.FAILED, True),
    "STOP_ERROR": (Phase.FAILED, True),
    "DELETE_ERROR": (Phase.FAILED, True),
    # Qovery cannot reach the cloud account: nothing will move until a human fixes it.
    "INVALID_CREDENTIALS": (Phase.FAILED, True),
    # A cancelled operation leaves the cluster wherever it had got to: the state alone
    # does not say whether it runs.
    "CANCELING": (Phase.UNKNOWN, False),
    "CANCELED": (Phase.UNKNOWN, True),
    # A dry run changes nothing and tells nothing about whether the cluster runs; the CLI
    # keeps polling through it.
    "DRY_RUN": (Phase.UNKNOWN, False),
}


# States in which Qovery is busy with the cluster: another operation waits for its end.
BUSY = frozenset(state for state, (_, terminal) in CLUSTER_STATES.items() if not terminal)


def cluster_phase(state: str) -> tuple[Phase, bool]:
    """The common phase of a Qovery cluster state, and whether Qovery will move on by itself.

    A state added to the API after this table was written must not crash the bot: an
    unknown ``*_ERROR`` is a failure (the CLI stops on any of them), anything else unknown.
    """
    known = CLUSTER_STATES.get(state)
    if known is not None:
        return known
    if state.endswith("_ERROR"):
        return Phase.FAILED, True
    return Phase.UNKNOWN, False


class QoveryConfig(ProviderConfigBase):
    """A ``providers:`` entry of type ``qovery``: one organization, one API token."""

    type: Literal["qovery"] = "qovery"
    base_url: str = Field(default="https://api.qovery.com", pattern=r"^https?://")
    token: SecretStr
    organization_id: str = Field(min_length=1)


def parse_qovery_error(response: httpx.Response) -> ErrorDetails:
    """Qovery's own words from an error answer.

    The spec documents no error body (its ``responses`` only carry a description), so we
    take the first text field of a JSON object that usually holds it, then the raw text,
    then the reason phrase: a 401 may come with no body at all.
    """
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("code")
        for key in ("message", "detail", "error", "title"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return ErrorDetails(
                    message=value.strip(),
                    code=str(code) if code is not None else None,
                )
    text = response.text.strip()
    return ErrorDetails(
        message=text[:500] or response.reason_phrase or f"HTTP {response.status_code}"
    )


class _Model(BaseModel):
    # Qovery adds fields over time; we read the few we need and ignore the rest.
    model_config = ConfigDict(extra="ignore")


class _ClusterLock(_Model):
    owner_name: str | None = None
    reason: str | None = None
    locked_at: dt.datetime | None = None
    ttl_in_days: int | None = None

    @field_validator("locked_at")
    @classmethod
    def _utc_when_naive(cls, value: dt.datetime | None) -> dt.datetime | None:
        """A ``locked_at`` without an offset, as UTC: left naive, it could not be compared
        with the bot's clock when the lock's expiry is checked."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class _ClusterStatus(_Model):
    cluster_id: str
    # A plain string, not the enum: a state added later must still be read.
    status: str
    is_deployed: bool | None = None
    last_execution_id: str | None = None
    cluster_lock: _ClusterLock | None = None
    last_deployment_date: dt.datetime | None = None
    reason: str | None = None

    @field_validator("last_deployment_date")
    @classmethod
    def _utc_when_naive(cls, value: dt.datetime | None) -> dt.datetime | None:
        """As ``locked_at``: a date without an offset is UTC, so it compares with the clock."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class _ClusterStatusList(_Model):
    results: list[_ClusterStatus] = Field(default_factory=list)


class _Cluster(_Model):
    id: str
    name: str
    status: str | None = None
    region: str | None = None
    cloud_provider: str | None = None


class _ClusterList(_Model):
    results: list[_Cluster] = Field(default_factory=list)


class _CostRange(_Model):
    """The spec's ``CostRange``: the range in its own fields; ``total`` and
    ``total_in_cents``, which it marks required without defining them, read when there."""

    min_cost_in_cents: int | None = Field(default=None, ge=0)
    min_cost: float | None = Field(default=None, ge=0)
    max_cost_in_cents: int | None = Field(default=None, ge=0)
    max_cost: float | None = Field(default=None, ge=0)
    total_in_cents: int | None = Field(default=None, ge=0)
    total: float | None = Field(default=None, ge=0)
    currency_code: str = Field(min_length=1)

    @staticmethod
    def _amount(units: float | None, cents: int | None) -> float | None:
        if units is not None:
            return units
        return cents / 100 if cents is not None else None

    def bounds(self) -> tuple[float, float] | None:
        low = self._amount(self.min_cost, self.min_cost_in_cents)
        high = self._amount(self.max_cost, self.max_cost_in_cents)
        total = self._amount(self.total, self.total_in_cents)
        low = low if low is not None else total
        high = high if high is not None else total
        if low is None or high is None:
            return None
        return min(low, high), max(low, high)


HOURS_A_MONTH = 730.0
"""Qovery's cluster cost is a monthly figure (its console's "estimated monthly cost"; the
spec gives no period): 365 * 24 / 12 hours."""


_M = TypeVar("_M", bound=BaseModel)


def _parse(provider: str, model: type[_M], response: httpx.Response) -> _M:
    """A response body as ``model``; a body that is not what the spec says is a provider
    failure the bot can show, not a crash."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise ProviderError(
            provider,
            f"unexpected answer to {response.request.method} {response.request.url.path}: "
            f"{exc.error_count()} field error(s), first: {exc.errors()[0]['msg']}",
            status_code=response.status_code,
        ) from None


class QoveryProvider(Provider):
    """The clusters of one Qovery organization."""

    type = "qovery"
    has_locks = True

    def __init__(
        self,
        config: QoveryConfig,
        *,
        http: HttpSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        gate: RequestGate | None = None,
    ) -> None:
        super().__init__(config.name)
        self.config = config
        self._api = ApiClient(
            config.name,
            config.base_url,
            settings=http,
            headers={"Authorization": f"Token {config.token.get_secret_value()}"},
            parse_error=parse_qovery_error,
            transport=transport,
            gate=gate or RequestGate(config.requests),
        )
        self.gate = self._api.gate
        self._org_path = f"/organization/{quote(config.organization_id, safe='')}"

    def _cluster_path(self, cluster_id: str) -> str:
        return f"{self._org_path}/cluster/{quote(cluster_id, safe='')}"

    def _status(self, body: _ClusterStatus, resource_id: str | None = None) -> ResourceStatus:
        phase, terminal = cluster_phase(body.status)
        return ResourceStatus(
            provider=self.name,
            resource_id=resource_id or body.cluster_id,
            state=body.status,
            phase=phase,
            terminal=terminal,
            message=_status_message(body, phase),
        )

    async def stop(self, resource: Resource, *, force: bool = False) -> StopAccepted:
        """Ask Qovery to stop the cluster; 202 means the stop is queued on its side.

        A 202 whose body is not the ClusterStatus the spec promises is still a queued
        stop: it is accepted without a status, and the bot reads the status as it follows.
        A 409 is told apart by :meth:`_after_conflict`.
        """
        try:
            response = await self._api.request(
                "POST", f"{self._cluster_path(resource.id)}/stop", ok=(202,)
            )
        except ConflictError as conflict:
            outcome = await self._after_conflict(resource, conflict)
            if isinstance(outcome, StopAccepted):
                return outcome
            raise outcome from conflict
        try:
            body = _parse(self.name, _ClusterStatus, response)
        except ProviderError as unreadable:
            log.warning(
                "stop accepted (202) without a ClusterStatus",
                extra={"provider": self.name, "error": unreadable.message},
            )
            return StopAccepted(provider=self.name, resource_id=resource.id)
        return StopAccepted(
            provider=self.name,
            resource_id=resource.id,
            status=self._status(body, resource.id),
        )

    async def start(self, resource: Resource) -> StopAccepted:
        """Deploy the cluster again: the spec's ``deployCluster`` brings a stopped cluster
        back (201 with a ClusterStatus: DEPLOYMENT_QUEUED, DEPLOYING, DEPLOYED).

        The spec's refusal of it is a 400 (no 409 is documented); a refused deploy (an
        operation in progress, a lock), 400 or 409, is told apart by one status read, as
        for a stop.
        """
        try:
            response = await self._api.request(
                "POST", f"{self._cluster_path(resource.id)}/deploy", ok=(201, 202)
            )
        except (ConflictError, InvalidRequestError) as refused:
            if refused.status_code not in (400, 409):
                raise
            raise await self._after_start_conflict(resource, refused) from refused
        try:
            body = _parse(self.name, _ClusterStatus, response)
        except ProviderError as unreadable:
            log.warning(
                "deploy accepted without a ClusterStatus",
                extra={"provider": self.name, "error": unreadable.message},
            )
            return StopAccepted(provider=self.name, resource_id=resource.id)
        return StopAccepted(
            provider=self.name, resource_id=resource.id, status=self._status(body, resource.id)
        )

    async def _after_start_conflict(
        self, resource: Resource, conflict: ProviderError
    ) -> ProviderError:
        """A refused deploy: locked (an unexpired ``cluster_lock``), running already, or
        the 409 as it came (a status that cannot be read changes nothing)."""
        try:
            current = await self._read_status(resource.id)
        except ProviderError:
            return conflict
        phase, terminal = cluster_phase(current.status)
        message = conflict.message
        if current.status.lower() not in message.lower():
            message = f"{message} (cluster status: {current.status})"
        kwargs: dict[str, Any] = {"status_code": conflict.status_code, "code": conflict.code}
        lock = _lock(current.cluster_lock)
        if lock is not None and not lock.is_expired():
            if lock.owner and lock.owner.casefold() not in message.casefold():
                why = f": {lock.reason}" if lock.reason else ""
                message = f"{message} (locked by {lock.owner}{why})"
            return LockedError(self.name, message, lock=lock, **kwargs)
        if phase is Phase.RUNNING and terminal:
            return AlreadyRunningError(self.name, message, **kwargs)
        if not isinstance(conflict, ConflictError) and current.status not in BUSY:
            return conflict  # a 400 for the request itself, not for the cluster's state
        return ConflictError(self.name, message, **kwargs)

    async def _after_conflict(
        self, resource: Resource, conflict: ConflictError
    ) -> StopAccepted | ConflictError:
        """What a 409 on stop means, from the cluster's status read right after it.

        The spec gives one 409 for "already stopped or an operation is in progress":

        * a stop (or delete) already under way is accepted, so the bot follows it to its
          end rather than failing a stop that is happening;
        * stopped (or deleted) is :class:`AlreadyStoppedError`;
        * with an unexpired ``cluster_lock`` it is :class:`LockedError`, which names the
          lock's owner (a lock taken since the bot read it is reported with whose it is);
          a lock past its TTL no longer explains anything;
        * anything else, or a status that cannot be read, is the 409 as a ConflictError.
        """
        try:
            current = await self._read_status(resource.id)
        except ProviderError:
            # The status is only there to refine the 409; without it the 409 still stands.
            return conflict
        phase, terminal = cluster_phase(current.status)
        if phase is Phase.STOPPING:
            return StopAccepted(
                provider=self.name,
                resource_id=resource.id,
                status=self._status(current, resource.id),
                message=(
                    f"Qovery was already taking the cluster down (cluster status: "
                    f"{current.status}); following that."
                ),
            )
        lock = _lock(current.cluster_lock)
        message = conflict.message
        if current.status.lower() not in message.lower():
            # Qovery's 409 may not say why; the state it is in does.
            message = f"{message} (cluster status: {current.status})"
        kwargs: dict[str, Any] = {"status_code": conflict.status_code, "code": conflict.code}
        if phase is Phase.STOPPED and terminal:
            return AlreadyStoppedError(self.name, message, **kwargs)
        if lock is not None and not lock.is_expired():
            if lock.owner and lock.owner.casefold() not in message.casefold():
                why = f": {lock.reason}" if lock.reason else ""
                message = f"{message} (locked by {lock.owner}{why})"
            return LockedError(self.name, message, lock=lock, **kwargs)
        return ConflictError(self.name, message, **kwargs)

    async def _read_status(self, cluster_id: str) -> _ClusterStatus:
        response = await self._api.request("GET", f"{self._cluster_path(cluster_id)}/status")
        return _parse(self.name, _ClusterStatus, response)

    async def status(self, resource: Resource) -> ResourceStatus:
        return self._status(await self._read_status(resource.id), resource.id)

    async def statuses(self, resources: Sequence[Resource]) -> dict[str, ResourceStatus]:
        """One call for the whole organization, whatever the number of clusters asked."""
        if not resources:
            return {}
        response = await self._api.request("GET", f"{self._org_path}/cluster/status")
        by_id = {s.cluster_id: s for s in _parse(self.name, _ClusterStatusList, response).results}
        return {r.id: self._status(by_id[r.id], r.id) for r in resources if r.id in by_id}

    async def cost(self, resource: Resource) -> CostRange | None:
        """``GET /organization/{id}/cluster/{id}/currentCost``: the cluster's cost range
        (Qovery guarantees it stays under the top of it), a month of running; None when
        the answer carries no figure."""
        response = await self._api.request("GET", f"{self._cluster_path(resource.id)}/currentCost")
        body = _parse(self.name, _CostRange, response)
        bounds = body.bounds()
        if bounds is None:
            return None
        return CostRange(
            low=bounds[0],
            high=bounds[1],
            currency=body.currency_code.upper(),
            hours=HOURS_A_MONTH,
            source="Qovery currentCost, a monthly range",
        )

    async def usage(
        self, resource: Resource, *, sleep: Callable[[float], Awaitable[None]] | None = None
    ) -> list[UsageSignal]:
        """The cluster's ``last_deployment_date`` (ClusterStatus), when it has one. The
        spec's ClusterStatus does not say who deployed: ``by`` stays None."""
        return _deployed(await self._read_status(resource.id))

    async def usages(
        self,
        resources: Sequence[Resource],
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> dict[str, list[UsageSignal] | BaseException]:
        """One call for the whole organization (``ClusterStatusResponseList``: each
        ClusterStatus carries its ``last_deployment_date``); a cluster the list leaves out
        is read on its own."""
        if not resources:
            return {}
        try:
            response = await self._api.request("GET", f"{self._org_path}/cluster/status")
            listed = _parse(self.name, _ClusterStatusList, response).results
        except ProviderError as exc:
            return {r.id: exc for r in resources}
        by_id = {s.cluster_id: s for s in listed}
        found: dict[str, list[UsageSignal] | BaseException] = {
            r.id: _deployed(by_id[r.id]) for r in resources if r.id in by_id
        }
        return found | await super().usages([r for r in resources if r.id not in by_id])

    async def lock(self, resource: Resource) -> ProviderLock | None:
        """The ``cluster_lock`` the spec carries on ``ClusterStatus``. It lapses
        ``ttl_in_days`` after ``locked_at``; without ``ttl_in_days`` it never does."""
        return _lock((await self._read_status(resource.id)).cluster_lock)

    async def status_and_lock(self, resource: Resource) -> StatusAndLock:
        """Both from one ``GET .../status``: ClusterStatus carries the ``cluster_lock``."""
        try:
            body = await self._read_status(resource.id)
        except Exception as exc:  # handed to the caller, as the base class does
            return exc, exc
        return self._status(body, resource.id), _lock(body.cluster_lock)

    async def statuses_and_locks(self, resources: Sequence[Resource]) -> dict[str, StatusAndLock]:
        """One call for the whole organization: each ClusterStatus carries its
        ``cluster_lock``. A cluster the list leaves out is read on its own."""
        if not resources:
            return {}
        try:
            response = await self._api.request("GET", f"{self._org_path}/cluster/status")
            listed = _parse(self.name, _ClusterStatusList, response).results
        except ProviderError as exc:
            return {r.id: (exc, exc) for r in resources}
        by_id = {s.cluster_id: s for s in listed}
        found: dict[str, StatusAndLock] = {
            r.id: (self._status(by_id[r.id], r.id), _lock(by_id[r.id].cluster_lock))
            for r in resources
            if r.id in by_id
        }
        return found | await self._each_alone([r for r in resources if r.id not in by_id])

    async def list(self) -> list[DiscoveredResource]:
        """Every cluster of the organization.

        ``status`` is optional on the spec's ``Cluster``; only when some cluster lacks it
        do we spend a second call on the bulk status endpoint.
        """
        response = await self._api.request("GET", f"{self._org_path}/cluster")
        clusters = _parse(self.name, _ClusterList, response).results
        states = {c.id: c.status for c in clusters if c.status is not None}
        if len(states) < len(clusters):
            try:
                reply = await self._api.request("GET", f"{self._org_path}/cluster/status")
                for s in _parse(self.name, _ClusterStatusList, reply).results:
                    states.setdefault(s.cluster_id, s.status)
            except ProviderError:
                pass  # discovery still lists the clusters, their state shown as unknown
        found: list[DiscoveredResource] = []
        for cluster in clusters:
            state = states.get(cluster.id, "UNKNOWN")
            found.append(
                DiscoveredResource(
                    provider=self.name,
                    id=cluster.id,
                    name=cluster.name,
                    state=state,
                    phase=cluster_phase(state)[0],
                    tags={
                        k: v
                        for k, v in (
                            ("region", cluster.region),
                            ("cloud_provider", cluster.cloud_provider),
                        )
                        if v
                    },
                )
            )
        return found

    async def aclose(self) -> None:
        await self._api.aclose()


def _deployed(body: _ClusterStatus) -> list[UsageSignal]:
    """The cluster's last deployment as a sign of use, when it has one."""
    if body.last_deployment_date is None:
        return []
    return [UsageSignal(kind="deployed", at=body.last_deployment_date)]


def _lock(found: _ClusterLock | None) -> ProviderLock | None:
    if found is None:
        return None
    return ProviderLock(
        owner=found.owner_name,
        reason=found.reason,
        locked_at=found.locked_at,
        ttl=dt.timedelta(days=found.ttl_in_days) if found.ttl_in_days is not None else None,
    )


def _status_message(body: _ClusterStatus, phase: Phase) -> str | None:
    """What ClusterStatus offers beyond the state: the execution to look up in the
    console's logs when something failed, and a maintenance reason."""
    parts: list[str] = []
    if phase is Phase.FAILED and body.last_execution_id:
        parts.append(f"last execution {body.last_execution_id}")
    if body.reason and body.reason != "UNSPECIFIED":
        parts.append(f"reason {body.reason}")
    return "; ".join(parts) or None
