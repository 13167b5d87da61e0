"""User and provider text reaches Slack inert: every view rendered with hostile text, and the
paths where it was seen live (the progress message, the channel's approval request, its
update after a Deny, a run's summary), end to end through the real endpoint."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.config import ScheduleConfig, Selector
from bot.locks import LockVerdict
from bot.models import BotLock, KeepException, Operation, OpState, RunItem, ScheduleRun, Transition
from bot.schedules import Outcome, PlanItem, RunReport
from bot.slack import commands, schedule_views, views
from bot.slack.app import SlackBot
from bot.slack.fake_api.blocks import check_blocks
from bot.slack.wording import md
from bot.text import Person, Text, say
from bot.workflow import Preview
from providers.base import Phase, ProviderLock, Resource, ResourceStatus
from providers.simulators.server import SimulatorServer
from tests.hostile import HOSTILE, live_markup, live_markup_in_calls, mrkdwn_texts
from tests.slack_harness import ADMIN, ALICE, BOB, CAROL, CHANNEL, Slack

NOW = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC)
PEOPLE = {BOB, ALICE, ADMIN, CAROL}


def _op(hostile: str, state: OpState = OpState.FAILED, **fields: Any) -> Operation:
    return Operation(
        id="op1",
        resource=f"dev-eu{hostile}",
        provider="qovery",
        resource_id=hostile,
        requested_by=BOB,
        source="slack",
        reason=hostile,
        override_lock=True,
        state=state,
        detail=say("denied by {}: {}", Person(CAROL), hostile),
        provider_state=hostile,
        created_at=NOW,
        updated_at=NOW,
        finished_at=NOW,
        expires_at=NOW,
        **fields,
    )


def _views(hostile: str) -> dict[str, Callable[[], Any]]:
    """Every view of the bot, each fed ``hostile`` wherever a person or a provider writes."""
    resource = Resource(name="dev-eu", provider="qovery", id=hostile, tags={"env": hostile})
    status = ResourceStatus(
        provider="qovery",
        resource_id=hostile,
        state=hostile,
        phase=Phase.FAILED,
        terminal=True,
        message=hostile,
    )
    plock = ProviderLock(owner=hostile, reason=hostile, locked_at=NOW, ttl=dt.timedelta(days=1))
    block = BotLock(
        resource="dev-eu",
        owner=ALICE,
        reason=hostile,
        created_at=NOW,
        expires_at=NOW + dt.timedelta(hours=1),
    )
    preview = Preview(
        operation=_op(hostile, OpState.AWAITING_CONFIRMATION),
        resource=resource,
        status=status,
        status_error=hostile,
        provider_lock=plock,
        bot_lock=block,
        notes=[Text(hostile), say("locked in qovery by {}", hostile)],
        blocking_lock=LockVerdict(blocked=True, reason=Text(hostile), owner=hostile),
    )
    unknown_lock = preview.model_copy(update={"provider_lock": None, "lock_error": hostile})
    refused = preview.model_copy(update={"operation": _op(hostile, OpState.REFUSED)})
    timeline = [
        Transition(operation_id="op1", at=NOW, state="accepted", message=Text(hostile)),
        Transition(operation_id="op1", at=NOW, state="in_progress", provider_state=hostile),
    ]
    schedule = ScheduleConfig(
        name="nightly", cron="0 20 * * 1-5", select=Selector(tags={"env": hostile})
    )
    plan = [
        PlanItem(resource="dev-eu", provider="qovery", stop=True),
        PlanItem(
            resource="web-1",
            provider="nova",
            stop=False,
            outcome=Outcome.LOCKED,
            detail=say("locked by {}: {}", Person(ALICE), hostile),
        ),
        PlanItem(
            resource="spark",
            provider="okeanos",
            stop=False,
            outcome=Outcome.ALREADY,
            detail=Text(hostile),
        ),
        PlanItem(
            resource="etl",
            provider="feldera",
            stop=False,
            outcome=Outcome.UNKNOWN,
            detail=say("status unknown: {}", hostile),
        ),
    ]
    run = ScheduleRun(
        id="r1", schedule="nightly", fire_time=NOW, kind="cron", status="done", reason=None
    )
    report = RunReport(
        run=run,
        schedule=schedule,
        items=[
            RunItem(run_id="r1", resource="web-1", outcome=Outcome.LOCKED, detail=Text(hostile)),
            RunItem(run_id="r1", resource="etl", outcome=Outcome.FAILED, detail=Text(hostile)),
            RunItem(run_id="r1", resource="spark", outcome=None, detail=Text(hostile)),
        ],
        elapsed=dt.timedelta(minutes=3),
    )
    kept = KeepException(
        schedule="nightly", resource="dev-eu", until=NOW, created_by=ALICE, created_at=NOW
    )
    op = _op(hostile)
    return {
        "message": lambda: views.message(md("{}", hostile)),
        "confirmation": lambda: views.confirmation(preview, NOW),
        "confirmation, lock unknown": lambda: views.confirmation(unknown_lock, NOW),
        "decided": lambda: views.decided(refused),
        "approval_request": lambda: views.approval_request(op, md("{}", hostile), [CAROL], NOW),
        "approval_outcome": lambda: views.approval_outcome(op, md("Denied: {}", hostile)),
        "deny_modal": lambda: views.deny_modal(op),
        "deny_refused": lambda: views.deny_refused(md("{}", hostile)),
        "release_request": lambda: views.release_request(
            "dev-eu", BOB, md("lock ({})", hostile), "{}", provider=True
        ),
        "lock_warning": lambda: views.lock_warning(block),
        "locks_list": lambda: views.locks_list(
            [block], [(resource, plock)], NOW, [(hostile, [hostile], hostile)]
        ),
        "progress": lambda: views.progress(op, timeline, status),
        "status": lambda: views.status(resource, status, hostile, plock, block, NOW),
        "status, lock unknown": lambda: views.status(
            resource, status, hostile, None, block, NOW, lock_error=hostile
        ),
        "resources_list": lambda: views.resources_list([(resource, status, ALICE)], hostile),
        "history": lambda: views.history([op], hostile),
        "plan_text": lambda: schedule_views.plan_text(plan),
        "warning": lambda: schedule_views.warning(schedule, NOW, plan),
        "summary": lambda: schedule_views.summary(report),
        "drift": lambda: schedule_views.drift(schedule, "dev-eu", hostile),
        "run_confirmation": lambda: schedule_views.run_confirmation(schedule, plan),
        "dry_run": lambda: schedule_views.dry_run(schedule, plan),
        "listing": lambda: schedule_views.listing([(schedule, NOW, plan, hostile)]),
        "exceptions": lambda: schedule_views.exceptions([kept], NOW),
        "help": lambda: commands.HELP,
        "answer": lambda: SlackBot.command_answer(f"lock dev-eu 4x {hostile}"),
    }


def test_every_view_is_covered() -> None:
    """The test below renders each builder the view modules export."""
    exported = {
        name
        for module in (views, schedule_views)
        for name in module.__all__
        if callable(getattr(module, name)) and name not in {"when", "fire_value", "read_fire_value"}
    }
    assert exported <= set(_views(""))


@pytest.mark.parametrize("hostile", HOSTILE)
def test_every_view_renders_hostile_text_inert(hostile: str) -> None:
    """With hostile text in every field a person or a provider fills, each view has no live
    markup but its own mentions and dates, and stays within Block Kit's limits."""
    for name, build in _views(hostile).items():
        rendered = build()
        texts = list(mrkdwn_texts(rendered if isinstance(rendered, dict) else _as_args(rendered)))
        assert texts, name
        for text in texts:
            assert live_markup(text, PEOPLE) == [], (name, text)
        if isinstance(rendered, tuple):
            check_blocks(rendered[1])


