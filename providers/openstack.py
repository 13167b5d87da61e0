"""OpenStack Nova servers: stop a server, follow its status, read its lock.

Authentication is Keystone v3 (``authenticate-v3.inc``); the compute endpoint comes
from the token's service catalog. The calls made here:

    POST {auth_url}/auth/tokens                 -> 201, token in X-Subject-Token
    POST {compute}/servers/{id}/action          {"os-stop": null} -> 202, no body
    POST {compute}/servers/{id}/action          {"os-start": null} -> 202, no body (a wake)
    GET  {compute}/servers/{id}                 -> {"server": {...}}
    GET  {compute}/servers/detail               -> {"servers": [...], "servers_links": [...]}
                                                   (changes-since when polling stops;
                                                   every page, for discovery: each server's
                                                   metadata, and its tags from 2.26)
    GET  {compute}/                             -> {"version": {"version": max, ...}}
                                                   (only after a 406, versions.inc)

Every compute call asks for microversion 2.73, the first that reports ``locked_reason``
(``microversions.rst``, ``parameters.yaml``). A cloud whose maximum is lower answers 406:
the client then asks once more, at the maximum the endpoint's version document names (or
at 2.9, the first with ``locked``, if it names no lower one), and keeps to it.

A stop is asynchronous (``faults.rst``, "Server Actions"): ``status`` stays ``ACTIVE``
while ``OS-EXT-STS:task_state`` is ``powering-off``, and the action is over when
``task_state`` goes back to null, with ``status`` ``SHUTOFF`` or ``ERROR``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import SecretStr, model_validator

from providers.base import (
    DiscoveredResource,
    Phase,
    Provider,
    ProviderConfigBase,
    ProviderLock,
    Resource,
    ResourceStatus,
    StatusAndLock,
    StopAccepted,
    utcnow,
)
from providers.errors import (
    AlreadyRunningError,
    AlreadyStoppedError,
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    LockedError,
    ProviderError,
    UnavailableError,
)
from providers.http import (
    ApiClient,
    ErrorDetails,
    HttpSettings,
    Retryable,
    default_error_parser,
    json_of,
    retried,
)
from providers.pacing import RequestGate

__all__ = [
    "CHANGES_SINCE_MARGIN",
    "COMPUTE_MICROVERSION",
    "FALLBACK_MICROVERSION",
    "SERVER_STATUSES",
    "NovaProvider",
    "OpenStackConfig",
    "parse_openstack_error",
    "server_phase",
    "server_state_name",
    "server_tags",
]

log = logging.getLogger(__name__)

COMPUTE_MICROVERSION = "2.73"
# The first version that shows ``locked`` (parameters.yaml): asked for after a 406 when
# the endpoint's version document names no lower maximum.
FALLBACK_MICROVERSION = "2.9"

# Every server status of the api-ref ("List Servers"): (phase, terminal when no task runs).
SERVER_STATUSES: dict[str, tuple[Phase, bool]] = {
    "ACTIVE": (Phase.RUNNING, True),
    # Building, rebooting, rebuilding, migrating, resetting the password and resizing
    # all end with the server running.
    "BUILD": (Phase.RUNNING, False),
    "HARD_REBOOT": (Phase.RUNNING, False),
    "REBOOT": (Phase.RUNNING, False),
    "REBUILD": (Phase.RUNNING, False),
    "MIGRATING": (Phase.RUNNING, False),
    "PASSWORD": (Phase.RUNNING, False),
    "RESIZE": (Phase.RUNNING, False),
    "REVERT_RESIZE": (Phase.RUNNING, False),
    # Paused servers keep their RAM and host; rescued ones run a rescue image; a resized
    # server runs while it waits for a confirmation only a human gives.
    "PAUSED": (Phase.RUNNING, True),
    "RESCUE": (Phase.RUNNING, True),
    "VERIFY_RESIZE": (Phase.RUNNING, True),
    "SHUTOFF": (Phase.STOPPED, True),
    # Suspended ("the server is stopped", memory on disk), shelved (powered off, maybe
    # offloaded later: never, if the cloud sets shelved_offload_time to -1) and deleted
    # servers run nothing: for a bot that stops spending they are stopped.
    "SUSPENDED": (Phase.STOPPED, True),
    "SHELVED": (Phase.STOPPED, True),
    "SHELVED_OFFLOADED": (Phase.STOPPED, True),
    "SOFT_DELETED": (Phase.STOPPED, True),
    "DELETED": (Phase.STOPPED, True),
    "ERROR": (Phase.FAILED, True),
    # "A part of the infrastructure is temporarily down" (server_concepts.rst): it will
    # report again, so keep polling.
    "UNKNOWN": (Phase.UNKNOWN, False),
}

_POWERING_OFF = "powering-off"
_POWERING_ON = "powering-on"
_TASK_STATE = "OS-EXT-STS:task_state"
# A token is renewed before use once this close to its expiry, rather than risk a 401
# mid-call: a tenth of its lifetime, at most five minutes, so that a Keystone issuing
# short tokens (minutes) does not get a login before every call.
_MAX_RENEW_MARGIN = dt.timedelta(minutes=5)
_RENEW_FRACTION = 10
# Nova's own wording (nova.exception.InstanceInvalidState) for a stop of a stopped server:
# it decides when the server cannot be read after the 409.
_STOPPED_RE = re.compile(r"\bvm_state stopped\b", re.IGNORECASE)
# ... and for a start of a running server.
_ACTIVE_RE = re.compile(r"\bvm_state active\b", re.IGNORECASE)
_MICROVERSION_RE = re.compile(r"^(\d+)\.(\d+)$")
_MAX_PAGES = 1000
# How far changes-since reaches back before the time it is computed from: Nova's hosts'
# clocks may differ a little, and a server left out costs a read of its own.
CHANGES_SINCE_MARGIN = dt.timedelta(seconds=60)

# Aliases: inside the provider class, ``list`` and ``type`` name its own members.
_Servers = list[dict[str, Any]]
_ConflictKind = type[ConflictError]


def server_state_name(status: str, task_state: str | None) -> str:
    """The state shown to users: the status, and the task running on it if any."""
    return f"{status} ({task_state})" if task_state else status


def server_phase(status: str, task_state: str | None) -> tuple[Phase, bool]:
    """The common phase of a server, and whether Nova will move it on by itself.

    An action is over when ``task_state`` is null again (``faults.rst``, "Server
    Actions"), so any task running means "not terminal".
    """
    if task_state == _POWERING_OFF:
        return Phase.STOPPING, False
    if task_state == _POWERING_ON:
        return Phase.RUNNING, False
    phase, terminal = SERVER_STATUSES.get(status, (Phase.UNKNOWN, False))
    return phase, terminal and not task_state


def parse_openstack_error(response: httpx.Response) -> ErrorDetails:
    """The message of a Nova fault or a Keystone error.

    Nova wraps it in a root element naming the fault (``faults.rst``,
    "Synchronous Faults"): ``{"itemNotFound": {"code": 404, "message": ...}}``.
    Some of Nova's faults carry the text itself: ``{"badRequest": "..."}``.
    Keystone and the token middleware in front of Nova use
    ``{"error": {"code": 401, "title": "Unauthorized", "message": ...}}``.
    """
    body = response.json()
    if not isinstance(body, dict):
        return default_error_parser(response)
    if isinstance(body.get("message"), str):
        return ErrorDetails(message=body["message"])
    if len(body) == 1:
        ((root, fault),) = body.items()
        if isinstance(fault, str) and fault.strip():
            return ErrorDetails(message=fault.strip(), code=root)
        if isinstance(fault, dict) and isinstance(fault.get("message"), str):
            title = fault.get("title")
            code = str(title) if root == "error" and title else root
            return ErrorDetails(message=fault["message"], code=code)
    return default_error_parser(response)


class OpenStackConfig(ProviderConfigBase):
    """An OpenStack project (config ``type: openstack``), reached through Keystone v3.

    Two ways to log in, as ``clouds.yaml`` has them: a password (user name and domain,
    project by name and domain, or by id) or an application credential (id and secret;
    it is scoped already).
    """

    type: Literal["openstack"]
    auth_url: str
    username: str | None = None
    password: SecretStr | None = None
    project_name: str | None = None
    project_id: str | None = None
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    application_credential_id: str | None = None
    application_credential_secret: SecretStr | None = None
    region: str | None = None
    interface: Literal["public", "internal", "admin"] = "public"

    @model_validator(mode="after")
    def _one_complete_login(self) -> OpenStackConfig:
        app_credential = self.application_credential_id or self.application_credential_secret
        password = self.username or self.password
        if app_credential and password:
            raise ValueError(
                "give either a password login (username, password) or an application "
                "credential (application_credential_id, application_credential_secret), "
                "not both"
            )
        if app_credential:
            if not (self.application_credential_id and self.application_credential_secret):
                raise ValueError(
                    "an application credential needs both application_credential_id "
                    "and application_credential_secret"
                )
            return self
        missing = [
            field
            for field, value in (("username", self.username), ("password", self.password))
            if not value
        ]
        if not (self.project_name or self.project_id):
            missing.append("project_name or project_id")
        if missing:
            raise ValueError(
                f"password login is missing {', '.join(missing)} (or use "
                "application_credential_id and application_credential_secret instead)"
            )
        return self

    @property
    def identity_url(self) -> str:
        """The Keystone v3 root; ``clouds.yaml`` often gives the auth URL without ``/v3``."""
        url = self.auth_url.rstrip("/")
        return url if url.endswith("/v3") else f"{url}/v3"


@dataclasses.dataclass(frozen=True)
class _Session:
    """A Keystone token, when to renew it, and the compute endpoint its catalog named."""

    token: str = dataclasses.field(repr=False)
    renew_at: dt.datetime
    compute_url: str


class _OverLimit(Retryable):
    """Internal: a 413 overLimit, retried like a 429."""


def server_tags(server: Mapping[str, Any]) -> dict[str, str]:
    """A server's ``metadata`` (key -> value, every microversion) and its ``tags`` (a list
    of strings, from 2.26), as one mapping: a tag ``key=value`` is read as the pair, any
    other tag as tag -> ``"true"`` (so a Nova tag ``stopbot/skip`` opts the server out).
    Tags win over metadata where both name a key."""
    found: dict[str, str] = {}
    metadata = server.get("metadata")
    if isinstance(metadata, dict):
        found.update({str(k): str(v) for k, v in metadata.items()})
    tags = server.get("tags")
    for tag in tags if isinstance(tags, list) else []:
        key, sep, value = str(tag).partition("=")
        found[key] = value if sep else "true"
    return found


class NovaProvider(Provider):
    """The servers of one OpenStack project."""

    type = "openstack"
    has_locks = True

    def __init__(
        self,
        config: OpenStackConfig,
        *,
        http: HttpSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        gate: RequestGate | None = None,
    ) -> None:
        super().__init__(config.name)
        self.config = config
        # One client for Keystone and Nova: Keystone paths are relative to the auth URL,
        # Nova URLs are absolute, built from the catalog.
        self._api = ApiClient(
            config.name,
            config.identity_url,
            settings=http,
            parse_error=parse_openstack_error,
            transport=transport,
            gate=gate or RequestGate(config.requests),
        )
        self.gate = self._api.gate
        self._session: _Session | None = None
        self._session_lock = asyncio.Lock()
        # Lowered once if Nova answers 406 (microversions.rst), for every later call.
        self._microversion = COMPUTE_MICROVERSION
        # For polling with changes-since (polling_changes.rst): the latest ``updated`` time
        # Nova has shown us, and for each server being stopped, a time its changes since
        # the stop cannot be earlier than (the latest ``updated`` seen before the stop).
        self._latest_change: dt.datetime | None = None
        self._changed_since: dict[str, dt.datetime] = {}

    async def stop(self, resource: Resource, *, force: bool = False) -> StopAccepted:
        """Send ``os-stop``; Nova answers 202 with no body and powers off in the background.

        Nova has no forced stop (``force`` is ignored): only an administrator's token
        goes through a lock, and that is the cloud's policy, not the request's.
        """
        # Nova sets the server's updated_at when it takes the stop, after every time it
        # showed us so far: polling can ask for the servers changed since then.
        before_stop = self._latest_change
        try:
            await self._compute(
                "POST",
                f"/servers/{_quote(resource.id)}/action",
                json={"os-stop": None},
                ok=(202,),
            )
        except (ConflictError, ForbiddenError) as exc:
            raise await self._refine_refusal(resource, exc) from exc
        if before_stop is not None:
            self._changed_since[resource.id] = before_stop
        return StopAccepted(provider=self.name, resource_id=resource.id)

    async def start(self, resource: Resource) -> StopAccepted:
        """Send ``os-start`` (SHUTOFF -> ACTIVE): 202 with no body, the server powers on in
        the background (task ``powering-on``). The same lock rules as a stop: a locked
        server is refused to all but an administrator's token."""
        before_start = self._latest_change
        try:
            await self._compute(
                "POST",
                f"/servers/{_quote(resource.id)}/action",
                json={"os-start": None},
                ok=(202,),
            )
        except (ConflictError, ForbiddenError) as exc:
            raise await self._refine_refusal(resource, exc, starting=True) from exc
        if before_start is not None:
            self._changed_since[resource.id] = before_start
        return StopAccepted(provider=self.name, resource_id=resource.id)

    async def status(self, resource: Resource) -> ResourceStatus:
        return self._status(resource.id, await self._server(resource.id))

    async def statuses(self, resources: Sequence[Resource]) -> dict[str, ResourceStatus]:
        """One ``GET /servers/detail`` (and its next pages) for all ``resources``.

        The ``uuid`` filter is for administrators only (``parameters.yaml``), so the
        list is filtered here. When every server asked for is one we are stopping, the
        list is only of the servers changed since the earliest of their stops
        (``changes-since``, polling_changes.rst), less ``CHANGES_SINCE_MARGIN`` for clock
        differences between Nova's hosts: a few servers, not the whole project.

        ``changes-since`` is "when the server last changed status" (parameters.yaml), so a
        cloud may leave out a server still ACTIVE (powering-off): each server asked for and
        missing from such an answer is read on its own. A server missing from a full list,
        or whose own read fails, is left out, as for any bulk read.
        """
        if not resources:
            return {}
        params: dict[str, str] = {}
        since = [self._changed_since.get(r.id) for r in resources]
        if all(t is not None for t in since):
            earliest = min(t for t in since if t is not None) - CHANGES_SINCE_MARGIN
            params["changes-since"] = _query_time(earliest)
        servers = {str(s.get("id")): s for s in await self._servers(params)}
        missing = [r.id for r in resources if r.id not in servers]
        if params and missing:
            reads = await asyncio.gather(
                *(self._server(server_id) for server_id in missing), return_exceptions=True
            )
            for server_id, read in zip(missing, reads, strict=True):
                if isinstance(read, dict):
                    servers[server_id] = read
                elif not isinstance(read, ProviderError):
                    raise read
        found = {}
        for r in resources:
            server = servers.get(r.id)
            if server is not None:
                found[r.id] = status = self._status(r.id, server)
                if status.terminal:
                    self._changed_since.pop(r.id, None)  # its stop is over
        return found

    async def lock(self, resource: Resource) -> ProviderLock | None:
        """Nova's lock: ``locked`` and, from 2.73, ``locked_reason``.

        Nova does not say who locked the server nor when, so only the reason is known.
        """
        return self._lock_shown(await self._server(resource.id))

    async def status_and_lock(self, resource: Resource) -> StatusAndLock:
        """Both from one ``GET /servers/{id}``."""
        try:
            server = await self._server(resource.id)
        except Exception as exc:  # handed to the caller, as the base class does
            return exc, exc
        return self._status(resource.id, server), self._lock_or_error(server)

    def _lock_shown(self, server: Mapping[str, Any]) -> ProviderLock | None:
        """The server's lock as the microversion in use shows it; below 2.9 Nova shows
        none at all (parameters.yaml, ``locked``), so the lock cannot be known."""
        if _version_key(self._microversion) < _version_key(FALLBACK_MICROVERSION):
            raise ProviderError(
                self.name,
                f"this Nova answers at microversion {self._microversion}, which shows no "
                f"locks (they show from {FALLBACK_MICROVERSION}): the lock is unknown",
            )
        return _lock(server)

    def _lock_or_error(self, server: Mapping[str, Any]) -> ProviderLock | ProviderError | None:
        try:
            return self._lock_shown(server)
        except ProviderError as exc:
            return exc

    async def statuses_and_locks(self, resources: Sequence[Resource]) -> dict[str, StatusAndLock]:
        """Every server of the project from ``GET /servers/detail`` (all its pages): each
        carries ``locked`` (from 2.9) and ``locked_reason`` (from 2.73) as the servers.inc
        list response has them. The ``uuid`` filter is for administrators only, so the list
        is filtered here. A server the list leaves out is read on its own."""
        if not resources:
            return {}
        try:
            servers = {str(s.get("id")): s for s in await self._servers()}
        except ProviderError as exc:
            return {r.id: (exc, exc) for r in resources}
        found: dict[str, StatusAndLock] = {
            r.id: (self._status(r.id, servers[r.id]), self._lock_or_error(servers[r.id]))
            for r in resources
            if r.id in servers
        }
        return found | await self._each_alone([r for r in resources if r.id not in servers])

    async def list(self) -> list[DiscoveredResource]:
        resources = []
        for server in await self._servers():
            server_id = str(server.get("id"))
            status = self._status(server_id, server)
            resources.append(
                DiscoveredResource(
                    provider=self.name,
                    id=server_id,
                    # A server of an unreachable cell comes without its name (2.69).
                    name=str(server.get("name") or server_id),
                    state=status.state,
                    phase=status.phase,
                    tags=server_tags(server),
                )
            )
        return resources

    async def aclose(self) -> None:
        await self._api.aclose()

    async def _server(self, server_id: str) -> dict[str, Any]:
        response = await self._compute("GET", f"/servers/{_quote(server_id)}")
        server = self._body(response).get("server")
        if not isinstance(server, dict):
            raise ProviderError(self.name, "Nova answered a server read without a server")
        self._saw_changes([server])
        return server

    async def _servers(self, filters: Mapping[str, str] | None = None) -> _Servers:
        """Every server of the project (matching ``filters``), following ``servers_links``
        past Nova's page size."""
        servers: _Servers = []
        params: dict[str, str] = dict(filters or {})
        for _ in range(_MAX_PAGES):
            body = self._body(await self._compute("GET", "/servers/detail", params=params))
            page = [s for s in body.get("servers") or [] if isinstance(s, dict)]
            self._saw_changes(page)
            servers.extend(page)
            next_params = _next_page(body.get("servers_links"))
            if not page or next_params is None or next_params == params:
                break
            params = next_params
        return servers

    def _saw_changes(self, servers: _Servers) -> None:
        """Note the latest ``updated`` time of ``servers``."""
        stamps = [t for s in servers if (t := _timestamp(s.get("updated"))) is not None]
        latest = max(stamps, default=None)
        if latest is not None and (self._latest_change is None or latest > self._latest_change):
            self._latest_change = latest

    def _status(self, server_id: str, server: Mapping[str, Any]) -> ResourceStatus:
        # A server of an unreachable cell (2.69) comes with few keys and status UNKNOWN.
        status = str(server.get("status") or "UNKNOWN")
        task_state = server.get(_TASK_STATE)
        task = str(task_state) if task_state else None
        phase, terminal = server_phase(status, task)
        fault = server.get("fault")
        message = None
        if isinstance(fault, dict) and fault.get("message"):
            message = str(fault["message"])
        return ResourceStatus(
            provider=self.name,
            resource_id=server_id,
            state=server_state_name(status, task),
            phase=phase,
            terminal=terminal,
            message=message,
        )

    async def _refine_refusal(
        self, resource: Resource, error: ProviderError, *, starting: bool = False
    ) -> ProviderError:
        """Tell a locked server, and a stopped one, from other refusals of ``os-stop``
        (``starting``: a running one, from other refusals of ``os-start``).

        The api-ref fixes neither the wording nor even the status of a refused stop of a
        locked server (only an administrator may stop one: others may get 409 or, by the
        cloud's policy, 403), so one read of the server decides: ``locked`` means
        LockedError, with its ``locked_reason``. Otherwise a 409 on a server that is
        stopped (the read shows it, or Nova's message names ``vm_state stopped``) is
        AlreadyStoppedError; a 403 stays ForbiddenError.
        """
        try:
            server: Mapping[str, Any] | None = await self._server(resource.id)
        except ProviderError:
            server = None
        lock = _lock(server) if server is not None else None
        if lock is not None:
            message = f"{error.message} (reason: {lock.reason})" if lock.reason else error.message
            return LockedError(
                self.name, message, status_code=error.status_code, code=error.code, lock=lock
            )
        if not isinstance(error, ConflictError):
            return error
        if starting:
            running = _ACTIVE_RE.search(error.message) is not None
            if server is not None and not running:
                status = self._status(resource.id, server)
                running = status.phase is Phase.RUNNING and status.terminal
            return self._refined(AlreadyRunningError, error, error.message) if running else error
        stopped = _STOPPED_RE.search(error.message) is not None
        if server is not None and not stopped:
            status = self._status(resource.id, server)
            stopped = status.phase is Phase.STOPPED and status.terminal
        return self._refined(AlreadyStoppedError, error, error.message) if stopped else error

    def _refined(self, kind: _ConflictKind, error: ProviderError, message: str) -> ConflictError:
        return kind(self.name, message, status_code=error.status_code, code=error.code)

    async def _compute(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """A Nova call with a valid token and a microversion Nova takes.

        On a 401 the token is renewed and the call made once more (a token can be revoked,
        or expire early, on Keystone's side); on a 406 the microversion is lowered
        (:meth:`_lower_microversion`) and the call made once more.
        """
        session = await self._current_session()
        version = self._microversion
        renewed = lowered = False
        while True:
            try:
                return await self._send(
                    method, session, version, path, params=params, json=json, ok=ok
                )
            except AuthError:
                if renewed:
                    raise
                renewed = True
                session = await self._current_session(rejected=session)
            except InvalidRequestError as exc:
                if exc.status_code != 406 or lowered:
                    raise
                lowered = True
                version = await self._lower_microversion(session, refused=version)

    async def _lower_microversion(self, session: _Session, *, refused: str) -> str:
        """The microversion to ask for once Nova refused ``refused`` with 406.

        "The client should specify a microversion between (and including) the minimum and
        maximum" that ``GET`` on the version URL names (``microversions.rst``,
        ``versions.inc``): its maximum when lower than ``refused``, or else
        ``FALLBACK_MICROVERSION``. A cloud below 2.9 shows no locks at all.
        """
        if self._microversion != refused:
            return self._microversion  # another call lowered it meanwhile
        highest = await self._highest_microversion(session)
        if highest is not None and _version_key(highest) < _version_key(refused):
            self._microversion = highest
        else:
            self._microversion = FALLBACK_MICROVERSION
        log.warning(
            "Nova refused the microversion (406): asking for a lower one from now on",
            extra={"provider": self.name, "refused": refused, "microversion": self._microversion},
        )
        return self._microversion

    async def _highest_microversion(self, session: _Session) -> str | None:
        """The ``version`` (maximum) of the compute endpoint's version document, if any."""
        try:
            response = await self._api.request(
                "GET", session.compute_url + "/", headers={"X-Auth-Token": session.token}
            )
            document = self._body(response).get("version")
        except ProviderError:
            return None
        highest = document.get("version") if isinstance(document, dict) else None
        if isinstance(highest, str) and _MICROVERSION_RE.match(highest):
            return highest
        return None

    async def _send(
        self,
        method: str,
        session: _Session,
        version: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        json: Any,
        ok: tuple[int, ...],
    ) -> httpx.Response:
        """One Nova call at microversion ``version``; a 413 ``overLimit`` is retried like
        a 429, and slows the account down as one does.

        Rate limiting in front of Nova (older Nova's own limiter, or a proxy) may answer
        413 ``overLimit``, with ``Retry-After``, where others answer 429; none of the
        saved docs says so (``limits.rst`` is about absolute limits only), so a 413 is
        retried only when it names ``overLimit`` or says when to come back. The shared
        client retries 429 by itself.
        """
        headers = {
            "X-Auth-Token": session.token,
            "OpenStack-API-Version": f"compute {version}",
            "X-OpenStack-Nova-API-Version": version,
        }

        async def send() -> httpx.Response:
            try:
                return await self._api.request(
                    method,
                    session.compute_url + path,
                    params=params or None,
                    json=json,
                    headers=headers,
                    ok=ok,
                )
            except InvalidRequestError as exc:
                if exc.status_code == 413 and (
                    exc.code == "overLimit" or exc.retry_after is not None
                ):
                    self._api.gate.slow_down(exc.retry_after)
                    raise _OverLimit(
                        UnavailableError(
                            self.name,
                            exc.message,
                            status_code=exc.status_code,
                            code=exc.code,
                            retry_after=exc.retry_after,
                        )
                    ) from exc
                raise

        return await retried(send, self._api.settings, on=_OverLimit)

    async def _current_session(self, *, rejected: _Session | None = None) -> _Session:
        """The token to use: the current one unless near expiry or ``rejected`` by Nova."""
        async with self._session_lock:
            session = self._session
            if session is not None and session is not rejected and utcnow() < session.renew_at:
                return session
            self._session = await self._authenticate()
            return self._session

    async def _authenticate(self) -> _Session:
        """A new token; Keystone refusing the login in any way (400, 401, 403, 404 in
        ``authenticate-v3.inc``) is an AuthError with Keystone's message, while 429 and
        5xx stay "unavailable, try again"."""
        sent_at = utcnow()
        try:
            response = await self._api.request(
                "POST", "/auth/tokens", json=self._auth_body(), ok=(201,)
            )
        except ProviderError as exc:
            status = exc.status_code
            refused = status is not None and 400 <= status < 500 and status != 429
            if isinstance(exc, AuthError) or not refused:
                raise
            raise AuthError(self.name, exc.message, status_code=status, code=exc.code) from exc
        token = response.headers.get("X-Subject-Token")
        if not token:
            raise AuthError(self.name, "Keystone issued no token (no X-Subject-Token header)")
        body = self._body(response).get("token")
        if not isinstance(body, dict):
            raise AuthError(self.name, "Keystone answered without a token body")
        expires_at = _timestamp(body.get("expires_at"))
        issued_at = _timestamp(body.get("issued_at"))
        if expires_at is None:
            # Without a known expiry the token is used until Nova refuses it.
            renew_at = dt.datetime.max.replace(tzinfo=dt.UTC)
        else:
            if issued_at is not None:
                # Count the token's lifetime from our own clock: Keystone's may be skewed.
                expires_at = sent_at + (expires_at - issued_at)
            lifetime = max(expires_at - sent_at, dt.timedelta(0))
            renew_at = expires_at - min(_MAX_RENEW_MARGIN, lifetime / _RENEW_FRACTION)
        return _Session(token=token, renew_at=renew_at, compute_url=self._compute_url(body))

    def _auth_body(self) -> dict[str, Any]:
        """The ``POST /v3/auth/tokens`` body (``authenticate-v3.inc``)."""
        config = self.config
        if config.application_credential_id and config.application_credential_secret:
            # An application credential carries its scope: a scope block is refused.
            return {
                "auth": {
                    "identity": {
                        "methods": ["application_credential"],
                        "application_credential": {
                            "id": config.application_credential_id,
                            "secret": config.application_credential_secret.get_secret_value(),
                        },
                    }
                }
            }
        project: dict[str, Any] = (
            {"id": config.project_id}
            if config.project_id
            else {"name": config.project_name, "domain": {"name": config.project_domain_name}}
        )
        return {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": config.username,
                            "domain": {"name": config.user_domain_name},
                            "password": _secret(config.password),
                        }
                    },
                },
                "scope": {"project": project},
            }
        }

    def _compute_url(self, token: Mapping[str, Any]) -> str:
        """The ``compute`` endpoint for our interface (and region) in the catalog."""
        interface, region = self.config.interface, self.config.region
        seen: list[str] = []
        for service in token.get("catalog") or []:
            if not isinstance(service, dict) or service.get("type") != "compute":
                continue
            for endpoint in service.get("endpoints") or []:
                if not isinstance(endpoint, dict):
                    continue
                regions = {endpoint.get("region_id"), endpoint.get("region")}
                seen.append(f"{endpoint.get('interface')}@{endpoint.get('region_id')}")
                if endpoint.get("interface") == interface and (region is None or region in regions):
                    return str(endpoint["url"]).rstrip("/")
        where = f"interface {interface!r}" + (f" in region {region!r}" if region else "")
        found = f" (the catalog has: {', '.join(seen)})" if seen else " (the catalog has none)"
        raise ProviderError(self.name, f"no compute endpoint with {where}{found}")

    def _body(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = json_of(response)
        except ValueError:
            raise ProviderError(
                self.name, "OpenStack answered with a body that is not JSON"
            ) from None
        if not isinstance(body, dict):
            raise ProviderError(self.name, "OpenStack answered with a body that is not an object")
        return body


def _timestamp(value: Any) -> dt.datetime | None:
    """A Keystone time (``2015-11-07T02:58:43.578887Z``), in UTC if it names no zone."""
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _query_time(moment: dt.datetime) -> str:
    """A ``changes-since`` value: UTC with no zone designator. parameters.yaml and
    polling_changes.rst both give ``CCYY-MM-DDThh:mm:ss`` and say no zone means UTC; a
    ``Z`` is only in the latter's examples, and ``+00:00`` would need its ``+`` escaped."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _version_key(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor)


def _lock(server: Mapping[str, Any]) -> ProviderLock | None:
    if not server.get("locked"):
        return None
    reason = server.get("locked_reason")
    return ProviderLock(reason=str(reason) if reason else None)


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _quote(server_id: str) -> str:
    return quote(server_id, safe="")


def _next_page(links: Any) -> dict[str, str] | None:
    """The query of the ``next`` link (``marker``, ``limit``, filters), to send to the
    catalog's endpoint: the link's own host is the one Nova sees, maybe not ours."""
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
            return dict(httpx.URL(str(link["href"])).params)
    return None
