"""Models made by the thousands share the sets of their field names, and nothing leaks
between them: an instance changed by assignment or copied with an update has its own."""

from __future__ import annotations

import copy
import datetime as dt

from bot.models import Operation, OpState
from providers.base import Resource

NOW = dt.datetime(2026, 12, 6, 22, 0, tzinfo=dt.UTC)


def _op(op_id: str, **more: object) -> Operation:
    return Operation.model_validate(
        {
            "id": op_id,
            "resource": "dev-eu",
            "provider": "qovery",
            "resource_id": "c-1",
            "requested_by": "U1",
            "source": "schedule",
            "state": "submitting",
            "created_at": NOW,
            "updated_at": NOW,
            **more,
        }
    )


def test_instances_given_the_same_fields_share_one_set_of_their_names() -> None:
    a, b = _op("a"), _op("b")
    assert a.model_fields_set is b.model_fields_set
    assert _op("c", reason="end of day").model_fields_set is not a.model_fields_set
    assert Resource(name="x", provider="p", id="1").model_fields_set == {"name", "provider", "id"}


def test_an_assignment_marks_its_own_instance_only() -> None:
    a, b = _op("a"), _op("b")
    a.reason = "end of day"
    assert a.model_fields_set == b.model_fields_set | {"reason"}
    assert "reason" not in b.model_fields_set
    assert "reason" not in _op("c").model_fields_set
    assert a.model_dump(exclude_unset=True)["reason"] == "end of day"
    assert "reason" not in b.model_dump(exclude_unset=True)


def test_a_copy_with_an_update_marks_the_copy_only() -> None:
    a = _op("a")
    c = a.model_copy(update={"owner": "p-1", "state": OpState.ACCEPTED})
    assert "owner" in c.model_fields_set
    assert "owner" not in a.model_fields_set
    assert "owner" not in _op("b").model_fields_set
    assert (c.owner, c.state, a.owner, a.state) == ("p-1", OpState.ACCEPTED, None, "submitting")


def test_a_shared_instance_round_trips_through_dump_and_deepcopy() -> None:
    a = _op("a", reason="night")
    assert Operation.model_validate(a.model_dump()) == a
    again = copy.deepcopy(a)
    assert again == a
    again.owner = "p-2"
    assert "owner" not in a.model_fields_set
