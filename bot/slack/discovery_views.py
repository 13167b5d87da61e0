"""What ``/stop refresh`` answers: each discovered account's refresh, in mrkdwn."""

from __future__ import annotations

from collections.abc import Sequence

from bot.discovery import Refreshed
from bot.slack.wording import Mrkdwn, code, md

__all__ = ["gone_note", "refreshed"]

MOST = 10
"""Resources named per account and kind (new, gone); the rest are counted."""


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MOST])
    return shown + (f" and {len(names) - MOST} more" if len(names) > MOST else "")


def refreshed(results: Sequence[Refreshed]) -> Mrkdwn:
    """One line per account: what it holds now, what is new and what is gone."""
    if not results:
        return md(
            "No provider is discovered: give a provider {} (or a {} filter) in stopbot.yaml.",
            code("discover: true"),
            code("discover:"),
        )
    lines = [Mrkdwn("*Discovery refreshed*")]
    for r in results:
        if r.found is None:
            lines.append(
                md("• *{}*: could not be listed ({}); its last list is kept", r.provider, r.error)
            )
            continue
        line = md("• *{}*: {} resource(s)", r.provider, str(r.found))
        if r.added:
            line = md("{}; new: {}", line, _names(r.added))
        if r.gone:
            line = md(
                "{}; gone at the provider (left lists and schedules): {}", line, _names(r.gone)
            )
        lines.append(line)
    return Mrkdwn("\n").join(lines)


def gone_note(provider: str, gone: Sequence[str]) -> Mrkdwn:
    """Told once to ``discovery.channel`` when a refresh finds resources gone."""
    return md(
        "{} resource(s) gone at *{}* since the last discovery; they left lists and schedules: {}",
        str(len(gone)),
        provider,
        _names(gone),
    )
