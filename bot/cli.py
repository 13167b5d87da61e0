"""The terminal face of Stopbot: ``stopbot <command>``.

    serve         the Slack bot (Socket Mode with SLACK_APP_TOKEN, --http for HTTP mode);
                  with no Slack credentials at all, the local playground
    dev           the local playground: a stand-in Slack in the browser, the simulators
    simulate      the four provider API simulators, on their own
    check-config  validate stopbot.yaml
    stop          stop a resource: the same workflow, policy, locks and audit as Slack;
                  asks on a terminal unless --yes, then prints each state as it comes;
                  --env <name>: an environment, tier after tier (wake: in reverse)
    status, list  live status of one resource, or of the configured ones
    history       the audit log (table, --json or --csv)
    locks         Stopbot locks and provider locks in force
    schedules     the schedules in the store (--preview NAME: what its next run would do
                  with each resource, from statuses and locks read now)

Exit codes:
    0    success (``stop``: stopped, or already stopped)
    1    the operation failed: a provider error, a refused or declined stop, a provider
         lock that could not be read (``locks``, ``status``)
    2    bad usage or configuration (unknown resource, invalid stopbot.yaml, no terminal
         to confirm on without --yes, no database)
    130  interrupted (Ctrl-C); a stop already sent goes on at the provider

Errors are one clear line on stderr (a configuration error, one line per problem),
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import functools
import getpass
import importlib.metadata
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from bot import reads
from bot.cli_names import Names, people_in
from bot.config import (
    ConfigError,
    Settings,
    StopbotConfig,
    UnknownEnvironmentError,
    UnknownResourceError,
    configured_database_url,
    load_config,
    parse_config,
    read_config_document,
)
from bot.discovery import Discovery, Refreshed
from bot.durations import format_duration, parse_duration
from bot.estate import embedded_document, over_estate
from bot.locks import LocksInForce
from bot.logs import Redactor, configure_logging, secrets_of
from bot.models import (
    DONE_STATES,
    Action,
    Actor,
    AuditEntry,
    BotLock,
    Operation,
    OpState,
    Transition,
)
from bot.rates import Rate
from bot.runtime import BUILT_IN, Runtime, uses_estate
from bot.savings import Money, Savings, SavingsError, Selection, parse_period
from bot.schedules import Outcome, PlanItem
from bot.stopbot import Stopbot
from bot.store import Store, StoreError, open_store, shown_location, store_exists
from bot.text import Text, TextError
from bot.workflow import Preview
from providers.base import (
    ProviderConfigBase,
    ProviderLock,
    Resource,
    ResourceStatus,
    utcnow,
)
from providers.errors import ProviderError

__all__ = ["TerminalProgress", "build_parser", "main", "parse_since"]

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
ESTATE_PLACEHOLDER_URL = "http://127.0.0.1:1"
"""Where check-config pretends the simulators are: it checks a file, it starts nothing."""

FINAL_WORDS = {
    OpState.STOPPED: "stopped",
    OpState.STOPPED_ALREADY: "already stopped",
    OpState.STARTED: "running",
    OpState.RUNNING_ALREADY: "already running",
    OpState.FAILED: "failed",
    OpState.TIMED_OUT: "timed out",
    OpState.CANCELLED: "cancelled",
    OpState.REFUSED: "refused",
}


def words(text: Text | None, names: Names | None = None) -> str:
    """A sentence of the core for the terminal: people by name (by id where ``names``
    knows none), commands as typed here."""
    return (names or Names()).words(text)


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class _Terminated(Exception):
    """SIGTERM arrived: shut down as after Ctrl-C, but it is a normal end (exit 0)."""


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def _utc(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "never"


def _log_level(args: argparse.Namespace, default: str) -> str:
    return str(getattr(args, "log_level", None) or default)


def _configure_logging(level: str, settings: Settings, *sources: Any) -> None:
    configure_logging(level, secrets=secrets_of(settings, *sources))


# -- check-config, simulate -------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.path) if args.path else settings.config_path()
    document = read_config_document(path)
    if document is None or document == {}:
        raise ConfigError(
            str(path),
            [
                (
                    "",
                    "the file is empty: name providers: and resources: (see the README), or "
                    "delete it to run on the built-in simulators",
                )
            ],
        )
    on_estate = uses_estate(document)
    if on_estate:
        # Checked as the bot would run it: laid over the embedded estate.
        estate = embedded_document(ESTATE_PLACEHOLDER_URL, utcnow())
        config = parse_config(over_estate(estate, document), str(path))
    else:
        config = parse_config(document, str(path))
    print(f"{path}: OK" + (f" (no providers: it runs on {BUILT_IN})" if on_estate else ""))
    print(f"  providers: {len(config.providers)}")
    for p in config.providers:
        count = sum(1 for r in config.resources if r.provider == p.name)
        print(f"    {p.name} ({p.type}): {_plural(count, 'resource')}{_discovered(config, p)}")
    print(f"  resources: {len(config.resources)}")
    print(f"  schedules: {len(config.schedules)}")
    for schedule in config.schedules:
        where = f", in {schedule.channel}" if schedule.channel else ""
        print(
            f"    {schedule.name}: {schedule.cron} ({schedule.timezone}), "
            f"{schedule.select.describe()}, warned {format_duration(schedule.warn_before)} "
            f"before{where}"
        )
    if config.environments:
        print(f"  environments: {len(config.environments)}")
        for name in config.environments:
            tiers = " -> ".join(
                f"{label} ({', '.join(members)})" for label, members in config.environment(name)
            )
            print(f"    {name}: {tiers}")
    for line in config.deprecations():
        print(f"{path}: warning: {line}", file=sys.stderr)
    return EXIT_OK


def _discovered(config: StopbotConfig, provider: ProviderConfigBase) -> str:
    """How check-config says that a provider is discovered, and what of it is kept."""
    kept = provider.discover_filter()
    if kept is None:
        return ""
    what = [f"name {kept.name}"] if kept.name else []
    what += [f"{k}={v}" for k, v in sorted(kept.tags.items())]
    every = format_duration(config.discovery.interval)
    return f", discovered every {every}" + (f" ({', '.join(what)})" if what else "")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from providers.simulators.server import SimulatorHub, build_app

    seed: dict[str, Any] | None = None
    if args.seed:
        try:
            seed = yaml.safe_load(Path(args.seed).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(f"cannot read the seed file {args.seed}: {exc}", EXIT_USAGE) from None
        if not isinstance(seed, dict):
            raise CliError(f"{args.seed}: the seed must be a mapping of API sections", EXIT_USAGE)
    try:
        hub = SimulatorHub(seed)
    except ValueError as exc:
        raise CliError(f"{args.seed}: {exc}", EXIT_USAGE) from None
    base = f"http://{args.host}:{args.port}"
    print(f"Simulators on {base}: /qovery /nova/identity/v3 /nova/v2.1 /okeanos /feldera")
    print(f"Control API: {base}/_sim/state, /_sim/seed, /_sim/reset, /_sim/clock, /_sim/faults")
    config = uvicorn.Config(build_app(hub), host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:
        raise CliError(f"cannot listen on {args.host}:{args.port} (port in use?)") from None
    if not server.started:
        raise CliError(f"cannot listen on {args.host}:{args.port} (port in use?)")
    return EXIT_OK


# -- list, status -----------------------------------------------------------------------


def _selected(runtime: Runtime, selector: str | None) -> list[Resource]:
    resources = runtime.config.all_resources()
    if not selector:
        return resources
    if selector.startswith("tag:"):
        key, sep, value = selector[4:].partition("=")
        if not sep or not key:
            raise CliError("a tag filter looks like tag:key=value", EXIT_USAGE)
        return [r for r in resources if r.tags.get(key) == value]
    if selector not in runtime.providers:
        known = ", ".join(sorted(runtime.providers))
        raise CliError(f"no provider named {selector!r} (known: {known})", EXIT_USAGE)
    return [r for r in resources if r.provider == selector]


async def _list(runtime: Runtime, args: argparse.Namespace) -> int:
    resources = _selected(runtime, args.selector)
    statuses = await reads.statuses(runtime.providers, resources)
    rows = []
    for r in resources:
        s = statuses.get(r.name)
        rows.append(
            [
                r.name,
                r.provider,
                s.state if s else "unknown (no answer)",
                s.phase.value if s else "-",
            ]
        )
    print(_table(rows, ["RESOURCE", "PROVIDER", "STATE", "PHASE"]))
    return EXIT_OK


async def _status(runtime: Runtime, args: argparse.Namespace) -> int:
    resource = runtime.config.resource(args.resource)
    status, lock = await runtime.provider_for(resource).status_and_lock(resource)
    if isinstance(status, BaseException):
        raise status
    bot_lock = None
    if store_exists(runtime.settings.stopbot_db):
        with _existing_store(runtime.settings) as store:
            bot_lock = store.get_lock(resource.name)
    if args.json:
        out: dict[str, Any] = {
            "resource": resource.name,
            "provider": resource.provider,
            "id": resource.id,
            "state": status.state,
            "phase": status.phase.value,
            "terminal": status.terminal,
        }
        if status.message:
            out["message"] = status.message
        if isinstance(lock, BaseException):
            # Unknown is not none: no provider_lock at all, and the command fails.
            out["provider_lock_error"] = str(lock)
        else:
            out["provider_lock"] = (
                {
                    "owner": lock.owner,
                    "reason": lock.reason,
                    "expires_at": lock.expires_at.isoformat() if lock.expires_at else "never",
                }
                if lock is not None
                else None
            )
        out["stopbot_lock"] = (
            {
                "owner": bot_lock.owner,
                "reason": bot_lock.reason,
                "expires_at": bot_lock.expires_at.isoformat(),
            }
            if bot_lock is not None
            else None
        )
        print(json.dumps(out, indent=2))
    else:
        names = await _names(runtime.config, runtime.settings, [bot_lock.owner] if bot_lock else [])
        print(f"resource:       {resource.name} ({resource.provider}, id {resource.id})")
        print(f"status:         {_status_words(status, None)}")
        lock_error = str(lock) if isinstance(lock, BaseException) else None
        plock = None if isinstance(lock, BaseException) else lock
        print("\n".join(line[2:] for line in _lock_lines(plock, lock_error, bot_lock, names)))
    return EXIT_FAILED if isinstance(lock, BaseException) else EXIT_OK


async def _names(config: StopbotConfig | None, settings: Settings, ids: Iterable[str]) -> Names:
    """How this command names the people ``ids`` (see bot/cli_names.py)."""
    return await Names.look_up(ids, config, settings)


def _status_words(status: ResourceStatus | None, error: str | None) -> str:
    if status is None:
        return f"unknown: {error}" if error else "unknown"
    words = f"{status.state} ({status.phase.value})"
    return f"{words}: {status.message}" if status.message else words


def _lock_lines(
    plock: ProviderLock | None, lock_error: str | None, block: BotLock | None, names: Names
) -> list[str]:
    """The provider's lock and Stopbot's, as the preview and `status` show them."""
    if lock_error is not None:
        lines = [f"  provider lock:  unknown: {lock_error}"]
    elif plock is not None:
        why = f": {plock.reason}" if plock.reason else ""
        lines = [
            f"  provider lock:  {plock.owner or 'someone'}{why} (expires {_utc(plock.expires_at)})"
        ]
    else:
        lines = ["  provider lock:  none"]
    if block is not None:
        why = f": {block.reason}" if block.reason else ""
        lines.append(
            f"  Stopbot lock:   {names(block.owner)}{why} (expires {_utc(block.expires_at)})"
        )
    else:
        lines.append("  Stopbot lock:   none")
    return lines


# -- locks --------------------------------------------------------------------------------


async def _locks(runtime: Runtime, args: argparse.Namespace) -> int:
    """Each lock in force; a provider that could not be read (or did not answer within
    reads.READ_TIMEOUT) has its resources listed as unknown, and the command fails."""
    settings = runtime.settings
    bot_locks = []
    location = settings.store_location(runtime.config.database_url)
    if store_exists(location):
        with _existing_store(settings, location) as store:
            bot_locks = store.active_locks()
    in_force = await LocksInForce.read(bot_locks, runtime.providers, runtime.config.all_resources())
    names = await _names(runtime.config, settings, [lock.owner for lock in in_force.bot_locks])
    rows = [
        [lock.resource, "stopbot", names(lock.owner), lock.reason or "", _utc(lock.expires_at)]
        for lock in in_force.bot_locks
    ]
    for reading in in_force.readings:
        resource, lock = reading.resource, reading.lock
        if reading.lock_error is not None:
            rows.append([resource.name, resource.provider, "unknown", "could not be read", "-"])
        elif lock is not None:
            expires = _utc(lock.expires_at) + (" (lapsed)" if lock.is_expired() else "")
            rows.append(
                [resource.name, resource.provider, lock.owner or "?", lock.reason or "", expires]
            )
    if rows:
        print(_table(rows, ["RESOURCE", "LOCK", "OWNER", "REASON", "EXPIRES"]))
    else:
        print("No locks in force.")
    unread = in_force.unread()
    for provider, resources, error in unread:
        print(
            f"stopbot: could not read the {provider} locks of {', '.join(resources)}: {error}",
            file=sys.stderr,
        )
    return EXIT_FAILED if unread else EXIT_OK


# -- savings ------------------------------------------------------------------------------

SAVINGS_FIELDS = ("kind", "name", "provider", "hours", "currency", "low", "high", "rate_source")


def _money(money: Money) -> str:
    if not money:
        return "-"
    return ", ".join(
        f"{lo:,.2f} {c}" if round(lo, 2) == round(hi, 2) else f"{lo:,.2f}-{hi:,.2f} {c}"
        for c, (lo, hi) in sorted(money.items())
    )


def _rate_words(rate: Rate | None) -> str:
    if rate is None:
        return "no rate: hours only"
    figure = f"{rate.low:.2f}" if not rate.is_range else f"{rate.low:.2f}-{rate.high:.2f}"
    return f"{figure} {rate.currency}/h ({rate.source})"


async def _savings(runtime: Runtime, args: argparse.Namespace) -> int:
    """Hours stopped and estimated savings since ``--since`` (7d, 30d, month, a date)."""
    now = utcnow()
    try:
        selection = Selection.parse(runtime.config, args.selection)
        if args.since is None or args.since == "month" or args.since.endswith(("d", "h")):
            since, _ = parse_period(args.since, now)
        else:
            since = parse_since(args.since, now)
    except SavingsError as exc:
        raise CliError(f"{exc.text}", EXIT_USAGE) from None
    with _existing_store(runtime.settings) as store:
        savings = Savings(runtime.config, store, runtime.providers, clock=utcnow)
        report = await savings.report(since, selection=selection)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return EXIT_OK
    groups = [
        ("resource", report.resources),
        ("schedule", report.schedules),
        ("person", report.people),
        ("total", [report.total]),
    ]
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(SAVINGS_FIELDS)
        for kind, found in groups:
            for line in found:
                source = line.rate.source if line.rate else ""
                base = [kind, line.name, line.provider or "", f"{line.hours:.4f}"]
                if not line.money:
                    writer.writerow([*base, "", "", "", source])
                for currency, (lo, hi) in sorted(line.money.items()):
                    writer.writerow([*base, currency, f"{lo:.2f}", f"{hi:.2f}", source])
        return EXIT_OK
    print(
        f"Savings of {report.selection} from {_utc(report.since)} to {_utc(report.until)} "
        "(estimates: hours stopped times each resource's rate while running)"
    )
    if not report.resources:
        print("Nothing was stopped by Stopbot in that period.")
        return EXIT_OK
    rows = [
        [
            line.name + (" (stopped now)" if line.stopped_now else ""),
            line.provider or "",
            f"{line.hours:,.1f}",
            _money(line.money),
            _rate_words(line.rate),
        ]
        for line in report.resources
    ]
    print(_table(rows, ["RESOURCE", "PROVIDER", "HOURS STOPPED", "ESTIMATED SAVINGS", "RATE"]))
    names = await _names(runtime.config, runtime.settings, [p.name for p in report.people])
    for title, found, name_of in (
        ("SCHEDULE", report.schedules, str),
        ("PERSON", report.people, names),
    ):
        if found:
            print()
            rows = [[name_of(x.name), f"{x.hours:,.1f}", _money(x.money)] for x in found]
            print(_table(rows, [title, "HOURS STOPPED", "ESTIMATED SAVINGS"]))
    print()
    print(f"Total: {report.total.hours:,.1f} hours stopped, {_money(report.total.money)} estimated")
    if report.unrated:
        print(f"No rate (hours only): {', '.join(report.unrated)}")
    return EXIT_OK


def _with_runtime(
    name: str, *, with_store: bool = False
) -> Callable[[argparse.Namespace, Settings], int]:
    async def run(args: argparse.Namespace, settings: Settings) -> int:
        runtime = Runtime.open(settings, with_store=with_store)
        try:
            _load_discovered(runtime)
            handler = {
                "list": _list,
                "status": _status,
                "locks": _locks,
                "savings": _savings,
                "preview": _in_use_preview,
            }[name]
            return await handler(runtime, args)
        finally:
            await runtime.aclose()

    def command(args: argparse.Namespace, settings: Settings) -> int:
        return asyncio.run(run(args, settings))

    return command


async def _in_use_preview(runtime: Runtime, args: argparse.Namespace) -> int:
    """``schedules --preview NAME``: what the schedule's next run would do with each
    resource, from statuses and locks read now (stop it, find it stopped already, skip it
    for a lock, or not know), and which of those it would stop are in use now (their
    warning would ask about them); nothing is recorded."""
    engine = Stopbot(runtime.config, runtime.store, runtime.providers, clock=runtime.clock).engine
    configured = {s.name: s for s in runtime.config.schedules}
    schedule = engine.schedules().get(args.preview) or configured.get(args.preview)
    if schedule is None:
        known = ", ".join(sorted({*engine.schedules(), *configured})) or "none"
        raise CliError(f"no schedule named {args.preview!r} (known: {known})", EXIT_USAGE)
    plan = await engine.in_use.preview(schedule)
    names = await _names(runtime.config, runtime.settings, people_in(i.detail for i in plan))
    default = "kept" if schedule.in_use == "keep" else "stopped anyway"
    print(
        f"{schedule.name}: next run {_utc(engine.upcoming(schedule))} "
        "(statuses and locks as read now)"
    )
    rows = [[item.resource, item.provider, _next_run_words(item, names)] for item in plan]
    print(_table(rows, ["RESOURCE", "PROVIDER", "NEXT RUN"]))
    asked = sum(1 for i in plan if i.stop and i.in_use is not None)
    if asked:
        print(
            f"{_plural(asked, 'resource')} in use: the warning asks about "
            f"{'it' if asked == 1 else 'them'}; unanswered by the run, "
            f"{'it is' if asked == 1 else 'they are'} {default} (in_use: {schedule.in_use})."
        )
    else:
        print("Nothing in use: the run stops what it selects without asking.")
    return EXIT_OK


def _next_run_words(item: PlanItem, names: Names) -> str:
    """What the next run would do with one resource, as ``schedules --preview`` says it."""
    detail = names.words(item.detail) if item.detail else ""
    if item.stop and item.in_use is not None:
        return f"would ask: in use, {names.words(item.in_use)}"
    if item.stop:
        return "would stop"
    if item.outcome == Outcome.ALREADY:
        return f"already stopped ({detail})" if detail else "already stopped"
    if item.outcome == Outcome.LOCKED and detail:
        return f"skipped: {detail}"  # the lock rule's "locked by …" / "locked in …"
    if item.outcome == Outcome.UNKNOWN and detail:
        return detail  # "status unknown: …", as the read failed
    return f"{item.outcome}: {detail}" if detail else str(item.outcome)


def _load_discovered(runtime: Runtime) -> None:
    """Lay the bot's latest discovery snapshot over the configured resources, for a read
    command that opens no store of its own (none yet: only the configured ones)."""
    location = runtime.settings.store_location(runtime.config.database_url)
    discovered = any(p.discover_filter() is not None for p in runtime.config.providers)
    if not discovered or not store_exists(location):
        return
    with _existing_store(runtime.settings, location) as store:
        Discovery(runtime.config, store, runtime.providers).load()


def refreshed_lines(results: Sequence[Refreshed]) -> list[str]:
    """What ``stopbot refresh`` prints: one line per discovered account."""
    if not results:
        return [
            "no provider is discovered: give a provider 'discover: true' (or a 'discover:' "
            "filter) in stopbot.yaml"
        ]
    lines = []
    for r in results:
        if r.found is None:
            lines.append(f"{r.provider}: could not be listed ({r.error}); its last list is kept")
            continue
        line = f"{r.provider}: {_plural(r.found, 'resource')}"
        if r.added:
            line += f"; new: {', '.join(r.added)}"
        if r.gone:
            line += f"; gone at the provider (left lists and schedules): {', '.join(r.gone)}"
        lines.append(line)
    return lines


def cmd_refresh(args: argparse.Namespace, settings: Settings) -> int:
    """List the discovered providers now and keep what they hold for the bot."""

    async def run() -> int:
        runtime = Runtime.open(settings)
        try:
            _configure_logging(_log_level(args, "warning"), settings, runtime.config)
            discovery = Discovery(
                runtime.config, runtime.store, runtime.providers, clock=runtime.clock
            )
            results = await discovery.refresh()
        finally:
            await runtime.aclose()
        for line in refreshed_lines(results):
            print(line)
        return EXIT_FAILED if any(r.found is None for r in results) else EXIT_OK

    return asyncio.run(run())


# -- history, schedules -----------------------------------------------------------------


@contextmanager
def _existing_store(settings: Settings, location: str | None = None) -> Iterator[Store]:
    """The bot's database (at ``location``, else where the settings and the configuration
    say), which a read command must not create by accident."""
    if location is None:
        location = settings.store_location(configured_database_url(settings.config_path()))
    if not store_exists(location):
        hint = (
            "Set STOPBOT_DB to the bot's database file."
            if location == settings.stopbot_db
            else "Check STOPBOT_DATABASE_URL (or database_url in the configuration)."
        )
        raise CliError(
            f"no database at {shown_location(location)}: nothing has been recorded there. " + hint,
            EXIT_USAGE,
        )
    store = open_store(location)
    try:
        yield store
    finally:
        store.close()


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """``2026-11-01``, ``2026-11-01T08:00`` (UTC unless an offset is given) or ``24h`` ago."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        pass
    else:
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    try:
        return now - parse_duration(text)
    except ValueError:
        raise CliError(
            f"--since takes a date (2026-11-01), a date and time (2026-11-01T08:00, UTC) or a "
            f"duration back from now (24h, 7d); got {text!r}",
            EXIT_USAGE,
        ) from None


