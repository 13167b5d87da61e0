"""Block Kit for savings: ``/stop savings``, the weekly digest, the line a run's summary
ends with. Every money figure is called an estimate and its rate's source is shown."""

from __future__ import annotations

from bot.rates import Rate
from bot.savings import Expected, Line, Money, Report
from bot.slack.views import Blocks, View, _context, _header, _section, line_sections
from bot.slack.wording import Mrkdwn, md, mrkdwn, when
from bot.text import Person

__all__ = ["expected_line", "money", "rate_words", "report"]

MAX_LINES = 40  # resources listed before the rest is counted (a message holds 50 blocks)


def money(found: Money) -> str:
    """``3.00 EUR``, a range ``6.00 to 12.00 USD``, currencies side by side; ``-`` for none."""
    if not found:
        return "-"
    return ", ".join(
        f"{lo:,.2f} {c}" if round(lo, 2) == round(hi, 2) else f"{lo:,.2f} to {hi:,.2f} {c}"
        for c, (lo, hi) in sorted(found.items())
    )


def rate_words(rate: Rate | None) -> Mrkdwn:
    if rate is None:
        return Mrkdwn("no rate: hours only")
    figure = f"{rate.low:.2f}" if not rate.is_range else f"{rate.low:.2f} to {rate.high:.2f}"
    return md("{} {} an hour, {}", figure, rate.currency, rate.source)


def _hours(line: Line) -> str:
    return f"{line.hours:,.1f} h"


def _resource_line(line: Line) -> Mrkdwn:
    return md(
        "• *{}*{} · {} stopped · ≈ {} ({})",
        line.name,
        " (stopped now)" if line.stopped_now else "",
        _hours(line),
        money(line.money),
        rate_words(line.rate),
    )


def report(found: Report, period: str, *, title: str = "Savings") -> View:
    """``found`` over ``period`` ("the last 30d"): by resource, schedule and person."""
    total = found.total
    text = md(
        "{} of {}, {}: {} stopped, ≈ {} (estimate)",
        title,
        found.selection,
        period,
        _hours(total),
        money(total.money),
    )
    blocks: Blocks = [_header(f"{title}: {found.selection}, {period}")]
    if not found.resources:
        blocks.append(_section(Mrkdwn("Nothing was stopped by Stopbot in that period.")))
        return text, blocks
    blocks.append(
        _section(md("*{} stopped*, estimated savings *≈ {}*", _hours(total), money(total.money)))
    )
    blocks += line_sections([_resource_line(x) for x in found.resources], most=MAX_LINES)
    groups = []
    if found.schedules:
        groups.append(
            md(
                "*By schedule:* {}",
                Mrkdwn("; ").join(
                    md("{} {} (≈ {})", s.name, _hours(s), money(s.money))
                    for s in found.schedules[:20]
                ),
            )
        )
    if found.people:
        groups.append(
            md(
                "*By person:* {}",
                Mrkdwn("; ").join(
                    md("{} {} (≈ {})", Person(p.name), _hours(p), money(p.money))
                    for p in found.people[:20]
                ),
            )
        )
    blocks += line_sections(groups, most=2)
    blocks.append(
        _context(
            md(
                "Estimates: hours stopped times each resource's rate while running, from {} "
                "to {}.{}",
                when(found.since),
                when(found.until),
                md(" No rate (hours only): {}.", ", ".join(found.unrated[:20]))
                if found.unrated
                else Mrkdwn(),
            )
        )
    )
    return text, blocks


def expected_line(expected: Expected) -> Mrkdwn:
    """What a run's summary ends with: what it is expected to save until the next start."""
    figure = money(expected.money)
    sources = "; ".join(expected.sources)
    unrated = md(", {} without a rate", expected.unrated) if expected.unrated else Mrkdwn()
    if expected.until is not None and expected.hours is not None:
        return md(
            ":moneybag: Expected to save ≈ {} until {} ({:.1f} h, {} resource(s){}; estimate: {})",
            figure,
            when(expected.until),
            expected.hours,
            expected.resources,
            unrated,
            mrkdwn(sources) if sources else Mrkdwn("no rates"),
        )
    return md(
        ":moneybag: Expected to save ≈ {} an hour while stopped ({} resource(s){}; estimate: {})",
        figure,
        expected.resources,
        unrated,
        mrkdwn(sources) if sources else Mrkdwn("no rates"),
    )
