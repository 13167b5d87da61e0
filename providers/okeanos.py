"""~okeanos Lambda on Demand (LoD): stop an application on a lambda instance, follow it.

API reference: the LoD webapp API docs (``webapp/api-doc/docs/*.md`` of grnet/okeanos-LoD).
The calls made here:

    POST /api/apps/{application_id}/stop/            form lambda_instance_id  -> 202
    POST /api/apps/{application_id}/start/           form lambda_instance_id  -> 202 (a wake)
    GET  /api/apps/{application_id}/                 ApplicationDetails: per-instance `started`
    GET  /api/lambda-instances/{lambda_instance_id}/ LambdaInstanceDetails: per-app `started`
    GET  /api/lambda-instances/?limit=&offset=       LambdaInstancesList (pages)

Authentication is ``Authorization: Token <token>`` (Authentication.md).

A resource is one application on one lambda instance: ``resource.id`` is the application id
and ``resource.options["lambda_instance_id"]`` the instance. LoD shows whether it runs only
through a ``started`` flag, so the states are the docs' own two words:

    started flag   state       phase     terminal
    true           "started"   RUNNING   False
    false          "stopped"   STOPPED   True
    absent/other   "unknown"   UNKNOWN   False

There is no "stopping" state: after the 202 the flag stays true until the stop is done, and
a stop that fails on the service's side leaves it true with no error anywhere. So "started"
is never terminal: the bot keeps polling and its own timeout is what calls a stop failed.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from providers.base import (
    DiscoveredResource,
    Phase,
    Provider,
    ProviderConfigBase,
    Resource,
    ResourceStatus,
    StopAccepted,
)
from providers.errors import (
    AlreadyRunningError,
    AlreadyStoppedError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    ProviderError,
)
from providers.http import ApiClient, ErrorDetails, HttpSettings, json_of
from providers.pacing import RequestGate

__all__ = [
    "OkeanosConfig",
    "OkeanosProvider",
    "application_state",
    "parse_okeanos_error",
]

log = logging.getLogger(__name__)

PAGE_SIZE = 100

# The service's 409 text when the application (or its job slot) is stopped already,
# e.g. "... has already been stopped."; the service's code (not its docs) has another 409,
# for an instance that is not STARTED.
_ALREADY_STOPPED = re.compile(r"\balready\b.*\bstopped\b", re.IGNORECASE | re.DOTALL)
# ... and when a start finds it started already (ApplicationStart.md's other 409 is the
# job slot taken by another application).
_ALREADY_STARTED = re.compile(r"\balready\b.*\bstarted\b", re.IGNORECASE | re.DOTALL)


class OkeanosConfig(ProviderConfigBase):
    """A ``providers:`` entry of type ``okeanos``: one LoD service and one user token."""

    type: Literal["okeanos"] = "okeanos"
    base_url: str = Field(
        pattern=r"^https?://",
        description="The LoD service root, the part before /api/ (https://<hostname>).",
    )
    token: SecretStr = Field(description="~okeanos API token (Dashboard -> API Access).")


def application_state(started: object) -> tuple[str, Phase, bool]:
    """(state, phase, terminal) for an application's ``started`` flag on one instance."""
    if started is True:
        return "started", Phase.RUNNING, False
    if started is False:
        return "stopped", Phase.STOPPED, True
    return "unknown", Phase.UNKNOWN, False


