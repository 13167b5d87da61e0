"""The simulated Keystone and Nova checked against the OpenStack api-ref and samples."""

from __future__ import annotations

import datetime as dt
import json
import re
from functools import cache
from typing import Any

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.routing import Route

from providers.openstack import SERVER_STATUSES
from providers.simulators.openstack import ACTIONS, STATUS_STATES, NovaSimulator
from providers.simulators.samples import DEFAULT_SEED
from providers.simulators.server import SimulatorServer
from tests.conftest import shared_path

NOVA = ("specs", "openstack", "nova")
KEYSTONE = ("specs", "openstack", "keystone", "api-ref", "source", "v3")
WEB, BATCH, DB = (s["id"] for s in DEFAULT_SEED["nova"]["servers"])
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "boolean": bool,
    "object": dict,
    "array": list,
}


def read_text(*parts: str) -> str:
    return shared_path(*parts).read_text(encoding="utf-8")


def read_json(*parts: str) -> Any:
    return json.loads(read_text(*parts))


def api_ref(name: str) -> str:
    return read_text(*NOVA, "api-ref", "source", name)


@cache
def parameters() -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = yaml.safe_load(
        read_text(*NOVA, "api-ref", "source", "parameters.yaml")
    )
    return loaded


def section(text: str, title: str) -> str:
    """The body of the api-ref section titled ``title`` (up to the next title)."""
    start = text.index(f"\n{title}\n=")
    rest = text[start + len(title) + 2 :]
    end = re.search(r"\n[^\n]+\n={3,}\n", rest)
    return rest[: end.start()] if end else rest


def show_server_parameters() -> dict[str, dict[str, Any]]:
    """The top-level response parameters of "Show Server Details", by key name."""
    response = section(api_ref("servers.inc"), "Show Server Details").split("Response\n---")[1]
    found = {}
    for name, ref in re.findall(r"^\s+- (\S+): (\S+)$", response, re.MULTILINE):
        if "." not in name and name != "server":
            found[name] = parameters()[ref]
    return found


def spec_statuses() -> set[str]:
    listing = section(api_ref("servers.inc"), "List Servers")
    return set(re.findall(r"^- ``([A-Z_]+)``[.:]", listing, re.MULTILINE))


def nova_sim(sims: SimulatorServer, **changes: Any) -> NovaSimulator:
    sim = sims.hub["nova"]
    assert isinstance(sim, NovaSimulator)
    if changes:
        sim.seed({**DEFAULT_SEED["nova"], **changes})
    return sim


def login(sims: SimulatorServer) -> str:
    body = read_json(*KEYSTONE, "samples", "auth", "requests", "project-name-password.json")
    body["auth"]["identity"]["password"]["user"] = {
        "name": "stopbot",
        "domain": {"name": "Default"},
        "password": "sim-nova-password",
    }
    body["auth"]["scope"]["project"] = {"name": "dev", "domain": {"name": "Default"}}
    response = httpx.post(f"{sims.url('nova')}/identity/v3/auth/tokens", json=body)
    assert response.status_code == 201
    return response.headers["X-Subject-Token"]


def nova(
    sims: SimulatorServer,
    method: str,
    path: str,
    *,
    token: str | None = None,
    version: str | None = "2.73",
    **kwargs: Any,
) -> httpx.Response:
    headers = {"X-Auth-Token": token or login(sims)}
    if version:
        headers["OpenStack-API-Version"] = f"compute {version}"
    return httpx.request(method, f"{sims.url('nova')}/v2.1{path}", headers=headers, **kwargs)


# Statuses, states and paths


def test_simulated_statuses_are_the_spec_statuses() -> None:
    """The simulator and the client know exactly the server statuses the api-ref lists."""
    statuses = spec_statuses()
    assert len(statuses) == 20
    assert set(STATUS_STATES) == statuses
    assert set(SERVER_STATUSES) == statuses


def test_simulated_vm_states_are_in_the_state_diagram() -> None:
    """Every vm_state the simulator shows is a state of vm-states.rst's diagram."""
    diagram = read_text(*NOVA, "doc", "source", "reference", "vm-states.rst")
    states = set(re.findall(r"^\s+(\w+) \[label=", diagram, re.MULTILINE))
    # Nova's vm_states.SOFT_DELETED is spelled "soft-delete" on the wire.
    shown = {
        "soft_deleted" if vm == "soft-delete" else vm
        for status, (vm, _, _) in STATUS_STATES.items()
        if status != "UNKNOWN"  # shown as an unreachable cell's partial record, no vm_state
    }
    assert shown <= states


