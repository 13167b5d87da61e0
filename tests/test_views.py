"""The bot's messages stay inside Block Kit's limits however much there is to show: checked
with the fake Slack's validator, which refuses what Slack refuses (``invalid_blocks``)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from bot.config import NAME_LIMIT, ResourceConfig, ScheduleConfig, Selector
from bot.models import BotLock, Operation, OpState
from bot.schedules import PlanItem
from bot.slack import schedule_views, views
from bot.slack.fake_api.blocks import check_blocks
from bot.slack.wording import md
from bot.text import Text
from providers.base import Phase, Resource, ResourceStatus

NOW = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC)
LONG = "r" * NAME_LIMIT


def test_long_lists_are_packed_into_whole_lines_and_counted() -> None:
    """2,000 lines: at most 45 sections of at most 3,000 characters, no line cut, and the
    lines left out counted exactly."""
    lines = [md("• line {} {}", i, views.when(NOW)) for i in range(2000)]
    sections = views.line_sections(lines)
    check_blocks(sections)
    assert len(sections) == views.MAX_LIST_SECTIONS
    texts = [line for s in sections for line in s["text"]["text"].split("\n")]
    *shown, more = texts
    assert shown == lines[: len(shown)]
    assert more == f"… and {len(lines) - len(shown)} more"
    assert all(len(s["text"]["text"]) <= views.SECTION_LIMIT for s in sections)


def test_a_short_list_is_one_section() -> None:
    assert views.line_sections([md("a"), md("b")]) == [views._section(md("a\nb"))]


@pytest.mark.parametrize("count", [1, 300, 5000])
def test_lists_of_locks_resources_and_stops_are_valid_messages(count: int) -> None:
    locks = [
        BotLock(
            resource=f"{LONG[:-4]}{i:04}",
            owner="U0ALICE",
            reason="x" * 500,
            created_at=NOW,
            expires_at=NOW + dt.timedelta(hours=1),
        )
        for i in range(count)
    ]
    resources = [
        (
            Resource(name=f"res-{i}", provider="qovery", id=str(i)),
            ResourceStatus(
                provider="qovery",
                resource_id=str(i),
                state="DEPLOYED",
                phase=Phase.RUNNING,
                terminal=True,
            ),
            None,
        )
        for i in range(count)
    ]
    ops = [
        Operation(
            id=f"op{i}",
            resource=f"res-{i}",
            provider="qovery",
            resource_id=str(i),
            requested_by="U0BOB",
            source="slack",
            state=OpState.FAILED,
            detail=Text("d" * 800),
            created_at=NOW,
            updated_at=NOW,
        )
        for i in range(count)
    ]
    for _, blocks in [
        views.locks_list(locks, [], NOW),
        views.resources_list(resources, "in qovery"),
        views.history(ops, "of everything"),
    ]:
        check_blocks(blocks)
        assert len(blocks) <= 1 + views.MAX_LIST_SECTIONS


def _schedule(name: str, resources: list[str]) -> ScheduleConfig:
    return ScheduleConfig(
        name=name, cron="0 20 * * 1-5", select=Selector(resources=resources), channel="C0DEV"
    )


def test_a_warning_with_the_longest_names_is_a_valid_message() -> None:
    """Keep menus carry the schedule and resource names in each option's value, which Slack
    limits to 150 characters."""
    names = [f"{LONG[:-3]}{i:03}" for i in range(30)]
    schedule = _schedule("s" * NAME_LIMIT, names)
    plan = [PlanItem(resource=n, provider="qovery", stop=True) for n in names]
    _, blocks = schedule_views.warning(schedule, NOW, plan)
    check_blocks(blocks)
    menus = [e for b in blocks if b["type"] == "actions" for e in b["elements"] if "options" in e]
    values = [o["value"] for m in menus for o in m["options"]]
    assert len(menus) == schedule_views.MAX_KEEP_MENUS
    # 22 characters of JSON, two 60-character names, the longest choice ("next"): under 150
    assert max(len(v) for v in values) == 146


def test_a_listing_of_many_schedules_is_a_valid_message() -> None:
    names = [f"res-{i}" for i in range(400)]
    plan = [PlanItem(resource=n, provider="qovery", stop=True) for n in names]
    rows = [(_schedule(f"nightly-{i}", names), NOW, plan, "Slack") for i in range(60)]
    text, blocks = schedule_views.listing(rows)
    check_blocks(blocks)
    assert text == "60 schedules"
    assert blocks[-1]["elements"][0]["text"] == "… and 15 more schedules."


def test_names_longer_than_the_limit_are_refused_in_the_config() -> None:
    with pytest.raises(ValidationError, match="at most 60 characters"):
        ResourceConfig(name="r" * (NAME_LIMIT + 1), provider="qovery", id="c1")
    with pytest.raises(ValidationError, match="at most 60 characters"):
        _schedule("s" * (NAME_LIMIT + 1), ["dev-eu"])
