"""The ~okeanos LoD simulator checked against the LoD webapp API docs in ../shared/specs."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from providers.simulators.okeanos import (
    APPLICATION_STATUS_CODES,
    INSTANCE_STATUS_CODES,
    OkeanosSimulator,
)
from providers.simulators.samples import DEFAULT_SEED, OKEANOS_TOKEN
from providers.simulators.server import SimulatorServer
from tests.conftest import shared_path

SEED = DEFAULT_SEED["okeanos"]
INSTANCE = SEED["lambda_instances"][0]["id"]
SPARK = SEED["applications"][0]["id"]  # started
FLINK = SEED["applications"][1]["id"]  # stopped
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
AUTH = {"Authorization": f"Token {OKEANOS_TOKEN}"}
FORM = {"lambda_instance_id": INSTANCE}


@cache
def doc(name: str) -> str:
    return shared_path(
        "specs", "okeanos-lod", "webapp", "api-doc", "docs", f"{name}.md"
    ).read_text()


def blocks(name: str) -> list[str]:
    """The fenced example blocks of one doc page."""
    return re.findall(r"```[a-z]*\n(.*?)```", doc(name), re.DOTALL)


def json_block(name: str, containing: str) -> Any:
    """The one example block of a page that contains ``containing``, as JSON."""
    [block] = [b for b in blocks(name) if containing in b]
    return json.loads(block)


def doc_keys(name: str) -> set[str]:
    """Every field name the page's examples show (some examples are not strict JSON)."""
    return set(re.findall(r'"([A-Za-z_-]+)"\s*:', "".join(blocks(name))))


def doc_statuses(name: str) -> set[int]:
    """Status codes a page names, in its "Response messages" list or in its prose."""
    text = doc(name)
    listed = re.findall(r"HTTP/1\.1 (\d{3})", text)
    prose = re.findall(r'"(\d{3}) [A-Z][A-Za-z ]+"', text)
    return {int(code) for code in [*listed, *prose]}


def keys_of(value: Any) -> set[str]:
    """All dict keys of a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | set().union(*(keys_of(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_of(v) for v in value))
    return set()


def values_at(value: Any, path: str) -> list[Any]:
    """Values at a dotted path where ``name[]`` walks every item of a list."""
    found = [value]
    for part in path.split("."):
        key, walk = part.removesuffix("[]"), part.endswith("[]")
        found = [item[key] for item in found if isinstance(item, dict) and key in item]
        if walk:
            found = [element for item in found for element in item]
    return found


def documented_routes() -> set[tuple[str, str]]:
    """(method, path with {} for each parameter) of every webapp doc page."""
    routes = set()
    for page in shared_path("specs", "okeanos-lod", "webapp", "api-doc", "docs").glob("*.md"):
        text = page.read_text()
        url = re.search(r"\*\*URL\*\*\s*\|\s*(\S+)", text)
        method = re.search(r"\*\*HTTP Method\*\*\s*\|\s*(\w+)", text)
        if url and method:
            path = "/" + re.sub(r"\[[^\]]+\]", "{}", url.group(1)).lstrip("/")
            routes.add((method.group(1).upper(), path))
    return routes


@pytest.fixture
def api(sims: SimulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sims.url("okeanos")) as client:
        yield client


def test_every_simulated_route_is_documented(sims: SimulatorServer) -> None:
    """Each path and method the simulator serves is one the docs describe."""
    documented = documented_routes()
    app = sims.hub["okeanos"].app()
    assert isinstance(app, Starlette)
    simulated = {
        (method, re.sub(r"\{[^}]+\}", "{}", route.path))
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert simulated
    assert simulated <= documented, simulated - documented


# (doc page, method, path, expected status, fields that must be there)
ANSWERS = [
    ("Authentication", "GET", "/api/authenticate/", 200, ["result", "data.name"]),
    (
        "ApplicationsList",
        "GET",
        "/api/apps/",
        200,
        ["status.code", "data[].id", "data[].name", "data[].type", "data[].deployed"],
    ),
    (
        "ApplicationsList",
        "GET",
        "/api/apps/?limit=1",
        200,
        ["data[].id", "pagination.count", "pagination.next", "pagination.previous"],
    ),
    (
        "ApplicationDetails",
        "GET",
        f"/api/apps/{SPARK}/",
        200,
        [
            "data[].id",
            "data[].lambda_instances[].id",
            "data[].lambda_instances[].started",
            "data[].lambda_instances[].status.message",
        ],
    ),
    ("ApplicationStop", "POST", f"/api/apps/{SPARK}/stop/", 202, ["status.code"]),
    ("ApplicationStart", "POST", f"/api/apps/{FLINK}/start/", 202, ["status.code"]),
    (
        "ApplicationsListDeployed",
        "GET",
        f"/api/apps/{INSTANCE}/list-deployed/",
        200,
        ["data[].id", "data[].name"],
    ),
    (
        "LambdaInstancesList",
        "GET",
        "/api/lambda-instances/",
        200,
        ["data[].id", "data[].status.message", "data[].status.code", "data[].running_app"],
    ),
    (
        "LambdaInstanceDetails",
        "GET",
        f"/api/lambda-instances/{INSTANCE}/",
        200,
        [
            "data[].info.id",
            "data[].status.message",
            "data[].applications[].id",
            "data[].applications[].started",
        ],
    ),
    (
        "LambdaInstanceDetails",
        "GET",
        f"/api/lambda-instances/{INSTANCE}/?filter=status",
        200,
        ["data[].id", "data[].status.message"],
    ),
]


@pytest.mark.parametrize(("page", "method", "path", "status", "required"), ANSWERS)
def test_answers_follow_the_docs(
    api: httpx.Client, page: str, method: str, path: str, status: int, required: list[str]
) -> None:
    """Answers use a documented status, only the page's field names, and its key fields."""
    response = api.request(method, path, headers=AUTH, data=FORM if method == "POST" else None)
    body = response.json()
    assert response.status_code == status
    assert status in doc_statuses(page)
    assert keys_of(body) <= doc_keys(page), keys_of(body) - doc_keys(page)
    for field in required:
        assert values_at(body, field), field


