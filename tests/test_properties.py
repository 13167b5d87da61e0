"""Bad input, generated (hypothesis): the command grammar, durations, the configuration loader
and the Slack endpoint answer every input with a result or a clear error, never a crash.

Examples are derandomized (the same ones on every run, so CI is stable) and few enough
for the whole file to run in seconds.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config import ConfigError, StopbotConfig, load_config, parse_config
from bot.durations import format_duration, parse_duration
from bot.slack import commands, views
from bot.slack.fake_api import block_actions_payload, sign_request
from providers.simulators.samples import sample_config
from providers.simulators.server import SimulatorServer
from tests.slack_harness import BOB, CHANNEL, SECRET, Slack

FAST = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
OVER_HTTP = settings(FAST, max_examples=60)

# Text as users and attackers type it: any unicode, shell quotes, Slack markup, and now and
# then something huge (built by repetition: generating 20k random characters is slow).
words = st.sampled_from(
    ["status", "list", "history", "help", "lock", "unlock", "locks", "schedule", "dry-run",
     "dev-eu", "--force", "--override-lock", "tag:env=dev", "tag:", "4h", "0m", "'", '"',
     "<@U0BOB>", "\\", "--", "-h", "qovery:0b9e1c7a", "💥", "\x00", "\n"]
)  # fmt: skip
huge = st.builds(lambda c, n: c * n, st.characters(), st.integers(1_000, 20_000))
texts = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(words, st.text(max_size=12)), max_size=8).map(" ".join),
    huge,
)


@FAST
@given(texts)
def test_command_parser_answers_every_text(text: str) -> None:
    """Any text after /stop is a command or a UsageError with words for the user."""
    try:
        command = commands.parse(text)
    except commands.UsageError as exc:
        assert str(exc).strip()
    else:
        assert command is not None


@FAST
@given(st.one_of(texts, st.from_regex(r"\s*(\d{1,6}\s*[smhdwSMHDW]\s*){1,4}", fullmatch=True)))
def test_durations_are_positive_or_refused(text: str) -> None:
    """A duration is positive, or a ValueError that shows the expected form."""
    try:
        delta = parse_duration(text)
    except ValueError as exc:
        assert "is not a duration" in str(exc)
    else:
        assert delta > dt.timedelta(0)


@FAST
@given(
    st.one_of(
        st.integers(1, 59).map(lambda s: dt.timedelta(seconds=s)),
        st.tuples(st.integers(0, 400), st.integers(0, 23), st.integers(0, 59))
        .filter(lambda t: sum(1 for part in t if part) in (1, 2))
        .map(lambda t: dt.timedelta(days=t[0], hours=t[1], minutes=t[2])),
    )
)
def test_durations_round_trip_in_whole_units(delta: dt.timedelta) -> None:
    """What format_duration writes (at most two units), parse_duration reads back."""
    assert parse_duration(format_duration(delta)) == delta


# -- configuration ------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20), huge
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
SAMPLE = sample_config("http://127.0.0.1:9")


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a document, to mutate one of them."""
    found: list[tuple[Any, ...]] = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += paths(value, (*prefix, index))
    return found


SAMPLE_PATHS = paths(SAMPLE)


def mutate(draw: st.DrawFn, document: Any, path: tuple[Any, ...]) -> None:
    """Replace the value at ``path`` in ``document`` by any JSON value, or remove it;
    nothing when an earlier mutation removed or replaced that branch."""
    parent: Any = document
    try:
        for part in path[:-1]:
            parent = parent[part]
        if draw(st.booleans()):
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    except (KeyError, IndexError, TypeError):
        pass


@st.composite
def near_valid_configs(draw: st.DrawFn) -> Any:
    """The sample configuration with a few keys replaced by wrong values, or removed."""
    document = copy.deepcopy(SAMPLE)
    for _ in range(draw(st.integers(1, 3))):
        mutate(draw, document, draw(st.sampled_from(SAMPLE_PATHS)))
    if draw(st.booleans()):
        document[draw(st.text(max_size=10))] = draw(json_values)
    return document


@FAST
@given(st.one_of(json_values, near_valid_configs()))
def test_config_documents_give_a_config_or_a_config_error(document: Any) -> None:
    """Any parsed YAML document is a valid configuration or a ConfigError naming the file."""
    try:
        config = parse_config(document, "stopbot.yaml", env={"TOKEN": "t"})
    except ConfigError as exc:
        assert exc.problems
        assert str(exc).startswith("stopbot.yaml: ")
    else:
        assert isinstance(config, StopbotConfig)