def _error_text(error: dict[str, Any]) -> str | None:
    # Authentication.md documents {"message", "code", "details"}; the service's Django REST
    # handler also answers {"status", "detail"}, where detail may be a list.
    for key in ("message", "detail", "details"):
        value = error.get(key)
        if isinstance(value, list):
            value = "; ".join(str(v) for v in value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def parse_okeanos_error(response: httpx.Response) -> ErrorDetails:
    """The service's own words from an error body ``{"errors": [{...}, ...]}``."""
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("not an LoD error body")
    errors = body.get("errors")
    if isinstance(errors, list):
        entries = [e for e in errors if isinstance(e, dict)]
        texts = [t for t in map(_error_text, entries) if t]
        if texts:
            first = entries[0]
            details = first.get("details")
            code = details if first.get("message") and isinstance(details, str) else None
            return ErrorDetails(message="; ".join(texts), code=code)
    detail = _error_text(body)
    if detail:
        return ErrorDetails(message=detail)
    raise ValueError("not an LoD error body")


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _StatusBlock(_Body):
    message: str | None = None
    failure_message: str | None = None


class _InstanceOfApp(_Body):
    id: str
    name: str | None = None
    started: Any = None
    status: _StatusBlock | None = None


class _Application(_Body):
    id: str
    name: str | None = None
    lambda_instances: list[_InstanceOfApp] = Field(default_factory=list)


class _AppOfInstance(_Body):
    id: str
    name: str | None = None
    started: Any = None
    type: str | None = None


class _InstanceInfo(_Body):
    id: str | None = None
    name: str | None = None


class _Instance(_Body):
    id: str | None = None
    name: str | None = None
    info: _InstanceInfo | None = None
    status: _StatusBlock | None = None
    applications: list[_AppOfInstance] = Field(default_factory=list)


def _application_tags(app: _AppOfInstance, instance: _Instance) -> dict[str, str]:
    """What LambdaInstanceDetails says of a deployed application beyond its state: its
    ``type`` (BATCH, STREAMING) and the instance it runs on, by name."""
    tags = {"type": app.type} if app.type else {}
    instance_name = instance.name or (instance.info.name if instance.info else None)
    if instance_name:
        tags["lambda_instance"] = instance_name
    return tags


class _Pagination(_Body):
    next: str | None = None


_Item = TypeVar("_Item", bound=BaseModel)


class _Answer(_Body):
    """Every LoD answer: a status block, then ``data`` as a list (one item for details)."""

    data: list[dict[str, Any]] = Field(default_factory=list)
    pagination: _Pagination | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value


class OkeanosProvider(Provider):
    """Applications on ~okeanos LoD lambda instances. LoD has no locks: ``lock()`` is None."""

    type = "okeanos"

    def __init__(
        self,
        config: OkeanosConfig,
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
            parse_error=parse_okeanos_error,
            transport=transport,
            gate=gate or RequestGate(config.requests),
        )
        self.gate = self._api.gate

    async def stop(self, resource: Resource, *, force: bool = False) -> StopAccepted:
        """POST the stop (ApplicationStop.md); a 409 on a stopped app is AlreadyStoppedError.

        The 409 covers both "already stopped" and "the instance cannot act now"; the text
        tells them apart, and when it does not, one status read does.
        """
        instance_id = self._instance_id(resource)
        try:
            response = await self._api.request(
                "POST",
                f"/api/apps/{quote(resource.id, safe='')}/stop/",
                # A multipart form, as the docs' example sends it (curl -F).
                files={"lambda_instance_id": (None, instance_id)},
                ok=(200, 202),
            )
        except ConflictError as error:
            raise await self._refine_conflict(error, resource, instance_id) from None
        return StopAccepted(
            provider=self.name,
            resource_id=resource.id,
            message=self._short_description(response),
        )

    async def start(self, resource: Resource) -> StopAccepted:
        """POST the start (ApplicationStart.md), with ``lambda_instance_id``: 202. Its 409
        is "already started" (AlreadyRunningError, the text or one status read tells) or
        "the job slot of the instance is taken" (a ConflictError, as it came)."""
        instance_id = self._instance_id(resource)
        try:
            response = await self._api.request(
                "POST",
                f"/api/apps/{quote(resource.id, safe='')}/start/",
                files={"lambda_instance_id": (None, instance_id)},
                ok=(200, 202),
            )
        except ConflictError as error:
            raise await self._refine_start_conflict(error, resource, instance_id) from None
        return StopAccepted(
            provider=self.name,
            resource_id=resource.id,
            message=self._short_description(response),
        )

    def is_up(self, status: ResourceStatus) -> bool:
        """``started`` is never terminal (a stop leaves no trace while it runs), but for a
        start it is the end: LoD has no further word for it."""
        return status.phase is Phase.RUNNING

    async def status(self, resource: Resource) -> ResourceStatus:
        """The ``started`` flag of the application on its instance (ApplicationDetails.md)."""
        instance_id = self._instance_id(resource)
        deployment = await self._deployment(resource.id, instance_id)
        status = deployment.status or _StatusBlock()
        return self._status(resource.id, deployment.started, status)

    async def statuses(self, resources: Sequence[Resource]) -> dict[str, ResourceStatus]:
        """One LambdaInstanceDetails call per lambda instance: it lists every application
        deployed there with its ``started`` flag. Resources it does not cover are left out."""
        groups: dict[str, list[Resource]] = {}
        for resource in resources:
            instance_id = resource.options.get("lambda_instance_id")
            if instance_id:
                groups.setdefault(instance_id, []).append(resource)
        answers = await asyncio.gather(
            *(self._statuses_on(instance_id, group) for instance_id, group in groups.items()),
            return_exceptions=True,
        )
        found: dict[str, ResourceStatus] = {}
        for answer in answers:
            if isinstance(answer, dict):
                found.update(answer)
            elif not isinstance(answer, ProviderError):
                raise answer
        return found

    async def list(self) -> list[DiscoveredResource]:
        """Every application on every lambda instance, one resource per deployment.

        An instance whose details cannot be read (destroyed since it was listed, say) is
        skipped with a warning: the others' applications are still worth showing.
        """
        instances = await self._all("/api/lambda-instances/")
        ids = [i["id"] for i in instances if isinstance(i, dict) and isinstance(i.get("id"), str)]
        details = await asyncio.gather(
            *(self._instance(instance_id) for instance_id in ids), return_exceptions=True
        )
        found: list[DiscoveredResource] = []
        for instance_id, instance in zip(ids, details, strict=True):
            if isinstance(instance, ProviderError):
                log.warning(
                    "lambda instance left out of discovery: its details cannot be read",
                    extra={
                        "provider": self.name,
                        "lambda_instance_id": instance_id,
                        "error": str(instance),
                    },
                )
                continue
            if isinstance(instance, BaseException):
                raise instance
            for app in instance.applications:
                state, phase, _ = application_state(app.started)
                found.append(
                    DiscoveredResource(
                        provider=self.name,
                        id=app.id,
                        name=app.name or app.id,
                        state=state,
                        phase=phase,
                        options={"lambda_instance_id": instance_id},
                        tags=_application_tags(app, instance),
                    )
                )
        return found

    async def aclose(self) -> None:
        await self._api.aclose()

    def _instance_id(self, resource: Resource) -> str:
        instance_id = resource.options.get("lambda_instance_id")
        if not instance_id:
            raise InvalidRequestError(
                self.name,
                f"resource {resource.name!r} (application {resource.id}) names no lambda "
                "instance: set lambda_instance_id for it in stopbot.yaml to the id of the "
                "lambda instance the application is deployed on",
            )
        return instance_id

    def _status(self, resource_id: str, started: object, instance: _StatusBlock) -> ResourceStatus:
        state, phase, terminal = application_state(started)
        message = None
        if instance.failure_message and instance.failure_message.strip():
            message = f"lambda instance {instance.message}: {instance.failure_message.strip()}"
        return ResourceStatus(
            provider=self.name,
            resource_id=resource_id,
            state=state,
            phase=phase,
            terminal=terminal,
            message=message,
        )

    async def _statuses_on(
        self, instance_id: str, resources: Sequence[Resource]
    ) -> dict[str, ResourceStatus]:
        try:
            instance = await self._instance(instance_id)
        except (NotFoundError, InvalidRequestError):
            # No bulk answer for this instance (gone, or a service without the page): the
            # per-application reads still tell each resource's own story.
            return await Provider.statuses(self, resources)
        flags = {app.id: app.started for app in instance.applications}
        status = instance.status or _StatusBlock()
        return {r.id: self._status(r.id, flags[r.id], status) for r in resources if r.id in flags}

    async def _deployment(self, application_id: str, instance_id: str) -> _InstanceOfApp:
        response = await self._api.request("GET", f"/api/apps/{quote(application_id, safe='')}/")
        app = self._only(response, _Application)
        for deployment in app.lambda_instances:
            if deployment.id == instance_id:
                return deployment
        raise NotFoundError(
            self.name,
            f"application {application_id} is not deployed on lambda instance {instance_id}",
        )

    async def _instance(self, instance_id: str) -> _Instance:
        response = await self._api.request(
            "GET", f"/api/lambda-instances/{quote(instance_id, safe='')}/"
        )
        return self._only(response, _Instance)

    async def _all(self, path: str) -> builtins.list[dict[str, Any]]:
        """Every item of a list page, following ``limit``/``offset`` while there is a next."""
        items: builtins.list[dict[str, Any]] = []
        offset = 0
        while True:
            params: dict[str, int] = {"limit": PAGE_SIZE}
            if offset:
                params["offset"] = offset
            answer = self._answer(await self._api.request("GET", path, params=params))
            items.extend(answer.data)
            if not answer.data or answer.pagination is None or not answer.pagination.next:
                return items
            offset += len(answer.data)

    async def _refine_conflict(
        self, error: ConflictError, resource: Resource, instance_id: str
    ) -> ProviderError:
        if _ALREADY_STOPPED.search(error.message):
            return self._refined(AlreadyStoppedError, error, error.message)
        try:
            deployment = await self._deployment(resource.id, instance_id)
        except ProviderError:
            return error
        if deployment.started is False:
            return self._refined(AlreadyStoppedError, error, error.message)
        instance_status = deployment.status.message if deployment.status else None
        if (
            instance_status
            and instance_status != "STARTED"
            and instance_status not in error.message
        ):
            message = f"{error.message} (lambda instance {instance_id} is {instance_status})"
            return self._refined(ConflictError, error, message)
        return error

    async def _refine_start_conflict(
        self, error: ConflictError, resource: Resource, instance_id: str
    ) -> ProviderError:
        if _ALREADY_STARTED.search(error.message):
            return self._refined(AlreadyRunningError, error, error.message)
        try:
            deployment = await self._deployment(resource.id, instance_id)
        except ProviderError:
            return error
        if deployment.started is True:
            return self._refined(AlreadyRunningError, error, error.message)
        return error

    def _refined(
        self, kind: builtins.type[ConflictError], error: ConflictError, message: str
    ) -> ConflictError:
        return kind(self.name, message, status_code=error.status_code, code=error.code)

    def _answer(self, response: httpx.Response) -> _Answer:
        try:
            return _Answer.model_validate(json_of(response))
        except (ValueError, ValidationError) as exc:
            raise self._unexpected(response, exc) from exc

    def _only(self, response: httpx.Response, model: builtins.type[_Item]) -> _Item:
        answer = self._answer(response)
        try:
            return model.model_validate(answer.data[0])
        except (IndexError, ValidationError) as exc:
            raise self._unexpected(response, exc) from exc

    def _unexpected(self, response: httpx.Response, exc: Exception) -> ProviderError:
        return ProviderError(
            self.name,
            f"unexpected answer to {response.request.method} {response.request.url.path}: {exc}",
            status_code=response.status_code,
        )

    @staticmethod
    def _short_description(response: httpx.Response) -> str | None:
        # The docs spell it "short-description" on 202 answers, "short_description" elsewhere.
        try:
            status = response.json().get("status")
        except (ValueError, AttributeError):
            return None
        if not isinstance(status, dict):
            return None
        text = status.get("short-description", status.get("short_description"))
        return text if isinstance(text, str) else None
