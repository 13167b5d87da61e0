"""The policy judges a whole stop request (who, what, why, when, through a lock, from where)
and answers with facts: allowed and on what grounds, the approval it needs, or refused by
which rule. User groups are known from the configuration, never from the look of an id."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from bot.config import StopbotConfig, parse_config
from bot.policy import (
    ApprovalNeeded,
    Decision,
    Grounds,
    Outcome,
    OverrideRefused,
    Policy,
    StopRequest,
)
from bot.slack.wording import mrkdwn
from bot.text import Text
from providers.simulators.samples import sample_config

ADMIN, ALICE, BOB, CAROL = "U0ADMIN", "U0ALICE", "U0BOB", "U0CAROL"
AT = dt.datetime(2027, 1, 11, 20, 0, tzinfo=dt.UTC)


def config(resources: dict[str, dict[str, Any]] | None = None, **overrides: Any) -> StopbotConfig:
    document = sample_config("http://127.0.0.1:9")
    for resource in document["resources"]:
        resource.update((resources or {}).get(resource["name"], {}))
    document.update({"admins": [ADMIN], **overrides})
    return parse_config(document, "test", env={})


def policy(
    resources: dict[str, dict[str, Any]] | None = None,
    groups: dict[str, frozenset[str]] | None = None,
    **overrides: Any,
) -> Policy:
    async def members(group: str) -> frozenset[str]:
        return (groups or {}).get(group, frozenset())

    return Policy(config(resources, **overrides), members)


async def judge(p: Policy, who: str, name: str = "dev-eu", **request: Any) -> Decision:
    source = request.pop("source", "slack")
    return await p.judge(StopRequest(who, p.config.resource(name), source, **request))


async def test_the_rule_that_allowed_or_refused_is_in_the_decision() -> None:
    """Admin, the resource's own rule, the global rule, no rule: each decision names it."""
    p = policy({"dev-eu": {"allowed_users": [ALICE]}}, allowed_users=[BOB])
    assert [
        (d.outcome, d.grounds)
        for d in [
            await judge(p, ADMIN),
            await judge(p, ALICE),
            await judge(p, BOB),
            await judge(p, BOB, "spark"),
            await judge(p, ALICE, "spark"),
        ]
    ] == [
        (Outcome.ALLOWED, Grounds.ADMIN),
        (Outcome.ALLOWED, Grounds.OWN_RULE),
        (Outcome.REFUSED, Grounds.OWN_RULE),
        (Outcome.ALLOWED, Grounds.GLOBAL_RULE),
        (Outcome.REFUSED, Grounds.GLOBAL_RULE),
    ]
    refused = await judge(p, BOB)
    assert not refused.allowed
    assert str(refused.reason) == (
        "you are not allowed to stop dev-eu (dev-eu's own rule); ask an admin to add you"
    )
    unrestricted = await judge(policy(), CAROL)
    assert (unrestricted.grounds, str(unrestricted.reason)) == (
        Grounds.UNRESTRICTED,
        "no restriction configured",
    )


async def test_a_protected_resource_needs_approval_from_whom_and_until_when() -> None:
    """A resource with an approval rule: allowed once approved, by how many, by whom
    (users and groups apart), and until when, counted from the request."""
    p = policy(
        {
            "dev-eu": {
                "approval": {
                    "approvers": [CAROL],
                    "approver_groups": ["platform"],
                    "min_approvals": 2,
                    "expires_after": "45m",
                }
            }
        }
    )
    decision = await judge(p, BOB, at=AT)
    assert decision.allowed
    assert (decision.outcome, decision.grounds) == (Outcome.NEEDS_APPROVAL, Grounds.UNRESTRICTED)
    assert decision.approval == ApprovalNeeded(
        min_approvals=2,
        approvers=(CAROL,),
        groups=("platform",),
        expires_after=dt.timedelta(minutes=45),
        expires_at=AT + dt.timedelta(minutes=45),
    )
    assert (await judge(p, BOB, "spark")).outcome == Outcome.ALLOWED


