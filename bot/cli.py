"""The terminal face of Stopbot: ``stopbot <command>``.

Exit codes: 0 success; 1 the operation failed (a provider error, a refused stop);
2 bad usage or a bad configuration. Errors are one clear line on stderr, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bot.config import ConfigError, Settings, UnknownResourceError, load_config
from bot.runtime import Runtime
from bot.store import StoreError
from providers.base import Resource, ResourceStatus
from providers.errors import ProviderError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines)


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.path) if args.path else settings.config_path()
    config = load_config(path)
    print(f"{path}: OK")
    print(f"  providers: {len(config.providers)}")
    for p in config.providers:
        count = sum(1 for r in config.resources if r.provider == p.name)
        print(f"    {p.name} ({p.type}): {count} resource(s)")
    print(f"  resources: {len(config.resources)}")
    return EXIT_OK


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


async def _statuses(runtime: Runtime, resources: list[Resource]) -> dict[str, ResourceStatus]:
    by_provider: dict[str, list[Resource]] = {}
    for r in resources:
        by_provider.setdefault(r.provider, []).append(r)
    results = await asyncio.gather(
        *(runtime.providers[name].statuses(rs) for name, rs in by_provider.items()),
        return_exceptions=True,
    )
    found: dict[str, ResourceStatus] = {}
    for (name, rs), result in zip(by_provider.items(), results, strict=True):
        if isinstance(result, BaseException):
            continue
        for r in rs:
            if r.id in result:
                found[f"{name}:{r.id}"] = result[r.id]
    return found


async def _list(runtime: Runtime, args: argparse.Namespace) -> int:
    resources = _selected(runtime, args.selector)
    statuses = await _statuses(runtime, resources)
    rows = []
    for r in resources:
        s = statuses.get(f"{r.provider}:{r.id}")
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
    provider = runtime.provider_for(resource)
    status = await provider.status(resource)
    lock = await provider.lock(resource)
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
    if lock is not None:
        out["provider_lock"] = {
            "owner": lock.owner,
            "reason": lock.reason,
            "expires_at": lock.expires_at.isoformat() if lock.expires_at else "never",
        }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            print(f"{key:>14}: {value}")
    return EXIT_OK


def _with_runtime(name: str) -> Any:
    async def run(args: argparse.Namespace, settings: Settings) -> int:
        runtime = Runtime.open(settings, with_store=False)
        try:
            handler = {"list": _list, "status": _status}[name]
            return await handler(runtime, args)
        finally:
            await runtime.aclose()

    def command(args: argparse.Namespace, settings: Settings) -> int:
        return asyncio.run(run(args, settings))

    return command


def _check_port(host: str, port: int) -> None:
    """Fail early, in words, when the port is taken (uvicorn would just exit)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror}. "
                "Is another stopbot running? Pick another port with --port.",
            ) from None


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.slack.app import SlackBot
    from bot.slack.server import run_http, run_socket_mode
    from bot.workflow import StopService

    token = settings.slack_bot_token
    secret = settings.slack_signing_secret
    app_token = settings.slack_app_token
    local = token is None and secret is None and app_token is None
    http_mode = local or args.http or app_token is None
    if not local:
        needed = ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET" if http_mode else "SLACK_APP_TOKEN"]
        values = {
            "SLACK_BOT_TOKEN": token,
            "SLACK_SIGNING_SECRET": secret,
            "SLACK_APP_TOKEN": app_token,
        }
        missing = [name for name in needed if values[name] is None]
        if missing:
            raise CliError(
                f"set {' and '.join(missing)} to connect to Slack (create the app from "
                "app-manifest.yml, see the README). Socket Mode needs SLACK_BOT_TOKEN and "
                "SLACK_APP_TOKEN; HTTP mode (--http) needs SLACK_BOT_TOKEN and "
                "SLACK_SIGNING_SECRET. With none of them set, stopbot runs in local mode.",
                EXIT_USAGE,
            )
    _check_port(args.host, args.port)

    async def run() -> None:
        runtime = Runtime.open(settings)
        fake = None
        try:
            service = StopService(runtime.config, runtime.store, runtime.providers)
            signing: str | None
            api_url: str | None
            if local:
                from bot.slack.local import LocalSlack

                fake = LocalSlack.start()
                bot_token, signing, api_url = fake.token, fake.signing_secret, fake.api_url
            else:
                bot_token = token.get_secret_value() if token else ""
                signing = secret.get_secret_value() if secret and http_mode else None
                api_url = settings.slack_api_url
            bot = SlackBot(
                runtime.config,
                runtime.store,
                runtime.providers,
                service,
                token=bot_token,
                signing_secret=signing,
                api_url=api_url,
            )
            print(f"stopbot: configuration: {runtime.config_source}")
            print(f"stopbot: database: {settings.stopbot_db}")
            if fake is not None:
                print(fake.banner(f"http://{args.host}:{args.port}"))
            if http_mode or app_token is None:
                print(f"stopbot: Slack endpoint http://{args.host}:{args.port}/slack/events")
                await run_http(bot, args.host, args.port)
            else:
                print(f"stopbot: Socket Mode; health at http://{args.host}:{args.port}/healthz")
                await run_socket_mode(bot, app_token.get_secret_value(), args.host, args.port)
        finally:
            if fake is not None:
                fake.stop()
            await runtime.aclose()

    asyncio.run(run())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stopbot", description="Stop cloud resources safely, from Slack or a terminal."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the Slack bot (Socket Mode, or --http)")
    p.add_argument("--http", action="store_true", help="serve Slack's HTTP endpoint instead")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)"
    )
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check-config", help="validate stopbot.yaml and print a summary")
    p.add_argument("path", nargs="?", help="the file (default: $STOPBOT_CONFIG or ./stopbot.yaml)")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("simulate", help="serve the four provider API simulators")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--seed", help="a YAML/JSON file of simulator sections (default: samples)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("list", help="configured resources with their live status")
    p.add_argument("selector", nargs="?", help="a provider name, or tag:key=value")
    p.set_defaults(func=_with_runtime("list"))

    p = sub.add_parser("status", help="one resource's live status and provider lock")
    p.add_argument("resource", help="a resource name, or provider:id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_with_runtime("status"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        code: int = args.func(args, settings)
        return code
    except ConfigError as exc:
        print(f"stopbot: configuration error:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnknownResourceError as exc:
        print(f"stopbot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ProviderError, StoreError) as exc:
        print(f"stopbot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except CliError as exc:
        print(f"stopbot: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
