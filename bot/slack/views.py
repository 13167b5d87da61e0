"""Block Kit for every message the bot sends. Each builder returns ``(text, blocks)``:
``text`` is the notification and accessibility fallback Slack asks for.

Every text is :class:`~bot.slack.wording.Mrkdwn`, written with :func:`~bot.slack.wording.md`
(user and provider text escaped) and cut to Block Kit's limits by the block builders here
(never inside an entity); ``plain_text`` fields are capped, not escaped."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from bot.durations import format_duration
from bot.models import Action, BotLock, Operation, OpState, Transition
from bot.slack.wording import Mrkdwn, counted, cut, md, mrkdwn, plain, when
from bot.text import REASON_LIMIT, Person, Text
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
    "when",
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
EXTENSIONS = ("1h", "1d")

Blocks = list[dict[str, Any]]
View = tuple[Mrkdwn, Blocks]

FINAL_LINES = {
    OpState.STOPPED: ":white_check_mark: *Stopped*",
    OpState.STOPPED_ALREADY: ":white_check_mark: *Already stopped*",
    OpState.STARTED: ":white_check_mark: *Running*",
    OpState.RUNNING_ALREADY: ":white_check_mark: *Already running*",
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


def _mrkdwn(text: Mrkdwn, limit: int) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": cut(text, limit)}


SECTION_LIMIT = 3000  # Slack refuses a section text longer than this
FIELD_LIMIT = 2000
CONTEXT_LIMIT = 3000
HEADER_LIMIT = 150
BUTTON_LIMIT = 75
MAX_LIST_SECTIONS = 45  # a message holds 50 blocks: room for a title and a note


def _section(text: Mrkdwn) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text, SECTION_LIMIT)}


def line_sections(lines: Sequence[Mrkdwn], most: int = MAX_LIST_SECTIONS) -> list[dict[str, Any]]:
    """Lines packed whole into sections (a long line is cut, never inside an entity or a
    ``<!date^…>``), at most ``most`` of them; the lines that do not fit are counted at the
    end."""
    chunks: list[list[Mrkdwn]] = [[]]
    size = 0
    for shown, line in enumerate(lines):
        line = cut(line, SECTION_LIMIT // 2)
        if chunks[-1] and size + 1 + len(line) > SECTION_LIMIT:
            if len(chunks) == most:
                left = len(lines) - shown
                more = md("… and {} more", left)
                while chunks[-1] and size + 1 + len(more) > SECTION_LIMIT:
                    size -= len(chunks[-1].pop()) + 1
                    left += 1
                    more = md("… and {} more", left)
                chunks[-1].append(more)
                break
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += len(line) + 1
    return [_section(Mrkdwn("\n").join(chunk)) for chunk in chunks if chunk]


def _context(*texts: Mrkdwn) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(t, CONTEXT_LIMIT) for t in texts[:10]]}


def _fields(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """Labelled values (each value escaped or rendered by :func:`md`)."""
    return {
        "type": "section",
        "fields": [_mrkdwn(md("*{}*\n{}", k, v), FIELD_LIMIT) for k, v in pairs[:10]],
    }


def _header(text: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": plain(text, HEADER_LIMIT), "emoji": True},
    }


def _status_text(s: ResourceStatus | None, error: str | None = None) -> Mrkdwn:
    if s is None:
        return md("unknown: {}", error) if error else Mrkdwn("unknown")
    text = md("`{}` ({})", s.state, s.phase.value)
    return md("{}: {}", text, s.message) if s.message else text


def _provider_lock_text(
    lock: ProviderLock | None, now: dt.datetime, error: str | None = None
) -> Mrkdwn:
    """The provider lock, or why it is unknown: never "none" when it could not be read."""
    if error is not None:
        return md("unknown: {}", error)
    if lock is None:
        return Mrkdwn("none")
    who = md(" by {}", lock.owner) if lock.owner else Mrkdwn()
    why = md(": {}", lock.reason) if lock.reason else Mrkdwn()
    if lock.expires_at is None:
        until = Mrkdwn("no expiry")
    elif lock.is_expired(now):
        until = Mrkdwn("expired, stale")
    else:
        until = md("until {}", when(lock.expires_at))
    return md("locked{}{} ({})", who, why, until)


def _bot_lock_text(lock: BotLock | None) -> Mrkdwn:
    if lock is None:
        return Mrkdwn("none")
    why = md(": {}", lock.reason) if lock.reason else Mrkdwn()
    return md("locked by {}{} (until {})", Person(lock.owner), why, when(lock.expires_at))


def message(text: Mrkdwn) -> View:
    return text, [_section(text)]


def confirmation(preview: Preview, now: dt.datetime) -> View:
    """The ephemeral 'are you sure?' with Confirm and Cancel: a stop, or a wake (with the
    lease if one was asked)."""
    op, r = preview.operation, preview.resource
    if op.action is Action.START:
        verb, label, style = "Wake", "Confirm wake", "primary"
        happens = f"a start request to {r.provider}, then live progress here"
        if op.lease_seconds:
            happens += (
                f"; a lease of {format_duration(dt.timedelta(seconds=op.lease_seconds))} from "
                "when it runs: you are asked before it ends, and it is stopped at the end"
            )
    else:
        force = op.force and preview.supports_force
        verb, style = "Stop", "danger"
        label = "Force stop" if force else "Confirm stop"
        action = "forced stop (no checkpoint)" if force else "stop"
        happens = f"a {action} request to {r.provider}, then live progress here"
    text = md("{} {} ({})? Confirm or cancel.", verb, r.name, r.provider)
    pairs: list[tuple[str, Any]] = [
        ("Resource", md("{} (`{}`)", r.name, r.id)),
        ("Provider", r.provider),
        ("Current status", _status_text(preview.status, preview.status_error)),
        ("Provider lock", _provider_lock_text(preview.provider_lock, now, preview.lock_error)),
        ("Stopbot lock", _bot_lock_text(preview.bot_lock)),
        ("What happens", happens),
    ]
    if op.reason:
        pairs.append(("Reason", op.reason))
    blocks: Blocks = [_header(f"{verb} {r.name}?"), _fields(pairs)]
    if preview.notes:
        blocks.append(_context(*(md(":information_source: {}", n) for n in preview.notes)))
    if op.expires_at:
        blocks.append(_context(md("This confirmation expires {}.", when(op.expires_at))))
    blocks.append(
        {
            "type": "actions",
            "block_id": f"confirm:{op.id}",
            "elements": [
                _button(CONFIRM, label, op.id, style),
                _button(CANCEL, "Cancel", op.id),
            ],
        }
    )
    return text, blocks


def _button(action_id: str, text: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": plain(text, BUTTON_LIMIT)},
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def _unstarred(text: Mrkdwn) -> Mrkdwn:
    """A notification text without bold markers (``*`` can never open an entity)."""
    return Mrkdwn(text.replace("*", ""))


def decided(preview: Preview) -> View:
    """A request that ended before confirmation (refused, or nothing to do), or a request
    shown again once past its confirmation."""
    op = preview.operation
    line = Mrkdwn(FINAL_LINES.get(op.state) or ONGOING_LINES.get(op.state, op.state.value))
    if op.action is Action.START:
        line = Mrkdwn(line.replace("stopping", "waking"))
    text = md("{}: {}", line, op.detail) if op.detail else line
    blocks: Blocks = [_section(text)]
    if preview.notes:
        blocks.append(_context(*(mrkdwn(n) for n in preview.notes)))
    if preview.blocking_lock is not None and preview.blocking_lock.owner:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"refused:{op.id}",
                "elements": [_button(ASK_RELEASE, "Ask to release", op.id)],
            }
        )
    return _unstarred(text), blocks


def approval_request(
    op: Operation, current: Mrkdwn, approvers: Sequence[str], expires_at: dt.datetime
) -> View:
    """The request an approver sees, with Approve and Deny."""
    requester = Person(op.requested_by)
    verb, doing = ("wake", "waking") if op.action is Action.START else ("stop", "stopping")
    text = md("Approval needed: {} wants to {} {}.", requester, verb, op.resource)
    pairs: list[tuple[str, Any]] = [
        ("Requested by", requester),
        ("Resource", md("{} (`{}`)", op.resource, op.resource_id)),
        ("Provider", op.provider),
        ("Current status", current),
        ("Reason", op.reason or "none given"),
        ("Approvers", Text(", ").join(Person(a) for a in approvers)),
    ]
    if op.force:
        pairs.append(("Mode", "forced"))
    blocks: Blocks = [
        _header(f"Approve {doing} {op.resource}?"),
        _fields(pairs),
        _context(md("This request expires {}. The requester cannot approve it.", when(expires_at))),
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


def approval_outcome(op: Operation, line: Mrkdwn) -> View:
    """An approval request once decided: no buttons left."""
    requester = Person(op.requested_by)
    noun = "Wake" if op.action is Action.START else "Stop"
    text = md("{} of {} requested by {}: {}", noun, op.resource, requester, line)
    return text, [
        _header(f"{noun} {op.resource}: decided"),
        _fields(
            [
                ("Requested by", requester),
                ("Resource", op.resource),
                ("Reason", op.reason or "none given"),
            ]
        ),
        _section(line),
    ]


DENY_REASON_LIMIT = REASON_LIMIT


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
            _section(md("Deny {}'s request to stop *{}*?", Person(op.requested_by), op.resource)),
            {
                "type": "input",
                "block_id": "reason",
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason (the requester will see it)"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "reason",
                    "multiline": True,
                    "max_length": DENY_REASON_LIMIT,
                },
            },
        ],
    }


def deny_refused(message: Mrkdwn) -> dict[str, Any]:
    """The deny modal, once it turns out the user may not decide: why, and Close."""
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Deny the stop"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [_section(message)],
    }


def release_request(
    resource: str, asker: str, lock_text: Mrkdwn, value: str, provider: bool
) -> View:
    """The DM asking a lock's owner to release it."""
    text = md(
        "{} asks you to release your lock on {} so it can be stopped.", Person(asker), resource
    )
    release = "I released it" if provider else "Release"
    return text, [
        _section(md("{}\nYour lock: {}", text, lock_text)),
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
    text = md("Your lock on {} expires {}.", lock.resource, when(lock.expires_at))
    warned = lock.expires_at.isoformat()
    return text, [
        _section(md("{} ({})", text, lock.reason) if lock.reason else text),
        {
            "type": "actions",
            "block_id": f"extend:{lock.resource}",
            # The expiry warned about goes with the click: a second click extends from it
            # again, so it changes nothing.
            "elements": [
                _button(f"{EXTEND}{extra}", label, f"{lock.resource}|{extra}|{warned}")
                for extra, label in zip(EXTENSIONS, ("Extend 1h", "Extend 1 day"), strict=True)
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
        return message(Mrkdwn("No active locks."))
    lines = [
        md(
            "• *{}* · Stopbot lock by {}{} · expires in {} ({})",
            lk.resource,
            Person(lk.owner),
            md(" · {}", lk.reason) if lk.reason else Mrkdwn(),
            format_duration(lk.expires_at - now),
            when(lk.expires_at),
        )
        for lk in bot_locks
    ]
    lines += [
        md("• *{}* · {} lock {}", r.name, r.provider, _provider_lock_text(lk, now))
        for r, lk in provider_locks
    ]
    text = Mrkdwn(counted(len(lines), "active lock"))
    if unread:
        providers = " and ".join(sorted({p for p, _, _ in unread}))
        text += md("; the {} locks could not be read", providers)
    lines += [
        md("• *{}* · {} lock unknown: {}", ", ".join(names), provider, error)
        for provider, names, error in unread
    ]
    return text, [_section(md("*{}*", text)), *line_sections(lines)]


def confirmed_at(op: Operation, timeline: Sequence[Transition]) -> dt.datetime:
    """When the stop was confirmed (or approved): its first step toward the provider. A
    stop is timed from there, not from the preview someone read for a while."""
    sent = next((t.at for t in timeline if t.state == OpState.SUBMITTING.value), None)
    return sent or op.created_at


# The bot's own steps, as the timeline words them (None: not shown, the provider's or the
# final line says it better).
_STEP_WORDS: dict[str, str | None] = {
    OpState.REQUESTED.value: "requested",
    OpState.AWAITING_CONFIRMATION.value: None,
    OpState.AWAITING_APPROVAL.value: "waiting for approval",
    OpState.SUBMITTING.value: "confirmed",
    OpState.ACCEPTED.value: "accepted by {provider}",
    OpState.IN_PROGRESS.value: None,
}


def _timeline(op: Operation, timeline: Sequence[Transition]) -> list[Mrkdwn]:
    """The steps of a stop, each once: the request, its confirmation (or approval), the
    provider's acceptance and each state the provider reported, in its words. The end is
    the final line's, not repeated here. Times after Confirm count from it."""
    start = confirmed_at(op, timeline)
    lines: list[Mrkdwn] = []
    previous: str | None = None
    waited = False
    for t in timeline:
        if t.provider_state:
            label: Mrkdwn | str = md("`{}`", t.provider_state)
            key = f"provider:{t.provider_state}"
        elif t.state in _STEP_WORDS:
            words = _STEP_WORDS[t.state]
            if words is None:
                continue
            waited = waited or t.state == OpState.AWAITING_APPROVAL.value
            if t.state == OpState.SUBMITTING.value and waited:
                words = "approved"
            label = words.format(provider=op.provider)
            key = t.state
        else:
            continue  # a final state: said by the final line
        if key == previous:
            continue
        previous = key
        if t.at < start or t.state == OpState.REQUESTED.value:
            lines.append(md("{} · {}", label, when(t.at)))
        else:
            lines.append(md("{} · {} · +{}", label, when(t.at), format_duration(t.at - start)))
    return lines


def progress(op: Operation, timeline: Sequence[Transition], status: ResourceStatus | None) -> View:
    """The public message that follows a stop from request to end."""
    waking = op.action is Action.START
    doing = "Waking" if waking else "Stopping"
    title = (
        f"{doing} {op.resource}"
        if not op.state.final
        else f"{'Wake' if waking else 'Stop'} of {op.resource}"
    )
    pairs: list[tuple[str, Any]] = [
        ("Resource", md("{} (`{}`)", op.resource, op.resource_id)),
        ("Provider", op.provider),
        ("Requested by", Person(op.requested_by)),
        (
            "Status",
            md("`{}`", op.provider_state)
            if op.provider_state
            else op.state.value.replace("_", " "),
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
                md(
                    ":warning: A lock on {} was overridden by {} (admin): {}",
                    op.resource,
                    Person(op.requested_by),
                    op.reason or "",
                )
            )
        )
    lines = _timeline(op, timeline)
    if lines:
        blocks.append(_section(Mrkdwn("\n").join(lines[-20:])))
    if op.state.final:
        line = Mrkdwn(FINAL_LINES[op.state])
        if op.state in (OpState.STOPPED, OpState.STARTED) and op.finished_at:
            took = op.finished_at - confirmed_at(op, timeline)
            line += md(" in {}", format_duration(took))
        if op.detail:
            line += md(": {}", op.detail)
        blocks.append(_section(line))
        text = md("{}: {}", op.resource, _unstarred(line))
    else:
        blocks.append(
            _context(Mrkdwn(":arrows_counterclockwise: following the provider's status…"))
        )
        text = md("{} {}: {}", doing, op.resource, op.provider_state or op.state.value)
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
    text = md("{}: {}", resource.name, _status_text(current, error))
    pairs: list[tuple[str, Any]] = [
        ("Resource", md("{} (`{}`)", resource.name, resource.id)),
        ("Provider", resource.provider),
        ("Status", _status_text(current, error)),
        ("Provider lock", _provider_lock_text(provider_lock, now, lock_error)),
        ("Stopbot lock", _bot_lock_text(bot_lock)),
    ]
    if resource.tags:
        pairs.append(("Tags", ", ".join(f"{k}={v}" for k, v in sorted(resource.tags.items()))))
    return Mrkdwn(text.replace("`", "")), [_fields(pairs)]


def resources_list(
    rows: Sequence[tuple[Resource, ResourceStatus | None, str | None]],
    title: str,
) -> View:
    """``rows``: each resource, its status, and who holds its Stopbot lock (a user id)."""
    if not rows:
        return message(md("No resources match {}.", title))
    lines = []
    for r, s, owner in rows:
        state = md("`{}` ({})", s.state, s.phase.value) if s else Mrkdwn("unknown")
        lock_text = md(" · :lock: {}", Person(owner)) if owner else Mrkdwn()
        lines.append(md("• *{}* · {} · {}{}", r.name, r.provider, state, lock_text))
    text = md("{} {}", counted(len(rows), "resource"), title)
    return text, [_section(md("*{}*", text)), *line_sections(lines)]


def history(ops: Sequence[Operation], title: str) -> View:
    """The latest stops; ``title`` says of what ("for dev-eu"), or is empty."""
    heading = " ".join(["Latest stops", title]).strip()
    if not ops:
        return message(
            md("No stops recorded {}.", title) if title else Mrkdwn("No stops recorded.")
        )
    lines = [
        md(
            "• {} · *{}* · {} · {}{}",
            when(op.created_at),
            op.resource,
            op.state.value.replace("_", " "),
            Person(op.requested_by),
            md(": {}", op.detail) if op.detail else Mrkdwn(),
        )
        for op in ops
    ]
    return mrkdwn(heading), [_section(md("*{}*", heading)), *line_sections(lines)]
