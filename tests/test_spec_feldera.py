"""The Feldera simulator and client checked against Feldera's own OpenAPI spec and docs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from providers.base import Phase
from providers.feldera import map_deployment_status
from providers.simulators.common import SimClock
from providers.simulators.feldera import (
    DEPLOYMENT_DESIRED_STATUSES,
    DEPLOYMENT_STATUSES,
    FelderaSimulator,
)
from providers.simulators.samples import DEFAULT_SEED, FELDERA_API_KEY
from providers.simulators.server import SimulatorServer
from tests.conftest import shared_path

AUTH = {"Authorization": f"Bearer {FELDERA_API_KEY}"}
STEP = DEFAULT_SEED["feldera"]["step_seconds"]


def load(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(shared_path("specs", "feldera", name).read_text())
    return spec


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """openapi.json 0.337.0, the current API."""
    return load("openapi.json")


def schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = spec["components"]["schemas"][name]
    return found


def problems(spec: dict[str, Any], rule: dict[str, Any], value: Any, at: str = "$") -> list[str]:
    """Where ``value`` breaks the OpenAPI 3.0 ``rule``: refs, allOf, nullable, required, enum,
    types; formats are not checked. Small on purpose: jsonschema is not a dependency."""
    if "$ref" in rule:
        return problems(spec, schema(spec, rule["$ref"].rsplit("/", 1)[1]), value, at)
    if value is None:
        return [] if rule.get("nullable") else [f"{at}: null where not nullable"]
    found = [p for sub in rule.get("allOf", []) for p in problems(spec, sub, value, at)]
    if "enum" in rule and value not in rule["enum"]:
        found.append(f"{at}: {value!r} not in {rule['enum']}")
    kind = rule.get("type")
    checks = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "integer": int,
        "number": (int, float),
    }
    if kind in checks and (
        not isinstance(value, checks[kind]) or (kind in {"integer", "number"} and value is True)
    ):
        return [*found, f"{at}: {type(value).__name__} is not {kind}"]
    if kind == "object" or "properties" in rule:
        found += [f"{at}: missing {key}" for key in rule.get("required", []) if key not in value]
        for key, sub in rule.get("properties", {}).items():
            if key in value:
                found += problems(spec, sub, value[key], f"{at}.{key}")
    if kind == "array":
        for index, item in enumerate(value):
            found += problems(spec, rule.get("items", {}), item, f"{at}[{index}]")
    return found


@pytest.fixture
def api(sims: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sims.url("feldera"), headers=AUTH) as client:
        yield client


def simulator(sims: SimulatorServer) -> FelderaSimulator:
    sim = sims.hub["feldera"]
    assert isinstance(sim, FelderaSimulator)
    return sim


def test_simulator_statuses_are_the_spec_enums(spec: dict[str, Any]) -> None:
    """The simulator knows exactly the spec's 15 CombinedStatus values and its desired ones."""
    assert set(DEPLOYMENT_STATUSES) == set(schema(spec, "CombinedStatus")["enum"])
    assert len(DEPLOYMENT_STATUSES) == 15
    assert set(DEPLOYMENT_DESIRED_STATUSES) == set(schema(spec, "CombinedDesiredStatus")["enum"])


def test_every_current_status_has_a_phase(spec: dict[str, Any]) -> None:
    """Every CombinedStatus maps to a known phase, except Unavailable (the runner cannot tell)."""
    unknown = [
        status
        for status in schema(spec, "CombinedStatus")["enum"]
        if map_deployment_status(status)[0] is Phase.UNKNOWN
    ]
    assert unknown == ["Unavailable"]


def test_older_servers_statuses_map_too() -> None:
    """The 0.148 PipelineStatus values map as well; its Suspending is a stopping status."""
    old = load("openapi-v0.148.0.json")
    mapped = {s: map_deployment_status(s)[0] for s in schema(old, "PipelineStatus")["enum"]}
    assert mapped == {
        "Stopped": Phase.STOPPED,
        "Provisioning": Phase.RUNNING,
        "Initializing": Phase.RUNNING,
        "Paused": Phase.RUNNING,
        "Running": Phase.RUNNING,
        "Unavailable": Phase.UNKNOWN,
        "Suspending": Phase.STOPPING,
        "Stopping": Phase.STOPPING,
    }