def test_simulated_power_states_are_in_the_spec_enum() -> None:
    """Every power state the simulator shows is in parameters.yaml's power_state enum."""
    description = parameters()["OS-EXT-STS:power_state"]["description"]
    enum = {int(n) for n in re.findall(r"^\s+(\d+): [A-Z]+$", description, re.MULTILINE)}
    assert enum == {0, 1, 3, 4, 6, 7}
    assert {power for _, _, power in STATUS_STATES.values()} <= enum


def test_simulated_routes_are_in_the_spec(sims: SimulatorServer) -> None:
    """Every method and path the simulator serves is documented by Nova or Keystone."""
    documented = set()
    for name in ("servers.inc", "servers-actions.inc"):
        for method, path in re.findall(r"rest_method:: (\w+) (\S+)", api_ref(name)):
            documented.add((method, f"/v2.1{path}"))
    for method, path in re.findall(r"rest_method:: (\w+) (\S+)", api_ref("versions.inc")):
        documented.add((method, path.replace("{api_version}", "v2.1")))
    keystone = read_text(*KEYSTONE, "authenticate-v3.inc")
    for method, path in re.findall(r"rest_method::\s+(\w+) (\S+)", keystone):
        documented.add((method, f"/identity{path}"))
    app = nova_sim(sims).app()
    assert isinstance(app, Starlette)
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert served
    assert served <= documented


def test_simulated_actions_are_documented() -> None:
    """Each server action the simulator takes is an action of servers-actions.inc."""
    documented = set(re.findall(r"\((\S+) Action\)", api_ref("servers-actions.inc")))
    assert set(ACTIONS) <= documented


# Response bodies


def admin_only(parameter: dict[str, Any]) -> bool:
    return bool(re.search(r"administrat(ive users|ors)", parameter["description"]))


@pytest.mark.parametrize("admin", [True, False])
def test_server_body_has_the_v273_sample_keys(sims: SimulatorServer, admin: bool) -> None:
    """A server at 2.73 has the sample's keys; a non-admin misses only the admin-only ones."""
    nova_sim(sims, admin=admin)
    sample = read_json(*NOVA, "doc", "api_samples", "servers", "v2.73", "server-get-resp.json")
    response = nova(sims, "GET", f"/servers/{WEB}")
    assert response.status_code == 200
    keys = set(response.json()["server"])
    expected = set(sample["server"])
    if not admin:
        params = show_server_parameters()
        expected = {k for k in expected if not admin_only(params[k])}
        assert "OS-EXT-SRV-ATTR:host" not in expected
    assert keys == expected


@pytest.mark.parametrize("path", [f"/servers/{WEB}", "/servers/detail"])
def test_server_fields_have_the_spec_types(sims: SimulatorServer, path: str) -> None:
    """Each documented field of a server has parameters.yaml's type (or null)."""
    nova_sim(sims, admin=True)
    body = nova(sims, "GET", path).json()
    servers = [body["server"]] if "server" in body else body["servers"]
    params = show_server_parameters()
    checked = 0
    for server in servers:
        for key, value in server.items():
            if key in params and value is not None:
                assert isinstance(value, JSON_TYPES[params[key]["type"]]), key
                checked += 1
    assert checked > 30 * len(servers) > 0


def test_server_body_follows_the_microversion(sims: SimulatorServer) -> None:
    """No version header means 2.1 (no ``locked``); 2.73 adds ``locked_reason`` and says so."""
    token = login(sims)
    oldest = nova(sims, "GET", f"/servers/{BATCH}", token=token, version=None)
    newest = nova(sims, "GET", f"/servers/{BATCH}", token=token)
    assert "locked" not in oldest.json()["server"]
    assert oldest.headers["X-OpenStack-Nova-API-Version"] == "2.1"
    assert newest.json()["server"]["locked_reason"] == "kernel upgrade in progress"
    assert newest.headers["OpenStack-API-Version"] == "compute 2.73"


def test_unsupported_microversion_is_not_acceptable(sims: SimulatorServer) -> None:
    """A version past the maximum is refused with 406 (microversions.rst)."""
    response = nova(sims, "GET", f"/servers/{WEB}", version="2.999")
    assert response.status_code == 406


def version_parameters() -> set[str]:
    """The response keys of versions.inc's "Show Details of Specific API Version"."""
    shown = section(api_ref("versions.inc"), "Show Details of Specific API Version")
    response = shown.split("Response\n---")[1]
    return set(re.findall(r"^\s+- (\S+): \S+$", response, re.MULTILINE))


