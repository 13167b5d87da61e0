"""'Is anyone using it?': a resource in use at a schedule's warning is asked about (Keep 2h,
Stop anyway) instead of stopped silently; the first answer counts; with none by the run, the
schedule's ``in_use`` default applies and the summary says which. Through signed Slack
requests to the real endpoint, the providers' signals read from the simulators over
loopback, and the answers' store on both backends."""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot import reads
from bot.cli import main
from bot.config import ScheduleConfig
from bot.schedules import PlanItem
from bot.slack import schedule_views as sv
from bot.slack.fake_api import RESPONSE_URL_METHOD, block_actions_body, block_actions_payload
from bot.store import Store, open_store
from bot.text import say
from providers.simulators.common import Fault
from providers.simulators.feldera import FelderaSimulator
from providers.simulators.qovery import QoverySimulator
from providers.simulators.server import SimulatorServer
from tests.slack_harness import ALICE, BOB, CAROL, CHANNEL, Slack, block_texts
from tests.test_cli import Env

DEV_EU = "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01"


def nightly(**extra: Any) -> dict[str, Any]:
    return {
        "name": "nightly",
        "cron": "0 20 * * *",
        "timezone": "Europe/Paris",
        "select": {"resources": ["dev-eu", "spark"]},
        "channel": CHANNEL,
        "warn_before": "15m",
        **extra,
    }


def at_noon(sims: SimulatorServer) -> SimulatorServer:
    """The simulators' clock moved to the next noon UTC: the schedules here fire at 19:00
    UTC, so a test started between their warning and their fire would travel back."""
    now = dt.datetime.fromtimestamp(sims.hub.clock.now(), dt.UTC)
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    sims.hub.clock.advance(
        ((noon if noon > now else noon + dt.timedelta(days=1)) - now).total_seconds()
    )
    return sims


@pytest.fixture
async def slack(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Slack]:
    harness = Slack(at_noon(sims), tmp_path / "stopbot.db", schedules=[nightly()])
    yield harness
    harness.close()


@pytest.fixture
async def stop_by_default(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Slack]:
    harness = Slack(at_noon(sims), tmp_path / "stopbot.db", schedules=[nightly(in_use="stop")])
    yield harness
    harness.close()


def fire_of(slack: Slack, name: str = "nightly") -> dt.datetime:
    engine = slack.stopbot.engine
    return engine.next_fire(engine.schedule(name))


def travel(slack: Slack, when: dt.datetime) -> None:
    slack.sims.hub.clock.advance((when - slack.time.now()).total_seconds())


def qsim(slack: Slack) -> QoverySimulator:
    sim = slack.sims.hub["qovery"]
    assert isinstance(sim, QoverySimulator)
    return sim


