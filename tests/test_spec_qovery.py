"""The simulated Qovery API checked against Qovery's OpenAPI spec (../shared/specs/qovery)."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError
from starlette.routing import Route

from providers.base import Phase
from providers.qovery import CLUSTER_STATES as CLIENT_STATES
from providers.simulators.common import SimClock
from providers.simulators.qovery import CLUSTER_STATES as SIMULATOR_STATES
from providers.simulators.qovery import QoverySimulator
from providers.simulators.samples import DEFAULT_SEED, QOVERY_ORG, QOVERY_TOKEN
from providers.simulators.server import SimulatorServer
from tests.conftest import shared_path

DEV = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01"
STAGING = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c02"
QA = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c03"
UNKNOWN = "ffffffff-ffff-4fff-8fff-ffffffffffff"
AUTH = {"Authorization": f"Token {QOVERY_TOKEN}"}
ORG = "/organization/{organizationId}"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    path = shared_path("specs", "qovery", "openapi.yaml")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as f:
        document: dict[str, Any] = yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader
    return document


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def problems(spec: dict[str, Any], schema: dict[str, Any], value: Any, at: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema``: the subset of OpenAPI 3.0 the cluster schemas use
    ($ref, allOf, type, nullable, enum, required, properties, items, uuid and date-time)."""
    schema = resolve(spec, schema)
    if value is None:
        return [] if schema.get("nullable") else [f"{at}: null where not nullable"]
    found: list[str] = []
    for part in schema.get("allOf", []):
        found += problems(spec, part, value, at)
    kind = schema.get("type")
    types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "boolean": bool,
        "integer": int,
        "number": (int, float),
    }
    if kind in types and (
        not isinstance(value, types[kind]) or (kind == "integer" and isinstance(value, bool))
    ):
        return [*found, f"{at}: {value!r} is not {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{at}: {value!r} not in enum")
    if schema.get("format") == "uuid":
        try:
            uuid.UUID(value)
        except ValueError:
            found.append(f"{at}: {value!r} is not a uuid")
    if schema.get("format") == "date-time":
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            found.append(f"{at}: {value!r} is not a date-time")
    if isinstance(value, dict):
        found += [f"{at}: missing {k}" for k in schema.get("required", []) if k not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                found += problems(spec, sub, value[key], f"{at}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += problems(spec, schema["items"], item, f"{at}[{i}]")
    return found


def operation(spec: dict[str, Any], method: str, template: str) -> dict[str, Any]:
    op: dict[str, Any] = spec["paths"][template][method.lower()]
    return op


def api(sims: SimulatorServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("headers", AUTH)
    return httpx.request(method, f"{sims.url('qovery')}{path}", **kwargs)


def test_every_cluster_state_is_the_spec_enum(spec: dict[str, Any]) -> None:
    """The client maps exactly the 24 ClusterStateEnum values; the simulator knows the same."""
    enum = spec["components"]["schemas"]["ClusterStateEnum"]["enum"]
    assert len(enum) == 24
    assert sorted(CLIENT_STATES) == sorted(enum)
    assert list(SIMULATOR_STATES) == enum


def test_simulator_routes_exist_in_the_spec(spec: dict[str, Any]) -> None:
    """Every path and method the simulator serves is an operation of the spec."""
    app = QoverySimulator(SimClock()).app()
    served = [
        (method, route.path)
        for route in getattr(app, "routes", [])
        if isinstance(route, Route)
        for method in sorted(set(route.methods or ()) - {"HEAD"})
    ]
    assert len(served) == 9
    for method, path in served:
        assert method.lower() in spec["paths"].get(path, {}), f"{method} {path} not in the spec"


def test_security_scheme_is_the_api_token(spec: dict[str, Any], sims: SimulatorServer) -> None:
    """The spec's ApiKeyAuth is the Authorization header; the simulator takes 'Token <t>' only."""
    scheme = spec["components"]["securitySchemes"]["ApiKeyAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert "Authorization: Token $qovery_token" in scheme["description"]
    path = f"/organization/{QOVERY_ORG}/cluster"
    assert api(sims, "GET", path).status_code == 200
    for headers in ({}, {"Authorization": f"Bearer {QOVERY_TOKEN}"}, {"Authorization": "Token x"}):
        assert api(sims, "GET", path, headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("method", "template", "path", "status", "kwargs"),
    [
        ("GET", f"{ORG}/cluster", f"/organization/{QOVERY_ORG}/cluster", 200, {}),
        ("GET", f"{ORG}/cluster/status", f"/organization/{QOVERY_ORG}/cluster/status", 200, {}),
        (
            "GET",
            f"{ORG}/cluster/{{clusterId}}/status",
            f"/organization/{QOVERY_ORG}/cluster/{STAGING}/status",
            200,
            {},
        ),
        (
            "POST",
            f"{ORG}/cluster/{{clusterId}}/stop",
            f"/organization/{QOVERY_ORG}/cluster/{DEV}/stop",
            202,
            {},
        ),
        (
            "POST",
            f"{ORG}/cluster/{{clusterId}}/deploy",
            f"/organization/{QOVERY_ORG}/cluster/{QA}/deploy",
            201,
            {},
        ),
        ("GET", f"{ORG}/lock", f"/organization/{QOVERY_ORG}/lock", 200, {}),
        (
            "GET",
            f"{ORG}/cluster/{{clusterId}}/currentCost",
            f"/organization/{QOVERY_ORG}/cluster/{DEV}/currentCost",
            200,
            {},
        ),
        (
            "POST",
            "/cluster/{clusterId}/lock",
            f"/cluster/{DEV}/lock",
            200,
            {"json": {"reason": "freeze", "ttl_in_days": 2}},
        ),
    ],
)
def test_response_bodies_match_the_spec_schema(
    spec: dict[str, Any],
    sims: SimulatorServer,
    method: str,
    template: str,
    path: str,
    status: int,
    kwargs: dict[str, Any],
) -> None:
    """Each simulated answer has the spec's status code and validates against its schema."""
    response = api(sims, method, path, **kwargs)
    assert response.status_code == status
    schema = operation(spec, method, template)["responses"][str(status)]["content"][
        "application/json"
    ]["schema"]
    assert problems(spec, schema, response.json()) == []


def test_bodies_with_a_lock_and_every_stop_state_match_the_schema(
    spec: dict[str, Any], sims: SimulatorServer
) -> None:
    """ClusterStatus stays valid through a stop, with and without a cluster_lock."""
    schema = spec["components"]["schemas"]["ClusterStatus"]
    api(sims, "POST", f"/organization/{QOVERY_ORG}/cluster/{DEV}/stop")
    seen = []
    for _ in range(3):
        for cluster_id in (DEV, STAGING):
            body = api(
                sims, "GET", f"/organization/{QOVERY_ORG}/cluster/{cluster_id}/status"
            ).json()
            assert problems(spec, schema, body) == []
            seen.append(body["status"])
        sims.hub.clock.advance(3.0)
    assert seen == ["STOP_QUEUED", "DEPLOYED", "STOPPING", "DEPLOYED", "STOPPED", "DEPLOYED"]


@pytest.mark.parametrize(
    ("method", "template", "path", "headers", "status"),
    [
        ("GET", f"{ORG}/cluster", f"/organization/{QOVERY_ORG}/cluster", {}, 401),
        ("GET", f"{ORG}/cluster", f"/organization/{UNKNOWN}/cluster", AUTH, 404),
        ("GET", f"{ORG}/cluster/status", f"/organization/{QOVERY_ORG}/cluster/status", {}, 401),
        (
            "GET",
            f"{ORG}/cluster/{{clusterId}}/status",
            f"/organization/{QOVERY_ORG}/cluster/{UNKNOWN}/status",
            AUTH,
            404,
        ),
        (
            "POST",
            f"{ORG}/cluster/{{clusterId}}/stop",
            f"/organization/{QOVERY_ORG}/cluster/{DEV}/stop",
            {},
            401,
        ),
        (
            "POST",
            f"{ORG}/cluster/{{clusterId}}/stop",
            f"/organization/{QOVERY_ORG}/cluster/{UNKNOWN}/stop",
            AUTH,
            404,
        ),
        (
            "POST",
            f"{ORG}/cluster/{{clusterId}}/stop",
            f"/organization/{QOVERY_ORG}/cluster/{QA}/stop",
            AUTH,
            409,
        ),
        (
            "POST",
            f"{ORG}/cluster/{{clusterId}}/stop",
            f"/organization/{QOVERY_ORG}/cluster/{STAGING}/stop",
            AUTH,
            409,
        ),
        (
            "POST",
            f"{ORG}/cluster/{{clusterId}}/deploy",
            f"/organization/{QOVERY_ORG}/cluster/{QA}/deploy",
            {},
            401,
        ),
        (
            "POST",
            f"{ORG}/cluster/{{clusterId}}/deploy",
            f"/organization/{QOVERY_ORG}/cluster/{UNKNOWN}/deploy",
            AUTH,
            404,
        ),
        ("GET", f"{ORG}/lock", f"/organization/{QOVERY_ORG}/lock", {}, 401),
        ("POST", "/cluster/{clusterId}/lock", f"/cluster/{UNKNOWN}/lock", AUTH, 404),
        ("DELETE", "/cluster/{clusterId}/lock", f"/cluster/{DEV}/lock", {}, 401),
    ],
)
def test_error_codes_are_the_documented_ones(
    spec: dict[str, Any],
    sims: SimulatorServer,
    method: str,
    template: str,
    path: str,
    headers: dict[str, str],
    status: int,
) -> None:
    """Each error the simulator answers is a status the spec lists for that operation,
    with a JSON body carrying the message (the spec documents no body shape)."""
    response = api(sims, method, path, headers=headers, json={"reason": "x"})
    assert response.status_code == status
    assert str(status) in operation(spec, method, template)["responses"]
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["message"], str)
    assert body["message"]


@pytest.mark.parametrize("state", ["STOP_QUEUED", "STOPPING"])
def test_stop_during_a_stop_is_the_spec_s_409(
    spec: dict[str, Any], sims: SimulatorServer, state: str
) -> None:
    """A stop while one is queued or running is 'an operation in progress': the spec's 409,
    and the cluster carries on with the first stop."""
    responses = operation(spec, "POST", f"{ORG}/cluster/{{clusterId}}/stop")["responses"]
    assert responses["409"]["description"] == (
        "Cluster is already stopped or an operation is in progress"
    )
    simulator = sims.hub["qovery"]
    assert isinstance(simulator, QoverySimulator)
    simulator.set_state(DEV, state)
    response = api(sims, "POST", f"/organization/{QOVERY_ORG}/cluster/{DEV}/stop")
    assert response.status_code == 409
    assert response.json() == {
        "status": 409,
        "message": f"Cluster dev-eu has an operation in progress ({state})",
    }
    status = api(sims, "GET", f"/organization/{QOVERY_ORG}/cluster/{DEV}/status").json()
    assert status["status"] == state


def test_deploy_runs_the_stop_backwards_and_refuses_with_the_spec_s_400(
    spec: dict[str, Any], sims: SimulatorServer
) -> None:
    """A deploy of a stopped cluster answers 201 and goes DEPLOYMENT_QUEUED, DEPLOYING,
    DEPLOYED, each body a valid ClusterStatus; one during an operation is refused with a
    status the spec documents for deployCluster (400: it has no 409)."""
    responses = operation(spec, "POST", f"{ORG}/cluster/{{clusterId}}/deploy")["responses"]
    assert "409" not in responses and "400" in responses
    schema = spec["components"]["schemas"]["ClusterStatus"]
    sims.hub.clock.freeze()
    first = api(sims, "POST", f"/organization/{QOVERY_ORG}/cluster/{QA}/deploy")
    assert first.status_code == 201
    seen = [first.json()["status"]]
    again = api(sims, "POST", f"/organization/{QOVERY_ORG}/cluster/{QA}/deploy")
    assert again.status_code == 400
    for _ in range(2):
        sims.hub.clock.advance(3.0)
        body = api(sims, "GET", f"/organization/{QOVERY_ORG}/cluster/{QA}/status").json()
        assert problems(spec, schema, body) == []
        seen.append(body["status"])
    assert seen == ["DEPLOYMENT_QUEUED", "DEPLOYING", "DEPLOYED"]


def test_spec_gives_ready_and_is_deployed_no_meaning(spec: dict[str, Any]) -> None:
    """Neither ClusterStateEnum nor ClusterStatus.is_deployed is described, so READY keeps
    its one reading (running, terminal): the spec gives no ground to call it stopped."""
    schemas = spec["components"]["schemas"]
    assert "description" not in schemas["ClusterStateEnum"]
    assert schemas["ClusterStatus"]["properties"]["is_deployed"] == {"type": "boolean"}
    assert CLIENT_STATES["READY"] == (Phase.RUNNING, True)


def test_unlock_answers_the_spec_s_204(spec: dict[str, Any], sims: SimulatorServer) -> None:
    """DELETE /cluster/{id}/lock answers 204 with no body, and the lock is gone."""
    assert "204" in operation(spec, "DELETE", "/cluster/{clusterId}/lock")["responses"]
    response = api(sims, "DELETE", f"/cluster/{STAGING}/lock")
    assert (response.status_code, response.content) == (204, b"")
    status = api(sims, "GET", f"/organization/{QOVERY_ORG}/cluster/{STAGING}/status").json()
    assert status["cluster_lock"] is None


def test_seed_refuses_a_state_outside_the_enum() -> None:
    """Seeding a cluster with a state ClusterStateEnum lacks is a clear validation error."""
    seed = copy.deepcopy(DEFAULT_SEED["qovery"])
    seed["clusters"][0]["status"] = "RUNNING"
    with pytest.raises(ValidationError, match="'RUNNING' is not a ClusterStateEnum value"):
        QoverySimulator(SimClock()).seed(seed)


def test_seed_refuses_duplicate_cluster_ids() -> None:
    """Two clusters with one id are refused, naming the id."""
    seed = copy.deepcopy(DEFAULT_SEED["qovery"])
    seed["clusters"][1]["id"] = DEV
    with pytest.raises(ValidationError, match=f"duplicate cluster id\\(s\\): {DEV}"):
        QoverySimulator(SimClock()).seed(seed)


def test_schema_check_catches_a_wrong_body(spec: dict[str, Any]) -> None:
    """The hand-written schema check reports missing fields, bad enums, types and formats."""
    body = {"cluster_id": "x", "status": "RUNNING", "is_deployed": "yes"}
    assert problems(spec, spec["components"]["schemas"]["ClusterStatus"], body) == [
        "$: missing reason",
        "$.cluster_id: 'x' is not a uuid",
        "$.status: 'RUNNING' not in enum",
        "$.is_deployed: 'yes' is not boolean",
    ]


def test_current_cost_is_the_spec_s_cost_range(spec: dict[str, Any], sims: SimulatorServer) -> None:
    """currentCost answers a CostRange (the range and the total the spec marks required),
    its 404 for an unknown cluster, and the client reads it as the range it is."""
    schema = spec["components"]["schemas"]["CostRange"]
    assert {"min_cost", "max_cost", "currency_code"} <= set(schema["properties"])
    body = api(sims, "GET", f"/organization/{QOVERY_ORG}/cluster/{DEV}/currentCost").json()
    assert problems(spec, schema, body) == []
    assert (body["min_cost"], body["max_cost"], body["currency_code"]) == (365.0, 730.0, "USD")
    unknown = f"/organization/{QOVERY_ORG}/cluster/{UNKNOWN}/currentCost"
    responses = operation(spec, "GET", f"{ORG}/cluster/{{clusterId}}/currentCost")["responses"]
    assert api(sims, "GET", unknown).status_code == 404
    assert "404" in responses