def test_version_document_names_the_microversion_range(sims: SimulatorServer) -> None:
    """GET /v2.1/ needs no token and shows versions.inc's keys; its ``version`` is the
    maximum microversion: that one is served, the next one is refused with 406."""
    nova_sim(sims, max_microversion="2.60")
    response = httpx.get(f"{sims.url('nova')}/v2.1/")
    assert response.status_code == 200
    document = response.json()["version"]
    assert set(document) == version_parameters()
    assert (document["id"], document["min_version"], document["version"]) == (
        "v2.1",
        "2.1",
        "2.60",
    )
    assert parameters()["version_max"]["in"] == "body"
    token = login(sims)
    highest = nova(sims, "GET", f"/servers/{WEB}", token=token, version="2.60")
    beyond = nova(sims, "GET", f"/servers/{WEB}", token=token, version="2.61")
    assert (highest.status_code, beyond.status_code) == (200, 406)
    assert "maximum is 2.60" in beyond.json()["computeFault"]["message"]


def test_stop_sample_runs_through_powering_off(sims: SimulatorServer) -> None:
    """The api-ref's os-stop sample is accepted (202, no body), then Nova powers off."""
    token = login(sims)
    sample = read_json(*NOVA, "doc", "api_samples", "servers", "server-action-stop.json")
    response = nova(sims, "POST", f"/servers/{WEB}/action", token=token, json=sample)
    assert (response.status_code, response.content) == (202, b"")
    states = []
    for _ in range(2):
        server = nova(sims, "GET", f"/servers/{WEB}", token=token).json()["server"]
        states.append(
            (
                server["status"],
                server["OS-EXT-STS:vm_state"],
                server["OS-EXT-STS:task_state"],
                server["OS-EXT-STS:power_state"],
            )
        )
        sims.hub.clock.advance(DEFAULT_SEED["nova"]["step_seconds"])
    assert states == [("ACTIVE", "active", "powering-off", 1), ("SHUTOFF", "stopped", None, 4)]


@pytest.mark.parametrize(
    ("sample", "locked", "reason"),
    [
        (("v2.73", "lock-server-with-reason.json"), True, "I don't want to work"),
        (("v2.73", "lock-server.json"), True, None),
        (("unlock-server.json",), False, None),
    ],
)
def test_lock_samples_are_accepted(
    sims: SimulatorServer, sample: tuple[str, ...], locked: bool, reason: str | None
) -> None:
    """The lock and unlock samples are accepted and show in ``locked``/``locked_reason``."""
    token = login(sims)
    body = read_json(*NOVA, "doc", "api_samples", "os-lock-server", *sample)
    assert nova(sims, "POST", f"/servers/{WEB}/action", token=token, json=body).status_code == 202
    server = nova(sims, "GET", f"/servers/{WEB}", token=token).json()["server"]
    assert (server["locked"], server["locked_reason"]) == (locked, reason)


def test_detail_pages_have_a_next_link(sims: SimulatorServer) -> None:
    """A full page carries a ``next`` servers_link whose marker gives the rest."""
    token = login(sims)
    first = nova(sims, "GET", "/servers/detail", token=token, params={"limit": 2}).json()
    (link,) = first["servers_links"]
    assert link["rel"] == "next"
    marker = httpx.URL(link["href"]).params["marker"]
    assert marker == first["servers"][-1]["id"] == BATCH
    rest = nova(sims, "GET", "/servers/detail", token=token, params={"marker": marker}).json()
    assert [s["id"] for s in rest["servers"]] == [DB]
    assert "servers_links" not in rest


def test_unreachable_cell_server_is_partial(sims: SimulatorServer) -> None:
    """An UNKNOWN server comes with the few keys of an unreachable cell (2.69 note)."""
    nova_sim(sims, servers=[{"id": WEB, "name": "web-1", "status": "UNKNOWN"}])
    server = nova(sims, "GET", f"/servers/{WEB}").json()["server"]
    assert set(server) == {"created", "id", "links", "status", "tenant_id"}
    assert server["status"] == "UNKNOWN"


def test_error_server_shows_its_fault(sims: SimulatorServer) -> None:
    """A server in ERROR carries a fault with code, created and message (faults.rst)."""
    nova_sim(
        sims,
        servers=[{"id": WEB, "name": "web-1", "status": "ERROR", "fault_message": "No host"}],
    )
    fault = nova(sims, "GET", f"/servers/{WEB}").json()["server"]["fault"]
    assert set(fault) == {"code", "created", "message"}
    assert (fault["code"], fault["message"]) == (500, "No host")


