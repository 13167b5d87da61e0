"""A simulated Feldera API (v0): list, read and stop pipelines, as openapi.json 0.337.0 says.

    GET  /v0/pipelines?selector=all|status|status_with_connectors
    GET  /v0/pipelines/{pipeline_name}?selector=...
    GET  /v0/pipelines/{pipeline_name}/stats                    -> ControllerStatus
    POST /v0/pipelines/{pipeline_name}/stop?force=true|false     -> 202

Errors are Feldera ``ErrorResponse`` bodies (``message``, ``error_code``, ``details``); a
401 has no ``details``. A stop walks the states a real pipeline reports (lifecycle.md):

    force=true                   Running -> Stopping -> Stopped
    force=false (Enterprise)     Running (desired Suspended) -> Suspended -> Stopping -> Stopped
    force=false (open source)    501 EnterpriseFeature

one ``step_seconds`` per step, read lazily against the simulator clock. ``force`` is
ignored while compute is not provisioned (``Stopped``, ``Provisioning``; lifecycle.md), in
either edition: a stop of a ``Stopped`` pipeline is a 202 that changes nothing, and one of a
``Provisioning`` pipeline is forced. A forced stop of a stopping pipeline is a 202 that
changes nothing too; a graceful one of a pipeline suspending or stopping is a 400
``IllegalPipelineAction`` (the stop endpoint's description in openapi.json). A pipeline
seeded with ``fail_stop`` stops with its ``deployment_error`` set, the way a pipeline that
hit a fatal error during the stop does; one seeded with ``stop_unavailable`` answers every
stop with that ``ErrorResponse`` and does not change: the 503 the spec documents for a stop
Feldera cannot act on.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import uuid
from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from providers.simulators.common import SimClock, SimulatedResource, Simulator, Timeline

__all__ = [
    "DEPLOYMENT_DESIRED_STATUSES",
    "DEPLOYMENT_STATUSES",
    "FelderaSeed",
    "FelderaSimulator",
    "PipelineSeed",
]

DeploymentStatus = Literal[
    "Stopped",
    "Provisioning",
    "Unavailable",
    "Coordination",
    "Standby",
    "AwaitingApproval",
    "Initializing",
    "Bootstrapping",
    "ConcurrentBootstrapping",
    "Synchronizing",
    "Replaying",
    "Paused",
    "Running",
    "Suspended",
    "Stopping",
]
DesiredStatus = Literal["Stopped", "Unavailable", "Standby", "Paused", "Running", "Suspended"]
DEPLOYMENT_STATUSES: tuple[str, ...] = get_args(DeploymentStatus)
DEPLOYMENT_DESIRED_STATUSES: tuple[str, ...] = get_args(DesiredStatus)

# Statuses in which compute is provisioned, i.e. the runtime status shows through
# (lifecycle.md, "Combined status"). A graceful stop is only possible from these.
PROVISIONED = frozenset(DEPLOYMENT_STATUSES) - {"Stopped", "Provisioning", "Stopping"}
# Where ``force`` is ignored. lifecycle.md says so of every unprovisioned status, Stopping
# included, but openapi.json's /stop description refuses a graceful stop of a stopping
# pipeline: the spec wins, so Stopping is left out and answered 400 (see ``_stop``).
FORCE_IGNORED = frozenset({"Stopped", "Provisioning"})
STARTING = frozenset(
    {
        "Provisioning",
        "Coordination",
        "Initializing",
        "Bootstrapping",
        "ConcurrentBootstrapping",
        "Synchronizing",
        "Replaying",
    }
)
SELECTORS = frozenset({"all", "status", "status_with_connectors"})
PLATFORM_VERSION = "0.337.0"


class DeploymentErrorSeed(BaseModel):
    """An ``ErrorResponse`` of the seed: a ``deployment_error`` a pipeline starts with, or
    the 503 of ``stop_unavailable``."""

    model_config = ConfigDict(extra="forbid")

    message: str
    error_code: str = "RunnerError"
    details: dict[str, Any] = Field(default_factory=dict)


class PipelineSeed(BaseModel):
    """One pipeline of the seed; everything but ``name`` has a default."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    deployment_status: DeploymentStatus = "Stopped"
    deployment_desired_status: DesiredStatus | None = Field(
        default=None, description="None: the one that status naturally has."
    )
    deployment_error: DeploymentErrorSeed | None = None
    description: str = ""
    program_status: Literal[
        "Pending",
        "CompilingSql",
        "SqlCompiled",
        "CompilingRust",
        "Success",
        "SqlError",
        "RustError",
        "SystemError",
    ] = "Success"
    storage_status: Literal["Cleared", "InUse", "Clearing"] = "InUse"
    supports_suspend: bool = Field(
        default=True, description="False: force=false gets 405 (no storage for a checkpoint)."
    )
    fail_stop: bool = Field(default=False, description="The stop ends with deployment_error.")
    fail_message: str | None = None
    fail_error_code: str = "RunnerError"
    stop_unavailable: DeploymentErrorSeed | None = Field(
        default=None, description="Set: every /stop answers 503 with it and changes nothing."
    )
    input_records_per_second: float = Field(
        default=0.0, ge=0, description="Input received while Running (its /stats totals)."
    )
    buffered_input_records: int = Field(
        default=0, ge=0, description="Input records waiting while Running (/stats)."
    )


