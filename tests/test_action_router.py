"""The one Bolt listener behind every button: which action ids it takes, and where to."""

from __future__ import annotations

import pytest

from bot.slack.app import ActionRouter


async def confirm() -> None: ...


async def keep() -> None: ...


def router() -> ActionRouter:
    routes = ActionRouter()
    routes.add("stop_confirm", confirm)
    routes.add("schedule_keep:", keep, prefix=True)
    return routes


@pytest.mark.parametrize(
    ("action_id", "expected"),
    [
        ("stop_confirm", confirm),
        ("schedule_keep:dev-eu", keep),
        ("stop_confirmed", None),  # exact ids match whole
        ("xstop_confirm", None),
        ("schedule_keep", None),  # a prefix needs what follows it
        ("unknown", None),
    ],
)
def test_pattern_and_lookup_agree(action_id: str, expected: object) -> None:
    """Bolt sends a click to the router when its pattern matches; the lookup then finds the
    same listener, and ids the bot does not know match nothing (Bolt answers 404)."""
    routes = router()
    assert routes.find(action_id) is expected
    assert (routes.pattern().search(action_id) is not None) == (expected is not None)


def test_an_action_id_is_routed_once() -> None:
    routes = router()
    with pytest.raises(ValueError, match="two listeners for the action 'stop_confirm'"):
        routes.add("stop_confirm", keep)
