"""The ``/stop`` grammar: text in, one command out, or a usage error worded for the user."""

from __future__ import annotations

import datetime as dt
import re
import shlex
from dataclasses import dataclass
from typing import Any

from bot.durations import parse_duration
from bot.slack.wording import Mrkdwn, code, md, mrkdwn, unescape
from bot.text import too_long

__all__ = [
    "HELP",
    "EnvironmentCommand",
    "Help",
    "History",
    "Leases",
    "ListResources",
    "Lock",
    "Locks",
    "Refresh",
    "SavingsCommand",
    "ScheduleCommand",
    "Status",
    "StopCommand",
    "Unlock",
    "UsageError",
    "parse",
    "request_name",
]


SCHEDULE_ADD = (
    '/stop schedule add <name> "<cron>" <timezone> <tag:key=value | res1,res2> [warn=15m]'
)


def _line(syntax: str, what: str = "") -> Mrkdwn:
    return md("• {}{}", code(syntax), f": {what}" if what else "")


HELP = Mrkdwn("\n").join(
    [
        Mrkdwn("*Stopbot* stops cloud resources safely. Commands:"),
        _line("/stop <resource> [--force] [reason…]", "stop a resource, after you confirm"),
        _line(
            "/stop wake <resource> [for <duration>] [reason…]",
            "start it again, after you confirm; with a duration, a lease: it is stopped "
            "again when it ends (you are asked first)",
        ),
        _line(
            "/stop env <environment> [reason…]",
            "stop an environment tier after tier (each once the one before it is stopped), "
            "after you confirm its whole plan; `/stop wake env <environment>` starts it in "
            "reverse",
        ),
        _line(
            "/stop leases [end <resource>]", "the wake leases running; end yours (admins: anyone's)"
        ),
        _line("/stop status <resource>", "its current status and locks"),
        _line("/stop list [provider | tag:key=value]", "configured resources and their status"),
        _line("/stop history [resource]", "the latest stops, from the audit log"),
        md(
            "• {}: keep others from stopping it (e.g. {}, {})",
            code("/stop lock <resource> <duration> [reason…]"),
            code("4h"),
            code("3d"),
        ),
        md(
            "• {}: remove your lock (admins: anyone's, with {})",
            code("/stop unlock <resource> [--force]"),
            code("--force"),
        ),
        _line("/stop locks", "every active lock, with owner, reason and expiry"),
        _line("/stop refresh", "list the discovered providers again now (new and gone resources)"),
        _line(
            "/stop schedule list | run <name> | skip <name> | snooze <name> <duration> | exceptions"
        ),
        md(
            "• {} and {} (admins)",
            code(SCHEDULE_ADD),
            code("/stop schedule remove <name>"),
        ),
        _line(
            "/stop dry-run <schedule>",
            "what a run would do now, from statuses and locks (nothing is stopped)",
        ),
        _line(
            "/stop savings [resource | env | tag:key=value] [7d | 30d | month]",
            "hours stopped and estimated savings (default: everything, the last 30d)",
        ),
        _line("/stop help", "this message"),
        md(
            "A resource is named as in the configuration, or as {}. {} is Feldera's forced "
            "stop (no checkpoint). Admins may add {} and a reason to stop through a lock; it "
            "is audited and announced.",
            code("provider:id"),
            code("--force"),
            code("--override-lock"),
        ),
    ]
)

RESERVED = frozenset(
    {
        "help",
        "status",
        "list",
        "history",
        "lock",
        "unlock",
        "locks",
        "schedule",
        "dry-run",
        "wake",
        "leases",
        "savings",
        "env",
        "refresh",
    }
)
SCHEDULE_USAGE = md(
    "Usage: {}, {}, {}, {}, or {}.",
    code("/stop schedule list"),
    code("/stop schedule run|skip|remove <name>"),
    code("/stop schedule snooze <name> <duration>"),
    code("/stop schedule exceptions"),
    code(SCHEDULE_ADD),
)