async def test_only_a_schedule_s_own_request_is_allowed_as_a_schedule() -> None:
    """A schedule's fire is allowed where its resources are restricted; the same actor id
    arriving from a face is judged as anyone, and a run someone started (source
    schedule) is judged by that person's rights."""
    p = policy(allowed_users=[ALICE])
    fired = await judge(p, "schedule:nightly", source="schedule")
    assert (fired.outcome, str(fired.reason)) == (Outcome.ALLOWED, "a configured schedule")
    assert (await judge(p, "schedule:nightly", source="slack")).outcome == Outcome.REFUSED
    assert (await judge(p, BOB, source="schedule")).outcome == Outcome.REFUSED
    assert (await judge(p, ALICE, source="schedule")).grounds == Grounds.GLOBAL_RULE


async def test_stopping_through_a_lock_is_for_admins_with_a_reason() -> None:
    """override_lock: a non-admin is refused it, an admin needs a reason; the refusal is
    data, worded with the lock's own words by each face."""
    p = policy()
    assert (await judge(p, BOB)).override_refused is None
    not_admin = await judge(p, BOB, override_lock=True, reason="costs")
    assert not_admin.allowed  # the stop itself; only going through a lock is refused
    assert not_admin.override_refused == OverrideRefused.NOT_ADMIN
    refusal = not_admin.override_refusal(Text("dev-eu is locked by Alice."))
    assert refusal is not None
    assert mrkdwn(refusal) == "only admins can use --override-lock. dev-eu is locked by Alice."
    no_reason = await judge(p, ADMIN, override_lock=True)
    assert no_reason.override_refused == OverrideRefused.NO_REASON
    said = no_reason.override_refusal(None)
    assert said is not None and mrkdwn(said) == (
        "--override-lock needs a reason, e.g. "
        "`/stop dev-eu --override-lock runaway costs, owner unreachable`."
    )
    with_reason = await judge(p, ADMIN, override_lock=True, reason="runaway costs")
    assert with_reason.override_refused is None and with_reason.override_refusal(None) is None


async def test_a_user_group_is_known_from_the_configuration_not_its_id() -> None:
    """Groups are those listed as groups: any id works as one (`platform`, `ops`), and an
    id listed as a user is never expanded as a group. An older file's Slack group ids
    among the approvers are read as groups, with a warning to move them."""
    p = policy(
        {"dev-eu": {"allowed_groups": ["platform"]}},
        groups={"platform": frozenset({ALICE})},
    )
    assert (await judge(p, ALICE)).grounds == Grounds.OWN_RULE
    assert (await judge(p, BOB)).outcome == Outcome.REFUSED
    approval = p.config.approval.model_validate({"approvers": [BOB], "approver_groups": ["ops"]})
    groups = {"ops": frozenset({CAROL}), BOB: frozenset({ALICE})}

    async def members(group: str) -> frozenset[str]:
        return groups.get(group, frozenset())

    p.group_members = members
    assert [await p.is_approver(u, approval) for u in (BOB, CAROL, ALICE)] == [True, True, False]

    legacy = config({"dev-eu": {"approval": {"approvers": [BOB, "S0OPS"]}}})
    rule = legacy.approval_for("dev-eu")
    assert rule is not None
    assert (rule.approvers, rule.approver_groups) == ([BOB], ["S0OPS"])
    assert legacy.deprecations() == [
        "resources[0].approval.approvers: S0OPS read as user group(s): list user groups "
        "under resources[0].approval.approver_groups"
    ]


@pytest.mark.parametrize("cli_is_admin", [True, False])
async def test_the_terminal_user_is_an_admin_only_with_cli_is_admin(cli_is_admin: bool) -> None:
    """`cli:<login>` stops anything with cli_is_admin (the default), else is held to the
    rules as anyone."""
    p = policy(allowed_users=[ALICE], cli_is_admin=cli_is_admin)
    decision = await judge(p, "cli:ana", source="cli")
    assert decision.outcome == (Outcome.ALLOWED if cli_is_admin else Outcome.REFUSED)
