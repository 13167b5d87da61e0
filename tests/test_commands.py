"""The /stop grammar, and the documentation covering every command."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.cli import build_parser
from bot.slack import commands
from bot.slack.commands import (
    Help,
    History,
    ListResources,
    SavingsCommand,
    Status,
    StopCommand,
    UsageError,
    parse,
)

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Help()),
        ("help", Help()),
        ("  HELP ", Help()),
        ("status dev-eu", Status("dev-eu")),
        ("list", ListResources()),
        ("list nova", ListResources("nova")),
        ("list tag:env=dev", ListResources("tag:env=dev")),
        ("history", History()),
        ("history etl", History("etl")),
        ("dev-eu", StopCommand("dev-eu")),
        ("qovery:0b9e-1", StopCommand("qovery:0b9e-1")),
        ("etl --force", StopCommand("etl", force=True)),
        ("etl --force nightly savings", StopCommand("etl", force=True, reason="nightly savings")),
        (
            'dev-eu "costs too much" --force',
            StopCommand("dev-eu", force=True, reason="costs too much"),
        ),
        ("dev-eu it's late", StopCommand("dev-eu", reason="it's late")),
        (
            "dev-eu the --verbose flag broke it",
            StopCommand("dev-eu", reason="the --verbose flag broke it"),
        ),
    ],
)
def test_parse(text: str, expected: object) -> None:
    """Each form of the grammar parses to its command."""
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("status", "Usage: `/stop status &lt;resource&gt;` (one resource name)."),
        ("status a b", "Usage: `/stop status &lt;resource&gt;` (one resource name)."),
        ("list a b", "Usage: `/stop list [provider | tag:key=value]`."),
        ("list tag:env", "A tag filter looks like `tag:key=value`, e.g. `tag:env=dev`."),
        ("history a b", "Usage: `/stop history [resource]`."),
        (
            "--force dev-eu",
            "`--force` is not a resource. Usage: `/stop &lt;resource&gt; [--force] [reason…]`.",
        ),
        (
            "dev-eu --now",
            "Unknown option `--now`. The options are `--force` and `--override-lock`.",
        ),
        (
            "lock dev-eu",
            "Usage: `/stop lock &lt;resource&gt; &lt;duration&gt; [reason…]`, e.g. `/stop lock dev-eu 4h demo this afternoon`.",
        ),
        (
            "lock dev-eu soon",
            "'soon' is not a duration: use a number and a unit, like 30m, 4h, 3d or 1h30m. Usage: `/stop lock &lt;resource&gt; &lt;duration&gt; [reason…]`.",
        ),
        (
            "lock dev-eu 99999999999999w",
            "'99999999999999w' is not a duration Stopbot takes: give at most 100 years. Usage: `/stop lock &lt;resource&gt; &lt;duration&gt; [reason…]`.",
        ),
        (
            "wake dev-eu for",
            "Usage: `/stop wake &lt;resource&gt; [for &lt;duration&gt;] [reason…]`: a duration after `for`, e.g. `2h`.",
        ),
        ("leases end", "Usage: `/stop leases` or `/stop leases end &lt;resource&gt;`."),
        ("unlock", "Usage: `/stop unlock &lt;resource&gt; [--force]`."),
        ("unlock a b", "Usage: `/stop unlock &lt;resource&gt; [--force]`."),
        ("locks now", "Usage: `/stop locks` (no arguments)."),
    ],
)
def test_malformed_input_says_what_was_expected(text: str, message: str) -> None:
    """Malformed input raises a usage error with the expected form, in mrkdwn (the
    grammar's placeholders escaped, so Slack shows them)."""
    with pytest.raises(UsageError) as info:
        parse(text)
    assert str(info.value) == message


def test_readme_documents_every_slash_subcommand_and_cli_command() -> None:
    """The README names every /stop subcommand and every stopbot command."""
    for word in sorted(commands.RESERVED):
        assert f"`/stop {word}" in README
    subparsers = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in subparsers:
        assert f"`stopbot {name}" in README, name


@given(st.text())
def test_words_split_as_shlex_does(text: str) -> None:
    """The fast path for text without quotes or backslashes splits exactly as shlex."""
    try:
        expected = shlex.split(text)
    except ValueError:
        expected = text.split()
    assert commands._words(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("savings", SavingsCommand()),
        ("savings dev 7d", SavingsCommand("dev", "7d")),
        ("savings month web-1", SavingsCommand("web-1", "month")),
        ("savings tag:team=data 30d", SavingsCommand("tag:team=data", "30d")),
    ],
)
def test_savings_grammar(text: str, expected: SavingsCommand) -> None:
    """`/stop savings` takes a resource, env or tag and a period, in either order."""
    assert parse(text) == expected


def test_savings_grammar_refuses_two_of_a_kind() -> None:
    """Two selections or two periods are a usage error that shows the grammar."""
    for text in ("savings dev web-1", "savings 7d 30d"):
        with pytest.raises(UsageError, match="/stop savings"):
            parse(text)