COMMAND_LIMIT = 4000
"""The longest text after ``/stop`` read (the longest command, a schedule of many resources,
is well under it)."""


def _usage(syntax: str, after: str = ".") -> Mrkdwn:
    return md("Usage: {}{}", code(syntax), after)


class UsageError(ValueError):
    """Malformed input: the message (mrkdwn) says what was expected."""

    def __init__(self, message: Mrkdwn) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Status:
    resource: str


@dataclass(frozen=True)
class ListResources:
    selector: str | None = None


@dataclass(frozen=True)
class History:
    resource: str | None = None


@dataclass(frozen=True)
class StopCommand:
    """``/stop <resource> …``, or ``/stop wake <resource> [for <duration>] …`` (``wake``)."""

    resource: str
    force: bool = False
    reason: str | None = None
    override_lock: bool = False
    wake: bool = False
    lease: dt.timedelta | None = None


@dataclass(frozen=True)
class EnvironmentCommand:
    """``/stop env <environment> [reason…]``, or ``/stop wake env <environment> …``."""

    name: str
    reason: str | None = None
    wake: bool = False


ENV_USAGE = "/stop env <environment> [reason…]"


def _environment(words: list[str], *, wake: bool) -> EnvironmentCommand:
    if not words or words[0].startswith("-"):
        usage = "/stop wake env <environment> [reason…]" if wake else ENV_USAGE
        raise UsageError(
            _usage(
                usage,
                md(
                    ", e.g. {}.",
                    code(usage.replace("<environment>", "staging").replace(" [reason…]", "")),
                ),
            )
        )
    return EnvironmentCommand(words[0], reason=_reason(words[1:]), wake=wake)


@dataclass(frozen=True)
class Leases:
    """``/stop leases``, or ``/stop leases end <resource>``."""

    end: str | None = None


@dataclass(frozen=True)
class Lock:
    resource: str
    duration: dt.timedelta
    reason: str | None = None


@dataclass(frozen=True)
class Unlock:
    resource: str
    force: bool = False


@dataclass(frozen=True)
class Locks:
    pass


@dataclass(frozen=True)
class Refresh:
    """``/stop refresh``: discovery now."""


@dataclass(frozen=True)
class SavingsCommand:
    """``/stop savings [resource | env | tag:key=value] [7d | 30d | month]``."""

    selection: str | None = None
    period: str | None = None


SAVINGS_USAGE = "/stop savings [resource | env | tag:key=value] [7d | 30d | month]"
_PERIOD = re.compile(r"^(month|\d{1,4}[dh])$", re.IGNORECASE)


@dataclass(frozen=True)
class ScheduleCommand:
    """``/stop schedule <action> …`` and ``/stop dry-run <name>``."""

    action: str
    name: str | None = None
    duration: dt.timedelta | None = None
    cron: str | None = None
    timezone: str | None = None
    selector: str | None = None
    warn_before: dt.timedelta | None = None


_QUOTING = re.compile(r"[\"'\\]")
_SHELL_SPACE = re.compile(r"[ \t\r\n]+")  # shlex's whitespace

Command = (
    Help
    | Status
    | ListResources
    | History
    | StopCommand
    | Lock
    | Unlock
    | Locks
    | Refresh
    | Leases
    | ScheduleCommand
    | SavingsCommand
    | EnvironmentCommand
)

WAKE_USAGE = "/stop wake <resource> [for <duration>] [reason…]"


def _words(text: str) -> list[str]:
    if not _QUOTING.search(text):  # most commands: shlex would only split on whitespace
        return [word for word in _SHELL_SPACE.split(text) if word]
    try:
        return shlex.split(text)
    except ValueError:
        # An unbalanced quote in a free-text reason is not worth refusing the command.
        return text.split()


def _duration(text: str, usage: Mrkdwn) -> dt.timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(md("{}. {}", str(exc), usage)) from None


