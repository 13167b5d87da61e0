"""A simulated Qovery API: the cluster calls Stopbot makes, with Qovery's state machine.

    GET    /organization/{organizationId}/cluster                      ClusterResponseList
    GET    /organization/{organizationId}/cluster/status               ClusterStatusResponseList
    GET    /organization/{organizationId}/cluster/{clusterId}/status   ClusterStatus
    POST   /organization/{organizationId}/cluster/{clusterId}/stop     202 ClusterStatus, 409
    POST   /organization/{organizationId}/cluster/{clusterId}/deploy   201 ClusterStatus, 400
    GET    /organization/{organizationId}/lock                         ClusterLockList
    POST   /cluster/{clusterId}/lock                                   ClusterLock
    DELETE /cluster/{clusterId}/lock                                   204

A stop goes STOP_QUEUED -> STOPPING -> STOPPED (or STOP_ERROR when the cluster is
seeded with ``fail_stop: true``), one ``step_seconds`` per step of the shared clock.

A deploy (the bot's wake) runs the same machine backwards: DEPLOYMENT_QUEUED ->
DEPLOYING -> DEPLOYED, refused by an operation in progress or a lock, as a stop is; with
a 400, since the spec documents no 409 for ``deployCluster`` (its refusals are 400s).

A stop is refused with the spec's one 409, "already stopped or an operation is in
progress": on STOPPED or DELETED, on every state of ``IN_PROGRESS`` (a stop already
queued or running among them), and on a lock within its TTL. The spec does not say what
a lock refuses; refusing the stop with that same 409 is our reading.

The spec documents no error body, only status codes and descriptions; errors here are
``{"status": <code>, "message": <text>}``, which the client reads like any JSON error.

Seed format (``DEFAULT_SEED["qovery"]``)::

    token, organization_id, step_seconds,
    token_owner_name     optional: owner of locks taken through the API
    clusters: - id, name, status (a ClusterStateEnum value)
                region, cloud_provider, production, is_deployed   optional
                fail_stop                    optional: the next stops end in STOP_ERROR
                lock: {owner_name, reason, ttl_in_days?, locked_at?}  (default: seed time)
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from providers.simulators.common import (
    SimClock,
    SimulatedLock,
    SimulatedResource,
    Simulator,
    Timeline,
    read_json,
)

__all__ = ["CLUSTER_STATES", "QoverySimulator"]

# The spec's ClusterStateEnum, in its order.
CLUSTER_STATES = (
    "BUILDING",
    "BUILD_ERROR",
    "CANCELED",
    "CANCELING",
    "DELETED",
    "DELETE_ERROR",
    "DELETE_QUEUED",
    "DELETING",
    "DEPLOYED",
    "DEPLOYING",
    "DEPLOYMENT_ERROR",
    "DEPLOYMENT_QUEUED",
    "DRY_RUN",
    "QUEUED",
    "READY",
    "STOPPED",
    "STOPPING",
    "STOP_ERROR",
    "STOP_QUEUED",
    "RESTART_QUEUED",
    "RESTARTING",
    "RESTARTED",
    "RESTART_ERROR",
    "INVALID_CREDENTIALS",
)
# States in which Qovery is busy with the cluster: another operation is refused (409).
IN_PROGRESS = frozenset(
    {
        "BUILDING",
        "CANCELING",
        "DELETE_QUEUED",
        "DELETING",
        "DEPLOYING",
        "DEPLOYMENT_QUEUED",
        "DRY_RUN",
        "QUEUED",
        "STOPPING",
        "STOP_QUEUED",
        "RESTART_QUEUED",
        "RESTARTING",
    }
)
# Nothing left to stop.
AT_REST = frozenset({"STOPPED", "DELETED"})
CLOUD_VENDORS = Literal[
    "AWS", "SCW", "GCP", "DO", "AZURE", "OVH", "CIVO", "HETZNER", "ORACLE", "IBM", "ON_PREMISE"
]


def _iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


class _LockSeed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner_name: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    ttl_in_days: int | None = Field(default=None, ge=0)
    locked_at: dt.datetime | None = None

    @field_validator("locked_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class _CostSeed(BaseModel):
    """What ``currentCost`` answers for a cluster: a monthly range, in cents."""

    model_config = ConfigDict(extra="forbid")

    min_cost_in_cents: int = Field(default=15000, ge=0)
    max_cost_in_cents: int = Field(default=30000, ge=0)
    currency_code: str = Field(default="USD", min_length=3, max_length=3)


class _ClusterSeed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    status: str
    region: str = "eu-west-3"
    cloud_provider: CLOUD_VENDORS = "AWS"
    production: bool = False
    is_deployed: bool | None = None
    fail_stop: bool = False
    deployed_seconds_ago: float = Field(
        default=86400.0,
        ge=0,
        description="When a deployed cluster was last deployed (its last_deployment_date).",
    )
    lock: _LockSeed | None = None
    cost: _CostSeed = Field(default_factory=lambda: _CostSeed())

    @field_validator("status")
    @classmethod
    def _known_state(cls, value: str) -> str:
        if value not in CLUSTER_STATES:
            raise ValueError(
                f"{value!r} is not a ClusterStateEnum value ({', '.join(CLUSTER_STATES)})"
            )
        return value


class _Seed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1)
    organization_id: str = Field(min_length=1)
    step_seconds: float = Field(default=3.0, ge=0)
    token_owner_name: str = Field(default="API token", min_length=1)
    clusters: list[_ClusterSeed] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> _Seed:
        ids = [c.id for c in self.clusters]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate cluster id(s): {', '.join(duplicates)}")
        return self


@dataclass
class _Lock:
    owner_name: str
    reason: str
    locked_at: dt.datetime
    ttl_in_days: int | None

    def active(self, now: dt.datetime) -> bool:
        return self.ttl_in_days is None or now < self.locked_at + dt.timedelta(
            days=self.ttl_in_days
        )


@dataclass
class _Cluster:
    id: str
    name: str
    region: str
    cloud_provider: str
    production: bool
    is_deployed: bool
    fail_stop: bool
    created_at: dt.datetime
    timeline: Timeline
    cost: _CostSeed
    lock: _Lock | None = None
    last_execution_id: str | None = None
    last_deployment_date: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class _ApiError(Exception):
    """An error answer, raised from deep in a handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"status": status, "message": message}, status_code=status)


