"""Block Kit for scheduled runs: the warning with Skip / Snooze / Keep, the run summary,
drift reports, schedule listings."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from bot.config import ScheduleConfig
from bot.durations import format_duration
from bot.models import KeepException
from bot.schedules import Outcome, PlanItem, RunReport
from bot.schedules.definitions import is_start_fire
from bot.slack import savings_views
from bot.slack.views import (
    SECTION_LIMIT,
    Blocks,
    View,
    _button,
    _context,
    _header,
    _section,
    line_sections,
)
from bot.slack.wording import Mrkdwn, code, counted, cut, md, plain, when
from bot.text import Person

__all__ = [
    "DRIFT_LEAVE",
    "DRIFT_STOP",
    "IN_USE_KEEP",
    "IN_USE_STOP",
    "KEEP",
    "RUN_CANCEL",
    "RUN_CONFIRM",
    "SKIP",
    "SNOOZE",
    "drift",
    "dry_run",
    "exceptions",
    "fire_value",
    "listing",
    "plan_text",
    "read_fire_value",
    "run_confirmation",
    "summary",
    "warning",
]

SKIP = "schedule_skip"
SNOOZE = "schedule_snooze"
KEEP = "schedule_keep"
RUN_CONFIRM = "schedule_run_confirm"
RUN_CANCEL = "schedule_run_cancel"
DRIFT_STOP = "schedule_drift_stop"
DRIFT_LEAVE = "schedule_drift_leave"
IN_USE_KEEP = "schedule_in_use_keep"
IN_USE_STOP = "schedule_in_use_stop"
MAX_QUESTIONS = 15  # one actions block each; a message holds 50 blocks

SNOOZE_BY = "1h"  # what Snooze does; buttons posted before it was in their value mean it
KEEP_CHOICES = (("1h", "for 1 hour"), ("3h", "for 3 hours"), ("next", "until tomorrow's run"))
MAX_KEEP_MENUS = 20  # an actions block holds 25 elements; two are Skip and Snooze

OUTCOME_LINES = {
    Outcome.STOPPED: ":white_check_mark: Stopped",
    Outcome.ALREADY: ":white_check_mark: Already stopped",
    Outcome.STARTED: ":sunrise: Started",
    Outcome.ALREADY_RUNNING: ":white_check_mark: Already running",
    Outcome.LOCKED: ":lock: Skipped, locked",
    Outcome.KEPT: ":raised_hand: Skipped, kept",
    Outcome.LEASED: ":alarm_clock: Skipped, woken for a while",
    Outcome.OPTED_OUT: ":see_no_evil: Skipped, opted out",
    Outcome.IN_USE: ":construction_worker: Kept, in use",
    Outcome.AWAITING_APPROVAL: ":hourglass: Awaiting approval",
    Outcome.REFUSED: ":no_entry: Refused",
    Outcome.MISSED: ":zzz: Missed",
    Outcome.FAILED: ":x: Failed",
    "in progress": ":arrows_counterclockwise: In progress",
}


# What a plan shows besides what it will stop, in this order.
PLAN_HEADINGS = {
    Outcome.ALREADY: "Already stopped",
    Outcome.LOCKED: "Skipped, locked",
    Outcome.KEPT: "Skipped, kept",
    Outcome.LEASED: "Skipped, woken for a while (a wake lease)",
    Outcome.OPTED_OUT: "Skipped, opted out",
    Outcome.UNKNOWN: "Unknown, could not be read",
}


def plan_text(plan: Sequence[PlanItem]) -> Mrkdwn:
    """What a run would stop, then each other outcome under its heading: already stopped
    ones with their state on one line, the others one a line with why."""
    stop = [i.resource for i in plan if i.stop]
    verb = "start" if any(i.action == "start" for i in plan) else "stop"
    lines = [md("*Will {} ({}):* {}", verb, len(stop), ", ".join(stop) or "nothing")]
    for outcome, heading in PLAN_HEADINGS.items():
        items = [i for i in plan if not i.stop and i.outcome == outcome]
        if not items:
            continue
        if outcome == Outcome.ALREADY:
            shown = [
                md("{}{}", i.resource, md(" ({})", i.detail) if i.detail else "") for i in items
            ]
            lines.append(md("*{} ({}):* {}", heading, len(items), Mrkdwn(", ").join(shown)))
            continue
        lines.append(md("*{} ({}):*", heading, len(items)))
        lines += [md("• {}{}", i.resource, md(": {}", i.detail) if i.detail else "") for i in items]
    return Mrkdwn("\n").join(lines)


def dry_run(schedule: ScheduleConfig, plan: Sequence[PlanItem]) -> View:
    """What a run of ``schedule`` started now would do, as read from the providers."""
    text = md(
        "Dry run of {} now (statuses and locks read, nothing stopped):\n{}",
        code(schedule.name),
        plan_text(plan),
    )
    return text, line_sections(_lines(text))


def _lines(text: Mrkdwn) -> list[Mrkdwn]:
    """A message's lines, each whole (an escaped line stays escaped)."""
    return [Mrkdwn(line) for line in text.splitlines()]