def _schedule(words: list[str]) -> ScheduleCommand:
    if not words:
        raise UsageError(SCHEDULE_USAGE)
    action, args = words[0].lower(), words[1:]
    if action in {"list", "exceptions"} and not args:
        return ScheduleCommand(action)
    if action in {"run", "skip", "remove"} and len(args) == 1:
        return ScheduleCommand(action, args[0])
    if action == "snooze" and len(args) == 2:
        usage = md(
            "{}, e.g. {}.", _usage("/stop schedule snooze <name> <duration>", ""), code("1h")
        )
        return ScheduleCommand(action, args[0], duration=_duration(args[1], usage))
    if action == "add" and len(args) in {4, 5}:
        warn = None
        if len(args) == 5:
            key, _, value = args[4].partition("=")
            if key != "warn":
                raise UsageError(
                    md(
                        "Unknown option {}: the option is {}.",
                        code(args[4]),
                        code("warn=<duration>"),
                    )
                )
            warn = _duration(value, SCHEDULE_USAGE)
        return ScheduleCommand(
            "add", args[0], cron=args[1], timezone=args[2], selector=args[3], warn_before=warn
        )
    raise UsageError(SCHEDULE_USAGE)


def parse(text: str) -> Command:
    """Parse the text after ``/stop`` as Slack sends it (``&``, ``<`` and ``>`` escaped):
    the command holds what the user typed."""
    typed = unescape(text).strip()
    if len(typed) > COMMAND_LIMIT:
        raise UsageError(
            md(
                "That command is {:,} characters long, and a command is {:,} at most.",
                len(typed),
                COMMAND_LIMIT,
            )
        )
    words = _words(typed)
    if not words or words[0].lower() in {"help", "-h", "--help"}:
        return Help()
    head, rest = words[0].lower(), words[1:]
    if head == "status":
        if len(rest) != 1:
            raise UsageError(_usage("/stop status <resource>", " (one resource name)."))
        return Status(rest[0])
    if head == "list":
        if len(rest) > 1:
            raise UsageError(_usage("/stop list [provider | tag:key=value]"))
        selector = rest[0] if rest else None
        if selector and selector.startswith("tag:") and "=" not in selector:
            raise UsageError(
                md(
                    "A tag filter looks like {}, e.g. {}.",
                    code("tag:key=value"),
                    code("tag:env=dev"),
                )
            )
        return ListResources(selector)
    if head == "dry-run":
        if len(rest) != 1:
            raise UsageError(_usage("/stop dry-run <schedule>"))
        return ScheduleCommand("dry-run", rest[0])
    if head == "schedule":
        return _schedule(rest)
    if head == "locks":
        if rest:
            raise UsageError(_usage("/stop locks", " (no arguments)."))
        return Locks()
    if head == "refresh":
        if rest:
            raise UsageError(_usage("/stop refresh", " (no arguments)."))
        return Refresh()
    if head == "lock":
        if len(rest) < 2:
            raise UsageError(
                _usage(
                    "/stop lock <resource> <duration> [reason…]",
                    md(", e.g. {}.", code("/stop lock dev-eu 4h demo this afternoon")),
                )
            )
        try:
            duration = parse_duration(rest[1])
        except ValueError as exc:
            raise UsageError(
                md("{}. {}", str(exc), _usage("/stop lock <resource> <duration> [reason…]"))
            ) from None
        return Lock(rest[0], duration, _reason(rest[2:]))
    if head == "unlock":
        names = [w for w in rest if w != "--force"]
        if len(names) != 1 or len(rest) - len(names) > 1:
            raise UsageError(_usage("/stop unlock <resource> [--force]"))
        return Unlock(names[0], force="--force" in rest)
    if head == "wake":
        if rest and rest[0].lower() == "env":
            return _environment(rest[1:], wake=True)
        return _wake(rest)
    if head == "env":
        return _environment(rest, wake=False)
    if head == "leases":
        if not rest:
            return Leases()
        if len(rest) == 2 and rest[0].lower() == "end":
            return Leases(end=rest[1])
        raise UsageError(
            md("Usage: {} or {}.", code("/stop leases"), code("/stop leases end <resource>"))
        )
    if head == "savings":
        return _savings(rest)
    if head == "history":
        if len(rest) > 1:
            raise UsageError(_usage("/stop history [resource]"))
        return History(rest[0] if rest else None)
    resource = words[0]
    if resource.startswith("-"):
        raise UsageError(
            md(
                "{} is not a resource. {}",
                code(resource),
                _usage("/stop <resource> [--force] [reason…]"),
            )
        )
    flags = {"--force": False, "--override-lock": False}
    reason_words: list[str] = []
    for word in words[1:]:
        if word in flags:
            flags[word] = True
        elif word.startswith("--") and not reason_words:
            raise UsageError(
                md(
                    "Unknown option {}. The options are {} and {}.",
                    code(word),
                    code("--force"),
                    code("--override-lock"),
                )
            )
        else:
            reason_words.append(word)
    return StopCommand(
        resource,
        force=flags["--force"],
        reason=_reason(reason_words),
        override_lock=flags["--override-lock"],
    )