class FelderaSeed(BaseModel):
    """The ``feldera`` section of the simulators' seed."""

    model_config = ConfigDict(extra="forbid")

    api_key: str | None = Field(default=None, description="None: no authentication.")
    step_seconds: float = Field(default=3.0, gt=0)
    enterprise: bool = Field(default=False, description="False: force=false answers 501.")
    pipelines: list[PipelineSeed] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> FelderaSeed:
        names = [p.name for p in self.pipelines]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate pipeline name(s): {', '.join(duplicates)}")
        return self


def _natural_desired(status: str) -> str:
    if status in {"Stopped", "Stopping", "Suspended"}:
        return "Stopped"
    if status in {"Paused", "Standby"}:
        return status
    return "Running"


@functools.lru_cache(maxsize=4096)
def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


def _error(status: int, message: str, code: str, details: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"message": message, "error_code": code, "details": details}, status)


def _controller_status(pipeline: _Pipeline, now: float, status: str) -> dict[str, Any]:
    """``ControllerStatus`` with every required field of ``GlobalControllerMetrics``: input
    received at the seed's rate since the pipeline last became Running (none while
    Paused)."""
    since = pipeline.status_since.get("Running", pipeline.created_at)
    running = status == "Running"
    seed = pipeline.seed
    total = int(seed.input_records_per_second * max(now - since, 0.0)) if running else 0
    buffered = seed.buffered_input_records if running else 0
    uptime = int(max(now - pipeline.created_at, 0.0) * 1000)
    metrics: dict[str, Any] = {
        "state": status,
        "bootstrap_in_progress": False,
        "transaction_status": "NoTransaction",
        "transaction_id": 0,
        "transaction_initiators": {"initiated_by_connectors": {}},
        "concurrent_bootstrap_phase": "Inactive",
        "rss_bytes": 0,
        "memory_pressure": "low",
        "memory_pressure_epoch": 0,
        "cpu_msecs": 0,
        "uptime_msecs": uptime,
        "start_time": int(pipeline.created_at),
        "incarnation_uuid": pipeline.deployment_id,
        "initial_start_time": int(pipeline.created_at),
        "storage_bytes": 0,
        "storage_mb_secs": 0,
        "runtime_elapsed_msecs": 0,
        "buffered_input_records": buffered,
        "buffered_input_bytes": buffered * 100,
        "total_input_records": total,
        "total_input_bytes": total * 100,
        "total_processed_records": total,
        "total_processed_bytes": total * 100,
        "total_completed_records": total,
        "output_stall_msecs": 0,
        "total_initiated_steps": 0,
        "total_completed_steps": 0,
        "pipeline_complete": False,
    }
    return {"global_metrics": metrics, "inputs": [], "outputs": []}


