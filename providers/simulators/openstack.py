"""Keystone v3 and Nova, simulated: tokens, a service catalog, servers that power off.

Served under the simulator server's ``/nova`` mount:

    POST identity/v3/auth/tokens          password or application credential -> 201
    GET  v2.1/                             the version document: min and max microversions
    GET  v2.1/servers                      id, name, links
    GET  v2.1/servers/detail               with limit/marker paging, status/name/locked and
                                           changes-since/changes-before filters
    GET  v2.1/servers/{id}
    POST v2.1/servers/{id}/action          os-stop, os-start, lock, unlock -> 202

A stop runs as Nova's does (``servers-actions.inc``, ``vm-states.rst``): ``ACTIVE`` with
task ``powering-off`` for ``step_seconds``, then ``SHUTOFF`` (power state 4), or
``ERROR`` with a fault when the server's seed says ``fail_stop``. Tokens expire on the
simulator clock, so tests expire them by moving it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.applications import Starlette
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

__all__ = [
    "ACTIONS",
    "DEFAULT_FAIL_MESSAGE",
    "STATUS_STATES",
    "AppCredentialSeed",
    "NovaSeed",
    "NovaSimulator",
    "ServerSeed",
]

MIN_MICROVERSION = (2, 1)
MAX_MICROVERSION = (2, 100)  # the default; a seed's max_microversion plays an older cloud

# Status -> (vm_state, task_state, power_state) of a server at rest in that status, as
# Nova derives the status from vm_state and task_state (server_concepts.rst).
# Power states (parameters.yaml): 0 NOSTATE, 1 RUNNING, 3 PAUSED, 4 SHUTDOWN, 7 SUSPENDED.
STATUS_STATES: dict[str, tuple[str, str | None, int]] = {
    "ACTIVE": ("active", None, 1),
    "BUILD": ("building", "spawning", 0),
    "DELETED": ("deleted", None, 0),
    "ERROR": ("error", None, 0),
    "HARD_REBOOT": ("active", "reboot_started_hard", 1),
    "MIGRATING": ("active", "migrating", 1),
    "PASSWORD": ("active", "updating_password", 1),
    "PAUSED": ("paused", None, 3),
    "REBOOT": ("active", "reboot_started", 1),
    "REBUILD": ("active", "rebuilding", 0),
    "RESCUE": ("rescued", None, 1),
    "RESIZE": ("active", "resize_migrating", 1),
    "REVERT_RESIZE": ("resized", "resize_reverting", 1),
    "SHELVED": ("shelved", None, 4),
    "SHELVED_OFFLOADED": ("shelved_offloaded", None, 0),
    "SHUTOFF": ("stopped", None, 4),
    "SOFT_DELETED": ("soft-delete", None, 4),
    "SUSPENDED": ("suspended", None, 7),
    "UNKNOWN": ("unknown", None, 0),
    "VERIFY_RESIZE": ("resized", None, 1),
}
# Nova's stop is decorated check_instance_state(vm_state=[ACTIVE, RESCUED, ERROR]) with
# no task running; start wants STOPPED.
STOPPABLE_VM_STATES = frozenset({"active", "rescued", "error"})
ACTIONS = ("os-stop", "os-start", "lock", "unlock")
POWERING_OFF = "powering-off"
POWERING_ON = "powering-on"
DEFAULT_FAIL_MESSAGE = "Timed out waiting for the instance to power off"
UNAUTHORIZED = "The request you have made requires authentication."
_DOMAIN_ID_DEFAULT = "default"
# Each server shows this hypervisor, flavor and image: the API needs them, the bot not.
_FLAVOR = {
    "disk": 1,
    "ephemeral": 0,
    "extra_specs": {},
    "original_name": "m1.tiny",
    "ram": 512,
    "swap": 0,
    "vcpus": 1,
}
_IMAGE_ID = "70a599e0-31e7-49b7-b260-868f441e862b"
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)$")
_TRUE = frozenset({"1", "t", "true", "on", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "off", "n", "no"})


class ServerSeed(BaseModel):
    """One server of the seed; ``fail_stop`` makes its stops end in ``ERROR``."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str
    status: str = "ACTIVE"
    task_state: str | None = None
    locked: bool = False
    locked_reason: str | None = None
    fault_message: str | None = Field(
        default=None, description="The fault shown while the server is ERROR or DELETED."
    )
    fail_stop: bool = False
    fail_message: str = DEFAULT_FAIL_MESSAGE
    tags: list[str] = Field(default_factory=list, description="Server tags (shown from 2.26).")
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value not in STATUS_STATES:
            raise ValueError(f"unknown server status {value!r}: one of {sorted(STATUS_STATES)}")
        return value