class QoverySimulator(Simulator):
    """The clusters of one Qovery organization, reachable with one API token."""

    name = "qovery"
    has_locks = True
    running_state = "DEPLOYED"

    def __init__(self, clock: SimClock) -> None:
        super().__init__(clock)
        self._seed = _Seed(token="unset", organization_id="unset")
        self._clusters: dict[str, _Cluster] = {}

    # -- state ------------------------------------------------------------------

    def _now_dt(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now(), dt.UTC)

    def seed(self, data: dict[str, Any]) -> None:
        seed = _Seed.model_validate(data)
        now = self.now()
        now_dt = self._now_dt()
        clusters = {c.id: self._new_cluster(c, now, now_dt) for c in seed.clusters}
        with self.lock:
            self._seed = seed
            self._clusters = clusters

    @staticmethod
    def _new_cluster(c: _ClusterSeed, now: float, now_dt: dt.datetime) -> _Cluster:
        # A READY cluster has its configuration but was never installed.
        is_deployed = c.is_deployed if c.is_deployed is not None else c.status != "READY"
        lock = None
        if c.lock is not None:
            lock = _Lock(
                owner_name=c.lock.owner_name,
                reason=c.lock.reason,
                locked_at=c.lock.locked_at or now_dt,
                ttl_in_days=c.lock.ttl_in_days,
            )
        return _Cluster(
            id=c.id,
            name=c.name,
            region=c.region,
            cloud_provider=c.cloud_provider,
            production=c.production,
            is_deployed=is_deployed,
            fail_stop=c.fail_stop,
            created_at=now_dt,
            timeline=Timeline(c.status, at=now),
            cost=c.cost,
            lock=lock,
            last_deployment_date=(
                now_dt - dt.timedelta(seconds=c.deployed_seconds_ago) if is_deployed else None
            ),
        )

    def add_resource(self, item: dict[str, Any]) -> str:
        cluster = self._new_cluster(_ClusterSeed.model_validate(item), self.now(), self._now_dt())
        with self.lock:
            if cluster.id in self._clusters:
                raise ValueError(f"cluster {cluster.id} exists already")
            self._clusters[cluster.id] = cluster
        return cluster.id

    def remove_resource(self, resource_id: str) -> bool:
        with self.lock:
            return self._clusters.pop(resource_id, None) is not None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            now = self.now()
            now_dt = self._now_dt()
            return {
                "organization_id": self._seed.organization_id,
                "step_seconds": self._seed.step_seconds,
                "clusters": [
                    {
                        "id": c.id,
                        "name": c.name,
                        "status": c.timeline.state(now),
                        "settled": c.timeline.settled(now),
                        "is_deployed": c.is_deployed,
                        "fail_stop": c.fail_stop,
                        "last_execution_id": c.last_execution_id,
                        "lock": self._lock_json(c, now_dt),
                    }
                    for c in self._clusters.values()
                ],
            }

    def describe(
        self, resource_id: str, *, options: Mapping[str, str] | None = None
    ) -> SimulatedResource | None:
        with self.lock:
            cluster = self._clusters.get(resource_id)
            if cluster is None:
                return None
            now = self.now()
            # Reported as the API reports it: past its TTL too (see _lock_json).
            lock = cluster.lock
            return SimulatedResource(
                status=cluster.timeline.state(now),
                settled=cluster.timeline.settled(now),
                lock=SimulatedLock(lock.owner_name, lock.reason) if lock else None,
            )

    def set_lock(
        self,
        resource_id: str,
        *,
        owner: str,
        reason: str,
        ttl: dt.timedelta | None = None,
        locked_at: dt.datetime | None = None,
    ) -> None:
        """Lock a cluster as a Qovery user would in the console; ``locked_at``: when they
        did (default: now). Qovery's TTL is a whole number of days."""
        days = None
        if ttl is not None:
            days, rest = divmod(ttl, dt.timedelta(days=1))
            if rest:
                raise ValueError("a Qovery lock's TTL is a whole number of days")
        with self.lock:
            self._clusters[resource_id].lock = _Lock(
                owner, reason, locked_at or self._now_dt(), days
            )

    def clear_lock(self, resource_id: str) -> None:
        with self.lock:
            self._clusters[resource_id].lock = None

    def set_last_deployment(self, cluster_id: str, at: dt.datetime | None) -> None:
        """Set (or clear) when the cluster was last deployed, as a deployment would."""
        with self.lock:
            self._clusters[cluster_id].last_deployment_date = at

    def set_state(
        self, resource_id: str, state: str, *, options: Mapping[str, str] | None = None
    ) -> None:
        """Put a cluster in any ClusterStateEnum state now, dropping planned steps."""
        if state not in CLUSTER_STATES:
            raise ValueError(f"{state!r} is not a ClusterStateEnum value")
        with self.lock:
            self._clusters[resource_id].timeline.set(self.now(), state)

    def set_fail_stop(
        self,
        resource_id: str,
        message: str | None = None,
        *,
        fail: bool = True,
        options: Mapping[str, str] | None = None,
    ) -> None:
        """Make a cluster's later stops end in STOP_ERROR (Qovery reports no message)."""
        with self.lock:
            self._clusters[resource_id].fail_stop = fail

    def _active_lock(self, cluster: _Cluster, now_dt: dt.datetime) -> _Lock | None:
        """The lock that still holds: one past its TTL no longer blocks a stop."""
        if cluster.lock is not None and not cluster.lock.active(now_dt):
            return None
        return cluster.lock

    def _lock_json(self, cluster: _Cluster, now_dt: dt.datetime) -> dict[str, Any] | None:
        # A lock past its TTL is still reported (the spec says nothing of Qovery removing
        # it), so clients must judge staleness from locked_at + ttl_in_days themselves.
        lock = cluster.lock
        if lock is None:
            return None
        body: dict[str, Any] = {
            "cluster_id": cluster.id,
            "owner_name": lock.owner_name,
            "reason": lock.reason,
            "locked_at": _iso(lock.locked_at),
        }
        # ttl_in_days is a non-nullable integer in the spec: absent means no TTL.
        if lock.ttl_in_days is not None:
            body["ttl_in_days"] = lock.ttl_in_days
        return body

    def _status_json(self, cluster: _Cluster, now: float) -> dict[str, Any]:
        return {
            "cluster_id": cluster.id,
            "status": cluster.timeline.state(now),
            "is_deployed": cluster.is_deployed,
            "next_k8s_available_version": None,
            "last_execution_id": cluster.last_execution_id,
            "cluster_lock": self._lock_json(cluster, self._now_dt()),
            "last_deployment_date": (
                _iso(cluster.last_deployment_date) if cluster.last_deployment_date else None
            ),
            "reason": "UNSPECIFIED",
        }

    def _cluster_json(self, cluster: _Cluster, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": cluster.id,
            "created_at": _iso(cluster.created_at),
            "organization": {"id": self._seed.organization_id},
            "name": cluster.name,
            "region": cluster.region,
            "cloud_provider": cluster.cloud_provider,
            "kubernetes": "MANAGED",
            "status": cluster.timeline.state(now),
            "has_access": True,
            "is_default": False,
            "is_demo": False,
            "production": cluster.production,
        }
        if cluster.updated_at is not None:
            body["updated_at"] = _iso(cluster.updated_at)
        return body

    def _stop(self, cluster: _Cluster) -> dict[str, Any]:
        now = self.now()
        now_dt = self._now_dt()
        state = cluster.timeline.state(now)
        if state in AT_REST:
            raise _ApiError(409, f"Cluster {cluster.name} is already {state.lower()}")
        if state in IN_PROGRESS:
            raise _ApiError(409, f"Cluster {cluster.name} has an operation in progress ({state})")
        lock = self._active_lock(cluster, now_dt)
        if lock is not None:
            raise _ApiError(
                409, f"Cluster {cluster.name} is locked by {lock.owner_name}: {lock.reason}"
            )
        step = self._seed.step_seconds
        end = "STOP_ERROR" if cluster.fail_stop else "STOPPED"
        cluster.timeline.plan(now, [("STOP_QUEUED", 0.0), ("STOPPING", step), (end, step)])
        return self._executed(cluster, now, now_dt)

    def _deploy(self, cluster: _Cluster) -> dict[str, Any]:
        now = self.now()
        now_dt = self._now_dt()
        state = cluster.timeline.state(now)
        if state in IN_PROGRESS:
            raise _ApiError(400, f"Cluster {cluster.name} has an operation in progress ({state})")
        lock = self._active_lock(cluster, now_dt)
        if lock is not None:
            raise _ApiError(
                400, f"Cluster {cluster.name} is locked by {lock.owner_name}: {lock.reason}"
            )
        step = self._seed.step_seconds
        cluster.timeline.plan(
            now, [("DEPLOYMENT_QUEUED", 0.0), ("DEPLOYING", step), ("DEPLOYED", step)]
        )
        cluster.is_deployed = True
        cluster.last_deployment_date = now_dt
        return self._executed(cluster, now, now_dt)

    def _executed(self, cluster: _Cluster, now: float, now_dt: dt.datetime) -> dict[str, Any]:
        # Qovery's execution ids read "<uuid>-<epoch seconds>".
        cluster.last_execution_id = f"{uuid.uuid4()}-{int(now)}"
        cluster.updated_at = now_dt
        return self._status_json(cluster, now)

    # -- HTTP -------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        if request.headers.get("Authorization") != f"Token {self._seed.token}":
            raise _ApiError(401, "Invalid or missing API token")

    def _organization(self, request: Request) -> None:
        self._authorize(request)
        org = request.path_params["organizationId"]
        if org != self._seed.organization_id:
            raise _ApiError(404, f"Organization {org} not found")

    def _cluster(self, request: Request) -> _Cluster:
        cluster_id = request.path_params["clusterId"]
        cluster = self._clusters.get(cluster_id)
        if cluster is None:
            raise _ApiError(404, f"Cluster {cluster_id} not found")
        return cluster

    def app(self) -> ASGIApp:
        async def list_clusters(request: Request) -> Response:
            with self.lock:
                self._organization(request)
                now = self.now()
                results = [self._cluster_json(c, now) for c in self._clusters.values()]
            return JSONResponse({"results": results})

        async def list_statuses(request: Request) -> Response:
            with self.lock:
                self._organization(request)
                now = self.now()
                results = [self._status_json(c, now) for c in self._clusters.values()]
            return JSONResponse({"results": results})

        async def cluster_status(request: Request) -> Response:
            with self.lock:
                self._organization(request)
                body = self._status_json(self._cluster(request), self.now())
            return JSONResponse(body)

        async def stop_cluster(request: Request) -> Response:
            with self.lock:
                self._organization(request)
                body = self._stop(self._cluster(request))
            return JSONResponse(body, status_code=202)

        async def deploy_cluster(request: Request) -> Response:
            with self.lock:
                self._organization(request)
                body = self._deploy(self._cluster(request))
            return JSONResponse(body, status_code=201)

        async def current_cost(request: Request) -> Response:
            with self.lock:
                self._organization(request)
                cost = self._cluster(request).cost
            # The spec's CostRange: the range, and the total it marks required (the top).
            return JSONResponse(
                {
                    "min_cost_in_cents": cost.min_cost_in_cents,
                    "min_cost": cost.min_cost_in_cents / 100,
                    "max_cost_in_cents": cost.max_cost_in_cents,
                    "max_cost": cost.max_cost_in_cents / 100,
                    "total_in_cents": cost.max_cost_in_cents,
                    "total": cost.max_cost_in_cents / 100,
                    "currency_code": cost.currency_code,
                }
            )

        async def list_locks(request: Request) -> Response:
            with self.lock:
                self._organization(request)
                now_dt = self._now_dt()
                locks = [self._lock_json(c, now_dt) for c in self._clusters.values()]
            return JSONResponse({"results": [lock for lock in locks if lock is not None]})

        async def cluster_lock(request: Request) -> Response:
            self._authorize(request)
            body = await read_json(request) if request.method == "POST" else None
            with self.lock:
                cluster = self._cluster(request)
                if request.method == "DELETE":
                    cluster.lock = None
                    return Response(status_code=204)
                try:
                    wanted = _LockRequest.model_validate(body)
                except ValidationError as exc:
                    raise _ApiError(
                        400, f"Invalid lock request: {exc.errors()[0]['msg']}"
                    ) from None
                cluster.lock = _Lock(
                    self._seed.token_owner_name, wanted.reason, self._now_dt(), wanted.ttl_in_days
                )
                lock = self._lock_json(cluster, self._now_dt())
            return JSONResponse(lock)

        async def api_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, _ApiError)
            return _error(exc.status, exc.message)

        async def http_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, HTTPException)
            return _error(exc.status_code, HTTPStatus(exc.status_code).phrase)

        org = "/organization/{organizationId}"
        return Starlette(
            routes=[
                Route(f"{org}/cluster", list_clusters, methods=["GET"]),
                Route(f"{org}/cluster/status", list_statuses, methods=["GET"]),
                Route(f"{org}/cluster/{{clusterId}}/status", cluster_status, methods=["GET"]),
                Route(f"{org}/cluster/{{clusterId}}/stop", stop_cluster, methods=["POST"]),
                Route(f"{org}/cluster/{{clusterId}}/deploy", deploy_cluster, methods=["POST"]),
                Route(f"{org}/cluster/{{clusterId}}/currentCost", current_cost, methods=["GET"]),
                Route(f"{org}/lock", list_locks, methods=["GET"]),
                Route("/cluster/{clusterId}/lock", cluster_lock, methods=["POST", "DELETE"]),
            ],
            exception_handlers={_ApiError: api_error, HTTPException: http_error},
        )


class _LockRequest(BaseModel):
    """The spec's ClusterLockRequest."""

    model_config = ConfigDict(extra="ignore")

    reason: str = Field(min_length=1)
    ttl_in_days: int | None = Field(default=None, ge=0)
