"""What every simulator shares: a clock tests can move, timelines of states, and faults.

A simulated resource does not run a background task per stop. Its state is a
:class:`Timeline` of (when, state) steps, read against the :class:`SimClock` at
request time. Tests move the clock (``POST /_sim/clock/advance``) instead of sleeping,
and a thousand stopping resources cost nothing between requests.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import datetime as dt
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "AccountLimit",
    "DroppedConnectionLog",
    "Fault",
    "FaultMiddleware",
    "Faults",
    "InjectedDrop",
    "SimClock",
    "SimulatedLock",
    "SimulatedResource",
    "Simulator",
    "Timeline",
]


class SimClock:
    """Wall-clock seconds plus an offset that tests advance; frozen, only ``advance`` moves it."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._frozen_at: float | None = None
        self._lock = threading.Lock()

    def now(self) -> float:
        base = self._frozen_at if self._frozen_at is not None else time.time()
        return base + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    def freeze(self) -> None:
        """Stop following the wall clock, so tests see exact durations."""
        with self._lock:
            self._frozen_at = time.time()

    def reset(self) -> None:
        """Back to the wall clock, with no offset."""
        with self._lock:
            self._offset = 0.0
            self._frozen_at = None


class Timeline:
    """A resource's states over time: ``state(now)`` is the last step at or before ``now``."""

    def __init__(self, state: str, at: float = 0.0) -> None:
        self._times: list[float] = [at]
        self._states: list[str] = [state]

    def state(self, now: float) -> str:
        index = bisect.bisect_right(self._times, now) - 1
        return self._states[max(index, 0)]

    def set(self, now: float, state: str) -> None:
        """Jump to ``state`` now, dropping any steps still to come."""
        self.plan(now, [(state, 0.0)])

    def plan(self, now: float, steps: Iterable[tuple[str, float]]) -> None:
        """From ``now``, go through ``steps``: each (state, seconds after the previous step)."""
        index = bisect.bisect_right(self._times, now)
        del self._times[index:]
        del self._states[index:]
        at = now
        for state, delay in steps:
            at += delay
            self._times.append(at)
            self._states.append(state)

    def settled(self, now: float) -> bool:
        """True when no step is still to come."""
        return self._times[-1] <= now


class Fault(BaseModel):
    """One injected fault, matched against requests to one simulated API.

    ``count`` None means every matching request, forever.
    """

    api: str
    kind: Literal["status", "latency", "drop"]
    method: str | None = None
    path_contains: str | None = None
    status: int = 503
    body: dict[str, Any] | None = None
    retry_after: float | None = None
    seconds: float = Field(default=0.0, ge=0)
    count: int | None = Field(default=1, ge=1)

    def matches(self, api: str, method: str, path: str) -> bool:
        return (
            self.api == api
            and (self.method is None or self.method.upper() == method)
            and (self.path_contains is None or self.path_contains in path)
        )


class AccountLimit(BaseModel):
    """What one simulated API allows at once, as a provider limits an account: a request
    beyond ``max_in_flight`` is answered 429 with ``Retry-After``, and not served."""

    api: str
    max_in_flight: int = Field(ge=1)
    retry_after: float = Field(default=1.0, ge=0)


class Faults:
    """The faults in force, shared by the fault middleware of every simulated API; it also
    counts the requests each API received, and how many it served at once at most
    (``/_sim/stats``), for tests and benchmarks."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._counts: dict[str, dict[str, int]] = {}
        self._in_flight: dict[str, int] = {}
        self._peaks: dict[str, int] = {}
        self._limits: dict[str, AccountLimit] = {}
        self._lock = threading.Lock()

    def enter(self, api: str, method: str) -> AccountLimit | None:
        """A request to ``api`` starts (counted); the limit it is over, if any: it is not
        served, nor counted as in flight."""
        with self._lock:
            per_api = self._counts.setdefault(api, {})
            per_api[method] = per_api.get(method, 0) + 1
            limit = self._limits.get(api)
            current = self._in_flight.get(api, 0)
            if limit is not None and current >= limit.max_in_flight:
                return limit
            self._in_flight[api] = current + 1
            self._peaks[api] = max(self._peaks.get(api, 0), current + 1)
            return None

    def leave(self, api: str) -> None:
        with self._lock:
            self._in_flight[api] -= 1

    def set_limit(self, limit: AccountLimit) -> None:
        with self._lock:
            self._limits[limit.api] = limit

    def peaks(self) -> dict[str, int]:
        """The most requests each API was serving at once, since the last reset."""
        with self._lock:
            return dict(self._peaks)

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._limits.clear()

    def take(self, api: str, method: str, path: str) -> list[Fault]:
        """The faults that apply to this request, using up one of each one's count."""
        taken: list[Fault] = []
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(api, method, path):
                    continue
                taken.append(fault)
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
        return taken

    def counts(self) -> dict[str, dict[str, int]]:
        """Requests received so far, by API and method."""
        with self._lock:
            return {api: dict(methods) for api, methods in self._counts.items()}

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._peaks = {api: n for api, n in self._in_flight.items() if n}

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.model_dump() for f in self._faults]


class InjectedDrop(ConnectionAbortedError):
    """The "drop" fault: raised mid-response, so the server cuts the connection as a
    network failure would."""