def _illegal_graceful_stop(name: str, status: str, desired: str) -> JSONResponse:
    """400 ``IllegalPipelineAction`` for force=false while suspending or stopping, with the
    details the spec's example of that error has."""
    doing = "suspending" if desired == "Suspended" else "stopping"
    hint = "Stop it with force=true, or wait until it has stopped."
    return _error(
        400,
        f"Pipeline '{name}' is {doing} already (status '{status}', desired '{desired}'): "
        f"it cannot be stopped gracefully now. {hint}",
        "IllegalPipelineAction",
        {
            "status": status,
            "current_desired_status": desired,
            "new_desired_status": "Suspended",
            "hint": hint,
        },
    )


class _Pipeline:
    """One pipeline's state: its status and desired status as timelines on the sim clock."""

    def __init__(self, seed: PipelineSeed, now: float, step: float) -> None:
        self.seed = seed
        self.id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"feldera-sim:{seed.name}"))
        self.deployment_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"feldera-sim-run:{seed.name}"))
        self.created_at = now
        desired = seed.deployment_desired_status or _natural_desired(seed.deployment_status)
        self.status = Timeline(seed.deployment_status, at=now)
        self.desired = Timeline(desired, at=now)
        self.status_since: dict[str, float] = {seed.deployment_status: now}
        self.desired_since: dict[str, float] = {desired: now}
        self.error: DeploymentErrorSeed | None = seed.deployment_error
        self.error_at = now
        self.fail_stop = seed.fail_stop
        self.fail_message = seed.fail_message
        self.stop_unavailable = seed.stop_unavailable
        self.move_on(now, step)

    def move_on(self, now: float, step: float) -> None:
        """Plan where a transitional status goes by itself, as it would on Feldera."""
        status, desired = self.status.state(now), self.desired.state(now)
        if status == "Stopping":
            self.plan(now, [("Stopped", "Stopped", step)])
        elif status == "Suspended":
            self.plan(now, [("Stopping", "Stopped", step), ("Stopped", "Stopped", step)])
        elif status in STARTING and desired in PROVISIONED:
            self.plan(now, [(desired, desired, step)])

    def plan(self, now: float, steps: list[tuple[str, str, float]]) -> None:
        """From ``now``: each step is (status, desired status, seconds after the previous)."""
        at, status, desired = now, self.status.state(now), self.desired.state(now)
        self.status.plan(now, [(s, delay) for s, _, delay in steps])
        self.desired.plan(now, [(d, delay) for _, d, delay in steps])
        for new_status, new_desired, delay in steps:
            at += delay
            if new_status != status:
                self.status_since[new_status] = at
            if new_desired != desired:
                self.desired_since[new_desired] = at
            status, desired = new_status, new_desired

    def fail(self, at: float) -> None:
        message = self.fail_message or (
            f"Pipeline {self.seed.name} encountered a fatal error while stopping"
        )
        self.error = DeploymentErrorSeed(
            message=message, error_code=self.seed.fail_error_code, details={}
        )
        self.error_at = at

    def current_error(self, now: float) -> DeploymentErrorSeed | None:
        return self.error if self.error is not None and now >= self.error_at else None

    def info(self, now: float, selector: str) -> dict[str, Any]:
        """``PipelineSelectedInfo`` with the fields ``selector`` includes."""
        status = self.status.state(now)
        desired = self.desired.state(now)
        provisioned = status in PROVISIONED
        resources = "Provisioned" if provisioned else status
        resources_desired = "Stopped" if desired == "Stopped" else "Provisioned"
        error = self.current_error(now)
        deployed = status not in {"Stopped", "Stopping"}
        status_since = _iso(self.status_since.get(status, self.created_at))
        desired_since = _iso(self.desired_since.get(desired, self.created_at))
        body: dict[str, Any] = {
            "id": self.id,
            "name": self.seed.name,
            "description": self.seed.description,
            "tags": [],
            "created_at": _iso(self.created_at),
            "version": 1,
            "platform_version": PLATFORM_VERSION,
            "program_version": 1,
            "program_status": self.seed.program_status,
            "program_status_since": _iso(self.created_at),
            "refresh_version": 1,
            "storage_status": "InUse" if status != "Stopped" else self.seed.storage_status,
            "storage_status_details": None,
            "deployment_error": error.model_dump() if error else None,
            "deployment_id": self.deployment_id if deployed else None,
            "deployment_initial": "Running" if deployed else None,
            "deployment_status": status,
            "deployment_status_since": status_since,
            "deployment_desired_status": desired,
            "deployment_desired_status_since": desired_since,
            "deployment_resources_status": resources,
            "deployment_resources_status_details": None,
            "deployment_resources_status_since": status_since,
            "deployment_resources_desired_status": resources_desired,
            "deployment_resources_desired_status_since": desired_since,
            "deployment_runtime_status": status if provisioned else None,
            "deployment_runtime_status_details": None,
            "deployment_runtime_status_since": status_since if provisioned else None,
            "deployment_runtime_desired_status": (
                desired if resources_desired == "Provisioned" else None
            ),
            "deployment_runtime_desired_status_since": (
                desired_since if resources_desired == "Provisioned" else None
            ),
        }
        if selector == "status_with_connectors":
            body["connectors"] = None
        if selector == "all":
            body.update(
                program_code="CREATE TABLE events (id INT);",
                udf_rust="",
                udf_toml="",
                program_config={"profile": "optimized", "cache": True},
                runtime_config={"workers": 8},
                program_info=None,
                program_error={
                    "sql_compilation": None,
                    "rust_compilation": None,
                    "system_error": None,
                },
            )
        return body