def _as_args(rendered: Any) -> Any:
    if isinstance(rendered, tuple):
        return {"text": rendered[0], "blocks": rendered[1]}
    return {"text": rendered}


@pytest.mark.parametrize("hostile", ["R&D <ok> & " * 400, "<!channel>" * 700])
def test_views_cut_to_their_limits_keep_whole_entities(hostile: str) -> None:
    """Text long enough to be cut at each Block Kit limit never leaves half an entity or a
    broken <…> behind."""
    for name, build in _views(hostile).items():
        rendered = build()
        for text in mrkdwn_texts(rendered if isinstance(rendered, dict) else _as_args(rendered)):
            assert live_markup(text, PEOPLE) == [], (name, text[-40:])


def test_help_and_usage_show_their_placeholders() -> None:
    """`<resource>`, `<duration>`, `<cron>`…: shown (escaped), not read as links."""
    answers = [commands.HELP, commands.SCHEDULE_USAGE]
    for text in ["status", "lock", "lock dev-eu 4q", "unlock", "-x", "dev --y", "schedule add"]:
        with pytest.raises(commands.UsageError) as info:
            commands.parse(text)
        answers.append(info.value.message)
    for answer in answers:
        assert live_markup(answer) == [], answer
    assert "`/stop lock &lt;resource&gt; &lt;duration&gt; [reason…]`" in commands.HELP


def test_history_title_has_no_stray_asterisks() -> None:
    """`/stop history` with no resource: a bold "Latest stops", not "*Latest stops *"."""
    text, blocks = views.history([_op("")], "")
    assert (text, blocks[0]["text"]["text"]) == ("Latest stops", "*Latest stops*")
    assert views.history([], "")[0] == "No stops recorded."


# -- end to end ------------------------------------------------------------------------------


@pytest.fixture
async def guarded(sims: SimulatorServer, tmp_path: Any) -> Any:
    """dev-eu needs Carol's approval, asked in the channel."""
    harness = Slack(
        sims, tmp_path / "db", resources={"dev-eu": {"approval": {"approvers": [CAROL]}}}
    )
    yield harness
    harness.close()


HOSTILE_REASON = "<!channel> <@U0EVIL> <https://evil.example|click> R&D"


