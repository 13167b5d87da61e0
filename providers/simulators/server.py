"""One loopback HTTP server for the four simulated provider APIs, plus a control API.

    /qovery/...                Qovery API          (providers.simulators.qovery)
    /nova/identity/v3/...      Keystone v3         (providers.simulators.openstack)
    /nova/v2.1/...             Nova compute
    /okeanos/...               ~okeanos LoD API    (providers.simulators.okeanos)
    /feldera/...               Feldera API         (providers.simulators.feldera)
    /_sim/...                  control: state, seed, reset, clock, faults, account limits,
                               request counts and peak requests in flight (stats), and
                               resources created (POST /_sim/resources/<api>, one seed
                               item) or deleted (DELETE /_sim/resources/<api>/<id>) at run
                               time, as in the provider's console

``SimulatorServer`` runs it in a background thread on a free port, for tests and
for the bot's embedded defaults; ``stopbot simulate`` runs it in the foreground.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from providers.registry import PROVIDERS
from providers.simulators.common import (
    AccountLimit,
    Fault,
    FaultMiddleware,
    Faults,
    SimClock,
    Simulator,
)
from providers.simulators.samples import DEFAULT_SEED
from providers.threaded_server import ThreadedServer

__all__ = ["SimulatorHub", "SimulatorServer", "build_app"]


class SimulatorHub:
    """The simulators, their shared clock and faults: what the control API acts on."""

    def __init__(self, seed: Mapping[str, Any] | None = None) -> None:
        self.clock = SimClock()
        self.faults = Faults()
        self.simulators: dict[str, Simulator] = {
            kind.simulator.name: kind.simulator(self.clock) for kind in PROVIDERS
        }
        self.initial_seed = copy.deepcopy(dict(seed) if seed is not None else DEFAULT_SEED)
        self.seed(self.initial_seed)

    def seed(self, seed: Mapping[str, Any]) -> None:
        unknown = set(seed) - set(self.simulators)
        if unknown:
            raise ValueError(f"unknown simulator section(s): {', '.join(sorted(unknown))}")
        for name, section in seed.items():
            self.simulators[name].seed(copy.deepcopy(section))

    def reset(self) -> None:
        self.faults.clear()
        self.faults.reset_counts()
        self.clock.reset()
        self.seed(self.initial_seed)

    def state(self) -> dict[str, Any]:
        return {name: sim.snapshot() for name, sim in self.simulators.items()}

    def __getitem__(self, name: str) -> Simulator:
        return self.simulators[name]


def _control_routes(hub: SimulatorHub) -> list[Route]:
    async def state(request: Request) -> JSONResponse:
        return JSONResponse(hub.state())

    async def seed(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the seed must be a JSON object")
            hub.seed(body)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(hub.state())

    async def stats(request: Request) -> JSONResponse:
        if request.method == "DELETE":
            hub.faults.reset_counts()
        return JSONResponse({"requests": hub.faults.counts(), "peak_in_flight": hub.faults.peaks()})

    async def limits(request: Request) -> JSONResponse:
        try:
            limit = AccountLimit.model_validate(await request.json())
        except (ValueError, ValidationError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if limit.api not in hub.simulators:
            return JSONResponse({"error": f"unknown api {limit.api!r}"}, status_code=400)
        hub.faults.set_limit(limit)
        return JSONResponse(limit.model_dump())

    async def reset(request: Request) -> JSONResponse:
        hub.reset()
        return JSONResponse(hub.state())

    async def clock(request: Request) -> JSONResponse:
        if request.method == "POST":
            body = await request.json()
            hub.clock.advance(float(body.get("seconds", 0)))
        return JSONResponse({"now": hub.clock.now()})

    async def faults(request: Request) -> JSONResponse:
        if request.method == "DELETE":
            hub.faults.clear()
        elif request.method == "POST":
            try:
                fault = Fault.model_validate(await request.json())
            except (ValueError, ValidationError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            if fault.api not in hub.simulators:
                return JSONResponse({"error": f"unknown api {fault.api!r}"}, status_code=400)
            hub.faults.add(fault)
        return JSONResponse({"faults": hub.faults.listing()})

    async def resources(request: Request) -> JSONResponse:
        sim = hub.simulators.get(request.path_params["api"])
        if sim is None:
            return JSONResponse({"error": "unknown api"}, status_code=404)
        try:
            if request.method == "DELETE":
                if not sim.remove_resource(request.path_params["resource_id"]):
                    return JSONResponse({"error": "no such resource"}, status_code=404)
                return JSONResponse({"deleted": request.path_params["resource_id"]})
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the resource must be a JSON object")
            return JSONResponse({"created": sim.add_resource(body)}, status_code=201)
        except NotImplementedError as exc:
            return JSONResponse({"error": str(exc)}, status_code=501)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return [
        Route("/resources/{api}", resources, methods=["POST"]),
        Route("/resources/{api}/{resource_id:path}", resources, methods=["DELETE"]),
        Route("/state", state, methods=["GET"]),
        Route("/seed", seed, methods=["POST"]),
        Route("/reset", reset, methods=["POST"]),
        Route("/clock", clock, methods=["GET"]),
        Route("/clock/advance", clock, methods=["POST"]),
        Route("/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/stats", stats, methods=["GET", "DELETE"]),
        Route("/limits", limits, methods=["POST"]),
    ]


def build_app(hub: SimulatorHub) -> Starlette:
    """The ASGI app serving every simulated API under its prefix, and ``/_sim``."""
    mounts = [
        Mount(f"/{name}", app=FaultMiddleware(sim.app(), name, hub.faults))
        for name, sim in hub.simulators.items()
    ]
    return Starlette(routes=[*mounts, Mount("/_sim", routes=_control_routes(hub))])


class SimulatorServer(ThreadedServer):
    """The simulators on a loopback port, served from a background thread.

    ``with SimulatorServer() as sims: sims.url("qovery")`` gives a base URL for a client.
    """

    def __init__(
        self, seed: Mapping[str, Any] | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.hub = SimulatorHub(seed)
        super().__init__(build_app(self.hub), host=host, port=port, name="simulators")

    def url(self, api: str) -> str:
        return f"{self.base_url}/{api}"
