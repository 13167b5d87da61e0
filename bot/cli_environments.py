"""``stopbot stop --env <name>`` and ``stopbot wake --env <name>``: an environment's plan
shown on the terminal, confirmed, then run tier after tier (bot/environments.py), each
member's progress a line as for one resource."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CliError,
    TerminalProgress,
    _login,
    _names,
    _status_words,
    confirm_or_cancel,
)
from bot.cli_names import Names
from bot.environments import EnvironmentRefused, Member, Plan, Tier
from bot.models import Action, Actor, EnvironmentRun, EnvRunState
from bot.runtime import Runtime
from bot.stopbot import Stopbot

__all__ = ["plan_lines", "stop_environment"]


def _member_words(member: Member, names: Names) -> str:
    status = _status_words(member.status, member.status_error)
    verdict = member.verdict
    if verdict.blocked:
        return f"{member.name} ({status}; {names.words(verdict.reason)})"
    extra = [names.words(note) for note in verdict.notes]
    if member.lock_error:
        extra.append(f"provider lock unknown: {member.lock_error}")
    return f"{member.name} ({'; '.join([status, *extra])})"


def plan_lines(plan: Plan, names: Names, *, skip_locked: bool) -> list[str]:
    """The whole plan: each tier in run order, its members with status and locks."""
    lines = []
    for i, tier in enumerate(plan.tiers, start=1):
        members = ", ".join(
            f"{m.name} (skipped: {names.words(m.verdict.reason)})"
            if m.verdict.blocked and skip_locked
            else _member_words(m, names)
            for m in tier.members
        )
        lines.append(f"  {i}. {tier.label}: {members}")
    if plan.run.reason:
        lines.append(f"  reason: {plan.run.reason}")
    return lines


async def stop_environment(runtime: Runtime, args: argparse.Namespace) -> int:
    waking = args.command == "wake"
    action = Action.START if waking else Action.STOP
    verb, done = ("Wake", "woken") if waking else ("Stop", "stopped")
    bot = Stopbot(runtime.config, runtime.store, runtime.providers, clock=runtime.clock)
    environments = bot.environments
    actor = Actor(id=f"cli:{_login()}")
    words = [*([args.resource] if args.resource else []), *args.reason]
    plan = await environments.preview(
        args.env, actor, action=action, reason=" ".join(words) or None
    )
    run = plan.run
    owners = [m.verdict.owner for m in plan.blocked if m.verdict.bot_lock and m.verdict.owner]
    names = await _names(runtime.config, runtime.settings, owners)
    if plan.refusal is not None:
        raise CliError(f"{run.environment} was not {done}: {names.words(plan.refusal)}")
    order = "in order" if len(plan.tiers) > 1 else "one tier"
    print(f"{verb} environment {run.environment}? {len(plan.tiers)} tier(s), {order}:")
    print("\n".join(plan_lines(plan, names, skip_locked=args.skip_locked)))
    if plan.blocked and not args.skip_locked:
        environments.cancel(run.id, actor)
        held = "; ".join(names.words(m.verdict.reason).rstrip(".") for m in plan.blocked)
        raise CliError(
            f"{run.environment} was not {done}: {held}. Add --skip-locked to "
            f"{verb.lower()} the rest."
        )
    asking = [m.name for t in plan.tiers for m in t.members if runtime.config.approval_for(m.name)]
    one = len(asking) == 1
    approval = (
        f"{', '.join(asking)} need{'s' if one else ''} approval before "
        f"{'it is' if one else 'they are'} {done}"
    )
    await confirm_or_cancel(
        args,
        run.environment,
        f"{verb} environment {run.environment}?",
        lambda: environments.cancel(run.id, actor),
        approval=approval if asking else None,
        slack=f"env {run.environment}",
    )
    try:
        environments.confirm(run.id, actor, skip_locked=args.skip_locked)
    except EnvironmentRefused as exc:
        raise CliError(names.words(exc.text)) from None

    def tier_started(run: EnvironmentRun, tier: Tier) -> None:
        members = ", ".join(m.name + (" (skipped)" if m.skipped else "") for m in tier.members)
        print(f"tier {run.tier + 1}/{len(plan.tiers)} {tier.label}: {members}", flush=True)

    try:
        final = await environments.run(
            run.id, on_tier=tier_started, watch=TerminalProgress(names=names)
        )
    except asyncio.CancelledError:
        raise CliError(
            f"interrupted: this terminal no longer follows {run.environment}; stops sent go "
            "on at their providers, and a running `stopbot serve` takes the environment over.",
            EXIT_INTERRUPTED,
        ) from None
    if final.state is EnvRunState.DONE:
        skipped = f" ({', '.join(final.skipped)} left alone)" if final.skipped else ""
        print(f"{final.environment}: {done}, every tier{skipped}")
        return EXIT_OK
    print(f"{final.environment}: halted: {names.words(final.detail)}")
    return EXIT_FAILED
