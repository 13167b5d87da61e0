"""Sentences as facts (bot/text.py), and how the Slack face writes them (bot/slack/wording.py):
escaped once, mentions only for well-formed ids, cut never inside an entity."""

from __future__ import annotations

import copy
import datetime as dt
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.cli import words
from bot.models import Operation, OpState
from bot.slack.wording import Mrkdwn, code, cut, escape, md, mrkdwn, plain, unescape, when
from bot.text import Command, Person, Text, check_length, say, too_long
from tests.hostile import HOSTILE, live_markup

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC)


def test_escape_touches_only_the_three_characters_slack_reads() -> None:
    """&, < and > become entities; quotes, apostrophes and the rest stay as typed."""
    assert escape('R&D <ok> "it\'s" *x*') == 'R&amp;D &lt;ok&gt; "it\'s" *x*'


@given(st.text())
def test_a_command_text_is_read_back_as_typed(typed: str) -> None:
    """What Slack sends for a typed text (escaped) reads back to exactly that text."""
    assert unescape(escape(typed)) == typed


def test_an_escaped_looking_text_is_unescaped_once() -> None:
    """Typed `&lt;` arrives as `&amp;lt;`: read back as `&lt;`, not as `<`."""
    assert unescape("&amp;lt; &lt;!here&gt;") == "&lt; <!here>"


@pytest.mark.parametrize(
    ("person", "written"),
    [
        ("U0ALICE", "<@U0ALICE>"),
        ("W0GRID1", "<@W0GRID1>"),
        ("S0PLATFORM", "<!subteam^S0PLATFORM>"),
        ("cli:ana", "cli:ana"),
        ("schedule:nightly", "schedule:nightly"),
        ("U0BOB><!channel", "U0BOB&gt;&lt;!channel"),
        ("u0lower", "u0lower"),
    ],
)
def test_only_a_well_formed_id_is_a_mention(person: str, written: str) -> None:
    """A person is mentioned by a Slack id; anything else is written as words."""
    assert mrkdwn(Person(person)) == written


def test_md_escapes_values_and_renders_facts() -> None:
    """The template is ours; each value is escaped, or rendered when it is a fact."""
    text = say("locked by {} ({}); run {}", Person("U0ALICE"), "<!here>", Command("status", "a&b"))
    assert md("*{}*: {}", "R&D", text) == (
        "*R&amp;D*: locked by <@U0ALICE> (&lt;!here&gt;); run `/stop status a&amp;b`"
    )


def test_mrkdwn_added_to_words_escapes_them() -> None:
    assert Mrkdwn("*a*") + "<b>" == "*a*&lt;b&gt;"
    assert "<b>" + Mrkdwn("*a*") == "&lt;b&gt;*a*"
    assert Mrkdwn(", ").join(["<x>", Mrkdwn("*y*")]) == "&lt;x&gt;, *y*"


def test_code_shows_placeholders_and_keeps_one_span() -> None:
    assert code("/stop lock <resource> `x`") == "`/stop lock &lt;resource&gt; 'x'`"


@given(st.text(alphabet="ab&<> ", max_size=40), st.integers(1, 60))
def test_a_cut_never_breaks_an_entity_or_a_construct(typed: str, limit: int) -> None:
    """However it is cut, escaped text plus a mention and a date stays well-formed mrkdwn,
    within the limit, ending with an ellipsis when shortened."""
    text = md("{} {} {}", typed, Person("U0ALICE"), when(NOW))
    shortened = cut(text, limit)
    assert len(shortened) <= max(limit, 1)
    assert live_markup(shortened, {"U0ALICE"}) == []
    assert shortened == text or shortened.endswith("…")


def test_the_cut_the_issue_found_keeps_whole_entities() -> None:
    """`R&D <ok> &` escaped and cut at 22 no longer ends in a half entity."""
    assert cut(escape("R&D <ok> & more"), 22) == "R&amp;D &lt;ok&gt; …"


def test_plain_text_is_capped_not_escaped() -> None:
    assert plain("Stop <dev> & co", 150) == "Stop <dev> & co"
    assert plain("x" * 200, 150) == "x" * 149 + "…"


# -- Text ------------------------------------------------------------------------------------


def test_say_reads_like_a_format_template() -> None:
    text = say("{who} holds {0} for {n:>3}", "dev-eu", who=Person("U1"), n=4)
    assert text == Text(Person("U1"), " holds dev-eu for   4")
    assert str(text) == "U1 holds dev-eu for   4"