def test_started_flags_are_booleans(api: httpx.Client) -> None:
    """The per-deployment started flag, the app's only run state, is a JSON boolean."""
    details = api.get(f"/api/apps/{SPARK}/", headers=AUTH).json()
    instance = api.get(f"/api/lambda-instances/{INSTANCE}/", headers=AUTH).json()
    flags = [
        *values_at(details, "data[].lambda_instances[].started"),
        *values_at(instance, "data[].applications[].started"),
    ]
    assert flags == [True, True, False]


def test_unauthorized_body_is_the_documented_one(api: httpx.Client) -> None:
    """A wrong token gets exactly the 401 body of Authentication.md."""
    documented = json_block("Authentication", '"errors"')
    response = api.get("/api/apps/", headers={"Authorization": "Token wrong"})
    assert response.status_code == 401
    assert response.json() == documented


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/authenticate/"),
        ("GET", "/api/apps/"),
        ("GET", f"/api/apps/{SPARK}/"),
        ("POST", f"/api/apps/{SPARK}/stop/"),
        ("POST", f"/api/apps/{FLINK}/start/"),
        ("GET", f"/api/apps/{INSTANCE}/list-deployed/"),
        ("GET", "/api/lambda-instances/"),
        ("GET", f"/api/lambda-instances/{INSTANCE}/"),
    ],
)
def test_every_call_needs_the_token(api: httpx.Client, method: str, path: str) -> None:
    """Without an Authorization header every call is a 401, before anything else happens."""
    response = api.request(method, path, data=FORM if method == "POST" else None)
    assert response.status_code == 401


def test_accepted_body_is_the_documented_one(api: httpx.Client) -> None:
    """A stop answers exactly the 202 body of ApplicationStop.md."""
    documented = json_block("ApplicationStop", '"code": 202')
    response = api.post(f"/api/apps/{SPARK}/stop/", headers=AUTH, data=FORM)
    assert response.status_code == 202
    assert response.json() == documented


def test_authenticate_body_is_the_documented_one(api: httpx.Client) -> None:
    """A good token gets exactly the 200 body of Authentication.md."""
    documented = json_block("Authentication", '"result"')
    assert api.get("/api/authenticate/", headers=AUTH).json() == documented


def test_curl_form_of_the_docs_is_accepted(api: httpx.Client) -> None:
    """The docs' ``curl -F`` (multipart) stop is accepted like a urlencoded one."""
    response = api.post(
        f"/api/apps/{SPARK}/stop/", headers=AUTH, files={"lambda_instance_id": (None, INSTANCE)}
    )
    assert response.status_code == 202