async def warning(slack: Slack, deployed_ago: dt.timedelta | None, name: str = "nightly") -> Any:
    """Travel to 14 minutes before the run, dev-eu last deployed ``deployed_ago`` before
    then (None: as seeded, a day before), and wait for the warning."""
    at = fire_of(slack, name) - dt.timedelta(minutes=14)
    if deployed_ago is not None:
        qsim(slack).set_last_deployment(DEV_EU, at - deployed_ago)
    travel(slack, at)
    return await slack.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith(f"{name} stops")
    )


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """Every button's action id and value, and each select menu's action id."""
    return {
        str(e.get("action_id")): str(e.get("value", ""))
        for b in message["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    }


async def summary(slack: Slack, name: str = "nightly") -> dict[str, Any]:
    return await slack.fake.wait_for_message(
        CHANNEL, lambda m: m.get("text", "").startswith(f"{name} run done"), timeout=15
    )


async def answered(slack: Slack, words: str) -> dict[str, Any]:
    call = await slack.fake.wait_for(
        RESPONSE_URL_METHOD, lambda c: words in str(c.args.get("text", ""))
    )
    return call.args


async def test_the_warning_asks_about_a_resource_deployed_recently(slack: Slack) -> None:
    """Deployed 12 minutes before the warning: named with its signal, Keep 2h and Stop
    anyway beside it, and the default said."""
    message = await warning(slack, dt.timedelta(minutes=12))
    at = fire_of(slack)
    assert message["text"].endswith(
        "unless someone skips it. 1 resource in use: keep or stop anyway?"
    )
    text = block_texts(message)
    assert "*Is anyone using it?* With no answer by the run, these are kept." in text
    assert ":construction_worker: *dev-eu*: deployed 12m ago" in text
    value = f"nightly|dev-eu|{at.isoformat()}"
    found = buttons(message)
    assert found[sv.IN_USE_KEEP] == value
    assert found[sv.IN_USE_STOP] == value


async def test_a_deployment_older_than_deployed_within_asks_nothing(slack: Slack) -> None:
    """Deployed 61 minutes before (past the default 60): a silent stop, as before."""
    message = await warning(slack, dt.timedelta(minutes=61))
    assert message["text"].endswith("unless someone skips it.")
    assert sv.IN_USE_KEEP not in buttons(message)
    assert "Is anyone using it?" not in block_texts(message)


async def test_keep_2h_keeps_and_a_second_answer_changes_nothing(slack: Slack) -> None:
    """Keep 2h: said in the channel, the warning redrawn with it kept; a later Stop
    anyway (a double click, another person) is told the first answer; the run keeps it."""
    message = await warning(slack, dt.timedelta(minutes=12))
    value = buttons(message)[sv.IN_USE_KEEP]
    await slack.click_message(sv.IN_USE_KEEP, value, message, ALICE)
    said = await answered(slack, "keeps dev-eu running for 2h")
    assert said["response_type"] == "in_channel"
    assert (
        said["text"]
        == "<@U0ALICE> keeps dev-eu running for 2h (in use): `nightly` will not stop it."
    )
    [card] = [m for m in slack.fake.messages(CHANNEL) if m["ts"] == message["ts"]]
    # Kept 2h from the click, 14 minutes before the run: 1h 46m past it.
    assert "dev-eu: kept by <@U0ALICE> for 1h 46m" in block_texts(card)
    assert sv.IN_USE_KEEP not in buttons(card)
    await slack.click_message(sv.IN_USE_STOP, value, message, BOB)
    refused = await answered(slack, "already answered")
    assert (
        refused["text"] == "<@U0ALICE> already answered for dev-eu: keep it. Nothing was changed."
    )
    await slack.click_message(sv.IN_USE_KEEP, value, message, ALICE)  # a double click
    await slack.fake.wait_for(
        RESPONSE_URL_METHOD,
        lambda c: c.args.get("text", "").startswith("<@U0ALICE> already answered"),
    )
    kept = [m for m in slack.fake.messages(CHANNEL) if "keeps dev-eu running" in m["text"]]
    assert len(kept) == 1  # said once, for the answer that counted
    travel(slack, fire_of(slack))
    done = await summary(slack)
    assert done["text"] == "nightly run done: 1 skipped: kept, 1 stopped"
    assert slack.store.active_exceptions("nightly")[0].created_by == ALICE


async def test_a_slack_retry_of_an_answer_answers_once(slack: Slack) -> None:
    """The same click delivered again (X-Slack-Retry-Num): one answer, audited once."""
    message = await warning(slack, dt.timedelta(minutes=12))
    url = slack.fake.new_response_url(channel=CHANNEL, user=ALICE, message_ts=message["ts"])
    body = block_actions_body(
        block_actions_payload(
            ALICE,
            CHANNEL,
            sv.IN_USE_STOP,
            buttons(message)[sv.IN_USE_STOP],
            response_url=url,
            message=message,
            trigger_id="trigger-in-use",
        )
    )
    await slack.post(body)
    await answered(slack, "is not in use")
    retried = await slack.post(
        body, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    assert retried.status_code == 200
    audit = [e for e in slack.store.audit_log() if e.action == "schedule.in_use_answer"]
    assert [(e.actor, e.detail["answer"]) for e in audit] == [(ALICE, "stop")]
    travel(slack, fire_of(slack))
    done = await summary(slack)
    assert done["text"] == "nightly run done: 2 stopped"
    said = [m for m in slack.fake.messages(CHANNEL) if "is not in use" in m["text"]]
    assert len(said) == 1


async def test_a_keep_answer_alone_keeps_at_the_run(slack: Slack) -> None:
    """The answer is what decides: recorded, its Keep exception never written (a kill
    between the two), the run still keeps the resource and says who kept it."""
    await warning(slack, dt.timedelta(minutes=12))
    fire = fire_of(slack)
    _, won = slack.store.answer_in_use("nightly", fire, "dev-eu", "keep", ALICE)
    assert won and slack.store.active_exceptions("nightly") == []
    travel(slack, fire)
    done = await summary(slack)
    assert done["text"] == "nightly run done: 1 kept: in use, 1 stopped"
    assert "dev-eu (kept by <@U0ALICE>: in use, deployed 12m ago)" in block_texts(done)


async def test_a_snoozed_run_asks_again_at_its_own_warning(slack: Slack) -> None:
    """Snoozed by an hour, the run is warned again at its new time and its signs read
    anew (a deployment 5 minutes before that warning); unanswered, the default keeps it at
    the snoozed run."""
    message = await warning(slack, dt.timedelta(minutes=12))
    fire = fire_of(slack)
    await slack.click_message(sv.SNOOZE, f"nightly|1h|{fire.isoformat()}", message, ALICE)
    await answered(slack, "snoozed")
    later = fire + dt.timedelta(hours=1)
    qsim(slack).set_last_deployment(DEV_EU, later - dt.timedelta(minutes=19))
    travel(slack, later - dt.timedelta(minutes=14))
    again = await slack.fake.wait_for_message(
        CHANNEL,
        lambda m: m.get("text", "").startswith("nightly stops") and m["ts"] != message["ts"],
    )
    assert ":construction_worker: *dev-eu*: deployed 5m ago" in block_texts(again)
    assert buttons(again)[sv.IN_USE_KEEP] == f"nightly|dev-eu|{later.isoformat()}"
    travel(slack, later)
    done = await summary(slack)
    assert done["text"] == "nightly run done: 1 kept: in use, 1 stopped"


async def test_stop_anyway_stops_and_the_summary_says_who(slack: Slack) -> None:
    """Stop anyway: the run stops it, and the summary says on whose word."""
    message = await warning(slack, dt.timedelta(minutes=12))
    await slack.click_message(sv.IN_USE_STOP, buttons(message)[sv.IN_USE_STOP], message, ALICE)
    said = await answered(slack, "is not in use")
    assert said["text"] == "<@U0ALICE> says dev-eu is not in use: `nightly` stops it."
    travel(slack, fire_of(slack))
    done = await summary(slack)
    assert done["text"] == "nightly run done: 2 stopped"
    assert "dev-eu (stopped anyway by <@U0ALICE>: in use, deployed 12m ago)" in block_texts(done)


async def test_with_no_answer_the_default_keep_applies_at_the_fire(slack: Slack) -> None:
    """Nobody answered: ``in_use: keep`` (the default) keeps it, and the summary says why."""
    await warning(slack, dt.timedelta(minutes=12))
    travel(slack, fire_of(slack))
    done = await summary(slack)
    assert done["text"] == "nightly run done: 1 kept: in use, 1 stopped"
    assert "dev-eu (kept: in use, deployed 12m ago; nobody answered)" in block_texts(done)


async def test_with_no_answer_the_default_stop_applies_at_the_fire(
    stop_by_default: Slack,
) -> None:
    """``in_use: stop``: the question says so, and the run stops it anyway."""
    slack = stop_by_default
    message = await warning(slack, dt.timedelta(minutes=12))
    assert "With no answer by the run, these are stopped anyway." in block_texts(message)
    travel(slack, fire_of(slack))
    done = await summary(slack)
    assert done["text"] == "nightly run done: 2 stopped"
    assert "dev-eu (stopped anyway: nobody answered (in use, deployed 12m ago))" in block_texts(
        done
    )


async def test_an_answer_after_the_run_started_changes_nothing(slack: Slack) -> None:
    """A click once the run has started is told so; the run went its own way."""
    message = await warning(slack, dt.timedelta(minutes=12))
    travel(slack, fire_of(slack))
    await summary(slack)
    await slack.click_message(sv.IN_USE_KEEP, buttons(message)[sv.IN_USE_KEEP], message, ALICE)
    said = await answered(slack, "has already started")
    assert said["text"] == "The nightly run has already started: nothing was changed."


@pytest.mark.parametrize(
    ("per_second", "buffered", "sign"),
    [
        (0, 5, "still ingesting (5 input records buffered)"),
        # Nothing buffered: two reads 2 s apart on the bot's clock (the simulators').
        (10, 0, "still ingesting (20 input records in 2 s)"),
    ],
)
async def test_a_feldera_pipeline_still_ingesting_is_asked_about(
    sims: SimulatorServer, tmp_path: Path, per_second: int, buffered: int, sign: str
) -> None:
    """A pipeline with input buffered, or input moving, is in use: its warning names it."""
    feldera = sims.hub["feldera"]
    assert isinstance(feldera, FelderaSimulator)
    feldera.set_input("etl", per_second=per_second, buffered=buffered)
    schedule = {**nightly(), "name": "pipelines", "select": {"resources": ["etl"]}}
    slack = Slack(at_noon(sims), tmp_path / "stopbot.db", schedules=[schedule])
    try:
        message = await warning(slack, None, "pipelines")
        assert f":construction_worker: *etl*: {sign}" in block_texts(message)
        assert sv.IN_USE_KEEP in buttons(message)
    finally:
        slack.close()


async def test_a_sign_that_cannot_be_read_asks_nothing(slack: Slack) -> None:
    """Qovery failing at the warning: no question (nobody is told "in use" on a guess),
    and the run stops as it would have once Qovery answers again."""
    slack.sims.hub.faults.add(
        Fault(api="qovery", kind="status", method="GET", path_contains="/status", count=None)
    )
    message = await warning(slack, dt.timedelta(minutes=12))
    assert sv.IN_USE_KEEP not in buttons(message)
    assert slack.store.in_use_questions("nightly", fire_of(slack)) == []
    slack.sims.hub.faults.clear()
    travel(slack, fire_of(slack))
    done = await summary(slack)
    assert done["text"] == "nightly run done: 2 stopped"


async def test_only_someone_who_may_stop_it_answers(sims: SimulatorServer, tmp_path: Path) -> None:
    """Carol may not stop dev-eu: her Stop anyway is refused and answers nothing; Alice's
    Keep 2h then counts."""
    slack = Slack(
        at_noon(sims),
        tmp_path / "stopbot.db",
        schedules=[nightly()],
        resources={"dev-eu": {"allowed_users": [BOB, ALICE]}},
    )
    try:
        message = await warning(slack, dt.timedelta(minutes=12))
        value = buttons(message)[sv.IN_USE_STOP]
        await slack.click_message(sv.IN_USE_STOP, value, message, CAROL)
        refused = await answered(slack, "cannot decide")
        assert refused["text"].startswith("You cannot decide for dev-eu: ")
        [question] = slack.store.in_use_questions("nightly", fire_of(slack))
        assert question.answer is None
        await slack.click_message(sv.IN_USE_KEEP, value, message, ALICE)
        await answered(slack, "keeps dev-eu running for 2h")
    finally:
        slack.close()


def test_the_question_escapes_what_the_provider_says() -> None:
    """A sign's words from a provider (who deployed) are escaped, never a mention."""
    schedule = ScheduleConfig.model_validate(nightly())
    at = dt.datetime(2026, 12, 4, 19, tzinfo=dt.UTC)
    item = PlanItem(
        resource="dev-eu",
        provider="qovery",
        stop=True,
        in_use=say("deployed 3m ago by {}", "<!channel> & co"),
    )
    _, blocks = sv.warning(schedule, at, [item])
    text = block_texts({"blocks": blocks})
    assert "deployed 3m ago by &lt;!channel&gt; &amp; co" in text
    assert "<!channel>" not in text


# The store of questions, on both backends


class Clock:
    now = dt.datetime(2026, 12, 4, 18, 46, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    location = (
        str(request.getfixturevalue("pg_location"))
        if request.param == "postgresql"
        else str(tmp_path / "stopbot.db")
    )
    opened = open_store(location, clock=Clock())
    yield opened
    opened.close()


FIRE = dt.datetime(2026, 12, 4, 19, 0, tzinfo=dt.UTC)
SIGNAL = [{"kind": "deployed", "at": "2026-12-04T18:34:00+00:00", "by": None, "detail": None}]


def test_a_question_is_asked_once(store: Store) -> None:
    """Asking again (a warning delivered twice) keeps the first question's signals."""
    store.ask_in_use("nightly", FIRE, "dev-eu", SIGNAL)
    store.ask_in_use("nightly", FIRE, "dev-eu", [{"kind": "ingesting", "detail": "x"}])
    [question] = store.in_use_questions("nightly", FIRE)
    assert (question.resource, question.signals, question.answer) == ("dev-eu", SIGNAL, None)
    assert question.fire == FIRE
    assert store.in_use_questions("nightly", FIRE + dt.timedelta(days=1)) == []


def test_the_first_answer_counts(store: Store) -> None:
    """A compare-and-set: the second answer loses and sees the first; audited once."""
    store.ask_in_use("nightly", FIRE, "dev-eu", SIGNAL)
    first, won = store.answer_in_use("nightly", FIRE, "dev-eu", "keep", ALICE)
    assert won is True
    assert first is not None and (first.answer, first.answered_by) == ("keep", ALICE)
    second, won = store.answer_in_use("nightly", FIRE, "dev-eu", "stop", BOB)
    assert won is False
    assert second is not None and (second.answer, second.answered_by) == ("keep", ALICE)
    audit = [e for e in store.audit_log() if e.action == "schedule.in_use_answer"]
    assert [(e.actor, e.detail["answer"]) for e in audit] == [(ALICE, "keep")]


def test_an_answer_to_a_question_never_asked_is_none(store: Store) -> None:
    """No question: nothing answered, nothing recorded."""
    assert store.answer_in_use("nightly", FIRE, "dev-eu", "keep", ALICE) == (None, False)
    assert store.in_use_questions("nightly", FIRE) == []


# The terminal: who the next run would ask about


def test_cli_preview_names_what_the_next_run_would_ask_about(
    sims: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`stopbot schedules --preview nightly`: dev-eu deployed 12 minutes ago would be asked
    about, spark stopped; the default said. Nothing is recorded."""
    env = Env(sims, tmp_path, schedules=[nightly()])
    for key, value in env.vars.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    sim = sims.hub["qovery"]
    assert isinstance(sim, QoverySimulator)
    now = dt.datetime.fromtimestamp(sims.hub.clock.now(), dt.UTC)
    sim.set_last_deployment(DEV_EU, now - dt.timedelta(minutes=12))
    assert main(["schedules", "--preview", "nightly"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("nightly: next run ")
    assert lines[1:] == [
        "RESOURCE  PROVIDER  NEXT RUN",
        "dev-eu    qovery    would ask: in use, deployed 12m ago",
        "spark     okeanos   would stop",
        "1 resource in use: the warning asks about it; unanswered by the run, it is kept "
        "(in_use: keep).",
    ]
    store = open_store(env.db)
    try:
        assert store.audit_log() == []
    finally:
        store.close()


def test_cli_preview_of_an_unknown_schedule_is_a_usage_error(
    sims: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An unknown name: exit 2 and the known ones, no trace."""
    env = Env(sims, tmp_path, schedules=[nightly()])
    for key, value in env.vars.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert main(["schedules", "--preview", "weekly"]) == 2
    assert capsys.readouterr().err == "stopbot: no schedule named 'weekly' (known: nightly)\n"


def preview_env(sims: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    """A working directory whose nightly schedule selects ``PREVIEWED``."""
    env = Env(sims, tmp_path, schedules=[nightly(select={"resources": PREVIEWED})])
    for key, value in env.vars.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return env


PREVIEWED = ["dev-eu", "staging-us", "qa-old", "web-1", "batch-2", "etl", "spark"]


def test_cli_preview_tells_each_resource_as_the_run_would_judge_it(
    sims: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`stopbot schedules --preview nightly` reads statuses and provider locks (one bulk
    read per provider account) and Stopbot locks: a running cluster would stop, a stopped
    one is already stopped, a lock at the provider or in Stopbot skips its resource, and a
    provider answering 500 leaves its resources unknown. Nothing is recorded or stopped."""
    env = preview_env(sims, tmp_path, monkeypatch)
    store = open_store(env.db)
    store.set_lock("web-1", BOB, dt.datetime(2099, 1, 1, tzinfo=dt.UTC), "demo on Friday")
    store.close()
    sims.hub.faults.add(Fault(api="feldera", kind="status", method="GET", count=None, status=500))
    assert main(["schedules", "--preview", "nightly"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("nightly: next run ")
    assert lines[0].endswith(" (statuses and locks as read now)")
    assert lines[1:] == [
        "RESOURCE    PROVIDER  NEXT RUN",
        "dev-eu      qovery    would stop",
        "staging-us  qovery    skipped: locked in qovery by Alice Martin (load test until "
        "Friday); it expires in 3d.",
        "qa-old      qovery    already stopped (STOPPED)",
        "web-1       nova      skipped: locked by U0BOB: demo on Friday",
        "batch-2     nova      skipped: locked in nova (kernel upgrade in progress); only an "
        "admin can stop it.",
        "etl         feldera   status unknown: feldera: the provider failed on its side "
        "(internal error) (HTTP 500): injected fault",
        "spark       okeanos   would stop",
        "Nothing in use: the run stops what it selects without asking.",
    ]
    # In bulk: Qovery's three clusters in two list calls, Nova's two servers in one.
    counts = sims.hub.faults.counts()
    assert (counts["qovery"]["GET"], counts["nova"]["GET"]) == (2, 1)
    assert sims.hub.state()["qovery"]["clusters"][0]["status"] == "DEPLOYED"
    store = open_store(env.db)
    try:
        assert [e.action for e in store.audit_log()] == ["lock.set"]  # the test's own
    finally:
        store.close()


def test_cli_preview_waits_for_no_provider_past_its_bound(
    sims: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A provider that does not answer leaves its resources "status unknown" once the
    read's bound is up (reads.READ_TIMEOUT, made 0.5 s here), not a hung command; the
    other providers' resources are told as read."""
    preview_env(sims, tmp_path, monkeypatch)
    monkeypatch.setattr(reads, "read", functools.partial(reads.read, within=0.5))
    sims.hub.faults.add(Fault(api="okeanos", kind="latency", seconds=5, count=None))
    started = time.monotonic()
    assert main(["schedules", "--preview", "nightly"]) == 0
    assert time.monotonic() - started < 4
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "dev-eu      qovery    would stop"
    assert lines[-2:] == [
        "spark       okeanos   status unknown: okeanos: the provider did not answer in time: "
        "waited 0.5 s",
        "Nothing in use: the run stops what it selects without asking.",
    ]