def fire_value(schedule: str, fire: dt.datetime, *middle: str) -> str:
    """A Skip or Snooze button's value: the schedule, the button's own fields, and the fire
    it acts on, so that a second click finds that fire skipped or snoozed already."""
    return "|".join([schedule, *middle, fire.astimezone(dt.UTC).isoformat()])


def read_fire_value(value: str, fields: int = 0) -> tuple[str, list[str], dt.datetime | None]:
    """The schedule, ``fields`` fields (empty strings when absent) and the fire of a
    :func:`fire_value`; the fire is None in the values of messages posted before the
    buttons carried it (``nightly``, ``nightly|1h``)."""
    name, *rest = value.split("|")
    middle, tail = rest[:fields], rest[fields:]
    try:
        fire = dt.datetime.fromisoformat(tail[0]) if tail else None
    except ValueError:
        fire = None
    if fire is not None and fire.tzinfo is None:
        fire = None
    return name, middle + [""] * (fields - len(middle)), fire


def warning(
    schedule: ScheduleConfig,
    at: dt.datetime,
    plan: Sequence[PlanItem],
    fire: dt.datetime | None = None,
) -> View:
    """The warning before a run at ``at``; its Skip and Snooze act on ``fire`` (the fire
    that run is for: ``at`` itself unless a snooze moved that fire to ``at``)."""
    fire = fire or at
    if is_start_fire(schedule, fire):
        return _start_warning(schedule, at, plan, fire)
    asked = [i for i in plan if i.stop and i.in_use is not None]
    text = md(
        "{} stops {} at {:%H:%M} UTC unless someone skips it.{}",
        schedule.name,
        counted(sum(i.stop for i in plan), "resource"),
        at,
        md(" {} in use: keep or stop anyway?", counted(len(asked), "resource")) if asked else "",
    )
    blocks: Blocks = [
        _header(f"Scheduled stop: {schedule.name}"),
        _section(
            md(
                "Stopbot stops what `{}` selects ({}) {}.\n{}",
                schedule.name,
                schedule.select.describe(),
                when(at),
                plan_text(plan),
            )
        ),
        {
            "type": "actions",
            "block_id": f"schedule:{schedule.name}",
            "elements": [
                _button(SKIP, "Skip tonight", fire_value(schedule.name, fire), "danger"),
                _button(SNOOZE, f"Snooze {SNOOZE_BY}", fire_value(schedule.name, fire, SNOOZE_BY)),
            ],
        },
    ]
    if asked:
        blocks += in_use_questions(schedule, at, asked)
    keepable = [i for i in plan if i.stop]
    if keepable:
        menus = [
            {
                "type": "static_select",
                "action_id": f"{KEEP}:{i.resource}"[:255],
                "placeholder": {"type": "plain_text", "text": plain(f"Keep {i.resource}", 150)},
                "options": [
                    {
                        "text": {
                            "type": "plain_text",
                            "text": plain(f"Keep {i.resource} {label}", 75),
                        },
                        # At most 150 characters (Slack), names 60 at most: compact.
                        "value": json.dumps(
                            {"s": schedule.name, "r": i.resource, "d": code},
                            separators=(",", ":"),
                        ),
                    }
                    for code, label in KEEP_CHOICES
                ],
            }
            for i in keepable[:MAX_KEEP_MENUS]
        ]
        blocks.append({"type": "actions", "block_id": f"keep:{schedule.name}", "elements": menus})
        if len(keepable) > MAX_KEEP_MENUS:
            blocks.append(
                _context(
                    md(
                        "{} more: lock them with `/stop lock` to keep them.",
                        len(keepable) - MAX_KEEP_MENUS,
                    )
                )
            )
    return text, blocks