def test_simulator_routes_are_spec_operations(spec: dict[str, Any]) -> None:
    """Each path and method the simulator serves is an operation of the spec."""
    app = FelderaSimulator(SimClock()).app()
    served = {
        (route.path, method.lower()) for route in app.routes for method in route.methods - {"HEAD"}
    }
    assert served == {
        ("/v0/config", "get"),
        ("/v0/pipelines", "get"),
        ("/v0/pipelines/{pipeline_name}", "get"),
        ("/v0/pipelines/{pipeline_name}/stats", "get"),
        ("/v0/pipelines/{pipeline_name}/stop", "post"),
        ("/v0/pipelines/{pipeline_name}/start", "post"),
    }
    for path, method in served:
        assert method in spec["paths"][path], (path, method)


def test_stop_operation_is_as_the_client_assumes(spec: dict[str, Any]) -> None:
    """/stop takes an optional boolean force (default false, so the client always sends it)
    and documents 202 and the errors the client maps."""
    operation = spec["paths"]["/v0/pipelines/{pipeline_name}/stop"]["post"]
    force = next(p for p in operation["parameters"] if p["name"] == "force")
    assert (force["in"], force["required"], force["schema"]) == (
        "query",
        False,
        {"type": "boolean"},
    )
    assert "`force=false`, which is the default" in force["description"]
    assert set(operation["responses"]) == {"202", "400", "404", "405", "500", "501", "503"}


def test_status_selector_is_in_the_spec(spec: dict[str, Any]) -> None:
    """selector=status, used by the client for reads and lists, is a PipelineFieldSelector."""
    assert "status" in schema(spec, "PipelineFieldSelector")["enum"]
    for path in ("/v0/pipelines", "/v0/pipelines/{pipeline_name}"):
        names = [p["name"] for p in spec["paths"][path]["get"]["parameters"]]
        assert "selector" in names


@pytest.mark.parametrize("selector", ["all", "status", "status_with_connectors"])
@pytest.mark.parametrize("status", DEPLOYMENT_STATUSES)
def test_pipeline_body_matches_schema(
    spec: dict[str, Any], sims: SimulatorServer, api: httpx.Client, selector: str, status: str
) -> None:
    """GET /v0/pipelines/{name} answers a valid PipelineSelectedInfo in every status."""
    simulator(sims).set_state("etl", status)
    response = api.get("/v0/pipelines/etl", params={"selector": selector})
    assert response.status_code == 200
    assert problems(spec, schema(spec, "PipelineSelectedInfo"), response.json()) == []
    assert response.json()["deployment_status"] == status


@pytest.mark.parametrize("status", ["Running", "Paused"])
def test_stats_body_matches_schema(
    spec: dict[str, Any], sims: SimulatorServer, api: httpx.Client, status: str
) -> None:
    """GET /v0/pipelines/{name}/stats of a running or paused pipeline is a valid
    ControllerStatus, its input counters as seeded (none while paused)."""
    simulator(sims).set_state("etl", status)
    simulator(sims).set_input("etl", per_second=0, buffered=7)
    response = api.get("/v0/pipelines/etl/stats")
    assert response.status_code == 200
    assert problems(spec, schema(spec, "ControllerStatus"), response.json()) == []
    metrics = response.json()["global_metrics"]
    assert metrics["buffered_input_records"] == (7 if status == "Running" else 0)


def test_stats_of_a_stopped_pipeline_is_the_specs_503(
    spec: dict[str, Any], api: httpx.Client
) -> None:
    """A pipeline not deployed has no stats: 503 PipelineInteractionNotDeployed, a valid
    ErrorResponse."""
    response = api.get("/v0/pipelines/archive/stats")
    assert response.status_code == 503
    assert problems(spec, schema(spec, "ErrorResponse"), response.json()) == []
    assert response.json()["error_code"] == "PipelineInteractionNotDeployed"


