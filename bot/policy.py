"""Who may stop what: admins, then the resource's own rule, then the global rule."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from bot.config import StopbotConfig

__all__ = ["Decision", "GroupMembers", "Policy"]

# Resolves a user group id (Slack ``S...``) to its members' user ids.
GroupMembers = Callable[[str], Awaitable[frozenset[str]]]


class Decision(BaseModel):
    allowed: bool
    reason: str


class Policy:
    def __init__(self, config: StopbotConfig, group_members: GroupMembers | None = None) -> None:
        self.config = config
        self.group_members = group_members

    def is_admin(self, user_id: str) -> bool:
        if user_id.startswith("cli:") and self.config.cli_is_admin:
            return True
        return user_id in self.config.admins

    async def _in_groups(self, user_id: str, groups: list[str]) -> bool:
        if not groups or self.group_members is None:
            return False
        for group in groups:
            if user_id in await self.group_members(group):
                return True
        return False

    async def is_approver(self, user_id: str, approvers: list[str]) -> bool:
        """Whether ``user_id`` is listed among ``approvers``, directly or by a user group."""
        if user_id in approvers:
            return True
        return await self._in_groups(user_id, [a for a in approvers if a.startswith("S")])

    async def may_stop(self, user_id: str, resource: str) -> Decision:
        """Whether ``user_id`` may stop ``resource``, and why, in words for the user."""
        if self.is_admin(user_id):
            return Decision(allowed=True, reason="admin")
        if user_id.startswith("schedule:"):
            # Schedules are written by those who run the bot (config, or admins in Slack).
            return Decision(allowed=True, reason="a configured schedule")
        rc = self.config.resource_config(resource)
        users, groups, scope = rc.allowed_users, rc.allowed_groups, f"{resource}'s own rule"
        if not users and not groups:
            users, groups, scope = (
                self.config.allowed_users,
                self.config.allowed_groups,
                "the global rule",
            )
            if not users and not groups:
                return Decision(allowed=True, reason="no restriction configured")
        if user_id in users or await self._in_groups(user_id, groups):
            return Decision(allowed=True, reason=f"allowed by {scope}")
        return Decision(
            allowed=False,
            reason=f"you are not allowed to stop {resource} ({scope}); ask an admin to add you",
        )