class AppCredentialSeed(BaseModel):
    """An application credential of the seed's user, scoped to its project."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    name: str = "stopbot"


class NovaSeed(BaseModel):
    """The ``nova`` section of the simulators' seed: one user, one project, its servers."""

    model_config = ConfigDict(extra="forbid")

    username: str
    password: str
    user_id: str = "ee4dfb6e5540447cb3741905149d9b6e"
    user_domain_name: str = "Default"
    project_name: str
    project_id: str = "a6944d763bf64ee6a275f1263fae0352"
    project_domain_name: str = "Default"
    admin: bool = Field(default=False, description="An admin may stop a locked server.")
    token_ttl_seconds: float = Field(default=3600.0, gt=0)
    step_seconds: float = Field(default=3.0, ge=0)
    regions: list[str] = Field(default_factory=lambda: ["RegionOne"], min_length=1)
    max_limit: int = Field(default=1000, ge=1, description="Nova's [api]/max_limit page size.")
    max_microversion: str = Field(
        default="2.100", description="The highest microversion served; above it, 406."
    )
    application_credentials: list[AppCredentialSeed] = Field(default_factory=list)
    servers: list[ServerSeed] = Field(default_factory=list)

    @field_validator("max_microversion")
    @classmethod
    def _known_microversion(cls, value: str) -> str:
        match = _VERSION_RE.match(value)
        if match is None or not MIN_MICROVERSION <= _parsed(match) <= MAX_MICROVERSION:
            raise ValueError(
                f"max_microversion {value!r} is not a version from {_dotted(MIN_MICROVERSION)} "
                f"to {_dotted(MAX_MICROVERSION)}"
            )
        return value

    @property
    def max_version(self) -> tuple[int, int]:
        match = _VERSION_RE.match(self.max_microversion)
        assert match is not None  # checked by _known_microversion
        return _parsed(match)

    @model_validator(mode="after")
    def _unique_ids(self) -> NovaSeed:
        ids = [s.id for s in self.servers]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate server id(s): {', '.join(duplicates)}")
        return self


@dataclasses.dataclass
class _Token:
    expires_at: float
    scoped: bool


@dataclasses.dataclass
class _Server:
    """A server's state: its (status, task_state) over time, and when each step happens."""

    id: str
    name: str
    created: float
    timeline: Timeline
    steps: list[float]
    locked: bool
    locked_reason: str | None
    fault_message: str | None
    fail_stop: bool
    fail_message: str
    tags: list[str] = dataclasses.field(default_factory=list)
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)

    def plan(self, now: float, steps: list[tuple[str, float]]) -> None:
        self.timeline.plan(now, steps)
        self.steps = [t for t in self.steps if t <= now]
        at = now
        for _, delay in steps:
            at += delay
            self.steps.append(at)

    def state(self, now: float) -> tuple[str, str | None]:
        status, _, task = self.timeline.state(now).partition("|")
        return status, task or None

    def updated(self, now: float) -> float:
        return max((t for t in self.steps if t <= now), default=self.created)


def _key(status: str, task_state: str | None) -> str:
    return f"{status}|{task_state or ''}"