# Error bodies


def fault_example() -> dict[str, Any]:
    """The synchronous fault example of faults.rst."""
    text = read_text(*NOVA, "api-guide", "source", "faults.rst")
    block = text.split("**Example: Fault: JSON response**")[1].split(".. code::")[1]
    example: dict[str, Any] = json.loads(block.split("\n\n", 2)[1])
    return example


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "root", "message"),
    [
        (
            "GET",
            f"/servers/{UNKNOWN_ID}",
            None,
            404,
            "itemNotFound",
            f"Instance {UNKNOWN_ID} could not be found.",
        ),
        (
            "POST",
            f"/servers/{DB}/action",
            {"os-stop": None},
            409,
            "conflictingRequest",
            f"Cannot 'stop' instance {DB} while it is in vm_state stopped",
        ),
        (
            "POST",
            f"/servers/{BATCH}/action",
            {"os-stop": None},
            409,
            "conflictingRequest",
            f"Instance {BATCH} is locked",
        ),
        (
            "POST",
            f"/servers/{WEB}/action",
            {"os-hibernate": None},
            400,
            "badRequest",
            "There is no such action: os-hibernate",
        ),
    ],
)
def test_error_bodies_have_the_fault_shape(
    sims: SimulatorServer,
    method: str,
    path: str,
    body: Any,
    status: int,
    root: str,
    message: str,
) -> None:
    """Errors are one root element holding code and message, as faults.rst shows."""
    example = fault_example()
    ((_, example_fault),) = example.items()
    response = nova(sims, method, path, json=body)
    assert response.status_code == status
    assert response.json() == {root: {"code": status, "message": message}}
    assert set(response.json()[root]) == set(example_fault)


def test_stop_error_codes_are_documented(sims: SimulatorServer) -> None:
    """The stop's 401, 404 and 409 answers are the os-stop error codes of the api-ref."""
    stop = section(api_ref("servers-actions.inc"), "Stop Server (os-stop Action)")
    documented = {int(c) for c in re.findall(r"\((\d{3})\)", stop.split("Error response codes")[1])}
    answers = {
        nova(sims, "POST", f"/servers/{UNKNOWN_ID}/action", json={"os-stop": None}).status_code,
        nova(sims, "POST", f"/servers/{DB}/action", json={"os-stop": None}).status_code,
        nova(
            sims, "POST", f"/servers/{WEB}/action", token="bad", json={"os-stop": None}
        ).status_code,
    }
    assert answers == {401, 404, 409}
    assert answers <= documented


def test_request_without_token_is_unauthorized(sims: SimulatorServer) -> None:
    """No X-Auth-Token is a 401 with Keystone's error body, naming Keystone to ask."""
    response = httpx.get(f"{sims.url('nova')}/v2.1/servers/detail")
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }
    assert response.headers["WWW-Authenticate"].startswith('Keystone uri="http://')


# Keystone


@pytest.mark.parametrize(
    "sample",
    [
        ("auth", "requests", "project-name-password.json"),
        ("auth", "requests", "project-id-password.json"),
        ("admin", "auth-application-credential-id-request.json"),
    ],
)
def test_keystone_accepts_the_sample_requests(
    sims: SimulatorServer, sample: tuple[str, ...]
) -> None:
    """Keystone's sample logins get 201 and a token in X-Subject-Token."""
    nova_sim(
        sims,
        password="devstacker",
        project_name="admin",
        application_credentials=[
            {"id": "423f19a4ac1e4f48bbb4180756e6eb6c", "secret": "rEaqvJka48mpv"}
        ],
    )
    body = read_json(*KEYSTONE, "samples", *sample)
    response = httpx.post(f"{sims.url('nova')}/identity/v3/auth/tokens", json=body)
    assert response.status_code == 201
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Subject-Token"])


