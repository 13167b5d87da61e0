"""Block Kit for environments (bot/environments.py): the whole plan with its locks and
Confirm / Stop the rest / Cancel, and the one progress message, tier by tier."""

from __future__ import annotations

from bot.environments import Member, Plan
from bot.models import Action, EnvRunState, OpState
from bot.slack.views import FINAL_LINES, Blocks, View, _button, _context, _header, line_sections
from bot.slack.wording import Mrkdwn, code, md
from bot.text import Person

__all__ = ["ENV_CANCEL", "ENV_CONFIRM", "ENV_REST", "plan_view", "progress_view"]

ENV_CONFIRM = "env_confirm"
ENV_REST = "env_stop_rest"
ENV_CANCEL = "env_cancel"


def _verb(plan: Plan) -> tuple[str, str]:
    return ("Wake", "woken") if plan.run.action is Action.START else ("Stop", "stopped")


def _preview_member(member: Member) -> Mrkdwn:
    r = member.resource
    if member.status is not None:
        status = md("{} ({})", member.status.state, member.status.phase.value)
    else:
        status = md("status unknown: {}", member.status_error or "not read")
    if member.verdict.blocked:
        return md(":lock: {} ({}): {}. {}", code(r.name), r.provider, status, member.verdict.reason)
    notes = [md("{}", note) for note in member.verdict.notes]
    if member.lock_error:
        notes.append(md("provider lock unknown: {}", member.lock_error))
    extra = md(" ({})", Mrkdwn("; ").join(notes)) if notes else Mrkdwn()
    return md("{} ({}): {}{}", code(r.name), r.provider, status, extra)


def plan_view(plan: Plan) -> View:
    """The ephemeral plan: each tier in run order with its members' status and locks; a
    member someone else holds refuses the whole, unless the requester stops the rest."""
    run = plan.run
    verb, done = _verb(plan)
    text = md("{} environment {}? {} tier(s), in order.", verb, run.environment, len(plan.tiers))
    lines = [
        md(
            "*{}. {}*\n{}",
            i,
            tier.label,
            Mrkdwn("\n").join(_preview_member(m) for m in tier.members),
        )
        for i, tier in enumerate(plan.tiers, start=1)
    ]
    blocks: Blocks = [_header(f"{verb} environment {run.environment}?"), *line_sections(lines)]
    notes = [md("Each tier is {} only once every member of the one before it is.", done)]
    if run.reason:
        notes.append(md("Reason: {}", run.reason))
    if plan.blocked:
        held = [m.name for m in plan.blocked]
        notes.append(
            md(
                ":no_entry: {} is held by someone else: the whole environment is refused. Ask "
                "the owner, or {} the rest ({} left alone).",
                ", ".join(held),
                verb.lower(),
                ", ".join(held),
            )
        )
        buttons = [_button(ENV_REST, f"{verb} the rest", run.id, "danger")]
        text = md(
            "{} environment {}? Refused as a whole: {} is held by someone else.",
            verb,
            run.environment,
            ", ".join(held),
        )
    else:
        label = f"Confirm {verb.lower()}"
        buttons = [_button(ENV_CONFIRM, label, run.id, "danger" if verb == "Stop" else "primary")]
    blocks.append(_context(*notes))
    blocks.append(
        {
            "type": "actions",
            "block_id": f"env:{run.id}",
            "elements": [*buttons, _button(ENV_CANCEL, "Cancel", run.id)],
        }
    )
    return text, blocks


def _member_line(member: Member) -> Mrkdwn:
    name = code(member.name)
    if member.skipped:
        return md("{}: left alone (held by someone else)", name)
    op = member.operation
    if op is None:
        return md("{}: waiting", name)
    if op.state.final:
        line = md("{}: {}", name, Mrkdwn(FINAL_LINES.get(op.state, op.state.value)))
        if op.action is Action.START:
            line = Mrkdwn(line.replace("stopping", "waking"))
        return (
            md("{}: {}", line, op.detail) if op.detail and op.state is not OpState.STOPPED else line
        )
    state = op.provider_state or op.state.value.replace("_", " ")
    return md("{}: :hourglass_flowing_sand: {}", name, state)


def progress_view(plan: Plan) -> View:
    """The one message for the whole environment, kept current."""
    run = plan.run
    verb, done = _verb(plan)
    if run.state is EnvRunState.DONE:
        left = md(" ({} left alone)", ", ".join(run.skipped)) if run.skipped else Mrkdwn()
        head = md(":white_check_mark: {} {}, every tier{}", run.environment, done, left)
    elif run.state is EnvRunState.HALTED:
        head = md(":x: {} of {} halted: {}", verb, run.environment, run.detail)
    elif run.state is EnvRunState.CANCELLED:
        head = md("{} of {} cancelled", verb, run.environment)
    else:
        head = md(
            ":hourglass_flowing_sand: {} of {}: tier {} of {}",
            verb,
            run.environment,
            min(run.tier + 1, len(plan.tiers)),
            len(plan.tiers),
        )
    lines = [
        md("*{}. {}*\n{}", i, tier.label, Mrkdwn("\n").join(_member_line(m) for m in tier.members))
        for i, tier in enumerate(plan.tiers, start=1)
    ]
    asked = md(
        "Asked by {}{}",
        Person(run.requested_by),
        md(": {}", run.reason) if run.reason else Mrkdwn(),
    )
    return head, [*line_sections([head, *lines]), _context(asked)]