def _detail_text(entry: AuditEntry, names: Names) -> str:
    """An entry's detail in words, people named (entries from older versions may hold
    ``<@U…>``: read as bare ids)."""
    detail = entry.detail
    if detail.get("detail"):
        return names.in_words(str(Text.legacy(str(detail["detail"]))))
    return " ".join(
        f"{k}={names.in_words(str(Text.legacy(str(v))))}"
        for k, v in sorted(detail.items())
        if v not in (None, False, "")
    )


def _config_if_any(settings: Settings) -> StopbotConfig | None:
    """The configuration, for what a command only reads from it (people's names); None
    when there is no file (the built-in simulators name nobody)."""
    path = settings.config_path()
    if settings.stopbot_config is None and not path.exists():
        return None
    return load_config(path)


HISTORY_FIELDS = ("id", "at", "actor", "action", "resource", "operation_id", "detail")


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    since = parse_since(args.since, utcnow()) if args.since else None
    with _existing_store(settings) as store:
        entries = store.audit_log(resource=args.resource, since=since, limit=args.limit)
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(HISTORY_FIELDS)
        for e in entries:
            writer.writerow(
                [
                    e.id,
                    e.at.astimezone(dt.UTC).isoformat(),
                    e.actor,
                    e.action,
                    e.resource or "",
                    e.operation_id or "",
                    json.dumps(e.detail, sort_keys=True),
                ]
            )
    elif not entries:
        print("No audit entries" + (" match." if args.since or args.resource else " yet."))
    else:
        names = asyncio.run(_names(_config_if_any(settings), settings, {e.actor for e in entries}))
        rows = [
            [
                _utc(e.at),
                names(e.actor),
                e.action,
                e.resource or "-",
                (e.operation_id or "-")[:8],
                _detail_text(e, names),
            ]
            for e in entries
        ]
        print(_table(rows, ["AT", "ACTOR", "ACTION", "RESOURCE", "OPERATION", "DETAIL"]))
    return EXIT_OK