def in_use_questions(
    schedule: ScheduleConfig, at: dt.datetime, asked: Sequence[PlanItem]
) -> Blocks:
    """'Is anyone using it?': each resource found in use, its signs, and **Keep 2h** /
    **Stop anyway** until someone answers (then who did, and what). Without an answer by
    the run, the schedule's ``in_use`` default applies, which the question says."""
    default = "kept" if schedule.in_use == "keep" else "stopped anyway"
    blocks: Blocks = [
        _section(
            md(
                "*Is anyone using it?* With no answer by the run, these are {}.",
                default,
            )
        )
    ]
    for item in asked[:MAX_QUESTIONS]:
        line = md(":construction_worker: *{}*: {}", item.resource, item.in_use)
        if item.in_use_answer is not None:
            verb = "keeps it" if item.in_use_answer == "keep" else "stops it anyway"
            blocks.append(_section(md("{}\n{} {}.", line, Person(item.in_use_by or ""), verb)))
            continue
        blocks.append(_section(line))
        value = fire_value(schedule.name, at, item.resource)
        blocks.append(
            {
                "type": "actions",
                "block_id": f"in_use:{item.resource}"[:255],
                "elements": [
                    _button(IN_USE_KEEP, "Keep 2h", value, "primary"),
                    _button(IN_USE_STOP, "Stop anyway", value, "danger"),
                ],
            }
        )
    if len(asked) > MAX_QUESTIONS:
        blocks.append(
            _context(
                md("{} more in use: keep them from the menus below.", len(asked) - MAX_QUESTIONS)
            )
        )
    return blocks


def _start_warning(
    schedule: ScheduleConfig, at: dt.datetime, plan: Sequence[PlanItem], fire: dt.datetime
) -> View:
    """The warning before a morning start: what the night's run stopped comes back."""
    text = md(
        "{} starts {} resource(s) at {:%H:%M} UTC unless someone skips it.",
        schedule.name,
        sum(i.stop for i in plan),
        at,
    )
    blocks: Blocks = [
        _header(f"Morning start: {schedule.name}"),
        _section(
            md(
                "At {} Stopbot starts again what `{}` stopped last ({}).\n{}",
                when(at),
                schedule.name,
                schedule.select.describe(),
                plan_text(plan),
            )
        ),
        {
            "type": "actions",
            "block_id": f"schedule:{schedule.name}",
            "elements": [
                _button(SKIP, "Skip this start", fire_value(schedule.name, fire), "danger"),
                _button(SNOOZE, f"Snooze {SNOOZE_BY}", fire_value(schedule.name, fire, SNOOZE_BY)),
            ],
        },
    ]
    return text, blocks


def summary(report: RunReport) -> View:
    run, schedule = report.run, report.schedule
    groups = report.by_outcome()
    status = "done" if report.finished else "running"
    counts = ", ".join(f"{count} {name}" for name, (count, _) in groups.items())
    text = md("{} run {}: {}", schedule.name, status, counts or "nothing selected")
    sections = []
    for name, (count, items) in groups.items():
        label = OUTCOME_LINES.get(name, name)
        # Failures and skips say why; the rest is a count and a few names.
        with_detail = name in Outcome.EXPLAINED or name in Outcome.NOTED
        entries = [
            md("{} ({})", i.resource, i.detail)
            if i.detail and with_detail
            else md("{}", i.resource)
            for i in items
        ]
        sections.append(_bounded(md("{} ({}): ", Mrkdwn(label), count), entries, total=count))
    blocks: Blocks = [
        _header(f"{schedule.name}: {'run finished' if report.finished else 'running'}"),
        *(_section(s) for s in sections[:40]),
        *([] if sections else [_section(Mrkdwn("Nothing was selected."))]),
        _context(
            md(
                "Fire {} · {} run · {} {}",
                when(run.fire_time),
                run.kind,
                format_duration(report.elapsed),
                "in all" if report.finished else "so far",
            )
        ),
    ]
    if report.expected is not None:
        blocks.append(_context(savings_views.expected_line(report.expected)))
    return text, blocks


