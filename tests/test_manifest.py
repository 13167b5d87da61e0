"""The app manifest: a valid Slack manifest that declares what the bot really uses."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from bot.slack import commands
from bot.slack.server import EVENTS
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parent.parent


def manifest() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "app-manifest.yml").read_text())


def test_manifest_declares_stop_command_interactivity_and_socket_mode() -> None:
    """/stop, interactivity and Socket Mode are on; scopes are exactly what the bot calls."""
    m = manifest()
    assert [c["command"] for c in m["features"]["slash_commands"]] == ["/stop"]
    assert m["settings"]["interactivity"]["is_enabled"] is True
    assert m["settings"]["socket_mode_enabled"] is True
    assert m["oauth_config"]["scopes"]["bot"] == [
        "commands",
        "chat:write",
        "users:read",
        "usergroups:read",
        "channels:history",
        "groups:history",
        "im:write",
        "im:history",
    ]


def test_manifest_has_the_shape_of_slacks_own_example() -> None:
    """Top-level sections and key names match a manifest Slack's own template ships."""
    example = json.loads(
        shared_path("slack", "manifest.bolt_python_starter_template.json").read_text()
    )
    m = manifest()
    assert set(m) <= set(example) | {"display_information"}
    assert m["_metadata"] == example["_metadata"]
    assert set(m["settings"]) <= set(example["settings"])
    assert set(m["features"]["bot_user"]) == set(example["features"]["bot_user"])
    for command in m["features"]["slash_commands"]:
        assert set(example["features"]["slash_commands"][0]) <= set(command)


def test_usage_hint_matches_the_grammar() -> None:
    """Every subcommand the parser knows is in the manifest's usage hint and the help text."""
    hint = manifest()["features"]["slash_commands"][0]["usage_hint"]
    for word in sorted(commands.RESERVED):
        assert word in hint
        assert f"/stop {word}" in commands.HELP


def test_manifest_declares_the_home_tab_and_its_event() -> None:
    """The Home tab is on and app_home_opened subscribed, the one event the endpoint takes
    (bot/slack/server.py EVENTS), as Slack's own template declares them."""
    m = manifest()
    example = json.loads(
        shared_path("slack", "manifest.bolt_python_starter_template.json").read_text()
    )
    assert set(m["features"]["app_home"]) == set(example["features"]["app_home"])
    assert m["features"]["app_home"]["home_tab_enabled"] is True
    assert m["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert set(m["settings"]["event_subscriptions"]["bot_events"]) == set(EVENTS)