def cmd_schedules(args: argparse.Namespace, settings: Settings) -> int:
    if args.preview is not None:
        return _with_runtime("preview", with_store=True)(args, settings)
    with _existing_store(settings) as store:
        schedules = store.schedules()
    if args.json:
        print(json.dumps(schedules, indent=2, sort_keys=True))
    elif not schedules:
        print("No schedules.")
    else:
        rows = [[name, json.dumps(d, sort_keys=True)] for name, d in schedules.items()]
        print(_table(rows, ["NAME", "DEFINITION"]))
    return EXIT_OK


# -- stop ---------------------------------------------------------------------------------


class TerminalProgress:
    """Shows a stop on the terminal: one line per change of state, with the time elapsed."""

    shows_timeline = False

    def __init__(
        self,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        names: Names | None = None,
    ) -> None:
        self.out = out or sys.stdout
        self.clock = clock
        self.names = names or Names()
        self.started = clock()
        self._last: tuple[OpState, str | None] | None = None

    async def progress(
        self, op: Operation, timeline: list[Transition], status: ResourceStatus | None
    ) -> None:
        key = (op.state, op.provider_state)
        if key == self._last:
            return
        self._last = key
        elapsed = format_duration(dt.timedelta(seconds=self.clock() - self.started))
        print(f"[{elapsed:>7}] {self.line(op, status)}", file=self.out, flush=True)

    def line(self, op: Operation, status: ResourceStatus | None) -> str:
        if op.state.final:
            word = FINAL_WORDS[op.state]
            return (
                f"{op.resource}: {word}: {self.names.words(op.detail)}"
                if op.detail
                else f"{op.resource}: {word}"
            )
        if op.provider_state:
            state = op.provider_state
        elif op.state == OpState.ACCEPTED:
            state = f"accepted by {op.provider}"  # the bot's step, said as such
        else:
            state = op.state.value.replace("_", " ")
        phase = f" ({status.phase.value})" if status is not None else ""
        return f"{op.resource}: {state}{phase}"