MAX_LISTED = 45  # schedules in one listing: a message holds 50 blocks


def _bounded(
    head: Mrkdwn,
    entries: Sequence[Mrkdwn],
    *,
    sep: str = "; ",
    limit: int = SECTION_LIMIT,
    total: int | None = None,
) -> Mrkdwn:
    """``head`` and as many entries (each cut to 300 characters) as fit in ``limit``
    characters (one section's, by default), then how many more there are (of ``total``,
    when ``entries`` are only the first of them)."""
    total = len(entries) if total is None else total
    text = head
    for shown, entry in enumerate(entries):
        rest = md(" … and {} more", total - shown)
        piece = md("{}{}", sep if shown else "", cut(entry, 300))
        if len(text) + len(piece) + len(rest) > limit:
            return text + rest
        text += piece
    if total > len(entries):
        return text + md(" … and {} more", total - len(entries))
    return text


def drift(schedule: ScheduleConfig, resource: str, state: str) -> View:
    text = md("{} is running again ({}) after {} stopped it.", resource, state, schedule.name)
    return text, [
        _section(md(":eyes: {}", text)),
        {
            "type": "actions",
            "block_id": f"drift:{schedule.name}:{resource}"[:255],
            "elements": [
                _button(DRIFT_STOP, "Stop again", resource, "danger"),
                _button(
                    DRIFT_LEAVE, "Leave it running", json.dumps({"s": schedule.name, "r": resource})
                ),
            ],
        },
    ]


def run_confirmation(schedule: ScheduleConfig, plan: Sequence[PlanItem]) -> View:
    text = md("Run {} now? Confirm or cancel.", schedule.name)
    return text, [
        _header(f"Run {schedule.name} now?"),
        *line_sections(_lines(plan_text(plan)), most=40),
        {
            "type": "actions",
            "block_id": f"run:{schedule.name}",
            "elements": [
                _button(RUN_CONFIRM, "Run now", schedule.name, "danger"),
                _button(RUN_CANCEL, "Cancel", schedule.name),
            ],
        },
    ]


def listing(rows: Sequence[tuple[ScheduleConfig, dt.datetime, Sequence[PlanItem], str]]) -> View:
    if not rows:
        return Mrkdwn("No schedules."), [
            _section(Mrkdwn("No schedules. Admins add one with `/stop schedule add`."))
        ]
    blocks: Blocks = []
    for schedule, upcoming, plan, source in rows[:MAX_LISTED]:
        stop = [md("{}", i.resource) for i in plan if i.stop]
        blocks.append(
            _section(
                md(
                    "*{}* · `{}` {} · next {}\nSelects {}: would stop {} now ({}) · from {}",
                    schedule.name,
                    schedule.cron,
                    schedule.timezone,
                    when(upcoming),
                    schedule.select.describe(),
                    len(stop),
                    _bounded(Mrkdwn(), stop, sep=", ", limit=2000) or "nothing",
                    source,
                )
            )
        )
    if len(rows) > MAX_LISTED:
        more = len(rows) - MAX_LISTED
        blocks.append(
            _context(md("… and {} more {}.", more, "schedule" if more == 1 else "schedules"))
        )
    return Mrkdwn(counted(len(rows), "schedule")), blocks


def exceptions(items: Sequence[KeepException], now: dt.datetime) -> View:
    if not items:
        return Mrkdwn("No active exceptions."), [_section(Mrkdwn("No active exceptions."))]
    lines = [
        md(
            "• *{}* kept out of `{}` by {} for {} (until {})",
            e.resource,
            e.schedule,
            Person(e.created_by),
            format_duration(e.until - now),
            when(e.until),
        )
        for e in items
    ]
    return Mrkdwn(counted(len(items), "active exception")), line_sections(lines)