def _inert(slack: Slack) -> None:
    assert live_markup_in_calls(slack.fake.calls(), PEOPLE) == []


async def test_a_stop_reason_reaches_the_progress_message_inert(slack: Slack) -> None:
    """A reason typed with mentions and a link shows as typed in the confirmation and the
    public progress message (Slack's escaped text read back, escaped once)."""
    await slack.ask(f"web-1 {HOSTILE_REASON}")
    op_id, ts = slack.confirmation()
    op = slack.store.get_operation(op_id)
    assert op is not None and op.reason == HOSTILE_REASON
    await slack.click(views.CONFIRM, op_id, ts)
    final = await slack.final_message()
    assert "&lt;!channel&gt; &lt;@U0EVIL&gt; &lt;https://evil.example|click&gt; R&amp;D" in (
        json.dumps(final["blocks"])
    )
    _inert(slack)


async def test_an_override_reason_reaches_the_progress_message_inert(slack: Slack) -> None:
    """An admin's override reason is announced on the public message, escaped."""
    slack.store.set_lock("web-1", ALICE, slack.time.now() + dt.timedelta(hours=1), "<!here>")
    await slack.ask(f"web-1 --override-lock {HOSTILE_REASON}", user=ADMIN)
    op_id, ts = slack.confirmation(user=ADMIN)
    await slack.click(views.CONFIRM, op_id, ts, user=ADMIN)
    final = await slack.final_message()
    assert "overridden by <@U0ADMIN> (admin): &lt;!channel&gt;" in json.dumps(final["blocks"])
    _inert(slack)


async def test_the_approval_request_and_its_update_after_deny_are_inert(guarded: Slack) -> None:
    """The channel's approval request quotes the reason escaped; the Deny modal's reason
    (typed raw) is escaped in the updated request and in the requester's DM."""
    await guarded.ask(f"dev-eu {HOSTILE_REASON}")
    op_id, ts = guarded.confirmation()
    await guarded.click(views.CONFIRM, op_id, ts)
    request = await guarded.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("Approval needed")
    )
    await guarded.click_message(views.DENY, op_id, request, CAROL)
    opened = await guarded.fake.wait_for("views.open", lambda c: True)
    view = opened.response["view"]  # type: ignore[index]
    response = await guarded.submit_view(
        view, CAROL, {"reason": {"reason": {"type": "plain_text_input", "value": HOSTILE_REASON}}}
    )
    assert response.status_code == 200
    updated = await guarded.fake.wait_for(
        "chat.update", lambda c: "Denied by" in c.args.get("text", "")
    )
    assert updated.args["text"].endswith(
        "Denied by <@U0CAROL>: &lt;!channel&gt; &lt;@U0EVIL&gt; "
        "&lt;https://evil.example|click&gt; R&amp;D"
    )
    told = await guarded.fake.wait_for(
        "chat.postMessage",
        lambda c: c.args.get("channel") == BOB and "was denied by" in c.args.get("text", ""),
    )
    assert "denied by <@U0CAROL>: &lt;!channel&gt;" in told.args["text"]
    _inert(guarded)


def _hours_away(hours: int) -> str:
    """A daily cron ``hours`` from now in Paris: its warning is never due at start."""
    paris = dt.datetime.now(ZoneInfo("Europe/Paris"))
    return f"0 {(paris.hour + hours) % 24} * * *"


NIGHTLY = {
    "name": "nightly",
    "cron": _hours_away(3),
    "timezone": "Europe/Paris",
    "select": {"resources": ["dev-eu", "spark"]},
    "channel": CHANNEL,
    "warn_before": "15m",
}


@pytest.fixture
async def scheduled(sims: SimulatorServer, tmp_path: Any) -> Any:
    harness = Slack(sims, tmp_path / "db", schedules=[NIGHTLY])
    yield harness
    harness.close()


async def test_lock_reasons_reach_the_warning_and_the_run_summary_inert(scheduled: Slack) -> None:
    """A Stopbot lock's reason (typed in /stop lock) and a Qovery lock's owner and reason
    (the provider's words) are quoted escaped in the warning and the summary."""
    answer = await scheduled.ask(f"lock spark 1d {HOSTILE_REASON}", user=ALICE)
    assert answer.args["text"].startswith(":lock: Locked spark")
    scheduled.sims.hub["qovery"].set_lock(
        "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01", owner="<!here>", reason=HOSTILE_REASON
    )
    engine = scheduled.stopbot.engine
    fire = engine.next_fire(engine.schedule("nightly"))
    scheduled.sims.hub.clock.advance((fire - scheduled.time.now()).total_seconds() - 600)
    warned = await scheduled.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("nightly stops")
    )
    assert "locked by <@U0ALICE>: &lt;!channel&gt;" in json.dumps(warned["blocks"])
    scheduled.sims.hub.clock.advance(600)
    done = await scheduled.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith("nightly run done")
    )
    summary = json.dumps(done["blocks"])
    assert "locked in qovery by &lt;!here&gt; (&lt;!channel&gt; &lt;@U0EVIL&gt;" in summary
    _inert(scheduled)