class FelderaSimulator(Simulator):
    """The Feldera pipeline-manager API, for the pipelines of one instance."""

    name = "feldera"
    running_state = "Running"

    def __init__(self, clock: SimClock) -> None:
        super().__init__(clock)
        self.config = FelderaSeed()
        self.pipelines: dict[str, _Pipeline] = {}

    def seed(self, data: dict[str, Any]) -> None:
        config = FelderaSeed.model_validate(data)
        with self.lock:
            now = self.now()
            self.config = config
            self.pipelines = {
                p.name: _Pipeline(p, now, config.step_seconds) for p in config.pipelines
            }

    def add_resource(self, item: dict[str, Any]) -> str:
        seed = PipelineSeed.model_validate(item)
        with self.lock:
            if seed.name in self.pipelines:
                raise ValueError(f"pipeline {seed.name} exists already")
            self.pipelines[seed.name] = _Pipeline(seed, self.now(), self.config.step_seconds)
        return seed.name

    def remove_resource(self, resource_id: str) -> bool:
        with self.lock:
            return self.pipelines.pop(resource_id, None) is not None

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            now = self.now()
            return {
                "auth_required": self.config.api_key is not None,
                "enterprise": self.config.enterprise,
                "step_seconds": self.config.step_seconds,
                "pipelines": [
                    {
                        "name": p.seed.name,
                        "deployment_status": p.status.state(now),
                        "deployment_desired_status": p.desired.state(now),
                        "deployment_error": (
                            e.model_dump() if (e := p.current_error(now)) else None
                        ),
                        "settled": p.status.settled(now),
                        "fail_stop": p.fail_stop,
                    }
                    for p in self.pipelines.values()
                ],
            }

    # Test helpers: poke a pipeline without going through HTTP.

    def describe(
        self, resource_id: str, *, options: Mapping[str, str] | None = None
    ) -> SimulatedResource | None:
        with self.lock:
            pipeline = self.pipelines.get(resource_id)
            if pipeline is None:
                return None
            now = self.now()
            return SimulatedResource(
                status=pipeline.status.state(now), settled=pipeline.status.settled(now)
            )

    def set_state(
        self,
        resource_id: str,
        state: str,
        desired: str | None = None,
        *,
        options: Mapping[str, str] | None = None,
    ) -> None:
        """Jump pipeline ``resource_id`` to deployment status ``state`` now, as if seeded
        so (``desired``: its desired status, else the one that status implies): a
        transitional one moves on."""
        if state not in DEPLOYMENT_STATUSES:
            raise ValueError(f"unknown deployment status {state!r}")
        with self.lock:
            pipeline = self.pipelines[resource_id]
            now = self.now()
            pipeline.plan(now, [(state, desired or _natural_desired(state), 0.0)])
            pipeline.move_on(now, self.config.step_seconds)

    def set_lock(
        self, resource_id: str, *, owner: str, reason: str, ttl: dt.timedelta | None = None
    ) -> None:
        raise NotImplementedError("Feldera has no locks")

    def clear_lock(self, resource_id: str) -> None:
        """Feldera has no locks: there is none to clear."""

    def set_fail_stop(
        self,
        resource_id: str,
        message: str | None = None,
        *,
        fail: bool = True,
        options: Mapping[str, str] | None = None,
    ) -> None:
        """Make the next stop of pipeline ``resource_id`` end with ``deployment_error``."""
        with self.lock:
            pipeline = self.pipelines[resource_id]
            pipeline.fail_stop = fail
            pipeline.fail_message = message

    def set_stop_unavailable(
        self, name: str, message: str | None, error_code: str = "PipelineInteractionUnreachable"
    ) -> None:
        """Make every stop of ``name`` answer 503 with ``message`` (None: accept stops again)."""
        with self.lock:
            self.pipelines[name].stop_unavailable = (
                DeploymentErrorSeed(
                    message=message, error_code=error_code, details={"pipeline_name": name}
                )
                if message is not None
                else None
            )

    def set_deployment_error(self, name: str, message: str | None) -> None:
        """Set or clear (None) ``deployment_error``, as ``/dismiss_error`` would."""
        with self.lock:
            pipeline = self.pipelines[name]
            pipeline.error = (
                DeploymentErrorSeed(message=message, error_code="RunnerError")
                if message is not None
                else None
            )
            pipeline.error_at = self.now()

    def app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/v0/config", self._config, methods=["GET"]),
                Route("/v0/pipelines", self._list, methods=["GET"]),
                Route("/v0/pipelines/{pipeline_name}", self._get, methods=["GET"]),
                Route("/v0/pipelines/{pipeline_name}/stats", self._stats, methods=["GET"]),
                Route("/v0/pipelines/{pipeline_name}/stop", self._stop, methods=["POST"]),
                Route("/v0/pipelines/{pipeline_name}/start", self._start, methods=["POST"]),
            ]
        )

    def _unauthorized(self, request: Request) -> Response | None:
        """Feldera's 401: an ``ErrorResponse`` without ``details``."""
        api_key = self.config.api_key
        if api_key is None:
            return None
        header = request.headers.get("authorization")
        if header is None:
            message = "Unauthorized: missing Authorization header (expected 'Bearer <API key>')"
        else:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), api_key.encode()):
                return None
            message = "Unauthorized: the API key or token is not valid"
        return JSONResponse({"message": message, "error_code": "Unauthorized"}, 401)

    @staticmethod
    def _selector(request: Request) -> str | Response:
        selector = request.query_params.get("selector", "all")
        if selector not in SELECTORS:
            # actix answers a bad query itself, without a Feldera error body.
            return PlainTextResponse(
                f"Query deserialize error: unknown variant `{selector}`", status_code=400
            )
        return selector

    @staticmethod
    def _unknown(name: str) -> JSONResponse:
        return _error(
            404, f"Unknown pipeline name '{name}'", "UnknownPipelineName", {"pipeline_name": name}
        )

    async def _config(self, request: Request) -> Response:
        """``Configuration``: the edition decides whether ``force=false`` exists."""
        if (denied := self._unauthorized(request)) is not None:
            return denied
        edition = "Enterprise" if self.config.enterprise else "Open source"
        return JSONResponse(
            {
                "posthog": "",
                "conceptualhq": "",
                "product_fruits": "",
                "edition": edition,
                "version": PLATFORM_VERSION,
                "revision": "simulator",
                "runtime_revision": "simulator",
                "changelog_url": "https://github.com/feldera/feldera/releases",
                "build_info": {
                    key: "simulator"
                    for key in (
                        "build_timestamp",
                        "build_cpu",
                        "build_os",
                        "cargo_dependencies",
                        "cargo_features",
                        "cargo_debug",
                        "cargo_opt_level",
                        "cargo_target_triple",
                        "rustc_version",
                    )
                },
                "build_source": "source",
                "license_validity": None,
                "update_info": None,
            }
        )

    async def _list(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        selector = self._selector(request)
        if isinstance(selector, Response):
            return selector
        with self.lock:
            now = self.now()
            body = [p.info(now, selector) for p in self.pipelines.values()]
        return JSONResponse(body)

    async def _get(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        selector = self._selector(request)
        if isinstance(selector, Response):
            return selector
        name = request.path_params["pipeline_name"]
        with self.lock:
            pipeline = self.pipelines.get(name)
            if pipeline is None:
                return self._unknown(name)
            return JSONResponse(pipeline.info(self.now(), selector))

    def set_input(self, name: str, *, per_second: float, buffered: int) -> None:
        """Make the pipeline ingest ``per_second`` records (0: none) with ``buffered``
        waiting, from now on."""
        with self.lock:
            pipeline = self.pipelines[name]
            pipeline.seed = pipeline.seed.model_copy(
                update={"input_records_per_second": per_second, "buffered_input_records": buffered}
            )

    async def _stats(self, request: Request) -> Response:
        """``ControllerStatus`` of a running or paused pipeline (the spec: stats exist only
        then); otherwise the 503 ``PipelineInteractionNotDeployed`` Feldera answers."""
        if (denied := self._unauthorized(request)) is not None:
            return denied
        name = request.path_params["pipeline_name"]
        with self.lock:
            pipeline = self.pipelines.get(name)
            if pipeline is None:
                return self._unknown(name)
            now = self.now()
            status = pipeline.status.state(now)
            if status not in {"Running", "Paused"}:
                return _error(
                    503,
                    f"Unable to interact with pipeline because the deployment status ({status}) "
                    "indicates it is not (yet) fully provisioned",
                    "PipelineInteractionNotDeployed",
                    {"pipeline_name": name, "status": status},
                )
            return JSONResponse(_controller_status(pipeline, now, status))

    async def _stop(self, request: Request) -> Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        raw_force = request.query_params.get("force", "false")
        if raw_force not in {"true", "false"}:
            return PlainTextResponse(
                f"Query deserialize error: invalid value `{raw_force}` for `force`",
                status_code=400,
            )
        force = raw_force == "true"
        name = request.path_params["pipeline_name"]
        with self.lock:
            pipeline = self.pipelines.get(name)
            if pipeline is None:
                return self._unknown(name)
            if (refusal := pipeline.stop_unavailable) is not None:
                return _error(503, refusal.message, refusal.error_code, refusal.details)
            now = self.now()
            status = pipeline.status.state(now)
            desired = pipeline.desired.state(now)
            if status in FORCE_IGNORED:
                # Not provisioned: there is nothing to checkpoint, so neither the edition
                # nor force matters. A stopped pipeline stays as it is.
                if status != "Stopped":
                    self._plan_forced(pipeline, now)
                return JSONResponse("Pipeline is forcefully stopping", 202)
            if not force and not self.config.enterprise:
                return _error(
                    501,
                    "The feature 'stop?force=false' is only available in the Enterprise edition"
                    " of Feldera.",
                    "EnterpriseFeature",
                    {"feature": "stop?force=false"},
                )
            if force:
                # A forced stop under way stays as it is; a suspend is cut short.
                if desired != "Stopped":
                    self._plan_forced(pipeline, now)
                return JSONResponse("Pipeline is forcefully stopping", 202)
            if status in {"Stopping", "Suspended"} or desired in {"Stopped", "Suspended"}:
                return _illegal_graceful_stop(name, status, desired)
            if not pipeline.seed.supports_suspend:
                reason = (
                    "this pipeline does not support the suspend action for the following "
                    "reason(s):\n    - Storage must be configured"
                )
                return _error(
                    405,
                    f"Unsupported pipeline action 'suspend': {reason}",
                    "UnsupportedPipelineAction",
                    {"action": "suspend", "reason": reason},
                )
            self._plan_graceful(pipeline, now, status)
            return JSONResponse("Pipeline is suspending", 202)

    async def _start(self, request: Request) -> Response:
        """``post_pipeline_start``: the stop's machine backwards (Stopped, Provisioning,
        Initializing, then the ``initial`` status). Started or starting already is a 202
        that changes nothing ("it will still return success"); suspending or stopping is
        the spec's 400 ``IllegalPipelineAction``."""
        if (denied := self._unauthorized(request)) is not None:
            return denied
        initial = request.query_params.get("initial", "running")
        wanted = {"running": "Running", "paused": "Paused", "standby": "Standby"}.get(initial)
        if wanted is None:
            return _error(
                400,
                f"Invalid 'initial' value '{initial}': it must be 'standby', 'paused' or 'running'",
                "InvalidInitialStatus",
                {"initial": initial},
            )
        name = request.path_params["pipeline_name"]
        with self.lock:
            pipeline = self.pipelines.get(name)
            if pipeline is None:
                return self._unknown(name)
            now = self.now()
            status = pipeline.status.state(now)
            desired = pipeline.desired.state(now)
            if status in {"Stopping", "Suspended"} or (
                status != "Stopped" and desired in {"Stopped", "Suspended"}
            ):
                hint = (
                    "Cannot restart the pipeline while it is stopping. Wait for it to stop "
                    "before starting a new instance of the pipeline."
                )
                return _error(
                    400,
                    f"Deployment resources status (current: '{status}', desired: '{desired}') "
                    f"cannot have desired changed to 'Provisioned'. {hint}",
                    "IllegalPipelineAction",
                    {
                        "status": status,
                        "current_desired_status": desired,
                        "new_desired_status": "Provisioned",
                        "hint": hint,
                    },
                )
            if status == "Stopped":
                step = self.config.step_seconds
                pipeline.plan(
                    now,
                    [
                        ("Stopped", wanted, 0.0),
                        ("Provisioning", wanted, step),
                        ("Initializing", wanted, step),
                        (wanted, wanted, step),
                    ],
                )
        return JSONResponse(None, 202)

    def _plan_forced(self, pipeline: _Pipeline, now: float) -> None:
        step = self.config.step_seconds
        pipeline.plan(now, [("Stopping", "Stopped", 0.0), ("Stopped", "Stopped", step)])
        if pipeline.fail_stop:
            pipeline.fail(now)

    def _plan_graceful(self, pipeline: _Pipeline, now: float, status: str) -> None:
        """Checkpoint for a step while still reporting ``status``, then suspend and stop.

        A failing suspend is forcefully stopped with the error set (stop endpoint docs).
        """
        step = self.config.step_seconds
        if pipeline.fail_stop:
            pipeline.plan(
                now,
                [
                    (status, "Suspended", 0.0),
                    ("Stopping", "Stopped", step),
                    ("Stopped", "Stopped", step),
                ],
            )
            pipeline.fail(now + step)
            return
        pipeline.plan(
            now,
            [
                (status, "Suspended", 0.0),
                ("Suspended", "Stopped", step),
                ("Stopping", "Stopped", step),
                ("Stopped", "Stopped", step),
            ],
        )