def test_pipeline_list_matches_schema(
    spec: dict[str, Any], api: httpx.Client, sims: SimulatorServer
) -> None:
    """GET /v0/pipelines answers the spec's array of PipelineSelectedInfo."""
    response = api.get("/v0/pipelines", params={"selector": "status"})
    rule = spec["paths"]["/v0/pipelines"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    assert problems(spec, rule, response.json()) == []
    assert [p["name"] for p in response.json()] == ["etl", "analytics", "archive"]


@pytest.mark.parametrize(("enterprise", "force"), [(False, "true"), (True, "false")])
def test_every_step_of_a_failing_stop_matches_schema(
    spec: dict[str, Any], sims: SimulatorServer, api: httpx.Client, enterprise: bool, force: str
) -> None:
    """Each status read during a stop, failing with deployment_error, is a valid body."""
    section = json.loads(json.dumps(DEFAULT_SEED["feldera"]))
    section["enterprise"] = enterprise
    section["pipelines"][0].update(fail_stop=True, fail_message="disk full")
    simulator(sims).seed(section)
    assert api.post("/v0/pipelines/etl/stop", params={"force": force}).status_code == 202
    seen = []
    for _ in range(4):
        body = api.get("/v0/pipelines/etl", params={"selector": "status"}).json()
        assert problems(spec, schema(spec, "PipelineSelectedInfo"), body) == []
        seen.append(body["deployment_status"])
        sims.hub.clock.advance(STEP)
    assert seen[-1] == "Stopped"
    assert body["deployment_error"]["message"] == "disk full"
    assert problems(spec, schema(spec, "ErrorResponse"), body["deployment_error"]) == []


def example(spec: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    content = spec["paths"][path][method]["responses"][status]["content"]["application/json"]
    found: dict[str, Any] = (
        content.get("example") or next(iter(content["examples"].values()))["value"]
    )
    return found


@pytest.mark.parametrize(
    ("method", "path", "spec_path"),
    [
        ("GET", "/v0/pipelines/nope", "/v0/pipelines/{pipeline_name}"),
        ("POST", "/v0/pipelines/nope/stop?force=true", "/v0/pipelines/{pipeline_name}/stop"),
    ],
)
def test_unknown_pipeline_error_is_the_documented_one(
    spec: dict[str, Any], api: httpx.Client, method: str, path: str, spec_path: str
) -> None:
    """404 bodies are the spec's UnknownPipelineName ErrorResponse, message and details alike."""
    response = api.request(method, path)
    documented = example(spec, spec_path, method.lower(), "404")
    body = response.json()
    assert response.status_code == 404
    assert problems(spec, schema(spec, "ErrorResponse"), body) == []
    assert body == {
        "message": documented["message"].replace("non-existent-pipeline", "nope"),
        "error_code": documented["error_code"],
        "details": {"pipeline_name": "nope"},
    }


@pytest.mark.parametrize("status", ["Running", "Stopping"])
def test_open_source_graceful_stop_is_501_error_response(
    spec: dict[str, Any], sims: SimulatorServer, api: httpx.Client, status: str
) -> None:
    """force=false on the open-source edition is a 501 ErrorResponse (EnterpriseFeature)
    wherever force is not ignored, a stopping pipeline included."""
    simulator(sims).set_state("etl", status)
    response = api.post("/v0/pipelines/etl/stop", params={"force": "false"})
    assert response.status_code == 501
    assert problems(spec, schema(spec, "ErrorResponse"), response.json()) == []
    assert response.json()["error_code"] == "EnterpriseFeature"


def test_graceful_stop_without_storage_is_the_documented_405(
    spec: dict[str, Any], sims: SimulatorServer, api: httpx.Client
) -> None:
    """A pipeline that cannot suspend answers the spec's 405 UnsupportedPipelineAction example."""
    section = json.loads(json.dumps(DEFAULT_SEED["feldera"]))
    section["enterprise"] = True
    section["pipelines"][0]["supports_suspend"] = False
    simulator(sims).seed(section)
    response = api.post("/v0/pipelines/etl/stop", params={"force": "false"})
    assert response.status_code == 405
    assert response.json() == example(spec, "/v0/pipelines/{pipeline_name}/stop", "post", "405")


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer apikey:wrong"}, {"Authorization": "Basic abc"}]
)
def test_unauthorized_body_has_message_and_code_but_no_details(
    spec: dict[str, Any], sims: SimulatorServer, headers: dict[str, str]
) -> None:
    """The spec's bearer scheme is enforced; a 401 carries message and error_code only."""
    scheme = spec["components"]["securitySchemes"]["JSON web token (JWT) or API key"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    response = httpx.get(f"{sims.url('feldera')}/v0/pipelines", headers=headers)
    assert response.status_code == 401
    assert set(response.json()) == {"message", "error_code"}
    assert response.json()["error_code"] == "Unauthorized"


@pytest.mark.parametrize("enterprise", [False, True])
@pytest.mark.parametrize("force", ["true", "false"])
def test_stop_of_a_stopped_pipeline_is_accepted_and_changes_nothing(
    sims: SimulatorServer, api: httpx.Client, force: str, enterprise: bool
) -> None:
    """It is always possible to stop (ResourcesStatus docs): 202 on Stopped, still Stopped,
    in either edition, since force is ignored there (lifecycle.md): no 501."""
    section = json.loads(json.dumps(DEFAULT_SEED["feldera"]))
    section["enterprise"] = enterprise
    simulator(sims).seed(section)
    response = api.post("/v0/pipelines/archive/stop", params={"force": force})
    assert response.status_code == 202
    body = api.get("/v0/pipelines/archive", params={"selector": "status"}).json()
    assert (body["deployment_status"], body["deployment_desired_status"]) == ("Stopped", "Stopped")


@pytest.mark.parametrize("enterprise", [False, True])
def test_graceful_stop_of_an_unprovisioned_pipeline_is_forced(
    sims: SimulatorServer, api: httpx.Client, enterprise: bool
) -> None:
    """lifecycle.md: force=false only applies when Provisioned; otherwise the stop is forced,
    in the open-source edition too (no 501)."""
    section = json.loads(json.dumps(DEFAULT_SEED["feldera"]))
    section["enterprise"] = enterprise
    simulator(sims).seed(section)
    simulator(sims).set_state("etl", "Provisioning")
    assert api.post("/v0/pipelines/etl/stop", params={"force": "false"}).status_code == 202
    body = api.get("/v0/pipelines/etl", params={"selector": "status"}).json()
    assert (body["deployment_status"], body["deployment_desired_status"]) == (
        "Stopping",
        "Stopped",
    )


def test_graceful_stop_sets_desired_suspended_then_stopped(
    sims: SimulatorServer, api: httpx.Client
) -> None:
    """The stop docs: desired Suspended for force=false, Stopped once suspended."""
    section = json.loads(json.dumps(DEFAULT_SEED["feldera"]))
    section["enterprise"] = True
    simulator(sims).seed(section)
    api.post("/v0/pipelines/etl/stop", params={"force": "false"})
    steps = []
    for _ in range(4):
        body = api.get("/v0/pipelines/etl", params={"selector": "status"}).json()
        steps.append(
            (
                body["deployment_status"],
                body["deployment_desired_status"],
                body["deployment_resources_status"],
                body["deployment_runtime_status"],
            )
        )
        sims.hub.clock.advance(STEP)
    assert steps == [
        ("Running", "Suspended", "Provisioned", "Running"),
        ("Suspended", "Stopped", "Provisioned", "Suspended"),
        ("Stopping", "Stopped", "Stopping", None),
        ("Stopped", "Stopped", "Stopped", None),
    ]


@pytest.mark.parametrize(
    ("before", "status", "desired"),
    [
        ("suspending", "Running", "Suspended"),
        ("Suspended", "Suspended", "Stopped"),
        ("Stopping", "Stopping", "Stopped"),
    ],
)
def test_graceful_stop_while_suspending_or_stopping_is_the_documented_400(
    spec: dict[str, Any],
    sims: SimulatorServer,
    api: httpx.Client,
    before: str,
    status: str,
    desired: str,
) -> None:
    """The stop docs: a pipeline suspending or stopping can only be forcefully stopped, so
    force=false answers 400 IllegalPipelineAction, detailed like the spec's example, and
    changes nothing. (lifecycle.md would force a stop of a Stopping pipeline: the spec wins.)"""
    section = json.loads(json.dumps(DEFAULT_SEED["feldera"]))
    section["enterprise"] = True
    simulator(sims).seed(section)
    if before == "suspending":
        assert api.post("/v0/pipelines/etl/stop", params={"force": "false"}).status_code == 202
    else:
        simulator(sims).set_state("etl", before)
    response = api.post("/v0/pipelines/etl/stop", params={"force": "false"})
    documented = example(spec, "/v0/pipelines/{pipeline_name}/stop", "post", "400")
    body = response.json()
    assert response.status_code == 400
    assert problems(spec, schema(spec, "ErrorResponse"), body) == []
    assert body["error_code"] == documented["error_code"] == "IllegalPipelineAction"
    assert set(body["details"]) == set(documented["details"])
    assert (body["details"]["status"], body["details"]["current_desired_status"]) == (
        status,
        desired,
    )
    after = api.get("/v0/pipelines/etl", params={"selector": "status"}).json()
    assert (after["deployment_status"], after["deployment_desired_status"]) == (status, desired)


def test_start_operation_is_as_the_client_assumes(spec: dict[str, Any]) -> None:
    """/start takes ``initial`` (running, paused or standby) and documents 202 and the 400
    for a pipeline still suspending or stopping."""
    operation = spec["paths"]["/v0/pipelines/{pipeline_name}/start"]["post"]
    initial = next(p for p in operation["parameters"] if p["name"] == "initial")
    assert (initial["in"], initial["required"]) == ("query", False)
    assert "`running`" in initial["description"]
    assert {"202", "400", "404"} <= set(operation["responses"])
    assert "in the process of suspending or stopping" in operation["description"]


def test_every_step_of_a_start_matches_schema(
    spec: dict[str, Any], sims: SimulatorServer, api: httpx.Client
) -> None:
    """A start of a stopped pipeline: 202, then Provisioning, Initializing and Running,
    each a valid PipelineSelectedInfo with the desired status Running."""
    sims.hub.clock.freeze()
    assert api.post("/v0/pipelines/archive/start", params={"initial": "running"}).status_code == (
        202
    )
    seen = []
    for _ in range(4):
        body = api.get("/v0/pipelines/archive", params={"selector": "status"}).json()
        assert problems(spec, schema(spec, "PipelineSelectedInfo"), body) == []
        assert body["deployment_desired_status"] == "Running"
        seen.append(body["deployment_status"])
        sims.hub.clock.advance(STEP)
    assert seen == ["Stopped", "Provisioning", "Initializing", "Running"]


@pytest.mark.parametrize("before", ["Stopping", "Suspended"])
def test_start_while_stopping_is_the_documented_400(
    spec: dict[str, Any], sims: SimulatorServer, api: httpx.Client, before: str
) -> None:
    """The start docs: no /start while suspending or stopping; the 400 is the spec's
    example's code and details, and nothing changes."""
    simulator(sims).set_state("etl", before)
    response = api.post("/v0/pipelines/etl/start", params={"initial": "running"})
    documented = example(spec, "/v0/pipelines/{pipeline_name}/start", "post", "400")
    body = response.json()
    assert response.status_code == 400
    assert problems(spec, schema(spec, "ErrorResponse"), body) == []
    assert body["error_code"] == documented["error_code"] == "IllegalPipelineAction"
    assert set(body["details"]) == set(documented["details"])
    after = api.get("/v0/pipelines/etl", params={"selector": "status"}).json()
    assert after["deployment_status"] == before


def test_start_of_a_running_pipeline_succeeds_and_changes_nothing(api: httpx.Client) -> None:
    """'If the pipeline is already (being) started, it will still return success.'"""
    assert api.post("/v0/pipelines/etl/start", params={"initial": "running"}).status_code == 202
    body = api.get("/v0/pipelines/etl", params={"selector": "status"}).json()
    assert (body["deployment_status"], body["deployment_desired_status"]) == ("Running", "Running")


def test_forced_stop_while_stopping_is_accepted(sims: SimulatorServer, api: httpx.Client) -> None:
    """Only a forced stop is possible while stopping: it is accepted and changes nothing."""
    simulator(sims).set_state("etl", "Stopping")
    assert api.post("/v0/pipelines/etl/stop", params={"force": "true"}).status_code == 202
    body = api.get("/v0/pipelines/etl", params={"selector": "status"}).json()
    assert (body["deployment_status"], body["deployment_desired_status"]) == (
        "Stopping",
        "Stopped",
    )


def test_stop_unavailable_is_the_documented_503(
    spec: dict[str, Any], sims: SimulatorServer, api: httpx.Client
) -> None:
    """set_stop_unavailable() makes /stop answer the spec's 503 with an ErrorResponse, acting
    on nothing; cleared, the stop is accepted again."""
    responses = spec["paths"]["/v0/pipelines/{pipeline_name}/stop"]["post"]["responses"]
    assert responses["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    simulator(sims).set_stop_unavailable("etl", "cannot act now")
    response = api.post("/v0/pipelines/etl/stop", params={"force": "true"})
    assert response.status_code == 503
    assert problems(spec, schema(spec, "ErrorResponse"), response.json()) == []
    assert response.json() == {
        "message": "cannot act now",
        "error_code": "PipelineInteractionUnreachable",
        "details": {"pipeline_name": "etl"},
    }
    body = api.get("/v0/pipelines/etl", params={"selector": "status"}).json()
    assert body["deployment_status"] == "Running"
    simulator(sims).set_stop_unavailable("etl", None)
    assert api.post("/v0/pipelines/etl/stop", params={"force": "true"}).status_code == 202


def test_stop_unavailable_can_be_seeded(sims: SimulatorServer, api: httpx.Client) -> None:
    """A pipeline seeded with stop_unavailable answers every stop with that 503."""
    section = json.loads(json.dumps(DEFAULT_SEED["feldera"]))
    section["pipelines"][0]["stop_unavailable"] = {"message": "busy", "error_code": "X"}
    simulator(sims).seed(section)
    for force in ("true", "false"):
        response = api.post("/v0/pipelines/etl/stop", params={"force": force})
        assert (response.status_code, response.json()) == (
            503,
            {"message": "busy", "error_code": "X", "details": {}},
        )


@pytest.mark.parametrize(("enterprise", "edition"), [(False, "Open source"), (True, "Enterprise")])
def test_platform_config_matches_schema_and_names_the_edition(
    spec: dict[str, Any], sims: SimulatorServer, api: httpx.Client, enterprise: bool, edition: str
) -> None:
    """GET /v0/config is a ``Configuration`` whose ``edition`` is one of the two the spec names."""
    section = dict(DEFAULT_SEED["feldera"])
    section["enterprise"] = enterprise
    simulator(sims).seed(section)
    response = api.get("/v0/config")
    assert response.status_code == 200
    assert problems(spec, schema(spec, "Configuration"), response.json()) == []
    assert response.json()["edition"] == edition
    assert f'"{edition}"' in schema(spec, "Configuration")["properties"]["edition"]["description"]
