"""Logging for a process that runs unattended: one line per event, secrets never written.

On a terminal the lines are for people (``12:00:01 INFO bot.workflow: message key=value``);
anywhere else (a container, systemd, a file) they are JSON objects, one a line, with the
``extra`` fields of the call (``operation``, ``user``, ...) as keys, so a log system can
index them.

Redaction happens as each record is made (a log record factory), so every handler sees
it redacted, this module's and others' (uvicorn's, a test runner's) alike; the extra
fields, set on a record after it is made, are redacted by a filter on this module's
handler. Two kinds of secret are removed, everywhere in a record (message, arguments,
extra fields, exception and stack text):

* the values the process knows: the Slack tokens and signing secret, every provider token
  and password in the configuration (:func:`secrets_of`);
* anything shaped like a credential: Slack tokens (``xoxb-…``, ``xapp-…``),
  ``Authorization:``/``X-Auth-Token:`` headers, ``Bearer …``/``Token …`` values, and
  ``token=``/``password=``/``"secret": "…"`` fields in forms and JSON bodies.
"""

from __future__ import annotations

import datetime as dt
import json as jsonlib
import logging
import re
import sys
from collections.abc import Callable, Iterable
from typing import IO, Any

from pydantic import BaseModel, SecretStr

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "Redactor",
    "TextFormatter",
    "configure_logging",
    "secrets_of",
]

REDACTED = "[REDACTED]"

# Shorter values are not redacted by value: a 3-letter "secret" would blank out words.
MIN_SECRET_LENGTH = 6
# Keys whose whole value is a credential, in a mapping logged as an extra field.
_SECRET_KEY = re.compile(
    r"(?i)^(authorization|proxy-authorization|x-auth-token|x-subject-token|cookie|.*token|"
    r".*password|.*secret|api_?key)$"
)


def _header_value(match: re.Match[str]) -> str:
    """Keep the header name and scheme (``Authorization: Bearer``), drop the credential."""
    scheme = f"{match.group(3)} " if match.group(3) else ""
    return f"{match.group(1)}{match.group(2)}{scheme}{REDACTED}"


_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # Slack bot/user/app tokens: https://docs.slack.dev/authentication/tokens
    (re.compile(r"\b(xox[abpre])-[A-Za-z0-9-]+"), rf"\1-{REDACTED}"),
    (re.compile(r"\bxapp-[A-Za-z0-9-]+"), f"xapp-{REDACTED}"),
    # Header lines and header dicts: the whole value, whatever its scheme.
    (
        re.compile(
            r"(?i)\b(authorization|proxy-authorization|x-auth-token|x-subject-token|cookie)"
            r"(['\"]?\s*[:=]\s*['\"]?)"
            r"(?:(bearer|token|basic|apikey)\s+)?[^\s'\",;}&]+"
        ),
        _header_value,
    ),
    (re.compile(r"\b(Bearer|Token)\s+[A-Za-z0-9._~+/=:-]{8,}"), rf"\1 {REDACTED}"),
    # A response URL (or an incoming webhook) posts as the bot for whoever holds it:
    # https://docs.slack.dev/interactivity/handling-user-interaction#message_responses
    (
        re.compile(
            r"(hooks\.slack\.com/(?:actions|commands|services|triggers|workflows)/)[^\s'\"]+"
        ),
        rf"\1{REDACTED}",
    ),
    # Credentials in a URL: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^\s/@'\"]+:[^\s/@'\"]+@"), rf"\1{REDACTED}@"),
    # Form fields and JSON members named like a secret (Slack's verification token,
    # Keystone's password body, Feldera's api_key, a response_url that can post as us).
    (
        re.compile(
            r"(?i)(\b(?:[\w-]*token|password|secret|api_key|apikey|x-api-key|signing_secret|"
            r"client_secret|application_credential_secret|response_url)['\"]?\s*[:=]\s*['\"]?)"
            r"(?!\[REDACTED\])[^\s'\",&}]+"
        ),
        rf"\1{REDACTED}",
    ),
)


class Redactor:
    """Replaces known secret values and credential-shaped text with ``[REDACTED]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is removed whole.
        self.secrets = sorted(
            {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any) -> Any:
        """A copy of ``value`` with every string in it redacted (dicts, lists, tuples); in a
        mapping, the whole value of a key named like a credential (a headers dict)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, SecretStr):
            return REDACTED
        if isinstance(value, dict):
            return {
                k: REDACTED if _SECRET_KEY.match(str(k)) else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self(str(value))

    def record(self, record: logging.LogRecord) -> None:
        """Redact a record's message (arguments merged in), exception and stack text."""
        try:
            message = record.getMessage()
        except Exception:  # bad %-args: keep the template rather than lose the event
            message = f"{record.msg} {record.args!r}"
        record.msg = self(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self(record.exc_text)
        if record.stack_info:
            record.stack_info = self(record.stack_info)


# The attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message", "taskName"}
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Redacts a record in place before any formatter sees it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        self.redact.record(record)
        for key, value in _extras(record).items():
            setattr(record, key, self.redact.value(value))
        return True


_original_factory = logging.getLogRecordFactory()
_current: Redactor | None = None


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Records are redacted as they are made, so handlers this module does not own
    (uvicorn's, a test runner's) never see a secret either. Extra fields are set on a
    record after the factory returns: the handler's filter redacts those."""
    record = _original_factory(*args, **kwargs)
    if _current is not None:
        _current.record(record)
    return record


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, event, the extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _extras(record).items():
            line.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return jsonlib.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``12:00:01 WARNING bot.workflow: status read failed operation=ab12 error=…``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{line} {extras}" if extras else line


class _StopbotHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so a second call replaces it."""


def secrets_of(*sources: Any) -> list[str]:
    """Every secret value in settings or configuration objects (their ``SecretStr`` fields,
    searched through nested models and lists), for :func:`configure_logging`."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    for source in sources:
        walk(source)
    return found


def configure_logging(
    level: int | str = logging.INFO,
    *,
    json: bool | None = None,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> Redactor:
    """Send every log record to ``stream`` (stderr), redacted, as JSON or text.

    :param json: JSON lines; by default when the stream is not a terminal.
    :param secrets: values never to write (tokens, passwords), in addition to the patterns.
    :returns: the redactor, so a caller can add secrets it learns later
        (``redactor.secrets``) or redact its own output.
    """
    stream = stream if stream is not None else sys.stderr
    if json is None:
        json = not (hasattr(stream, "isatty") and stream.isatty())
    global _current
    redactor = Redactor(secrets)
    _current = redactor
    logging.setLogRecordFactory(_redacting_factory)
    handler = _StopbotHandler(stream)
    handler.addFilter(RedactingFilter(redactor))
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StopbotHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # One line per provider request is noise next to the bot's own events.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # slack_sdk logs each call's URL (a response URL among them) at INFO and DEBUG.
    logging.getLogger("slack_sdk").setLevel(logging.WARNING)
    logging.getLogger("slack_bolt").setLevel(logging.WARNING)
    return redactor