def _preview_lines(preview: Preview, names: Names) -> list[str]:
    op, resource = preview.operation, preview.resource
    lines = [
        f"  resource:       {resource.name} ({resource.provider}, id {resource.id})",
        f"  status:         {_status_words(preview.status, preview.status_error)}",
        *_lock_lines(preview.provider_lock, preview.lock_error, preview.bot_lock, names),
    ]
    if op.reason:
        lines.append(f"  reason:         {op.reason}")
    if op.force:
        lines.append("  mode:           forced")
    lines += [f"  note:           {names.words(note)}" for note in preview.notes]
    return lines


async def _read_answer(prompt: str) -> str:
    """A line typed on the terminal, read without blocking the event loop, so Ctrl-C
    interrupts the question at once. An empty string at end of input."""
    print(prompt, end="", flush=True)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return sys.stdin.readline()


def _login() -> str:
    """Who runs the command, for the audit log: the account of the process's real user id,
    not $USER or $LOGNAME, which anyone sets to anything (getpass reads those first)."""
    try:
        import pwd
    except ImportError:  # pragma: no cover - Windows
        return getpass.getuser()
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no account (some containers)
        return f"uid-{os.getuid()}"


def _lease(words: list[str]) -> tuple[dt.timedelta | None, list[str]]:
    """``for <duration>`` at the start of a wake's words: its lease, and the reason's words."""
    if len(words) >= 2 and words[0].lower() == "for":
        try:
            return parse_duration(words[1]), words[2:]
        except ValueError as exc:
            raise CliError(
                f"{exc}. Usage: stopbot wake <resource> [for <duration>] [reason…]", EXIT_USAGE
            ) from None
    return None, words