def _wake(words: list[str]) -> StopCommand:
    """``wake <resource> [for <duration>] [--override-lock] [reason…]``."""
    if not words or words[0].startswith("-"):
        raise UsageError(
            _usage(WAKE_USAGE, md(", e.g. {}.", code("/stop wake dev-eu for 2h demo")))
        )
    resource, rest = words[0], words[1:]
    lease = None
    if rest and rest[0].lower() == "for":
        if len(rest) < 2:
            raise UsageError(
                _usage(WAKE_USAGE, md(": a duration after {}, e.g. {}.", code("for"), code("2h")))
            )
        lease = _duration(rest[1], _usage(WAKE_USAGE))
        rest = rest[2:]
    override = False
    reason_words: list[str] = []
    for word in rest:
        if word == "--override-lock":
            override = True
        elif word.startswith("--") and not reason_words:
            raise UsageError(
                md("Unknown option {}. A wake's option is {}.", code(word), code("--override-lock"))
            )
        else:
            reason_words.append(word)
    return StopCommand(
        resource, reason=_reason(reason_words), override_lock=override, wake=True, lease=lease
    )


def _savings(words: list[str]) -> SavingsCommand:
    periods = [w.lower() for w in words if _PERIOD.match(w)]
    others = [w for w in words if not _PERIOD.match(w)]
    if len(periods) > 1 or len(others) > 1:
        raise UsageError(_usage(SAVINGS_USAGE, md(", e.g. {}.", code("/stop savings dev 7d"))))
    return SavingsCommand(others[0] if others else None, periods[0] if periods else None)


def _reason(words: list[str]) -> str | None:
    reason = " ".join(words) or None
    refused = too_long("A reason", reason)
    if refused is not None:
        raise UsageError(mrkdwn(refused))
    return reason


_LABEL = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


def request_name(body: dict[str, Any]) -> str:
    """The label for one Slack request: ``/stop status``, ``/stop`` (a stop),
    ``action:stop_confirm``, ``view:<callback_id>``, or its type."""
    command = body.get("command")
    if isinstance(command, str) and _LABEL.match(command):
        text = body.get("text")
        words = text.split(maxsplit=1) if isinstance(text, str) else []
        head = words[0].lower() if words else "help"
        return f"{command} {head}" if head in RESERVED else command
    if body.get("type") == "block_actions":
        actions = body.get("actions")
        action = actions[0] if isinstance(actions, list) and actions else {}
        action_id = action.get("action_id") if isinstance(action, dict) else None
        if isinstance(action_id, str) and _LABEL.match(action_id):
            return f"action:{action_id}"
        return "action:other"
    view = body.get("view")
    if body.get("type") == "view_submission" and isinstance(view, dict):
        callback = view.get("callback_id")
        return (
            f"view:{callback}" if isinstance(callback, str) and _LABEL.match(callback) else "view"
        )
    kind = body.get("type")
    return kind if isinstance(kind, str) and _LABEL.match(kind) else "other"