def test_token_body_has_the_sample_shape(sims: SimulatorServer) -> None:
    """The token, its catalog entries and endpoints have the keys of Keystone's sample."""
    nova_sim(sims, password="devstacker", project_name="admin")
    request = read_json(*KEYSTONE, "samples", "auth", "requests", "project-id-password.json")
    sample = read_json(*KEYSTONE, "samples", "auth", "responses", "project-scoped-password.json")
    token = httpx.post(f"{sims.url('nova')}/identity/v3/auth/tokens", json=request).json()["token"]
    expected = sample["token"]
    assert set(token) == set(expected)
    assert set(token["user"]) == set(expected["user"])
    assert set(token["project"]) == set(expected["project"])
    for entry in token["catalog"]:
        assert set(entry) == set(expected["catalog"][0])
        for endpoint in entry["endpoints"]:
            assert set(endpoint) == set(expected["catalog"][0]["endpoints"][0])
    time_format = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
    assert re.fullmatch(time_format, expected["expires_at"])
    assert re.fullmatch(time_format, token["expires_at"])
    compute = [e for e in token["catalog"] if e["type"] == "compute"]
    assert {e["url"] for e in compute[0]["endpoints"]} == {f"{sims.url('nova')}/v2.1"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"auth": {}}, 400),
        (
            {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {"user": {"id": "nobody", "password": "x"}},
                    }
                }
            },
            401,
        ),
        (
            {
                "auth": {
                    "identity": {
                        "methods": ["application_credential"],
                        "application_credential": {"id": "x", "secret": "y"},
                    },
                    "scope": {"project": {"id": "a6944d763bf64ee6a275f1263fae0352"}},
                }
            },
            401,
        ),
    ],
)
def test_keystone_errors_are_documented(
    sims: SimulatorServer, body: dict[str, Any], status: int
) -> None:
    """Bad logins get one of the error codes the authentication errors table lists."""
    documented = {
        int(code)
        for code in re.findall(r"\((\d{3})\)``", read_text(*KEYSTONE, "authenticate-v3.inc"))
    }
    response = httpx.post(f"{sims.url('nova')}/identity/v3/auth/tokens", json=body)
    assert response.status_code == status
    assert status in documented
    error = response.json()["error"]
    assert (error["code"], type(error["message"])) == (status, str)


def test_expired_token_is_refused(sims: SimulatorServer) -> None:
    """A token past its expires_at (on the simulator clock) is refused by Nova."""
    token = login(sims)
    assert nova(sims, "GET", "/servers/detail", token=token).status_code == 200
    sims.hub.clock.advance(3600)
    assert nova(sims, "GET", "/servers/detail", token=token).status_code == 401


def _at(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_changes_since_lists_only_the_servers_changed_since(sims: SimulatorServer) -> None:
    """changes-since (polling_changes.rst) lists the servers whose last change is at or
    after it, changes-before (2.66) those at or before it; no time zone means UTC."""
    sim = nova_sim(sims)
    sim.clock.freeze()
    token = login(sims)
    seeded = sim.now()
    sim.clock.advance(60)
    assert nova(sims, "POST", f"/servers/{WEB}/action", token=token, json={"os-stop": None})
    stopped = sim.now()

    def listed(**params: str) -> list[str]:
        response = nova(sims, "GET", "/servers/detail", token=token, params=params)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["servers"]]

    assert listed(**{"changes-since": _at(stopped)}) == [WEB]
    assert listed(**{"changes-since": _at(stopped).rstrip("Z")}) == [WEB]
    assert listed(**{"changes-since": _at(seeded)}) == [WEB, BATCH, DB]
    assert listed(**{"changes-since": _at(stopped + 1)}) == []
    assert listed(**{"changes-before": _at(seeded + 1)}) == [BATCH, DB]
    assert listed(**{"changes-since": _at(seeded), "changes-before": _at(stopped - 1)}) == [
        BATCH,
        DB,
    ]
    # The stop's SHUTOFF, a step later, is a change too.
    sim.clock.advance(DEFAULT_SEED["nova"]["step_seconds"])
    assert listed(**{"changes-since": _at(stopped + 1)}) == [WEB]
    assert "changes-since" in api_ref("servers.inc")
    assert parameters()["changes_since_server"]["in"] == "query"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"changes-since": "yesterday"},
            "Invalid input for query parameters changes-since. Value: yesterday. "
            "'yesterday' is not a 'date-time'",
        ),
        (
            {"changes-since": "2026-01-02T00:00:00Z", "changes-before": "2026-01-01T00:00:00Z"},
            "The value of changes-since must be less than or equal to changes-before.",
        ),
    ],
)
def test_bad_change_filters_are_bad_requests(
    sims: SimulatorServer, params: dict[str, str], message: str
) -> None:
    """A time that is no date-time, or changes-before before changes-since, is a 400."""
    response = nova(sims, "GET", "/servers/detail", params=params)
    assert response.status_code == 400
    assert response.json() == {"badRequest": {"code": 400, "message": message}}
