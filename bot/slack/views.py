"""Block Kit for every message the bot sends. Each builder returns ``(text, blocks)``:
``text`` is the notification and accessibility fallback Slack asks for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from bot.durations import format_duration
from bot.models import BotLock, Operation, OpState, Transition
from bot.workflow import Preview
from providers.base import ProviderLock, Resource, ResourceStatus

__all__ = [
    "APPROVE",
    "ASK_RELEASE",
    "CANCEL",
    "CONFIRM",
    "DENY",
    "DENY_MODAL",
    "EXTEND",
    "KEEP",
    "RELEASE",
    "approval_outcome",
    "approval_request",
    "confirmation",
    "decided",
    "deny_modal",
    "history",
    "lock_warning",
    "locks_list",
    "message",
    "progress",
    "release_request",
    "resources_list",
    "status",
]

CONFIRM = "stop_confirm"
CANCEL = "stop_cancel"
APPROVE = "approval_approve"
DENY = "approval_deny"
DENY_MODAL = "approval_deny_modal"
ASK_RELEASE = "lock_ask_release"
RELEASE = "lock_release"
KEEP = "lock_keep"
EXTEND = "lock_extend:"  # + the extension: action ids are unique within their block

Blocks = list[dict[str, Any]]
View = tuple[str, Blocks]

FINAL_LINES = {
    OpState.STOPPED: ":white_check_mark: *Stopped*",
    OpState.STOPPED_ALREADY: ":white_check_mark: *Already stopped*",
    OpState.FAILED: ":x: *Failed*",
    OpState.TIMED_OUT: ":hourglass: *Timed out*",
    OpState.CANCELLED: ":no_entry_sign: *Cancelled*",
    OpState.REFUSED: ":no_entry: *Refused*",
}
# A request shown again (Slack redelivered it) after it moved on from its confirmation.
ONGOING_LINES = {
    OpState.REQUESTED: ":hourglass: *Being prepared*",
    OpState.AWAITING_APPROVAL: ":hourglass_flowing_sand: *Confirmed, waiting for approval*",
    OpState.SUBMITTING: ":arrows_counterclockwise: *Confirmed, stopping*",
    OpState.ACCEPTED: ":arrows_counterclockwise: *Confirmed, stopping*",
    OpState.IN_PROGRESS: ":arrows_counterclockwise: *Confirmed, stopping*",
}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text[:3000])}


SECTION_LIMIT = 3000  # Slack refuses a section text longer than this
MAX_LIST_SECTIONS = 45  # a message holds 50 blocks: room for a title and a note


def line_sections(lines: Sequence[str], most: int = MAX_LIST_SECTIONS) -> list[dict[str, Any]]:
    """Lines packed whole into sections (a line is never cut, so no ``<!date^…>`` is
    broken), at most ``most`` of them; the lines that do not fit are counted at the end."""
    chunks: list[list[str]] = [[]]
    size = 0
    for shown, line in enumerate(lines):
        line = line[: SECTION_LIMIT // 2]
        if chunks[-1] and size + 1 + len(line) > SECTION_LIMIT:
            if len(chunks) == most:
                left = len(lines) - shown
                more = f"… and {left} more"
                while chunks[-1] and size + 1 + len(more) > SECTION_LIMIT:
                    size -= len(chunks[-1].pop()) + 1
                    left += 1
                    more = f"… and {left} more"
                chunks[-1].append(more)
                break
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line) + 1
    return [_section("\n".join(chunk)) for chunk in chunks if chunk]


def _context(*texts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(t[:3000]) for t in texts[:10]]}


def _fields(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [_mrkdwn(f"*{k}*\n{v}"[:2000]) for k, v in pairs[:10]],
    }


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150], "emoji": True}}


def when(at: dt.datetime) -> str:
    """A time Slack shows in each viewer's own time zone."""
    fallback = at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def _status_text(s: ResourceStatus | None, error: str | None = None) -> str:
    if s is None:
        return f"unknown: {error}" if error else "unknown"
    text = f"`{s.state}` ({s.phase.value})"
    return f"{text}: {s.message}" if s.message else text


