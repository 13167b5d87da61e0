"""Feldera pipelines: stop a pipeline, read its deployment status, list an instance's pipelines.

Implements the Feldera REST API v0 (https://docs.feldera.com/api/): ``POST
/v0/pipelines/{name}/stop``, ``POST /v0/pipelines/{name}/start?initial=running`` (a
wake), ``GET /v0/pipelines/{name}?selector=status`` and ``GET
/v0/pipelines?selector=status``, ``GET /v0/pipelines/{name}/stats`` (is it still
ingesting?), with ``Authorization: Bearer <API key>``. A pipeline is
named by its user-given name, which is its resource id here.

The stop endpoint's description in openapi.json and the lifecycle reference
(docs.feldera.com ``pipelines/lifecycle.md``) shape four choices:

* ``/stop`` is asynchronous: it sets a desired status and answers 202. A pipeline whose
  desired status is already ``Stopped`` or ``Suspended`` is stopping even while its
  ``deployment_status`` still reads ``Running``, so the phase follows the desired status.
* A stop is sent without reading the status first. ``force`` is ignored while compute is
  not provisioned, so a stop of a ``Stopped`` pipeline is a 202 that changes nothing. A
  graceful stop of a pipeline already suspending or stopping is refused with 400
  ``IllegalPipelineAction``, and a stop Feldera cannot act on with 503: after either, the
  status is read once, and a pipeline stopping or stopped already is followed or reported
  as already stopped, instead of failing the operation.
* ``Stopped`` is terminal and means compute is released, even with a ``deployment_error``
  (kept until dismissed): that error is shown as the status message, not as a failure.
* ``force=false`` (the server's default, a graceful stop with a final checkpoint) exists
  only in the Enterprise edition: the open-source one answers 501 ``EnterpriseFeature``.
  The client always sends ``force`` explicitly, and turns that 501 into advice to force.
  Before that, :meth:`FelderaProvider.graceful_stop` reads the edition once (``GET
  /v0/config``, ``Configuration.edition``: "Open source" or "Enterprise"), so a preview
  offers the forced stop from the start instead of failing after Confirm.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from providers.base import (
    DiscoveredResource,
    GracefulStop,
    Phase,
    Provider,
    ProviderConfigBase,
    Resource,
    ResourceStatus,
    StopAccepted,
    UsageSignal,
)
from providers.errors import (
    AlreadyRunningError,
    AlreadyStoppedError,
    ConflictError,
    InvalidRequestError,
    ProviderError,
    UnsupportedError,
)
from providers.http import ApiClient, ErrorDetails, HttpSettings, json_of
from providers.pacing import RequestGate

__all__ = [
    "FORCE_ADVICE",
    "FelderaConfig",
    "FelderaProvider",
    "IllegalPipelineActionError",
    "map_deployment_status",
    "parse_feldera_error",
]

# Combined statuses of the current API (``CombinedStatus`` in openapi.json 0.337.0), grouped
# by the phase they mean for a pipeline nobody asked to stop.
SETTLED_RUNNING = frozenset({"Running", "Paused", "Standby", "AwaitingApproval"})
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
# ``Suspending`` is the pre-0.149 status of a graceful stop; ``ShuttingDown``/``Shutdown``/
# ``Failed`` are older still (the REST tutorial's ``/shutdown``). Kept so old servers map too.
STOPPING = frozenset({"Stopping", "Suspended", "Suspending", "ShuttingDown"})
STOPPED = frozenset({"Stopped", "Shutdown"})
FAILED = frozenset({"Failed"})
UNAVAILABLE = "Unavailable"
# Desired statuses that mean a /stop was accepted: ``Suspended`` for force=false.
STOP_DESIRED = frozenset({"Stopped", "Suspended"})
# Desired statuses that mean a /start was accepted (its ``initial``).
START_DESIRED = frozenset({"Running", "Paused", "Standby"})

ENTERPRISE = "Enterprise"
"""``Configuration.edition`` of the one edition with a graceful stop (openapi.json)."""

FORCE_ADVICE = (
    "This Feldera edition cannot stop a pipeline gracefully (with a final checkpoint): "
    "use a forced stop instead."
)


class FelderaConfig(ProviderConfigBase):
    """A Feldera instance in ``stopbot.yaml``.

    ``token`` is an API key (``apikey:...``); None for a local instance without
    authentication.
    """

    type: Literal["feldera"] = "feldera"
    base_url: str = Field(min_length=1, pattern=r"^https?://", description="e.g. http://h:8080")
    token: SecretStr | None = None


class IllegalPipelineActionError(ConflictError, InvalidRequestError):
    """400 ``IllegalPipelineAction``: the pipeline's current status forbids the action.

    Feldera sends it as a 400, but it means the pipeline is busy (e.g. still stopping), so
    it is a :class:`ConflictError` for the bot as well as an invalid request.
    """


class _DeploymentError(BaseModel):
    """``deployment_error``: an ``ErrorResponse`` kept after the pipeline stopped on an error."""

    model_config = ConfigDict(extra="ignore")

    message: str
    error_code: str | None = None
    details: Any = None


class _InputMetrics(BaseModel):
    """The input counters of ``GlobalControllerMetrics`` (both required by the spec)."""

    model_config = ConfigDict(extra="ignore")

    buffered_input_records: int = Field(ge=0)
    total_input_records: int = Field(ge=0)


class _Stats(BaseModel):
    """``ControllerStatus``, the ``/stats`` answer: only its global metrics are read."""

    model_config = ConfigDict(extra="ignore")

    global_metrics: _InputMetrics


NOT_DEPLOYED = "PipelineInteractionNotDeployed"
USAGE_SAMPLE_SECONDS = 2.0
"""How far apart the two ``/stats`` reads are that tell a pipeline's input moving."""