@functools.lru_cache(maxsize=4096)
def _iso(seconds: float, *, micro: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _query_time(query: Mapping[str, str], key: str) -> float | None:
    """An ISO 8601 time filter of the query, as epoch seconds (UTC when it names no zone)."""
    if key not in query:
        return None
    value = query[key]
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Rejected(
            _nova_fault(
                400,
                f"Invalid input for query parameters {key}. Value: {value}. "
                f"'{value}' is not a 'date-time'",
            )
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


@functools.lru_cache(maxsize=64)
def _host_id(project_id: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_DNS, project_id + "compute").hex


def _domain_id(name: str) -> str:
    return _DOMAIN_ID_DEFAULT if name == "Default" else uuid.uuid5(uuid.NAMESPACE_DNS, name).hex


def _request_id() -> str:
    return f"req-{uuid.uuid4()}"


def _keystone_error(status: int, title: str, message: str) -> JSONResponse:
    """Keystone's error body, also what keystonemiddleware answers in front of Nova."""
    return JSONResponse(
        {"error": {"code": status, "title": title, "message": message}},
        status_code=status,
        headers={"X-OpenStack-Request-Id": _request_id()},
    )


def _nova_fault(status: int, message: str) -> JSONResponse:
    """Nova's fault body (faults.rst): one root element named after the fault."""
    names = {
        400: "badRequest",
        401: "unauthorized",
        403: "forbidden",
        404: "itemNotFound",
        405: "badMethod",
        409: "conflictingRequest",
        413: "overLimit",
        415: "badMediaType",
        429: "overLimit",
        501: "notImplemented",
        503: "serviceUnavailable",
    }
    return JSONResponse(
        {names.get(status, "computeFault"): {"code": status, "message": message}},
        status_code=status,
    )


class _Rejected(Exception):
    """Internal: end a request with this response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class NovaSimulator(Simulator):
    """Keystone v3 and Nova servers of one project, on the shared simulator clock."""

    name = "nova"
    has_locks = True
    running_state = "ACTIVE"

    def __init__(self, clock: SimClock) -> None:
        super().__init__(clock)
        # Nobody can log in until seed() gives the user and project.
        self.config = NovaSeed(username="", password="", project_name="")
        self.servers: dict[str, _Server] = {}
        self.tokens: dict[str, _Token] = {}

    def app(self) -> ASGIApp:
        return Starlette(
            routes=[
                Route("/identity/v3/auth/tokens", self._issue_token, methods=["POST"]),
                Route("/v2.1/", self._version_document, methods=["GET"]),
                Route("/v2.1/servers/detail", self._list_detail, methods=["GET"]),
                Route("/v2.1/servers", self._list_brief, methods=["GET"]),
                Route("/v2.1/servers/{server_id}", self._show, methods=["GET"]),
                Route("/v2.1/servers/{server_id}/action", self._action, methods=["POST"]),
            ]
        )

    def seed(self, data: dict[str, Any]) -> None:
        config = NovaSeed.model_validate(data)
        now = self.now()
        with self.lock:
            self.config = config
            self.tokens = {}
            self.servers = {s.id: self._server(s, now) for s in config.servers}

    @staticmethod
    def _server(s: ServerSeed, now: float) -> _Server:
        return _Server(
            id=s.id,
            name=s.name,
            created=now,
            timeline=Timeline(_key(s.status, s.task_state or STATUS_STATES[s.status][1]), at=now),
            steps=[now],
            locked=s.locked,
            locked_reason=s.locked_reason if s.locked else None,
            fault_message=s.fault_message,
            fail_stop=s.fail_stop,
            fail_message=s.fail_message,
            tags=list(s.tags),
            metadata=dict(s.metadata),
        )

    def add_resource(self, item: dict[str, Any]) -> str:
        seed = ServerSeed.model_validate(item)
        with self.lock:
            if seed.id in self.servers:
                raise ValueError(f"server {seed.id} exists already")
            self.servers[seed.id] = self._server(seed, self.now())
        return seed.id

    def remove_resource(self, resource_id: str) -> bool:
        with self.lock:
            return self.servers.pop(resource_id, None) is not None

    def snapshot(self) -> dict[str, Any]:
        now = self.now()
        with self.lock:
            servers = []
            for server in self.servers.values():
                status, task_state = server.state(now)
                vm_state, power_state = self._vm_and_power(status)
                servers.append(
                    {
                        "id": server.id,
                        "name": server.name,
                        "status": status,
                        "task_state": task_state,
                        "vm_state": vm_state,
                        "power_state": power_state,
                        "locked": server.locked,
                        "locked_reason": server.locked_reason,
                        "fault": self._fault_message(server, status),
                        "settled": server.timeline.settled(now),
                    }
                )
            return {
                "admin": self.config.admin,
                "step_seconds": self.config.step_seconds,
                "token_ttl_seconds": self.config.token_ttl_seconds,
                "valid_tokens": sum(1 for t in self.tokens.values() if t.expires_at > now),
                "servers": servers,
            }

    def describe(
        self, resource_id: str, *, options: Mapping[str, str] | None = None
    ) -> SimulatedResource | None:
        with self.lock:
            server = self.servers.get(resource_id)
            if server is None:
                return None
            now = self.now()
            status, task_state = server.state(now)
            return SimulatedResource(
                status=f"{status} ({task_state})" if task_state else status,
                settled=server.timeline.settled(now),
                lock=SimulatedLock(None, server.locked_reason) if server.locked else None,
            )

    def set_lock(
        self,
        resource_id: str,
        *,
        owner: str | None = None,
        reason: str | None = None,
        ttl: dt.timedelta | None = None,
    ) -> None:
        """Lock a server as its owner would (``lock`` action). Nova's lock keeps a reason
        and neither an owner nor a time limit: the owner signs the reason, as people do,
        and ``ttl`` is not kept."""
        if owner is not None:
            reason = f"{reason or 'locked'} by {owner}"
        with self.lock:
            server = self.servers[resource_id]
            server.locked, server.locked_reason = True, reason

    def clear_lock(self, resource_id: str) -> None:
        with self.lock:
            server = self.servers[resource_id]
            server.locked, server.locked_reason = False, None

    def set_state(
        self, resource_id: str, state: str, *, options: Mapping[str, str] | None = None
    ) -> None:
        """Put a server in a status of Nova's now (``SHUTOFF``, ``ACTIVE``...), with the
        task state a server at rest in it has."""
        if state not in STATUS_STATES:
            raise ValueError(f"{state!r} is not a Nova server status")
        with self.lock:
            self.servers[resource_id].plan(
                self.now(), [(_key(state, STATUS_STATES[state][1]), 0.0)]
            )

    def set_fail_stop(
        self,
        resource_id: str,
        message: str | None = None,
        *,
        fail: bool = True,
        options: Mapping[str, str] | None = None,
    ) -> None:
        """Make the server's next stops end in ``ERROR`` with ``message`` as its fault."""
        with self.lock:
            server = self.servers[resource_id]
            server.fail_stop = fail
            server.fail_message = message or DEFAULT_FAIL_MESSAGE

    def revoke_tokens(self) -> None:
        """Forget every token issued, as a Keystone revocation would."""
        with self.lock:
            self.tokens.clear()

    # Keystone

    async def _issue_token(self, request: Request) -> Response:
        body = await read_json(request)
        auth = body.get("auth") if isinstance(body, dict) else None
        identity = auth.get("identity") if isinstance(auth, dict) else None
        methods = identity.get("methods") if isinstance(identity, dict) else None
        if not isinstance(auth, dict) or not isinstance(identity, dict):
            return _keystone_error(
                400,
                "Bad Request",
                "Expecting to find identity in auth. The server could not comply with the "
                "request since it is either malformed or otherwise incorrect. The client is "
                "assumed to be in error.",
            )
        if not isinstance(methods, list) or not methods:
            return _keystone_error(400, "Bad Request", "Expecting to find methods in identity.")
        with self.lock:
            config = self.config
            if methods == ["application_credential"]:
                if "scope" in auth:
                    return _keystone_error(
                        401, "Unauthorized", "Application credentials cannot request a scope."
                    )
                credential = self._application_credential(identity.get("application_credential"))
                if credential is None:
                    return _keystone_error(401, "Unauthorized", UNAUTHORIZED)
                scoped = True
            elif methods == ["password"]:
                if not self._password_matches(identity.get("password")):
                    return _keystone_error(401, "Unauthorized", UNAUTHORIZED)
                scope = auth.get("scope")
                if scope is not None and not self._project_matches(scope):
                    return _keystone_error(401, "Unauthorized", UNAUTHORIZED)
                credential, scoped = None, scope is not None
            else:
                return _keystone_error(401, "Unauthorized", UNAUTHORIZED)
            now = self.now()
            token = secrets.token_hex(16)
            expires_at = now + config.token_ttl_seconds
            self.tokens = {k: t for k, t in self.tokens.items() if t.expires_at > now}
            self.tokens[token] = _Token(expires_at=expires_at, scoped=scoped)
        base = _mount_url(request)
        document: dict[str, Any] = {
            "audit_ids": [secrets.token_urlsafe(16)],
            "expires_at": _iso(expires_at, micro=True),
            "issued_at": _iso(now, micro=True),
            "methods": methods,
            "user": {
                "domain": {
                    "id": _domain_id(config.user_domain_name),
                    "name": config.user_domain_name,
                },
                "id": config.user_id,
                "name": config.username,
                "password_expires_at": None,
            },
        }
        if scoped:
            document |= {
                "catalog": self._catalog(base),
                "is_domain": False,
                "project": {
                    "domain": {
                        "id": _domain_id(config.project_domain_name),
                        "name": config.project_domain_name,
                    },
                    "id": config.project_id,
                    "name": config.project_name,
                },
                "roles": [
                    {"id": uuid.uuid5(uuid.NAMESPACE_DNS, role).hex, "name": role}
                    for role in (
                        ["admin", "member", "reader"] if config.admin else ["member", "reader"]
                    )
                ],
            }
        if credential is not None:
            document["application_credential"] = {
                "id": credential.id,
                "name": credential.name,
                "restricted": True,
            }
        return JSONResponse(
            {"token": document},
            status_code=201,
            headers={"X-Subject-Token": token, "X-OpenStack-Request-Id": _request_id()},
        )

    def _password_matches(self, password: Any) -> bool:
        user = password.get("user") if isinstance(password, dict) else None
        if not isinstance(user, dict):
            return False
        config = self.config
        if "id" in user:
            who = user["id"] == config.user_id
        else:
            who = user.get("name") == config.username and self._domain_matches(
                user.get("domain"), config.user_domain_name
            )
        return who and secrets.compare_digest(str(user.get("password", "")), config.password)

    def _project_matches(self, scope: Any) -> bool:
        project = scope.get("project") if isinstance(scope, dict) else None
        if not isinstance(project, dict):
            return False
        if "id" in project:
            return bool(project["id"] == self.config.project_id)
        return project.get("name") == self.config.project_name and self._domain_matches(
            project.get("domain"), self.config.project_domain_name
        )

    @staticmethod
    def _domain_matches(domain: Any, name: str) -> bool:
        if not isinstance(domain, dict):
            return False
        if "id" in domain:
            return bool(domain["id"] == _domain_id(name))
        return bool(domain.get("name") == name)

    def _application_credential(self, given: Any) -> AppCredentialSeed | None:
        if not isinstance(given, dict):
            return None
        for credential in self.config.application_credentials:
            if given.get("id") == credential.id and secrets.compare_digest(
                str(given.get("secret", "")), credential.secret
            ):
                return credential
        return None

    def _catalog(self, base: str) -> list[dict[str, Any]]:
        """Identity and compute endpoints at the request's own base URL (any port)."""

        def endpoints(url: str) -> list[dict[str, Any]]:
            return [
                {
                    "id": uuid.uuid5(uuid.NAMESPACE_URL, f"{url}#{region}#{interface}").hex,
                    "interface": interface,
                    "region": region,
                    "region_id": region,
                    "url": url,
                }
                for region in self.config.regions
                for interface in ("public", "internal", "admin")
            ]

        return [
            {
                "endpoints": endpoints(f"{base}/identity"),
                "id": uuid.uuid5(uuid.NAMESPACE_DNS, "keystone").hex,
                "name": "keystone",
                "type": "identity",
            },
            {
                "endpoints": endpoints(f"{base}/v2.1"),
                "id": uuid.uuid5(uuid.NAMESPACE_DNS, "nova").hex,
                "name": "nova",
                "type": "compute",
            },
        ]

    # Nova

    def _authorize(self, request: Request) -> tuple[int, int]:
        """The microversion asked for, once the token is known to be valid.

        keystonemiddleware answers a missing, unknown or expired token before Nova does.
        """
        token = self.tokens.get(request.headers.get("X-Auth-Token", ""))
        if token is None or not token.scoped or token.expires_at <= self.now():
            response = _keystone_error(401, "Unauthorized", UNAUTHORIZED)
            identity = _mount_url(request) + "/identity"
            response.headers["WWW-Authenticate"] = f'Keystone uri="{identity}"'
            raise _Rejected(response)
        return self._microversion(request)

    async def _version_document(self, request: Request) -> Response:
        """``GET /v2.1/`` (versions.inc, "Show Details of Specific API Version"): the
        minimum and maximum microversions, to anyone: version calls need no token."""
        with self.lock:
            highest = self.config.max_version
        base = _mount_url(request)
        return JSONResponse(
            {
                "version": {
                    "id": "v2.1",
                    "links": [{"href": f"{base}/v2.1/", "rel": "self"}],
                    "media-types": [
                        {
                            "base": "application/json",
                            "type": "application/vnd.openstack.compute+json;version=2.1",
                        }
                    ],
                    "min_version": _dotted(MIN_MICROVERSION),
                    "status": "CURRENT",
                    "updated": "2025-01-01T00:00:00Z",
                    "version": _dotted(highest),
                }
            }
        )

    def _microversion(self, request: Request) -> tuple[int, int]:
        """The version asked for (microversions.rst): the newer header wins, none means 2.1."""
        value = None
        for part in request.headers.get("OpenStack-API-Version", "").split(","):
            service, _, asked = part.strip().partition(" ")
            if service.lower() == "compute":
                value = asked.strip()
        if value is None:
            value = request.headers.get("X-OpenStack-Nova-API-Version")
        if not value:
            return MIN_MICROVERSION
        highest = self.config.max_version
        if value == "latest":
            return highest
        match = _VERSION_RE.match(value)
        if match is None:
            raise _Rejected(
                _nova_fault(
                    400,
                    f"API Version String {value} is of invalid format. Must be of format "
                    "MajorNum.MinorNum.",
                )
            )
        version = _parsed(match)
        if not MIN_MICROVERSION <= version <= highest:
            raise _Rejected(
                _nova_fault(
                    406,
                    f"Version {value} is not supported by the API. Minimum is "
                    f"{_dotted(MIN_MICROVERSION)} and maximum is {_dotted(highest)}.",
                )
            )
        return version

    def _nova(self, request: Request, handler: Callable[[tuple[int, int]], Response]) -> Response:
        """Run ``handler(version)`` under the lock; add Nova's response headers."""
        try:
            with self.lock:
                version = self._authorize(request)
                response: Response = handler(version)
        except _Rejected as rejected:
            if rejected.response.status_code == 401:
                return rejected.response  # keystonemiddleware's answer: Nova never saw it
            response = rejected.response
            version = MIN_MICROVERSION
        request_id = _request_id()
        response.headers["X-Compute-Request-Id"] = request_id
        response.headers["X-OpenStack-Request-Id"] = request_id
        if version >= (2, 27):
            response.headers["OpenStack-API-Version"] = f"compute {_dotted(version)}"
        response.headers["X-OpenStack-Nova-API-Version"] = _dotted(version)
        response.headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
        return response

    async def _list_detail(self, request: Request) -> Response:
        return self._nova(request, lambda v: self._listing(request, v, detail=True))

    async def _list_brief(self, request: Request) -> Response:
        return self._nova(request, lambda v: self._listing(request, v, detail=False))

    async def _show(self, request: Request) -> Response:
        server_id = request.path_params["server_id"]

        def show(version: tuple[int, int]) -> Response:
            server = self._find(server_id)
            return JSONResponse({"server": self._render(request, server, version, show=True)})

        return self._nova(request, show)

    async def _action(self, request: Request) -> Response:
        server_id = request.path_params["server_id"]
        body = await read_json(request)

        def act(version: tuple[int, int]) -> Response:
            server = self._find(server_id)
            if not isinstance(body, dict) or not body:
                raise _Rejected(_nova_fault(400, "Malformed request body"))
            action = next(iter(body))
            if action not in ACTIONS:
                raise _Rejected(_nova_fault(400, f"There is no such action: {action}"))
            if action in ("os-stop", "os-start"):
                self._power(server, stop=action == "os-stop")
            elif action == "lock":
                given = body["lock"]
                reason = given.get("locked_reason") if isinstance(given, dict) else None
                if reason is not None and version < (2, 73):
                    raise _Rejected(_nova_fault(400, "Invalid input for field/attribute lock."))
                server.locked, server.locked_reason = True, reason
            else:
                server.locked, server.locked_reason = False, None
            return Response(status_code=202)

        return self._nova(request, act)

    def _find(self, server_id: str) -> _Server:
        server = self.servers.get(server_id)
        if server is None:
            raise _Rejected(_nova_fault(404, f"Instance {server_id} could not be found."))
        return server

    def _power(self, server: _Server, *, stop: bool) -> None:
        """Nova's checks, in its order: the lock, then vm_state, then task_state."""
        now = self.now()
        verb = "stop" if stop else "start"
        if server.locked and not self.config.admin:
            raise _Rejected(_nova_fault(409, f"Instance {server.id} is locked"))
        status, task_state = server.state(now)
        vm_state, _ = self._vm_and_power(status)
        allowed = STOPPABLE_VM_STATES if stop else frozenset({"stopped"})
        if vm_state not in allowed:
            raise _Rejected(
                _nova_fault(
                    409,
                    f"Cannot '{verb}' instance {server.id} while it is in vm_state {vm_state}",
                )
            )
        if task_state is not None:
            raise _Rejected(
                _nova_fault(
                    409,
                    f"Cannot '{verb}' instance {server.id} while it is in task_state {task_state}",
                )
            )
        step = self.config.step_seconds
        if not stop:
            server.plan(now, [(_key(status, POWERING_ON), 0.0), (_key("ACTIVE", None), step)])
            return
        end = _key("ERROR", None) if server.fail_stop else _key("SHUTOFF", None)
        if server.fail_stop:
            server.fault_message = server.fail_message
        server.plan(now, [(_key(status, POWERING_OFF), 0.0), (end, step)])

    def _listing(self, request: Request, version: tuple[int, int], *, detail: bool) -> Response:
        """One page of the project's servers, with a ``next`` link when the page is full."""
        now = self.now()
        query = request.query_params
        servers = list(self.servers.values())
        if "status" in query:
            wanted = query["status"].upper()
            if wanted not in STATUS_STATES and version >= (2, 38):
                raise _Rejected(_nova_fault(400, f"Invalid status value: {query['status']}"))
            servers = [s for s in servers if s.state(now)[0] == wanted]
        if "name" in query:
            try:
                pattern = re.compile(query["name"])
            except re.error:
                raise _Rejected(_nova_fault(400, "Invalid name filter")) from None
            servers = [s for s in servers if pattern.search(s.name)]
        if "locked" in query and version >= (2, 73):
            flag = query["locked"].lower()
            if flag not in _TRUE | _FALSE:
                raise _Rejected(
                    _nova_fault(
                        400,
                        f"Unrecognized value '{query['locked']}', acceptable "
                        "values are: '0', '1', 'f', 'false', 'n', 'no', 'off', 'on', "
                        "'t', 'true', 'y', 'yes'",
                    )
                )
            servers = [s for s in servers if s.locked == (flag in _TRUE)]
        # servers.inc, parameters.yaml (changes_since_server, changes_before_server): the
        # servers whose last change is at or after changes-since, at or before
        # changes-before (2.66); polling_changes.rst: no time zone means UTC.
        since = _query_time(query, "changes-since")
        before = _query_time(query, "changes-before") if version >= (2, 66) else None
        if since is not None and before is not None and before < since:
            raise _Rejected(
                _nova_fault(
                    400, "The value of changes-since must be less than or equal to changes-before."
                )
            )
        if since is not None:
            servers = [s for s in servers if s.updated(now) >= since]
        if before is not None:
            servers = [s for s in servers if s.updated(now) <= before]
        if "marker" in query:
            ids = [s.id for s in servers]
            if query["marker"] not in ids:
                raise _Rejected(_nova_fault(400, f"marker [{query['marker']}] not found"))
            servers = servers[ids.index(query["marker"]) + 1 :]
        limit = self.config.max_limit
        if "limit" in query:
            try:
                limit = min(int(query["limit"]), limit)
            except ValueError:
                limit = -1
            if limit < 0:
                raise _Rejected(_nova_fault(400, "limit param must be an integer"))
        page = servers[:limit]
        if detail:
            items = [self._render(request, s, version, show=False) for s in page]
        else:
            items = [
                {"id": s.id, "links": self._links(request, s.id), "name": s.name} for s in page
            ]
        body: dict[str, Any] = {"servers": items}
        if page and len(page) == limit:
            params = {k: v for k, v in query.items() if k != "marker"}
            params |= {"limit": str(limit), "marker": page[-1].id}
            path = "servers/detail" if detail else "servers"
            href = f"{self._base(request)}/{path}?{urlencode(params)}"
            body["servers_links"] = [{"href": href, "rel": "next"}]
        return JSONResponse(body)

    def _render(
        self, request: Request, server: _Server, version: tuple[int, int], *, show: bool
    ) -> dict[str, Any]:
        """A server as ``GET /servers/{id}`` shows it at ``version`` (v2.73 sample's keys)."""
        now = self.now()
        status, task_state = server.state(now)
        project_id = self.config.project_id
        if status == "UNKNOWN":
            # A server of a cell that does not answer: the few keys Nova has (2.69).
            return {
                "created": _iso(server.created),
                "id": server.id,
                "links": self._links(request, server.id),
                "status": status,
                "tenant_id": project_id,
            }
        vm_state, power_state = self._vm_and_power(status)
        body: dict[str, Any] = {
            "OS-DCF:diskConfig": "AUTO",
            "OS-EXT-AZ:availability_zone": "nova",
            "OS-EXT-STS:power_state": power_state,
            "OS-EXT-STS:task_state": task_state,
            "OS-EXT-STS:vm_state": vm_state,
            "OS-SRV-USG:launched_at": _iso(server.created, micro=True).rstrip("Z"),
            "OS-SRV-USG:terminated_at": None,
            "accessIPv4": "",
            "accessIPv6": "",
            "addresses": {},
            "config_drive": "",
            "created": _iso(server.created),
            "flavor": dict(_FLAVOR)
            if version >= (2, 47)
            else {
                "id": "1",
                "links": [{"href": f"{self._base(request)}/flavors/1", "rel": "bookmark"}],
            },
            "hostId": _host_id(project_id),
            "id": server.id,
            "image": {
                "id": _IMAGE_ID,
                "links": [{"href": f"{self._base(request)}/images/{_IMAGE_ID}", "rel": "bookmark"}],
            },
            "key_name": None,
            "links": self._links(request, server.id),
            "metadata": dict(server.metadata),
            "name": server.name,
            "os-extended-volumes:volumes_attached": [],
            "progress": 0,
            "security_groups": [{"name": "default"}],
            "status": status,
            "tenant_id": project_id,
            "updated": _iso(server.updated(now)),
            "user_id": self.config.user_id,
        }
        if self.config.admin:
            # Nova's default policy shows the extended attributes to administrators only.
            instance = f"instance-{uuid.uuid5(uuid.NAMESPACE_OID, server.id).hex[:8]}"
            body |= {
                "OS-EXT-SRV-ATTR:host": "compute",
                "OS-EXT-SRV-ATTR:hostname": server.name,
                "OS-EXT-SRV-ATTR:hypervisor_hostname": "fake-mini",
                "OS-EXT-SRV-ATTR:instance_name": instance,
                "OS-EXT-SRV-ATTR:kernel_id": "",
                "OS-EXT-SRV-ATTR:launch_index": 0,
                "OS-EXT-SRV-ATTR:ramdisk_id": "",
                "OS-EXT-SRV-ATTR:reservation_id": f"r-{server.id[:8]}",
                "OS-EXT-SRV-ATTR:root_device_name": "/dev/sda",
                "OS-EXT-SRV-ATTR:user_data": None,
            }
            if version >= (2, 16):
                body["host_status"] = "UP"
        fault = self._fault_message(server, status)
        if fault is not None:
            body["fault"] = {
                "code": 500,
                "created": _iso(server.updated(now)),
                "message": fault,
            }
        if version >= (2, 9):
            body["locked"] = server.locked
        if version >= (2, 19):
            body["description"] = None
        if version >= (2, 26):
            body["tags"] = list(server.tags)
        if version >= (2, 63):
            body["trusted_image_certificates"] = None
        if version >= (2, 71) and show:
            body["server_groups"] = []
        if version >= (2, 73):
            body["locked_reason"] = server.locked_reason
        return body

    @staticmethod
    def _vm_and_power(status: str) -> tuple[str, int]:
        vm_state, _, power_state = STATUS_STATES.get(status, ("error", None, 0))
        return vm_state, power_state

    @staticmethod
    def _fault_message(server: _Server, status: str) -> str | None:
        # faults.rst: a fault shows with the server when its status is ERROR or DELETED.
        return server.fault_message if status in ("ERROR", "DELETED") else None

    def _base(self, request: Request) -> str:
        return _mount_url(request) + "/v2.1"

    def _links(self, request: Request, server_id: str) -> list[dict[str, str]]:
        base = _mount_url(request)
        return [
            {"href": f"{base}/v2.1/servers/{server_id}", "rel": "self"},
            {"href": f"{base}/servers/{server_id}", "rel": "bookmark"},
        ]


def _mount_url(request: Request) -> str:
    """This API's own URL, as the client reached it: scheme, host, port and mount point.

    ``request.base_url`` names the app's root, not the ``/nova`` mount this app sits under.
    Worked out once a request: a list renders links for each of its servers.
    """
    url = request.scope.get(_MOUNT_URL_KEY)
    if not isinstance(url, str):
        mount = str(request.scope.get("root_path", "")).rstrip("/")
        url = str(request.url.replace(path=mount, query="", fragment="")).rstrip("/")
        request.scope[_MOUNT_URL_KEY] = url
    return url


_MOUNT_URL_KEY = "stopbot.nova_mount_url"


def _dotted(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _parsed(match: re.Match[str]) -> tuple[int, int]:
    return int(match.group(1)), int(match.group(2))