async def confirm_or_cancel(
    args: argparse.Namespace,
    name: str,
    question: str,
    cancel: Callable[[], object],
    *,
    approval: str | None,
    slack: str,
) -> None:
    """Return once the stop (or wake) of ``name`` is confirmed: by --yes or a y typed at
    ``question``. Otherwise ``cancel`` it and raise: when ``approval`` says who needs
    approval (approvers are asked in Slack, by the bot: a terminal cannot reach them; the
    user is sent there with ``/stop [wake] <slack>``), with no terminal to ask on, on
    Ctrl-C or end of input, or on no."""
    waking = args.command == "wake"
    done = "woken" if waking else "stopped"
    if approval is not None:
        cancel()
        raise CliError(
            f"{approval}, and approvers are asked in Slack: request it there with "
            f"`/stop {'wake ' if waking else ''}{slack}`."
        )
    if args.yes:
        return
    if not sys.stdin.isatty():
        cancel()
        raise CliError(
            f"not {'waking' if waking else 'stopping'} {name}: there is no terminal to "
            "confirm on. Add --yes to confirm from a script.",
            EXIT_USAGE,
        )
    try:
        answer = await _read_answer(f"{question} [y/N] ")
    except asyncio.CancelledError:
        cancel()
        print()
        raise CliError(f"interrupted: {name} was not {done}.", EXIT_INTERRUPTED) from None
    if answer.strip().lower() not in {"y", "yes"}:
        cancel()
        raise CliError(f"{name} was not {done} (not confirmed).")