def _provider_lock_text(
    lock: ProviderLock | None, now: dt.datetime, error: str | None = None
) -> str:
    """The provider lock, or why it is unknown: never "none" when it could not be read."""
    if error is not None:
        return f"unknown: {error}"
    if lock is None:
        return "none"
    who = f" by {lock.owner}" if lock.owner else ""
    why = f": {lock.reason}" if lock.reason else ""
    if lock.expires_at is None:
        until = "no expiry"
    elif lock.is_expired(now):
        until = "expired, stale"
    else:
        until = f"until {when(lock.expires_at)}"
    return f"locked{who}{why} ({until})"


def _bot_lock_text(lock: BotLock | None) -> str:
    if lock is None:
        return "none"
    why = f": {lock.reason}" if lock.reason else ""
    return f"locked by <@{lock.owner}>{why} (until {when(lock.expires_at)})"


def message(text: str) -> View:
    return text, [_section(text)]


def confirmation(preview: Preview, now: dt.datetime) -> View:
    """The ephemeral 'are you sure?' with Confirm and Cancel."""
    op, r = preview.operation, preview.resource
    force = op.force and preview.supports_force
    action = "forced stop (no checkpoint)" if force else "stop"
    text = f"Stop {r.name} ({r.provider})? Confirm or cancel."
    pairs = [
        ("Resource", f"{r.name} (`{r.id}`)"),
        ("Provider", r.provider),
        ("Current status", _status_text(preview.status, preview.status_error)),
        ("Provider lock", _provider_lock_text(preview.provider_lock, now, preview.lock_error)),
        ("Stopbot lock", _bot_lock_text(preview.bot_lock)),
        ("What happens", f"a {action} request to {r.provider}, then live progress here"),
    ]
    if op.reason:
        pairs.append(("Reason", op.reason))
    blocks: Blocks = [_header(f"Stop {r.name}?"), _fields(pairs)]
    if preview.notes:
        blocks.append(_context(*(f":information_source: {n}" for n in preview.notes)))
    if op.expires_at:
        blocks.append(_context(f"This confirmation expires {when(op.expires_at)}."))
    blocks.append(
        {
            "type": "actions",
            "block_id": f"confirm:{op.id}",
            "elements": [
                {
                    "type": "button",
                    "action_id": CONFIRM,
                    "text": {"type": "plain_text", "text": "Confirm stop"},
                    "style": "danger",
                    "value": op.id,
                },
                {
                    "type": "button",
                    "action_id": CANCEL,
                    "text": {"type": "plain_text", "text": "Cancel"},
                    "value": op.id,
                },
            ],
        }
    )
    return text, blocks


def _button(action_id: str, text: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text},
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def decided(preview: Preview) -> View:
    """A request that ended before confirmation (refused, or nothing to do), or a request
    shown again once past its confirmation."""
    op = preview.operation
    line = FINAL_LINES.get(op.state) or ONGOING_LINES.get(op.state, op.state.value)
    text = f"{line}: {op.detail}" if op.detail else line
    blocks: Blocks = [_section(text)]
    if preview.notes:
        blocks.append(_context(*preview.notes))
    if preview.blocking_lock is not None and preview.blocking_lock.owner:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"refused:{op.id}",
                "elements": [_button(ASK_RELEASE, "Ask to release", op.id)],
            }
        )
    return text.replace("*", ""), blocks


def approval_request(
    op: Operation, current: str, approvers: Sequence[str], expires_at: dt.datetime
) -> View:
    """The request an approver sees, with Approve and Deny."""
    text = f"Approval needed: <@{op.requested_by}> wants to stop {op.resource}."
    pairs = [
        ("Requested by", f"<@{op.requested_by}>"),
        ("Resource", f"{op.resource} (`{op.resource_id}`)"),
        ("Provider", op.provider),
        ("Current status", current),
        ("Reason", op.reason or "none given"),
        ("Approvers", ", ".join(_who(a) for a in approvers)),
    ]
    if op.force:
        pairs.append(("Mode", "forced"))
    blocks: Blocks = [
        _header(f"Approve stopping {op.resource}?"),
        _fields(pairs),
        _context(f"This request expires {when(expires_at)}. The requester cannot approve it."),
        {
            "type": "actions",
            "block_id": f"approval:{op.id}",
            "elements": [
                _button(APPROVE, "Approve", op.id, "primary"),
                _button(DENY, "Deny", op.id, "danger"),
            ],
        },
    ]
    return text, blocks


