"""Structured logs: JSON lines off a terminal, readable text on one, secrets never written."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from bot.config import Settings, parse_config
from bot.logs import Redactor, configure_logging, secrets_of
from providers.simulators.samples import sample_config

BOT_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"
SIGNING_SECRET = "8f14e45fceea167a5a36dedd4bea2543"
NOVA_PASSWORD = "correct-horse-battery"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes the root logger: put it back after each test."""
    root = logging.getLogger()
    handlers, level, factory = list(root.handlers), root.level, logging.getLogRecordFactory()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def emit(message: str, *args: Any, **extra: Any) -> dict[str, Any]:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, secrets=[SIGNING_SECRET, NOVA_PASSWORD])
    logging.getLogger("stopbot.test").warning(message, *args, extra=extra)
    [line] = lines(stream)
    return line


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (f"auth.test with {BOT_TOKEN}", "auth.test with xoxb-[REDACTED]"),
        ("user token xoxp-11-22-33abc", "user token xoxp-[REDACTED]"),
        ("socket mode xapp-1-A0STOP-123-abcdef", "socket mode xapp-[REDACTED]"),
        (f"verifying with {SIGNING_SECRET}", "verifying with [REDACTED]"),
        (f"keystone password {NOVA_PASSWORD}", "keystone password [REDACTED]"),
        (
            "request headers: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
            "request headers: Authorization: Bearer [REDACTED]",
        ),
        (
            "headers={'Authorization': 'Token qov_5f2b9c7d1e3a'}",
            "headers={'Authorization': 'Token [REDACTED]'}",
        ),
        ("X-Auth-Token: gAAAAABlZ3kqExample", "X-Auth-Token: [REDACTED]"),
        ("X-Subject-Token=gAAAAABlZ3kqExample", "X-Subject-Token=[REDACTED]"),
        ("sent Bearer abcdefgh12345678 upstream", "sent Bearer [REDACTED] upstream"),
        (
            "body: token=legacyverif&team_id=T0&response_url=https%3A%2F%2Fhooks.slack.com%2Fx",
            "body: token=[REDACTED]&team_id=T0&response_url=[REDACTED]",
        ),
        (
            'keystone body {"password": "whatever-it-is", "name": "stopbot"}',
            'keystone body {"password": "[REDACTED]", "name": "stopbot"}',
        ),
        ("Token expired for user U0BOB", "Token expired for user U0BOB"),
        (
            "POST https://hooks.slack.com/actions/T0/1234/AbCdEf failed",
            "POST https://hooks.slack.com/actions/[REDACTED] failed",
        ),
        (
            "retry handler found for POST https://hooks.slack.com/commands/T0/99/xyz",
            "retry handler found for POST https://hooks.slack.com/commands/[REDACTED]",
        ),
        ("access_token=abc123def&x=1", "access_token=[REDACTED]&x=1"),
        ('{"bot_token": "abc123def"}', '{"bot_token": "[REDACTED]"}'),
        ("X-Api-Key: k-123456789", "X-Api-Key: [REDACTED]"),
        (
            "cannot connect to https://stopbot:hunter22@keystone.example.com/v3",
            "cannot connect to https://[REDACTED]@keystone.example.com/v3",
        ),
    ],
)
def test_each_kind_of_secret_is_redacted(message: str, expected: str) -> None:
    """A log line carrying any kind of secret comes out with the secret replaced."""
    assert emit(message)["event"] == expected