async def _stop(runtime: Runtime, args: argparse.Namespace) -> int:
    if args.env:
        from bot.cli_environments import stop_environment

        return await stop_environment(runtime, args)
    service = Stopbot(runtime.config, runtime.store, runtime.providers, clock=runtime.clock).service
    actor = Actor(id=f"cli:{_login()}")
    waking = args.command == "wake"
    lease, reason_words = _lease(args.reason) if waking else (None, args.reason)
    reason = " ".join(reason_words) if reason_words else None
    preview = await service.prepare(
        args.resource,
        actor,
        source="cli",
        reason=reason,
        force=getattr(args, "force", False),
        override_lock=args.override_lock,
        action=Action.START if waking else Action.STOP,
        lease=lease,
    )
    op = preview.operation
    name = op.resource
    verb, done = ("Wake", "woken") if waking else ("Stop", "stopped")
    shown = [preview.bot_lock.owner] if preview.bot_lock else []
    names = await _names(
        runtime.config, runtime.settings, [*shown, *people_in([op.detail, *preview.notes])]
    )
    if op.state in (OpState.STOPPED_ALREADY, OpState.RUNNING_ALREADY):
        print(TerminalProgress(names=names).line(op, preview.status))
        return EXIT_OK
    if op.state != OpState.AWAITING_CONFIRMATION:
        detail = f": {names.words(op.detail)}" if op.detail else ""
        word = FINAL_WORDS.get(op.state, op.state.value.replace("_", " "))
        raise CliError(f"{name}: {word}{detail}")

    print(f"{verb} {name}?")
    print("\n".join(_preview_lines(preview, names)))
    if lease is not None:
        print(f"  lease:          {format_duration(lease)} from when it runs, then stopped again")
    needed = preview.approval.min_approvals if preview.approval is not None else 0
    asking = f"{name} needs {needed} approval{'s' if needed > 1 else ''} before it is {done}"
    cancel = functools.partial(service.cancel, op.id, actor)
    await confirm_or_cancel(
        args, name, f"{verb} {name}?", cancel, approval=asking if needed else None, slack=name
    )
    result = service.confirm(op.id, actor)
    if not result.ok or not result.run:
        raise CliError(names.words(result.message))
    try:
        final = await service.run(op.id, TerminalProgress(names=names), actor)
    except asyncio.CancelledError:
        raise CliError(
            f"interrupted: this terminal no longer follows the {verb.lower()} of {name}; if it was "
            f"sent, it goes on at {op.provider}. Check with `stopbot status {name}`; a running "
            "`stopbot serve` resumes following it.",
            EXIT_INTERRUPTED,
        ) from None
    return EXIT_OK if final.state in DONE_STATES else EXIT_FAILED


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    _configure_logging(_log_level(args, "warning"), settings)

    async def run() -> int:
        runtime = Runtime.open(settings)
        try:
            _configure_logging(_log_level(args, "warning"), settings, runtime.config)
            return await _stop(runtime, args)
        finally:
            await runtime.aclose()

    return asyncio.run(run())


# -- serve, dev ---------------------------------------------------------------------------