def test_a_text_is_stored_as_parts_and_read_back() -> None:
    text = say("denied by {}: {}; run {}", Person("U0CAROL"), "<!channel>", Command("stop", "x"))
    assert Text.from_stored(text.stored()) == text
    assert copy.deepcopy(text) == copy.copy(text) == text


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        ("denied by <@U0CAROL>: <!channel> <@U0EVIL|x>", "denied by U0CAROL: <!channel> U0EVIL"),
        ("needs approval from <!subteam^S0OPS>", "needs approval from S0OPS"),
        ("[1, 2]", "[1, 2]"),
        ('[{"person": "U1", "extra": 1}]', '[{"person": "U1", "extra": 1}]'),
        ("[not json", "[not json"),
    ],
)
def test_rows_written_before_are_read_as_words(stored: str, read: str) -> None:
    """An older row (the core wrote Slack mentions beside user text) is words only: its
    mentions become bare ids, and nothing in it can name someone to a face."""
    text = Text.from_stored(stored)
    assert text == Text(read)
    assert "<@" not in mrkdwn(text)


def test_an_operation_reads_its_detail_from_either_form() -> None:
    """Pydantic reads a stored column, new or old, into a Text."""
    fields = {
        "id": "op",
        "resource": "dev-eu",
        "provider": "qovery",
        "resource_id": "c1",
        "requested_by": "U0BOB",
        "source": "slack",
        "state": OpState.REFUSED,
        "created_at": NOW,
        "updated_at": NOW,
    }
    new = say("denied by {}", Person("U0CAROL"))
    assert Operation(**fields, detail=new.stored()).detail == new
    assert Operation(**fields, detail="denied by <@U0CAROL>").detail == Text("denied by U0CAROL")


def test_each_face_writes_a_command_in_its_own_words() -> None:
    text = say("run {} or {}", Command("status", "dev-eu"), Command("schedule run", "nightly"))
    assert mrkdwn(text) == "run `/stop status dev-eu` or `/stop schedule run nightly`"
    assert words(text) == "run `stopbot status dev-eu` or `/stop schedule run nightly` in Slack"


def test_a_reason_is_capped_and_the_refusal_says_the_limit() -> None:
    assert too_long("A reason", "x" * 500) is None
    assert too_long("A reason", "x" * 5_000_000) == Text(
        "A reason is 500 characters at most (this one has 5,000,000): shorten it."
    )
    with pytest.raises(ValueError, match="500 characters at most"):
        check_length("A reason", "x" * 501)


@pytest.mark.parametrize("typed", HOSTILE)
def test_hostile_words_in_a_sentence_reach_slack_inert(typed: str) -> None:
    """Whatever a sentence quotes, Slack gets its own mention and nothing else live."""
    text = say("locked by {}: {}", Person("U0ALICE"), typed)
    assert live_markup(mrkdwn(text), {"U0ALICE"}) == []


# -- the core writes no face's syntax ----------------------------------------------------------

SLACK_SYNTAX = re.compile(r"<@|<!|`/stop ")
FACES = (
    "bot/slack/",
    "bot/playground/",
    "bot/cli.py",
    "bot/cli_environments.py",
    "bot/cli_names.py",
)


def test_the_core_writes_no_slack_syntax() -> None:
    """No module outside the faces holds a Slack mention, a special mention or a `/stop`
    command: the core says who and what to type, and each face writes it (the terminal
    writes `/stop …` only to send the user to Slack)."""
    assert [face for face in FACES if not (ROOT / face).exists()] == []
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "bot").rglob("*.py"))
        if not str(path.relative_to(ROOT)).startswith(FACES)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SLACK_SYNTAX.search(line)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (
            429,
            "qovery: the provider is limiting requests (too many at once), try again later "
            "(HTTP 429): slow down",
        ),
        (500, "qovery: the provider failed on its side (internal error) (HTTP 500): slow down"),
        (503, "qovery: the provider is unavailable, try again later (HTTP 503): slow down"),
        (None, "qovery: the provider is unavailable, try again later: slow down"),
    ],
)
def test_a_limit_and_a_failure_are_not_both_unavailable(status: int | None, said: str) -> None:
    """429 reads as a limit, 500 as the provider's own failure, 503 as unavailable."""
    from providers.errors import UnavailableError

    assert str(UnavailableError("qovery", "slow down", status_code=status)) == said


def test_counts_are_singular_or_plural() -> None:
    """ "1 resource", "2 resources": never "(s)"."""
    from bot.slack.wording import counted

    assert [counted(n, "approval") for n in (0, 1, 2)] == [
        "0 approvals",
        "1 approval",
        "2 approvals",
    ]