class DroppedConnectionLog(logging.Filter):
    """uvicorn logs an app's exception with its traceback, as a crash: an injected drop is
    no crash, so it becomes one line ("dropped a connection, as injected")."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, InjectedDrop):
            record.msg = "simulator: dropped a connection mid-answer, as injected (a drop fault)"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_DROP_LOG = DroppedConnectionLog()


class FaultMiddleware:
    """ASGI middleware that applies the injected faults before a simulated API answers."""

    def __init__(self, app: ASGIApp, api: str, faults: Faults) -> None:
        self.app = app
        self.api = api
        self.faults = faults
        logging.getLogger("uvicorn.error").addFilter(_DROP_LOG)  # once: a filter is a set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        over = self.faults.enter(self.api, scope["method"])
        if over is not None:
            await JSONResponse(
                {"message": "too many requests at once for this account"},
                status_code=429,
                headers={"Retry-After": f"{over.retry_after:g}"},
            )(scope, receive, send)
            return
        try:
            await self._serve(scope, receive, send)
        finally:
            self.faults.leave(self.api)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        for fault in self.faults.take(self.api, scope["method"], scope["path"]):
            if fault.kind == "latency":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "status":
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                body = fault.body if fault.body is not None else {"message": "injected fault"}
                await JSONResponse(body, status_code=fault.status, headers=headers)(
                    scope, receive, send
                )
                return
            else:  # drop: start a response, then break the connection mid-way
                start: Message = {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"1000")],
                }
                await send(start)
                raise InjectedDrop("injected dropped connection")
        await self.app(scope, receive, send)


@dataclasses.dataclass(frozen=True)
class SimulatedLock:
    """A lock the simulated API holds on a resource: who holds it, where the API records
    that, and why."""

    owner: str | None
    reason: str | None


@dataclasses.dataclass(frozen=True)
class SimulatedResource:
    """One resource as its simulated API has it now."""

    status: str
    """In the API's own words (Nova's with its task state: ``ACTIVE (powering-off)``)."""
    settled: bool
    """No step is still to come: the status stays as it is until something acts."""
    lock: SimulatedLock | None = None


class Simulator(ABC):
    """One simulated provider API, mounted by the simulator server under ``/<name>``.

    Besides serving the API, it lets tests and the playground act on a resource as
    someone would elsewhere (in the provider's console, or the service on its own): put
    it in a state, make its stops fail, lock and unlock it. A resource is named as the
    bot's configuration names it: its ``id``, and the ``options`` an API needs beyond
    it (~okeanos: ``lambda_instance_id``, the instance the application runs on).
    """

    name: ClassVar[str]
    has_locks: ClassVar[bool] = False
    running_state: ClassVar[str]
    """The API's word for a resource up and running (what :meth:`start` puts it in)."""
    """Whether the API holds locks of its own (:meth:`set_lock` works)."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.lock = threading.RLock()

    @abstractmethod
    def app(self) -> ASGIApp:
        """The ASGI app serving this API (paths relative to the mount point)."""

    @abstractmethod
    def seed(self, data: dict[str, Any]) -> None:
        """Replace all state with ``data`` (this simulator's section of the seed file)."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The current state, for the control API and tests."""

    @abstractmethod
    def describe(
        self, resource_id: str, *, options: Mapping[str, str] | None = None
    ) -> SimulatedResource | None:
        """The resource now; None when the API has no such resource."""

    @abstractmethod
    def set_state(
        self, resource_id: str, state: str, *, options: Mapping[str, str] | None = None
    ) -> None:
        """Put the resource in ``state``, one of the API's own, now, dropping the steps
        still to come: as if it had changed elsewhere. An unknown state is a ValueError."""

    @abstractmethod
    def set_fail_stop(
        self,
        resource_id: str,
        message: str | None = None,
        *,
        fail: bool = True,
        options: Mapping[str, str] | None = None,
    ) -> None:
        """Make the resource's later stops fail the way this API's fail, with ``message``
        where it reports one (None: its usual words); ``fail=False``: succeed again."""

    @abstractmethod
    def set_lock(
        self, resource_id: str, *, owner: str, reason: str, ttl: dt.timedelta | None = None
    ) -> None:
        """Lock the resource as ``owner`` would in the provider's console, for ``ttl``
        where the API's locks lapse (None: until unlocked). Only where :attr:`has_locks`:
        elsewhere a NotImplementedError."""

    @abstractmethod
    def clear_lock(self, resource_id: str) -> None:
        """Unlock the resource, as its owner would; an API without locks has none to clear."""

    def add_resource(self, item: dict[str, Any]) -> str:
        """Create one resource now, as someone would in the provider's console: ``item``
        in this simulator's seed format for one resource. Its id; a ValueError when the
        item is invalid or its id is taken. Simulators that cannot raise
        NotImplementedError."""
        raise NotImplementedError(f"the {self.name} simulator cannot create resources")

    def remove_resource(self, resource_id: str) -> bool:
        """Delete the resource now, as someone would in the provider's console; whether it
        was there."""
        raise NotImplementedError(f"the {self.name} simulator cannot delete resources")

    def start(self, resource_id: str, *, options: Mapping[str, str] | None = None) -> None:
        """Start the resource as someone would in the provider's console: running now,
        whatever it was doing (a control of the simulator, not a provider API call)."""
        self.set_state(resource_id, self.running_state, options=options)

    def now(self) -> float:
        return self.clock.now()


async def read_json(request: Request) -> Any:
    """The request's JSON body, or None when it has none or it is not JSON."""
    body = await request.body()
    if not body:
        return None
    try:
        return await request.json()
    except ValueError:
        return None