def _check_port(host: str, port: int) -> None:
    """Fail early, in words, when the port is taken (uvicorn would just exit). Bound as
    uvicorn binds (SO_REUSEADDR): the connections of a process just killed, waiting in
    TIME_WAIT, do not keep its restart from listening."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror}. "
                "Is another stopbot running? Pick another port with --port.",
            ) from None


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


@contextmanager
def _sigterm_ends_gracefully() -> Iterator[None]:
    """While uvicorn serves, it takes SIGTERM itself (stops accepting, finishes requests,
    runs the app's shutdown) and raises it again once done: this handler then ends the
    process normally, after the store is closed, instead of dying mid-cleanup."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from bot.playground.dev import run_dev  # a web UI: imported only when used

    _configure_logging(_log_level(args, "info"), settings)
    with _sigterm_ends_gracefully():
        try:
            return run_dev(settings, host=args.host, port=args.port)
        except _Terminated:
            return EXIT_OK


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SLACK_CREDENTIALS_HELP = (
    "Socket Mode needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN; HTTP mode (--http) needs "
    "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET (create the app from app-manifest.yml, see the "
    "README)."
)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    token = settings.slack_bot_token
    secret = settings.slack_signing_secret
    app_token = settings.slack_app_token
    if token is None and secret is None and app_token is None:
        if not _is_loopback(args.host):
            raise CliError(
                f"no Slack credentials are set. {SLACK_CREDENTIALS_HELP} Without them, "
                "`stopbot serve` opens the local playground, which listens on loopback only "
                "(--host 127.0.0.1).",
                EXIT_USAGE,
            )
        return cmd_dev(args, settings)
    http_mode = args.http or app_token is None
    needed = ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET" if http_mode else "SLACK_APP_TOKEN"]
    values = {
        "SLACK_BOT_TOKEN": token,
        "SLACK_SIGNING_SECRET": secret,
        "SLACK_APP_TOKEN": app_token,
    }
    missing = [name for name in needed if values[name] is None]
    if missing:
        raise CliError(
            f"set {' and '.join(missing)} to connect to Slack. {SLACK_CREDENTIALS_HELP}",
            EXIT_USAGE,
        )
    _configure_logging(_log_level(args, "info"), settings)
    _check_port(args.host, args.port)
    with _sigterm_ends_gracefully(), suppress(_Terminated):
        _run_serving(_serve(args, settings, http_mode=http_mode))
    return EXIT_OK


def _run_serving(main: Coroutine[Any, Any, None]) -> None:
    """Run the server's loop: uvloop where it is installed (Linux and macOS), asyncio's
    own elsewhere. uvloop halves the event loop's share of each request in a burst."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        asyncio.run(main)
    else:
        uvloop.run(main)


def _keep_alive(value: str) -> int:
    """``--keep-alive``: whole seconds, at least one."""
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of seconds") from None
    if seconds < 1:
        raise argparse.ArgumentTypeError("at least 1 second")
    return seconds


async def _serve(args: argparse.Namespace, settings: Settings, *, http_mode: bool) -> None:
    from bot.slack.app import SlackBot
    from bot.slack.server import KEEP_ALIVE, run_http, run_socket_mode

    runtime = Runtime.open(settings)
    try:
        _configure_logging(_log_level(args, "info"), settings, runtime.config)
        for line in runtime.config.deprecations():
            log.warning(line, extra={"config": runtime.config_source})
        token, secret = settings.slack_bot_token, settings.slack_signing_secret
        bot = SlackBot(
            Stopbot(runtime.config, runtime.store, runtime.providers),
            token=token.get_secret_value() if token else "",
            signing_secret=secret.get_secret_value() if secret and http_mode else None,
            api_url=settings.slack_api_url,
        )
        print(f"stopbot: configuration: {runtime.config_source}", flush=True)
        # The store's own location: one with a secret in it is printed without it.
        print(f"stopbot: database: {runtime.store.location}", flush=True)
        app_token = settings.slack_app_token
        if http_mode or app_token is None:
            print(
                f"stopbot: Slack endpoint http://{args.host}:{args.port}/slack/events", flush=True
            )
            await run_http(bot, args.host, args.port, keep_alive=args.keep_alive or KEEP_ALIVE)
        else:
            print(
                f"stopbot: Socket Mode; health at http://{args.host}:{args.port}/healthz",
                flush=True,
            )
            await run_socket_mode(bot, app_token.get_secret_value(), args.host, args.port)
    finally:
        in_flight = _in_flight(runtime.store)
        await runtime.aclose()
        log.info(
            "stopped: the database is closed; stops in flight are resumed at the next start",
            extra={"in_flight": in_flight},
        )


def _in_flight(store: Store) -> int | None:
    """The stops in flight in the store, for the last log line: counted in one statement
    (each read whole was a round trip apiece, 127 ms for 10,000 on PostgreSQL); None when
    the database does not answer, which must not keep the rest of the shutdown from
    running."""
    try:
        return store.counts().in_flight()
    except StoreError as exc:
        log.warning("could not count the stops in flight: %s", exc)
        return None


# -- the parser -----------------------------------------------------------------------------


def _add_log_level(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help=f"log detail on stderr (default {default}); JSON lines when not a terminal",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stopbot",
        description="Stop cloud resources safely, from Slack or a terminal.",
        epilog="Exit codes: 0 success, 1 the operation failed, 2 bad usage or configuration, "
        "130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"stopbot {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "serve",
        help="run the Slack bot (Socket Mode, or --http); with no Slack credentials, the "
        "local playground",
    )
    p.add_argument("--http", action="store_true", help="serve Slack's HTTP endpoint instead")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)"
    )
    p.add_argument("--port", type=int, default=3000)
    p.add_argument(
        "--keep-alive",
        type=_keep_alive,
        metavar="SECONDS",
        help="how long an idle HTTP connection is kept open (default 75): longer than the "
        "idle timeout of the load balancer in front",
    )
    _add_log_level(p, "info")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("dev", help="the local playground: a stand-in Slack and the simulators")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    _add_log_level(p, "info")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("check-config", help="validate stopbot.yaml and print a summary")
    p.add_argument("path", nargs="?", help="the file (default: $STOPBOT_CONFIG or ./stopbot.yaml)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("simulate", help="serve the four provider API simulators")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--seed", help="a YAML/JSON file of simulator sections (default: samples)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("stop", help="stop a resource, after a preview and your confirmation")
    p.add_argument("resource", nargs="?", help="a resource name, or provider:id")
    p.add_argument(
        "--env",
        metavar="ENVIRONMENT",
        help="an environment of stopbot.yaml instead of a resource: tier after tier",
    )
    p.add_argument(
        "--skip-locked",
        action="store_true",
        help="with --env: leave the members someone else holds alone, and go on with the rest",
    )
    # A reason is taken wherever its words stand, before or after the options (main()).
    p.add_argument("reason", nargs="*", default=[], help="why (recorded in the audit log)")
    p.add_argument("--force", action="store_true", help="Feldera's forced stop (no checkpoint)")
    p.add_argument(
        "--override-lock",
        action="store_true",
        help="as an admin, stop despite someone else's lock (give a reason)",
    )
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _add_log_level(p, "warning")
    p.set_defaults(func=cmd_stop, usage=p)

    p = sub.add_parser(
        "wake", help="start a stopped resource again, after a preview and your confirmation"
    )
    p.add_argument("resource", nargs="?", help="a resource name, or provider:id")
    p.add_argument(
        "--env",
        metavar="ENVIRONMENT",
        help="an environment of stopbot.yaml instead of a resource: tier after tier",
    )
    p.add_argument(
        "--skip-locked",
        action="store_true",
        help="with --env: leave the members someone else holds alone, and go on with the rest",
    )
    p.add_argument(
        "reason",
        nargs="*",
        default=[],
        help="[for <duration>] [why…]: with a duration, a lease (stopped again at its end)",
    )
    p.add_argument(
        "--override-lock",
        action="store_true",
        help="as an admin, wake despite someone else's lock (give a reason)",
    )
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _add_log_level(p, "warning")
    p.set_defaults(func=cmd_stop, usage=p)

    p = sub.add_parser("list", help="configured resources with their live status")
    p.add_argument("selector", nargs="?", help="a provider name, or tag:key=value")
    p.set_defaults(func=_with_runtime("list"))

    p = sub.add_parser("refresh", help="list the discovered providers now (new and gone resources)")
    p.set_defaults(func=cmd_refresh)

    p = sub.add_parser("status", help="one resource's live status and provider lock")
    p.add_argument("resource", help="a resource name, or provider:id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_with_runtime("status"))

    p = sub.add_parser("history", help="the audit log, oldest first")
    p.add_argument("--since", help="a date (2026-11-01), date and time, or duration (24h, 7d)")
    p.add_argument("--resource", help="only this resource's entries")
    p.add_argument("--limit", type=int, help="only the latest N entries")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON array")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("savings", help="hours stopped and estimated savings")
    p.add_argument("selection", nargs="?", help="a resource, an env (dev) or a tag (tag:team=data)")
    p.add_argument("--since", help="7d, 30d (the default), month, or a date (2026-11-01)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="every figure, as JSON")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.set_defaults(func=_with_runtime("savings"))

    p = sub.add_parser("locks", help="Stopbot locks and provider locks in force")
    p.set_defaults(func=_with_runtime("locks"))

    p = sub.add_parser("schedules", help="the schedules in the store")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--preview",
        metavar="NAME",
        help="what NAME's next run would stop, and which resources in use it would ask about",
    )
    p.set_defaults(func=cmd_schedules)
    return parser


def _one_line(lines: Iterable[str]) -> str:
    return " ".join(line.strip() for line in lines if line.strip())


def _version() -> str:
    try:
        return importlib.metadata.version("stopbot")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout never installed
        return "(not installed)"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, read as argparse does, except that the words of a stop's reason
    may follow options (`stopbot stop web-1 --yes end of day`), as in Slack: argparse takes
    positional words only before the first option."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if (
        extra
        and args.command in {"stop", "wake"}
        and not any(word.startswith("-") for word in extra)
    ):
        args.reason = [*args.reason, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in {"stop", "wake"} and not args.resource and not args.env:
        args.usage.error("the following arguments are required: resource (or --env ENVIRONMENT)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = Settings()
        code: int = args.func(args, settings)
        return code
    except ConfigError as exc:
        print(f"stopbot: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except (UnknownResourceError, UnknownEnvironmentError) as exc:
        print(f"stopbot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TextError as exc:  # what someone typed cannot be taken (a reason too long)
        print(f"stopbot: {words(exc.text)}", file=sys.stderr)
        return EXIT_USAGE
    except (ProviderError, StoreError) as exc:
        print(f"stopbot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except CliError as exc:
        print(f"stopbot: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("stopbot: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`stopbot history | head`): not an error worth a word.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:
        # A bug: say so in one line (the log, when configured, has the traceback).
        log.debug("unexpected error", exc_info=True)
        detail = Redactor()(_one_line(str(exc).splitlines())) or type(exc).__name__
        print(f"stopbot: unexpected error ({type(exc).__name__}): {detail}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