def test_secrets_in_arguments_extras_and_tracebacks_are_redacted() -> None:
    """%-arguments, extra fields (nested too) and exception text are redacted as well."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, secrets=[SIGNING_SECRET])
    log = logging.getLogger("stopbot.test")
    try:
        raise RuntimeError(f"cannot verify with {SIGNING_SECRET}")
    except RuntimeError:
        log.exception(
            "call failed with %s",
            BOT_TOKEN,
            extra={
                "operation": "op-1",
                "headers": {"Authorization": f"Bearer {BOT_TOKEN}", "Accept": "json"},
                "tokens": [SIGNING_SECRET, "visible"],
                "secret": SecretStr("hidden"),
            },
        )
    [line] = lines(stream)
    assert line["event"] == "call failed with xoxb-[REDACTED]"
    assert line["operation"] == "op-1"
    assert line["headers"] == {"Authorization": "[REDACTED]", "Accept": "json"}
    assert line["tokens"] == ["[REDACTED]", "visible"]
    assert line["secret"] == "[REDACTED]"
    assert line["exc"].endswith("RuntimeError: cannot verify with [REDACTED]")
    assert SIGNING_SECRET not in stream.getvalue()
    assert BOT_TOKEN not in stream.getvalue()


def test_json_lines_parse_with_the_event_fields() -> None:
    """Off a terminal every record is one JSON object a line: ts, level, logger, event, extras."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("bot.workflow")
    log.info("stop accepted", extra={"operation": "ab12", "provider": "qovery"})
    log.warning("two\nlines")
    log.debug("not at INFO")
    first, second = lines(stream)
    stamp = dt.datetime.fromisoformat(first.pop("ts"))
    assert stamp.tzinfo is not None
    assert first == {
        "level": "info",
        "logger": "bot.workflow",
        "event": "stop accepted",
        "operation": "ab12",
        "provider": "qovery",
    }
    second.pop("ts")
    assert second == {"level": "warning", "logger": "bot.workflow", "event": "two\nlines"}
    assert len(stream.getvalue().splitlines()) == 2


def test_text_on_a_terminal() -> None:
    """On a terminal the line is for people: time, level, logger, message, key=value extras."""
    stream = Tty()
    configure_logging("INFO", stream=stream, secrets=[SIGNING_SECRET])
    logging.getLogger("bot.workflow").warning(
        "status read failed", extra={"operation": "ab12", "error": f"bad {SIGNING_SECRET}"}
    )
    text = stream.getvalue()
    assert text.endswith(
        " WARNING bot.workflow: status read failed operation=ab12 error=bad [REDACTED]\n"
    )
    dt.datetime.strptime(text.split(" ", 1)[0], "%H:%M:%S")


def test_configuring_again_replaces_the_handler() -> None:
    """A second configure_logging (with the configuration's secrets) keeps one line per event."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=first)
    configure_logging("INFO", stream=second, secrets=[NOVA_PASSWORD])
    logging.getLogger("x").warning("password is %s", NOVA_PASSWORD)
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["password is [REDACTED]"]


def test_secrets_of_settings_and_configuration() -> None:
    """Every SecretStr of the settings and of each provider's configuration is collected."""
    settings = Settings(
        slack_bot_token=SecretStr(BOT_TOKEN),
        slack_signing_secret=SecretStr(SIGNING_SECRET),
        slack_app_token=None,
    )
    document = sample_config("http://127.0.0.1:1")
    document["providers"][1]["password"] = NOVA_PASSWORD
    config = parse_config(document, "test", env={})
    assert secrets_of(settings, config) == [
        BOT_TOKEN,
        SIGNING_SECRET,
        "sim-qovery-token",
        NOVA_PASSWORD,
        "sim-okeanos-token",
        "apikey:sim-feldera-key",
    ]


def test_handlers_of_others_see_redacted_records() -> None:
    """A handler the bot does not own (uvicorn's, a test runner's) gets the record redacted."""
    configure_logging("INFO", stream=io.StringIO(), secrets=[SIGNING_SECRET])
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(self.format(record))

    other = logging.getLogger("uvicorn.error")
    keep = Keep()
    other.addHandler(keep)
    try:
        other.error("bad secret %s", SIGNING_SECRET)
    finally:
        other.removeHandler(keep)
    assert seen == ["bad secret [REDACTED]"]


def test_a_secret_inside_another_is_removed_whole() -> None:
    """Known secrets are replaced longest first, so no fragment of the longer one is left."""
    redact = Redactor(["abcdef", "abcdefghij"])
    assert redact("x abcdefghij y abcdef") == "x [REDACTED] y [REDACTED]"
    assert Redactor(["abc"])("abc stays: too short to redact by value") == (
        "abc stays: too short to redact by value"
    )


def test_slack_sdk_s_own_lines_with_urls_stay_out_of_the_log() -> None:
    """slack_sdk logs each response URL call at INFO: below the bot's threshold for it."""
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    logging.getLogger("slack_sdk.webhook.async_client").info("Sending a request - url: x")
    logging.getLogger("slack_bolt.App").info("dispatching")
    logging.getLogger("slack_sdk.web").warning("rate limited")
    assert [line["event"] for line in lines(stream)] == ["rate limited"]
