"""A simulated ~okeanos Lambda on Demand (LoD) API: applications deployed on lambda instances.

It follows the LoD webapp API docs (``okeanos-lod/webapp/api-doc/docs/``)::

    GET  /api/authenticate/                              Authentication.md
    GET  /api/apps/                                      ApplicationsList.md (limit/offset pages)
    GET  /api/apps/{application_id}/                     ApplicationDetails.md
    POST /api/apps/{application_id}/start/               ApplicationStart.md
    POST /api/apps/{application_id}/stop/                ApplicationStop.md
    GET  /api/apps/{lambda_instance_id}/list-deployed/   ApplicationsListDeployed.md
    GET  /api/lambda-instances/                          LambdaInstancesList.md
    GET  /api/lambda-instances/{lambda_instance_id}/     LambdaInstanceDetails.md

LoD reports an application on an instance only through a ``started`` flag: there is no
"stopping" state and no error state. A stop is answered 202 and the flag flips to false
``step_seconds`` later. A deployment seeded with ``fail_stop: true`` keeps the flag true
forever, which is how a failed stop looks on the real service: nothing reports it.

Seed format (``DEFAULT_SEED["okeanos"]``), with the optional keys this simulator accepts::

    token: str                      the one valid API token
    step_seconds: float             delay of a start or stop (default 3)
    lambda_instances:
      - {id, name, status: STARTED|STOPPED|..., failure_message?, instance_info?}
    applications:
      - {id, name, type: batch|streaming, description?, status: UPLOADED|UPLOADING|FAILED?,
         failure_message?, deployments: [{lambda_instance_id, started, fail_stop?}]}
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from providers.simulators.common import SimulatedResource, Simulator, Timeline, read_json

__all__ = [
    "APPLICATION_STATUS_CODES",
    "INSTANCE_STATUS_CODES",
    "OkeanosSeed",
    "OkeanosSimulator",
]

# Lambda instance statuses and their codes. The docs show STARTED "0", PENDING "2",
# CLUSTER_FAILED "11" and KAFKA_FAILED "17"; the rest complete the same numbering.
INSTANCE_STATUS_CODES: dict[str, str] = {
    "STARTED": "0",
    "STOPPED": "1",
    "PENDING": "2",
    "STARTING": "3",
    "STOPPING": "4",
    "DESTROYING": "5",
    "DESTROYED": "6",
    "SCALING_UP": "7",
    "SCALING_DOWN": "8",
    "FAILED": "9",
    "CLUSTER_CREATED": "10",
    "CLUSTER_FAILED": "11",
    "INIT_DONE": "12",
    "INIT_FAILED": "13",
    "COMMONS_INSTALLED": "14",
    "COMMONS_FAILED": "15",
    "KAFKA_INSTALLED": "16",
    "KAFKA_FAILED": "17",
    "FLINK_INSTALLED": "18",
    "FLINK_FAILED": "19",
}

# Upload statuses of an application (ApplicationsList.md): unrelated to running.
APPLICATION_STATUS_CODES: dict[str, str] = {"UPLOADED": "0", "UPLOADING": "1", "FAILED": "2"}

_REASONS = {400: "bad request", 401: "unauthorized", 404: "not found", 409: "conflict"}
STARTED = "started"
STOPPED = "stopped"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _InstanceSeed(_Strict):
    id: str = Field(min_length=1)
    name: str = "Lambda Instance"
    status: str = "STARTED"
    failure_message: str | None = None
    instance_info: dict[str, Any] | None = None

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value not in INSTANCE_STATUS_CODES:
            raise ValueError(f"unknown lambda instance status {value!r}")
        return value


class _DeploymentSeed(_Strict):
    lambda_instance_id: str = Field(min_length=1)
    started: bool = False
    fail_stop: bool = Field(default=False, description="A stop is accepted but never happens.")


class _ApplicationSeed(_Strict):
    id: str = Field(min_length=1)
    name: str
    type: Literal["BATCH", "STREAMING"]
    description: str = ""
    status: Literal["UPLOADED", "UPLOADING", "FAILED"] = "UPLOADED"
    failure_message: str | None = None
    deployments: list[_DeploymentSeed] = Field(default_factory=list)

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        # The sample seed says "batch"; the API answers "BATCH".
        return value.upper() if isinstance(value, str) else value


class OkeanosSeed(_Strict):
    """The ``okeanos`` section of a simulator seed."""

    token: str = Field(min_length=1)
    step_seconds: float = Field(default=3.0, ge=0)
    lambda_instances: list[_InstanceSeed] = Field(default_factory=list)
    applications: list[_ApplicationSeed] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> OkeanosSeed:
        instance_ids = [i.id for i in self.lambda_instances]
        if len(set(instance_ids)) != len(instance_ids):
            raise ValueError("lambda instance ids must be unique")
        app_ids = [a.id for a in self.applications]
        if len(set(app_ids)) != len(app_ids):
            raise ValueError("application ids must be unique")
        for app in self.applications:
            deployed = [d.lambda_instance_id for d in app.deployments]
            if len(set(deployed)) != len(deployed):
                raise ValueError(f"application {app.id} is deployed twice on one lambda instance")
            unknown = set(deployed) - set(instance_ids)
            if unknown:
                raise ValueError(
                    f"application {app.id} is deployed on unknown lambda instance(s): "
                    + ", ".join(sorted(unknown))
                )
        return self


@dataclass
class _Instance:
    id: str
    name: str
    status: str
    failure_message: str | None
    instance_info: dict[str, Any]


@dataclass
class _Deployment:
    instance_id: str
    flag: Timeline
    fail_stop: bool
    stop_requests: int = 0


@dataclass
class _Application:
    id: str
    name: str
    type: str
    description: str
    status: str
    failure_message: str | None
    deployments: dict[str, _Deployment]


def _instance_of(options: Mapping[str, str] | None) -> str:
    """The lambda instance that, with the application's id, names a deployment."""
    instance_id = (options or {}).get("lambda_instance_id")
    if not instance_id:
        raise ValueError("an ~okeanos application is found with options['lambda_instance_id']")
    return instance_id