class _PipelineStatus(BaseModel):
    """The fields of ``PipelineSelectedInfo`` (``selector=status``) the bot reads."""

    model_config = ConfigDict(extra="ignore")

    name: str
    deployment_status: str
    deployment_desired_status: str | None = None
    deployment_error: _DeploymentError | None = None


def parse_feldera_error(response: httpx.Response) -> ErrorDetails:
    """The ``message`` and ``error_code`` of a Feldera ``ErrorResponse`` body.

    Proxies and the HTTP server itself may answer without one (openapi.json, "Request
    outcome expectations"): their text, or the reason phrase, is the message then.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code = body.get("error_code")
        return ErrorDetails(message=body["message"], code=code if isinstance(code, str) else None)
    text = response.text.strip()
    return ErrorDetails(message=text[:500] or response.reason_phrase or "no details")


def map_deployment_status(
    status: str, desired: str | None = None, error: str | None = None
) -> tuple[Phase, bool]:
    """The common phase of a ``deployment_status``, and whether it is terminal.

    :param desired: ``deployment_desired_status``; ``Stopped``/``Suspended`` while the pipeline
        still reads as running means a stop is under way.
    :param error: ``deployment_error``'s message. It does not change the phase: the error
        stays set until dismissed, and a ``Stopped`` pipeline has released its compute
        whatever ended it (lifecycle.md), so it is stopped; callers show the error as the
        status message.
    """
    if status in STOPPED:
        if desired in START_DESIRED:
            return Phase.RUNNING, False  # started: about to provision
        return Phase.STOPPED, True
    if status in FAILED:
        return Phase.FAILED, True
    if status in STOPPING:
        return Phase.STOPPING, False
    if status in SETTLED_RUNNING or status in STARTING or status == UNAVAILABLE:
        if desired in STOP_DESIRED:
            return Phase.STOPPING, False
        if status == UNAVAILABLE:
            return Phase.UNKNOWN, False
        return Phase.RUNNING, status in SETTLED_RUNNING
    # A status a newer server added: keep polling, never guess it settled.
    return Phase.UNKNOWN, False


class FelderaProvider(Provider):
    """One Feldera instance (open-source or Enterprise)."""

    type: ClassVar[str] = "feldera"
    supports_force: ClassVar[bool] = True

    def __init__(
        self,
        config: FelderaConfig,
        *,
        http: HttpSettings | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        gate: RequestGate | None = None,
    ) -> None:
        super().__init__(config.name)
        headers = {}
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        self._api = ApiClient(
            config.name,
            config.base_url,
            settings=http,
            headers=headers,
            parse_error=parse_feldera_error,
            transport=transport,
            gate=gate or RequestGate(config.requests),
        )
        self.gate = self._api.gate
        self._graceful: GracefulStop | None = None
        self.usage_sample = USAGE_SAMPLE_SECONDS
        """Seconds between the two ``/stats`` reads that tell input moving (0: one read)."""

    async def stop(self, resource: Resource, *, force: bool = False) -> StopAccepted:
        """Ask Feldera to stop the pipeline: gracefully (checkpoint first) unless ``force``.

        The POST goes out with no status read first: the bot read the status when it showed
        the confirmation. Feldera accepts a stop of a ``Stopped`` pipeline as a 202 that
        changes nothing, and a forced stop of a stopping one likewise. It refuses a graceful
        stop of a pipeline already suspending or stopping (400 ``IllegalPipelineAction``),
        and answers 503 when it cannot act (a pipeline suspended already, for one): then
        the status is read once, see :meth:`_after_refusal`.

        :raises AlreadyStoppedError: Feldera refused because the pipeline is stopped.
        """
        try:
            response = await self._api.request(
                "POST",
                f"{self._path(resource)}/stop",
                params={"force": "true" if force else "false"},
                ok=(202,),
                # The spec's 503 for a stop is "cannot be performed", an answer, not "busy".
                no_retry=frozenset({503}),
            )
        except ProviderError as error:
            refined = self._refine(error, force=force)
            if error.status_code == 503 or isinstance(refined, IllegalPipelineActionError):
                outcome = await self._after_refusal(resource, refined)
                if isinstance(outcome, StopAccepted):
                    return outcome
                refined = outcome
            if refined is error:
                raise
            raise refined from error
        return StopAccepted(
            provider=self.name, resource_id=resource.id, message=_accepted_message(response)
        )

    async def graceful_stop(self) -> GracefulStop:
        """The instance's edition, read once (``GET /v0/config``): only the Enterprise
        edition stops gracefully. A failed read is not remembered: asked again next time."""
        if self._graceful is not None:
            return self._graceful
        try:
            body = self._json(await self._api.request("GET", "/v0/config"))
        except ProviderError as exc:
            return GracefulStop(available=None, why=exc.message)
        edition = body.get("edition") if isinstance(body, dict) else None
        if not isinstance(edition, str):
            return GracefulStop(available=None, why="its configuration names no edition")
        self._graceful = GracefulStop(available=edition == ENTERPRISE, why=f"{edition} edition")
        return self._graceful

    async def start(self, resource: Resource) -> StopAccepted:
        """Start the pipeline, running once provisioned (``initial=running``): 202. Feldera
        answers success for one started or starting already; it refuses a pipeline still
        suspending or stopping (400 ``IllegalPipelineAction``), which is said as such: a
        ConflictError naming the status, to try again once it has stopped."""
        try:
            response = await self._api.request(
                "POST",
                f"{self._path(resource)}/start",
                params={"initial": "running"},
                ok=(202,),
                no_retry=frozenset({503}),
            )
        except ProviderError as error:
            refined = self._refine(error, force=True)
            if isinstance(refined, IllegalPipelineActionError):
                raise await self._start_refused(resource, refined) from error
            if refined is error:
                raise
            raise refined from error
        return StopAccepted(
            provider=self.name, resource_id=resource.id, message=_accepted_message(response)
        )

    async def _start_refused(
        self, resource: Resource, refused: IllegalPipelineActionError
    ) -> ProviderError:
        """A start refused: the pipeline is suspending or stopping (the spec's only reason),
        said with its status when it can be read; running already, AlreadyRunningError."""
        try:
            status = await self.status(resource)
        except ProviderError:
            return refused
        kwargs: dict[str, Any] = {"status_code": refused.status_code, "code": refused.code}
        if status.phase is Phase.RUNNING and status.terminal:
            return AlreadyRunningError(self.name, refused.message, **kwargs)
        if status.phase is Phase.STOPPING:
            return IllegalPipelineActionError(
                self.name,
                f"the pipeline is still {status.state.lower()}: it cannot be started until it "
                "has stopped. Try again once it is Stopped.",
                **kwargs,
            )
        return refused

    async def status(self, resource: Resource) -> ResourceStatus:
        response = await self._api.request(
            "GET", self._path(resource), params={"selector": "status"}
        )
        return self._to_status(self._parse(self._json(response)))

    async def statuses(self, resources: Sequence[Resource]) -> dict[str, ResourceStatus]:
        """One ``GET /v0/pipelines?selector=status`` for every pipeline of the instance."""
        wanted = {r.id for r in resources}
        if not wanted:
            return {}
        # Only the pipelines asked for are parsed: the list has every pipeline of the instance.
        return {
            p.name: self._to_status(p)
            for p in await self._list_statuses(lambda item: item.get("name") in wanted)
        }

    async def usage(
        self, resource: Resource, *, sleep: Callable[[float], Awaitable[None]] | None = None
    ) -> list[UsageSignal]:
        """Whether the pipeline still ingests, from ``GET /v0/pipelines/{name}/stats``
        (``ControllerStatus.global_metrics``): input buffered now, or
        ``total_input_records`` grown between two reads ``usage_sample`` seconds apart.
        A pipeline not deployed has no stats (the spec's 503 ``PipelineInteractionNotDeployed``):
        not in use. Any other failure is raised: whether it is used is then unknown."""
        first = await self._input_metrics(resource)
        if first is None:
            return []
        buffered = first.buffered_input_records
        if buffered > 0:
            return [UsageSignal(kind="ingesting", detail=f"{buffered} input records buffered")]
        if self.usage_sample <= 0:
            return []
        await (sleep or asyncio.sleep)(self.usage_sample)
        second = await self._input_metrics(resource)
        if second is None:
            return []
        moved = second.total_input_records - first.total_input_records
        if moved > 0 or second.buffered_input_records > 0:
            return [
                UsageSignal(
                    kind="ingesting",
                    detail=f"{max(moved, 0)} input records in {self.usage_sample:g} s",
                )
            ]
        return []

    async def _input_metrics(self, resource: Resource) -> _InputMetrics | None:
        """The stats' input counters; None when the pipeline has no stats (not deployed)."""
        try:
            # A 503 is an answer here, not a wait: a pipeline not deployed has no stats
            # (PipelineInteractionNotDeployed), and any other 503 leaves use unknown.
            response = await self._api.request(
                "GET", f"{self._path(resource)}/stats", no_retry=frozenset({503})
            )
        except ProviderError as exc:
            if exc.code == NOT_DEPLOYED:
                return None
            raise
        try:
            return _Stats.model_validate(self._json(response)).global_metrics
        except ValidationError as exc:
            raise ProviderError(
                self.name, f"unexpected pipeline stats answer: {exc.error_count()} error(s)"
            ) from exc

    async def list(self) -> list[DiscoveredResource]:
        """Every pipeline of the instance, whatever its status (one call)."""
        statuses = [self._to_status(p) for p in await self._list_statuses()]
        return [
            DiscoveredResource(
                provider=self.name,
                id=s.resource_id,
                name=s.resource_id,
                state=s.state,
                phase=s.phase,
            )
            for s in statuses
        ]

    async def aclose(self) -> None:
        await self._api.aclose()

    async def _list_statuses(
        self, keep: Callable[[dict[str, Any]], bool] | None = None
    ) -> Sequence[_PipelineStatus]:
        """Every pipeline's status (``keep``: only the list items it accepts)."""
        response = await self._api.request("GET", "/v0/pipelines", params={"selector": "status"})
        body = self._json(response)
        if not isinstance(body, list):
            raise ProviderError(self.name, "the pipeline list is not a JSON array")
        return [
            self._parse(item)
            for item in body
            if keep is None or (isinstance(item, dict) and keep(item))
        ]

    @staticmethod
    def _path(resource: Resource) -> str:
        return f"/v0/pipelines/{quote(resource.id, safe='')}"

    def _json(self, response: httpx.Response) -> Any:
        try:
            return json_of(response)
        except ValueError as exc:
            raise ProviderError(self.name, "the answer is not JSON") from exc

    def _parse(self, data: Any) -> _PipelineStatus:
        try:
            return _PipelineStatus.model_validate(data)
        except ValidationError as exc:
            raise ProviderError(
                self.name, f"unexpected pipeline status answer: {exc.error_count()} error(s)"
            ) from exc

    def _to_status(self, pipeline: _PipelineStatus) -> ResourceStatus:
        message = pipeline.deployment_error.message if pipeline.deployment_error else None
        phase, terminal = map_deployment_status(
            pipeline.deployment_status, pipeline.deployment_desired_status, message
        )
        return ResourceStatus(
            provider=self.name,
            resource_id=pipeline.name,
            state=pipeline.deployment_status,
            phase=phase,
            terminal=terminal,
            message=message,
        )

    async def _after_refusal(
        self, resource: Resource, refused: ProviderError
    ) -> StopAccepted | ProviderError:
        """A stop refused with 503 or ``IllegalPipelineAction``: what the pipeline is doing.

        Stopping already: accepted, with that status, so the bot follows the stop under
        way. Stopped: :class:`AlreadyStoppedError`. Anything else: the refusal stands, a 503
        as a :class:`ConflictError` that names the status (Feldera said it did not act, so
        "try again later" would mislead). A status that cannot be read changes nothing.
        """
        try:
            status = await self.status(resource)
        except ProviderError:
            return refused
        said = refused.message.rstrip().rstrip(".")
        if status.phase is Phase.STOPPING:
            return StopAccepted(
                provider=self.name,
                resource_id=resource.id,
                status=status,
                message=(
                    f"The pipeline was stopping already ({status.state}); Feldera said: {said}."
                ),
            )
        kwargs: dict[str, Any] = {"status_code": refused.status_code, "code": refused.code}
        if status.phase is Phase.STOPPED:
            return AlreadyStoppedError(self.name, f"{said}; its status is {status.state}", **kwargs)
        if isinstance(refused, IllegalPipelineActionError):
            return refused
        return ConflictError(
            self.name,
            f"Feldera did not act on the stop ({said}) and the pipeline is {status.state}. "
            "Check its status before trying again.",
            **kwargs,
        )

    def _refine(self, error: ProviderError, *, force: bool) -> ProviderError:
        """Feldera's error codes say more than the HTTP status: give the bot the better class."""
        kwargs: dict[str, Any] = {
            "status_code": error.status_code,
            "code": error.code,
            "retry_after": error.retry_after,
        }
        if error.code == "IllegalPipelineAction":
            return IllegalPipelineActionError(self.name, error.message, **kwargs)
        graceful_refused = isinstance(error, UnsupportedError) or (
            error.code == "UnsupportedPipelineAction"
        )
        if graceful_refused and not force:
            return UnsupportedError(self.name, _sentence(error.message, FORCE_ADVICE), **kwargs)
        if error.code == "UnsupportedPipelineAction":
            return UnsupportedError(self.name, error.message, **kwargs)
        return error


def _sentence(message: str, advice: str) -> str:
    message = message.rstrip()
    stop = "" if message.endswith((".", "!", "?")) else "."
    return f"{message}{stop} {advice}"


def _accepted_message(response: httpx.Response) -> str | None:
    """Feldera answers 202 with a JSON string ("Pipeline is forcefully stopping"), or nothing."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, str) else None