def approval_outcome(op: Operation, line: str) -> View:
    """An approval request once decided: no buttons left."""
    text = f"Stop of {op.resource} requested by <@{op.requested_by}>: {line}"
    return text, [
        _header(f"Stop {op.resource}: decided"),
        _fields(
            [
                ("Requested by", f"<@{op.requested_by}>"),
                ("Resource", op.resource),
                ("Reason", op.reason or "none given"),
            ]
        ),
        _section(line),
    ]


def deny_modal(op: Operation) -> dict[str, Any]:
    """The modal an approver fills to deny, with an optional reason for the requester."""
    return {
        "type": "modal",
        "callback_id": DENY_MODAL,
        "private_metadata": op.id,
        "title": {"type": "plain_text", "text": "Deny the stop"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            _section(f"Deny <@{op.requested_by}>'s request to stop *{op.resource}*?"),
            {
                "type": "input",
                "block_id": "reason",
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason (the requester will see it)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "reason",
                    "multiline": True,
                    "max_length": 500,
                },
            },
        ],
    }


def deny_refused(message: str) -> dict[str, Any]:
    """The deny modal, once it turns out the user may not decide: why, and Close."""
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Deny the stop"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [_section(message)],
    }


def release_request(resource: str, asker: str, lock_text: str, value: str, provider: bool) -> View:
    """The DM asking a lock's owner to release it."""
    text = f"<@{asker}> asks you to release your lock on {resource} so it can be stopped."
    release = "I released it" if provider else "Release"
    return text, [
        _section(f"{text}\nYour lock: {lock_text}"),
        {
            "type": "actions",
            "block_id": f"release:{resource}",
            "elements": [
                _button(RELEASE, release, value, "primary"),
                _button(KEEP, "Keep it", value),
            ],
        },
    ]


def lock_warning(lock: BotLock) -> View:
    """The DM to a lock's owner before it expires, with Extend."""
    text = f"Your lock on {lock.resource} expires {when(lock.expires_at)}."
    warned = lock.expires_at.isoformat()
    return text, [
        _section(text + (f" ({lock.reason})" if lock.reason else "")),
        {
            "type": "actions",
            "block_id": f"extend:{lock.resource}",
            "elements": [
                # The expiry warned about goes with the click: a second click extends
                # from it again, so it changes nothing.
                _button(f"{EXTEND}1h", "Extend 1h", f"{lock.resource}|1h|{warned}"),
                _button(f"{EXTEND}1d", "Extend 1 day", f"{lock.resource}|1d|{warned}"),
            ],
        },
    ]


def locks_list(
    bot_locks: Sequence[BotLock],
    provider_locks: Sequence[tuple[Resource, ProviderLock]],
    now: dt.datetime,
    unread: Sequence[tuple[str, Sequence[str], str]] = (),
) -> View:
    """Every lock in force; ``unread``: (provider, resources, error) whose provider locks
    could not be read, shown as unknown rather than left out."""
    if not bot_locks and not provider_locks and not unread:
        return message("No active locks.")
    lines = [
        f"• *{lk.resource}* · Stopbot lock by <@{lk.owner}>"
        + (f" · {lk.reason}" if lk.reason else "")
        + f" · expires in {format_duration(lk.expires_at - now)} ({when(lk.expires_at)})"
        for lk in bot_locks
    ]
    lines += [
        f"• *{r.name}* · {r.provider} lock {_provider_lock_text(lk, now)}"
        for r, lk in provider_locks
    ]
    text = f"{len(lines)} active lock(s)"
    if unread:
        text += f"; the {' and '.join(sorted({p for p, _, _ in unread}))} locks could not be read"
    lines += [
        f"• *{', '.join(names)}* · {provider} lock unknown: {error}"
        for provider, names, error in unread
    ]
    return text, [_section(f"*{text}*"), *line_sections(lines)]