# (doc page or None when the docs do not list the status, method, path, form, status)
ERRORS = [
    ("ApplicationDetails", "GET", f"/api/apps/{UNKNOWN_ID}/", None, 404),
    ("ApplicationStop", "POST", f"/api/apps/{UNKNOWN_ID}/stop/", FORM, 404),
    (
        "ApplicationStop",
        "POST",
        f"/api/apps/{SPARK}/stop/",
        {"lambda_instance_id": UNKNOWN_ID},
        404,
    ),
    ("ApplicationStop", "POST", f"/api/apps/{FLINK}/stop/", FORM, 409),
    ("ApplicationStart", "POST", f"/api/apps/{SPARK}/start/", FORM, 409),
    ("ApplicationsList", "GET", "/api/apps/?limit=-1", None, 400),
    ("ApplicationsListDeployed", "GET", f"/api/apps/{UNKNOWN_ID}/list-deployed/", None, 404),
    ("LambdaInstanceDetails", "GET", f"/api/lambda-instances/{UNKNOWN_ID}/", None, 404),
    ("LambdaInstancesList", "GET", "/api/lambda-instances/?limit=-1", None, 400),
    # The service's answer to a stop without its required field; the page lists no 400.
    (None, "POST", f"/api/apps/{SPARK}/stop/", None, 400),
]


@pytest.mark.parametrize(("page", "method", "path", "form", "status"), ERRORS)
def test_errors_have_the_documented_shape(
    api: httpx.Client,
    page: str | None,
    method: str,
    path: str,
    form: dict[str, str] | None,
    status: int,
) -> None:
    """Error answers use a documented status and the errors shape of Authentication.md."""
    documented = json_block("Authentication", '"errors"')["errors"][0]
    response = api.request(method, path, headers=AUTH, data=form)
    assert response.status_code == status
    if page is not None:
        assert status in doc_statuses(page)
    [error] = response.json()["errors"]
    assert set(error) == set(documented)
    assert error["code"] == status
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], str)


def test_stop_on_an_instance_not_started_answers_as_the_docs_say(
    api: httpx.Client, sims: SimulatorServer
) -> None:
    """ApplicationStop.md answers 202 to a deployed application not yet stopped and 409 to
    one already stopped; it names no other condition, so the instance's status (here
    STOPPING) changes neither answer."""
    simulator = sims.hub["okeanos"]
    assert isinstance(simulator, OkeanosSimulator)
    simulator.set_instance_status(INSTANCE, "STOPPING")
    started = api.post(f"/api/apps/{SPARK}/stop/", headers=AUTH, data=FORM)
    stopped = api.post(f"/api/apps/{FLINK}/stop/", headers=AUTH, data=FORM)
    assert (started.status_code, stopped.status_code) == (202, 409)
    assert {202, 409} <= doc_statuses("ApplicationStop")
    assert "already been stopped" in stopped.json()["errors"][0]["message"]


def test_instance_status_codes_agree_with_the_docs() -> None:
    """Every (status, code) pair the instance pages show is the simulator's pair."""
    text = doc("LambdaInstancesList") + doc("LambdaInstanceDetails")
    shown = dict(re.findall(r'"message": "(\w+)",\s*"code": "(\d+)"', text))
    # The keywords table of LambdaInstancesList.md gives PENDING's code by default values.
    table_code = re.search(r"^code \|.*\| (\d+)\s*$", doc("LambdaInstancesList"), re.MULTILINE)
    table_message = re.search(r"^message \|.*\| (\w+)\s*$", doc("LambdaInstancesList"), re.M)
    assert table_code
    assert table_message
    shown[table_message.group(1)] = table_code.group(1)
    assert shown == {
        name: INSTANCE_STATUS_CODES[name]
        for name in ("STARTED", "PENDING", "CLUSTER_FAILED", "KAFKA_FAILED")
    }


def test_application_status_codes_agree_with_the_docs() -> None:
    """Every (status, code) pair ApplicationsList.md shows is the simulator's pair."""
    shown = dict(re.findall(r'"message": "(\w+)",\s*"code": "(\d+)"', doc("ApplicationsList")))
    assert shown == APPLICATION_STATUS_CODES


def test_pagination_matches_the_docs_example(api: httpx.Client, sims: SimulatorServer) -> None:
    """With 7 apps, limit=2&offset=3 pages exactly as ApplicationsList.md's example."""
    text = doc("ApplicationsList")
    count = re.search(r'"count": (\d+)', text)
    links = dict(re.findall(r'"(next|previous)": "https://<hostname>/api/apps/\?([^"]+)"', text))
    assert count
    assert count.group(1) == "7"
    seed = copy.deepcopy(SEED)
    seed["applications"] = [
        {"id": f"app-{n}", "name": f"app-{n}", "type": "batch"} for n in range(7)
    ]
    sims.hub["okeanos"].seed(seed)

    body = api.get("/api/apps/?limit=2&offset=3", headers=AUTH).json()

    assert [a["id"] for a in body["data"]] == ["app-3", "app-4"]
    assert body["pagination"]["count"] == 7
    for key in ("next", "previous"):
        assert parse_qs(urlsplit(body["pagination"][key]).query) == parse_qs(links[key])