def _error(status: int, message: str) -> JSONResponse:
    """The error body of Authentication.md, used for every error status."""
    body = {"errors": [{"message": message, "code": status, "details": _REASONS[status]}]}
    return JSONResponse(body, status_code=status)


def _ok(short_description: str, payload: dict[str, Any], status: int = 200) -> JSONResponse:
    # The docs spell it short_description on reads and short-description on 202 answers.
    key = "short_description" if status == 200 else "short-description"
    body = {"status": {key: short_description, "code": status}, **payload}
    return JSONResponse(body, status_code=status)


def _default_info(name: str) -> dict[str, Any]:
    return {
        "project_name": "lambda.grnet.gr",
        "master_name": f"{name}-master",
        "vcpus_master": 4,
        "vcpus_slave": 4,
        "ram_master": 4096,
        "ram_slave": 4096,
        "disk_master": 20,
        "disk_slave": 20,
        "slaves": 2,
        "network_request": 1,
        "ip_allocation": "master",
    }


async def _form(request: Request) -> dict[str, str]:
    """Form fields of a POST: urlencoded, multipart (the docs' ``curl -F``) or JSON."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(body.decode("utf-8", "replace")))
    if content_type.startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields: dict[str, str] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = payload.decode("utf-8", "replace")
        return fields
    data = await read_json(request)
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


Handler = Callable[[Request], Awaitable[JSONResponse]]


class OkeanosSimulator(Simulator):
    """~okeanos LoD: lambda instances, and applications started or stopped on them."""

    name = "okeanos"
    running_state = "started"

    def seed(self, data: dict[str, Any]) -> None:
        seed = OkeanosSeed.model_validate(data)
        with self.lock:
            self.token = seed.token
            self.step_seconds = seed.step_seconds
            self.instances = {
                i.id: _Instance(
                    id=i.id,
                    name=i.name,
                    status=i.status,
                    failure_message=i.failure_message,
                    instance_info=i.instance_info or _default_info(i.name),
                )
                for i in seed.lambda_instances
            }
            self.applications = {a.id: _new_application(a) for a in seed.applications}

    def add_resource(self, item: dict[str, Any]) -> str:
        """An application (the seed's format), deployed on the instances it names."""
        app = _ApplicationSeed.model_validate(item)
        with self.lock:
            if app.id in self.applications:
                raise ValueError(f"application {app.id} exists already")
            unknown = [d.lambda_instance_id for d in app.deployments]
            unknown = [i for i in unknown if i not in self.instances]
            if unknown:
                raise ValueError(f"no lambda instance {', '.join(unknown)}")
            self.applications[app.id] = _new_application(app)
        return app.id

    def remove_resource(self, resource_id: str) -> bool:
        with self.lock:
            return self.applications.pop(resource_id, None) is not None

    def snapshot(self) -> dict[str, Any]:
        now = self.now()
        with self.lock:
            return {
                "step_seconds": self.step_seconds,
                "lambda_instances": [
                    {"id": i.id, "name": i.name, "status": i.status}
                    for i in self.instances.values()
                ],
                "applications": [
                    {
                        "id": a.id,
                        "name": a.name,
                        "type": a.type,
                        "deployments": [
                            {
                                "lambda_instance_id": d.instance_id,
                                "started": d.flag.state(now) == STARTED,
                                "settled": d.flag.settled(now),
                                "fail_stop": d.fail_stop,
                                "stop_requests": d.stop_requests,
                            }
                            for d in a.deployments.values()
                        ],
                    }
                    for a in self.applications.values()
                ],
            }

    # Test helpers: what the real service does on its own, or what an operator does elsewhere.

    def set_instance_status(
        self, instance_id: str, status: str, failure_message: str | None = None
    ) -> None:
        """Put a lambda instance in ``status`` (KAFKA_FAILED, say, with its failure message)."""
        if status not in INSTANCE_STATUS_CODES:
            raise ValueError(f"unknown lambda instance status {status!r}")
        with self.lock:
            instance = self.instances[instance_id]
            instance.status = status
            instance.failure_message = failure_message

    def describe(
        self, resource_id: str, *, options: Mapping[str, str] | None = None
    ) -> SimulatedResource | None:
        """An application on one instance: ``started`` or ``stopped``, LoD's only words."""
        instance_id = _instance_of(options)
        with self.lock:
            app = self.applications.get(resource_id)
            deployment = app.deployments.get(instance_id) if app else None
            if deployment is None:
                return None
            now = self.now()
            return SimulatedResource(
                status=deployment.flag.state(now), settled=deployment.flag.settled(now)
            )

    def set_state(
        self, resource_id: str, state: str, *, options: Mapping[str, str] | None = None
    ) -> None:
        """Set an application's ``started`` flag on an instance now (``started`` or
        ``stopped``), dropping pending changes."""
        if state not in (STARTED, STOPPED):
            raise ValueError(f"an application on a lambda instance is {STARTED} or {STOPPED}")
        instance_id = _instance_of(options)
        with self.lock:
            deployment = self.applications[resource_id].deployments[instance_id]
            deployment.flag.set(self.now(), state)

    def set_lock(
        self, resource_id: str, *, owner: str, reason: str, ttl: dt.timedelta | None = None
    ) -> None:
        raise NotImplementedError("LoD has no locks")

    def clear_lock(self, resource_id: str) -> None:
        """LoD has no locks: there is none to clear."""

    def set_fail_stop(
        self,
        resource_id: str,
        message: str | None = None,
        *,
        fail: bool = True,
        options: Mapping[str, str] | None = None,
    ) -> None:
        """Make later stops of this deployment be accepted and then silently never happen
        (LoD reports nothing, so ``message`` has nowhere to go)."""
        instance_id = _instance_of(options)
        with self.lock:
            self.applications[resource_id].deployments[instance_id].fail_stop = fail

    def app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/api/authenticate/", self._authenticated(self._authenticate)),
                Route("/api/apps/", self._authenticated(self._list_apps)),
                Route("/api/apps/{app_id}/", self._authenticated(self._app_details)),
                Route(
                    "/api/apps/{app_id}/start/",
                    self._authenticated(self._start),
                    methods=["POST"],
                ),
                Route(
                    "/api/apps/{app_id}/stop/",
                    self._authenticated(self._stop),
                    methods=["POST"],
                ),
                Route(
                    "/api/apps/{instance_id}/list-deployed/",
                    self._authenticated(self._list_deployed),
                ),
                Route("/api/lambda-instances/", self._authenticated(self._list_instances)),
                Route(
                    "/api/lambda-instances/{instance_id}/",
                    self._authenticated(self._instance_details),
                ),
            ]
        )

    def _authenticated(self, handler: Handler) -> Handler:
        """Every documented call checks the token first and answers 401 when it is wrong."""

        async def endpoint(request: Request) -> JSONResponse:
            scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
            if scheme != "Token" or token.strip() != self.token:
                return _error(401, "Invalid token")
            return await handler(request)

        return endpoint

    async def _authenticate(self, request: Request) -> JSONResponse:
        body = {"status": 200, "result": "Success", "data": {"name": "Lambda User"}}
        return JSONResponse(body)

    def _instance_status(self, instance: _Instance, detail_key: str) -> dict[str, Any]:
        # LambdaInstanceDetails.md names the text "details"; the other pages say "detail".
        status: dict[str, Any] = {
            "message": instance.status,
            "code": INSTANCE_STATUS_CODES[instance.status],
            detail_key: f"Lambda instance is {instance.status.lower().replace('_', ' ')}",
        }
        if instance.failure_message:
            status["failure_message"] = instance.failure_message
        return status

    def _app_status(self, app: _Application) -> dict[str, Any]:
        status: dict[str, Any] = {
            "message": app.status,
            "code": APPLICATION_STATUS_CODES[app.status],
            "detail": f"Application is {app.status.lower()}",
        }
        if app.failure_message:
            status["failure_message"] = app.failure_message
        return status

    def _paged(
        self, request: Request, items: list[dict[str, Any]]
    ) -> dict[str, Any] | JSONResponse:
        """``limit``/``offset`` pages as the list pages describe; no ``limit``, no pages."""
        raw_limit = request.query_params.get("limit")
        if raw_limit is None:
            return {"data": items}
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = -1
        if limit < 0:
            return _error(400, "limit must be an integer greater than or equal to zero.")
        if limit == 0:
            return {"data": items}
        try:
            offset = max(int(request.query_params.get("offset", "0")), 0)
        except ValueError:
            offset = 0

        def link(at: int) -> str:
            if at <= 0:
                return str(request.url.remove_query_params("offset"))
            return str(request.url.include_query_params(limit=limit, offset=at))

        following = offset + limit
        return {
            "data": items[offset:following],
            "pagination": {
                "count": len(items),
                "next": link(following) if following < len(items) else None,
                "previous": link(offset - limit) if offset > 0 else None,
            },
        }

    async def _list_apps(self, request: Request) -> JSONResponse:
        with self.lock:
            items = [
                {
                    "name": a.name,
                    "id": a.id,
                    "type": a.type,
                    "status": self._app_status(a),
                    "deployed": bool(a.deployments),
                }
                for a in self.applications.values()
            ]
        page = self._paged(request, items)
        return page if isinstance(page, JSONResponse) else _ok("Applications", page)

    async def _app_details(self, request: Request) -> JSONResponse:
        app_id = request.path_params["app_id"]
        now = self.now()
        with self.lock:
            app = self.applications.get(app_id)
            if app is None:
                return _error(404, f"The application {app_id} does not exist.")
            instances = []
            for deployment in app.deployments.values():
                instance = self.instances[deployment.instance_id]
                instances.append(
                    {
                        "started": deployment.flag.state(now) == STARTED,
                        "id": instance.id,
                        "name": instance.name,
                        "status": self._instance_status(instance, "detail"),
                    }
                )
            data = {
                "name": app.name,
                "path": "lambda_applications",
                "type": app.type,
                "description": app.description,
                "status": self._app_status(app),
                "lambda_instances": instances,
                "id": app.id,
            }
        return _ok("Application details", {"data": [data]})

    async def _list_deployed(self, request: Request) -> JSONResponse:
        instance_id = request.path_params["instance_id"]
        with self.lock:
            if instance_id not in self.instances:
                return _error(404, f"The lambda instance {instance_id} does not exist.")
            items = [
                {"name": a.name, "id": a.id}
                for a in self.applications.values()
                if instance_id in a.deployments
            ]
        page = self._paged(request, items)
        return page if isinstance(page, JSONResponse) else _ok("Applications", page)

    async def _list_instances(self, request: Request) -> JSONResponse:
        now = self.now()
        with self.lock:
            items = [
                {
                    "name": i.name,
                    "id": i.id,
                    "status": self._instance_status(i, "detail"),
                    "running_app": any(
                        a.deployments[i.id].flag.state(now) == STARTED
                        for a in self.applications.values()
                        if i.id in a.deployments
                    ),
                }
                for i in self.instances.values()
            ]
        page = self._paged(request, items)
        return page if isinstance(page, JSONResponse) else _ok("Lambda instances", page)

    async def _instance_details(self, request: Request) -> JSONResponse:
        instance_id = request.path_params["instance_id"]
        view = request.query_params.get("filter")
        if view not in (None, "info", "status"):
            return _error(400, "The filter parameter takes the values info or status.")
        now = self.now()
        with self.lock:
            instance = self.instances.get(instance_id)
            if instance is None:
                return _error(404, f"The lambda instance {instance_id} does not exist.")
            info = {
                "instance_info": instance.instance_info,
                "id": instance.id,
                "name": instance.name,
            }
            status = self._instance_status(instance, "details")
            data: dict[str, Any]
            if view == "status":
                data = {"status": status, "id": instance.id, "name": instance.name}
            elif view == "info":
                data = {"info": info}
            else:
                data = {
                    "info": info,
                    "status": status,
                    "applications": [
                        {
                            "name": a.name,
                            "started": a.deployments[instance_id].flag.state(now) == STARTED,
                            "type": a.type,
                            "id": a.id,
                        }
                        for a in self.applications.values()
                        if instance_id in a.deployments
                    ],
                }
        return _ok("Lambda instance details", {"data": [data]})

    async def _start(self, request: Request) -> JSONResponse:
        return await self._act(request, "start")

    async def _stop(self, request: Request) -> JSONResponse:
        return await self._act(request, "stop")

    async def _act(self, request: Request, action: Literal["start", "stop"]) -> JSONResponse:
        """ApplicationStart.md / ApplicationStop.md: 400, 404, 409 or 202, in that order."""
        app_id = request.path_params["app_id"]
        instance_id = (await _form(request)).get("lambda_instance_id", "").strip()
        if not instance_id:
            return _error(400, "No lambda_instance_id provided.")
        now = self.now()
        with self.lock:
            app = self.applications.get(app_id)
            if app is None:
                return _error(404, f"The application {app_id} does not exist.")
            instance = self.instances.get(instance_id)
            if instance is None:
                return _error(404, f"The lambda instance {instance_id} does not exist.")
            deployment = app.deployments.get(instance_id)
            if deployment is None:
                return _error(
                    404,
                    f"The application {app.name} is not deployed on the lambda instance "
                    f"{instance.name}.",
                )
            # The docs decide on the application and its job slot alone: no 409 for an
            # instance that is not STARTED (only the service's code has one).
            # The real service decides on the flag as it is now, not on what is pending.
            current = deployment.flag.state(now)
            heading = deployment.flag.state(math.inf)
            if action == "stop":
                if current == STOPPED:
                    return _error(
                        409,
                        f"The application {app.name} has already been stopped on the lambda "
                        f"instance {instance.name}.",
                    )
                deployment.stop_requests += 1
                if heading == STARTED and not deployment.fail_stop:
                    deployment.flag.plan(now, [(STOPPED, self.step_seconds)])
            else:
                if current == STARTED:
                    return _error(
                        409,
                        f"The application {app.name} has already been started on the lambda "
                        f"instance {instance.name}.",
                    )
                if self._slot_taken(app, instance_id, now):
                    return _error(
                        409,
                        f"The {app.type.lower()} job slot of the lambda instance "
                        f"{instance.name} is already taken.",
                    )
                if heading == STOPPED:
                    deployment.flag.plan(now, [(STARTED, self.step_seconds)])
        return _ok(
            f"Your request to {action} the specified application has been accepted",
            {},
            status=202,
        )

    def _slot_taken(self, app: _Application, instance_id: str, now: float) -> bool:
        """An instance runs one batch and one streaming job at a time (ApplicationStart.md)."""
        return any(
            other.id != app.id
            and other.type == app.type
            and instance_id in other.deployments
            and other.deployments[instance_id].flag.state(now) == STARTED
            for other in self.applications.values()
        )


def _new_application(a: _ApplicationSeed) -> _Application:
    return _Application(
        id=a.id,
        name=a.name,
        type=a.type,
        description=a.description,
        status=a.status,
        failure_message=a.failure_message,
        deployments={
            d.lambda_instance_id: _Deployment(
                instance_id=d.lambda_instance_id,
                flag=Timeline(STARTED if d.started else STOPPED),
                fail_stop=d.fail_stop,
            )
            for d in a.deployments
        },
    )