def _who(ref: str) -> str:
    if ref[:1] == "S":
        return f"<!subteam^{ref}>"
    return f"<@{ref}>"


def _timeline(op: Operation, timeline: Sequence[Transition]) -> list[str]:
    start = op.created_at
    lines = []
    for t in timeline:
        label = f"`{t.provider_state}`" if t.provider_state else t.state.replace("_", " ")
        elapsed = format_duration(t.at - start)
        lines.append(f"{label} · {when(t.at)} · +{elapsed}")
    return lines


def progress(op: Operation, timeline: Sequence[Transition], status: ResourceStatus | None) -> View:
    """The public message that follows a stop from request to end."""
    title = f"Stopping {op.resource}" if not op.state.final else f"Stop of {op.resource}"
    pairs = [
        ("Resource", f"{op.resource} (`{op.resource_id}`)"),
        ("Provider", op.provider),
        (
            "Requested by",
            f"<@{op.requested_by}>" if op.requested_by[:1] in "UW" else op.requested_by,
        ),
        (
            "Status",
            f"`{op.provider_state}`" if op.provider_state else op.state.value.replace("_", " "),
        ),
    ]
    if op.reason:
        pairs.append(("Reason", op.reason))
    if op.force:
        pairs.append(("Mode", "forced"))
    blocks: Blocks = [_header(title), _fields(pairs)]
    if op.override_lock:
        blocks.append(
            _section(
                f":warning: A lock on {op.resource} was overridden by "
                f"<@{op.requested_by}> (admin): {op.reason}"
            )
        )
    lines = _timeline(op, timeline)
    if lines:
        blocks.append(_section("\n".join(lines[-20:])))
    if op.state.final:
        line = FINAL_LINES[op.state]
        if op.state == OpState.STOPPED and op.finished_at:
            line += f" in {format_duration(op.finished_at - op.created_at)}"
        if op.detail:
            line += f": {op.detail}"
        blocks.append(_section(line))
        text = f"{op.resource}: {line.replace('*', '')}"
    else:
        blocks.append(_context(":arrows_counterclockwise: following the provider's status…"))
        text = f"Stopping {op.resource}: {op.provider_state or op.state.value}"
    return text, blocks


def status(
    resource: Resource,
    current: ResourceStatus | None,
    error: str | None,
    provider_lock: ProviderLock | None,
    bot_lock: BotLock | None,
    now: dt.datetime,
    lock_error: str | None = None,
) -> View:
    text = f"{resource.name}: {_status_text(current, error)}"
    pairs = [
        ("Resource", f"{resource.name} (`{resource.id}`)"),
        ("Provider", resource.provider),
        ("Status", _status_text(current, error)),
        ("Provider lock", _provider_lock_text(provider_lock, now, lock_error)),
        ("Stopbot lock", _bot_lock_text(bot_lock)),
    ]
    if resource.tags:
        pairs.append(("Tags", ", ".join(f"{k}={v}" for k, v in sorted(resource.tags.items()))))
    return text.replace("`", ""), [_fields(pairs)]


def resources_list(
    rows: Sequence[tuple[Resource, ResourceStatus | None, str | None]],
    title: str,
) -> View:
    if not rows:
        return message(f"No resources match {title}.")
    lines = []
    for r, s, lock in rows:
        state = f"`{s.state}` ({s.phase.value})" if s else "unknown"
        lock_text = f" · :lock: {lock}" if lock else ""
        lines.append(f"• *{r.name}* · {r.provider} · {state}{lock_text}")
    text = f"{len(rows)} resource(s) {title}"
    return text, [_section(f"*{text}*"), *line_sections(lines)]


def history(ops: Sequence[Operation], title: str) -> View:
    if not ops:
        return message(f"No stops recorded {title}.")
    lines = []
    for op in ops:
        who = f"<@{op.requested_by}>" if op.requested_by[:1] in "UW" else op.requested_by
        detail = f": {op.detail}" if op.detail else ""
        lines.append(
            f"• {when(op.created_at)} · *{op.resource}* · {op.state.value.replace('_', ' ')} · "
            f"{who}{detail}"
        )
    text = f"Latest stops {title}"
    return text, [_section(f"*{text}*"), *line_sections(lines)]