@FAST
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_config_files_of_any_text_give_a_config_or_a_config_error(text: str) -> None:
    """Any file content (YAML or not, any unicode) loads or gives a ConfigError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stopbot.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            load_config(path, env={})
        except ConfigError as exc:
            assert str(exc).startswith(f"{path}: ")


# -- the Slack endpoint -----------------------------------------------------------------------

field_values = st.one_of(st.text(max_size=40), huge, st.sampled_from(["", "/stop", BOB, CHANNEL]))
SLASH_FIELDS = [
    "token", "team_id", "team_domain", "channel_id", "channel_name", "user_id", "user_name",
    "command", "text", "response_url", "trigger_id", "api_app_id", "is_enterprise_install",
]  # fmt: skip


@st.composite
def slash_forms(draw: st.DrawFn) -> bytes:
    """A slash command body with any of its fields missing, wrong or huge."""
    fields = {
        "command": "/stop",
        "user_id": BOB,
        "channel_id": CHANNEL,
        "text": draw(texts),
        "trigger_id": draw(st.text(max_size=20)),
    }
    for name in draw(st.lists(st.sampled_from(SLASH_FIELDS), max_size=5)):
        if draw(st.booleans()):
            fields[name] = draw(field_values)
        else:
            fields.pop(name, None)
    return urlencode(fields).encode()


VALID_ACTION = block_actions_payload(
    BOB,
    CHANNEL,
    views.CONFIRM,
    "0" * 32,
    response_url="http://127.0.0.1:9/response/none",
    message_ts="1700000000.000100",
    is_ephemeral=True,
)
ACTION_PATHS = paths(VALID_ACTION)


@st.composite
def action_payloads(draw: st.DrawFn) -> bytes:
    """A block_actions payload with parts removed or of the wrong type, or not JSON at all."""
    if draw(st.integers(0, 9)) == 0:
        return urlencode({"payload": draw(texts)}).encode()
    payload = copy.deepcopy(VALID_ACTION)
    payload["actions"][0]["action_id"] = draw(
        st.sampled_from([views.CONFIRM, views.CANCEL, "unknown_action"])
    )
    payload["actions"][0]["value"] = draw(st.one_of(st.text(max_size=40), huge))
    for _ in range(draw(st.integers(0, 3))):
        mutate(draw, payload, draw(st.sampled_from(ACTION_PATHS)))
    return urlencode({"payload": json.dumps(payload)}).encode()


@pytest.fixture
def endpoint(sims: SimulatorServer, tmp_path: Path) -> Any:
    harness = Slack(sims, tmp_path / "stopbot.db")
    yield harness
    harness.close()


def post_signed(client: httpx.Client, url: str, body: bytes) -> httpx.Response:
    headers = sign_request(SECRET, body, int(time.time()))
    return client.post(
        url,
        content=body,
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )


# The bot serving these requests runs in threads beside the test, and its back-offs draw
# jitter from `random` while Hypothesis draws an example: Hypothesis takes that for the
# strategy using `random` (the strategies above use none).
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
def test_generated_slack_requests_never_get_a_server_error(endpoint: Slack) -> None:
    """Signed slash commands and button payloads with missing fields, wrong types, huge
    strings and any unicode get an answer below 500, and the bot stays healthy."""
    assert endpoint.server is not None
    url = f"{endpoint.server.url}/slack/events"
    with httpx.Client(timeout=30) as client:

        @OVER_HTTP
        @given(st.one_of(slash_forms(), action_payloads()))
        def check(body: bytes) -> None:
            response = post_signed(client, url, body)
            assert response.status_code < 500, (response.status_code, response.text[:200])

        check()
        health = client.get(f"{endpoint.server.url}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_a_payload_that_is_not_json_is_refused_not_a_server_error(
    endpoint: Slack, signed: bool
) -> None:
    """`payload=` that is not JSON (Slack never sends it) gets a 4xx, not a 500 and a trace."""
    assert endpoint.server is not None
    body = urlencode({"payload": "not json"}).encode()
    headers = sign_request(SECRET, body, int(time.time())) if signed else {}
    response = httpx.post(
        f"{endpoint.server.url}/slack/events",
        content=body,
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code in {400, 401}
    assert endpoint.store.recent_operations() == []
