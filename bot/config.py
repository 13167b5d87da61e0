"""Settings from the environment, and the ``stopbot.yaml`` model.

The YAML file is read, ``${VAR}`` references are replaced from the environment, then
pydantic validates it. Every failure becomes a :class:`ConfigError` that names the
file, the key path and the reason, so ``stopbot check-config`` can print one clear
line per problem instead of a traceback.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import difflib
import fnmatch
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.durations import Duration
from bot.models import Actor
from bot.store import StoreLocationError
from bot.store.postgres import PostgresLocation
from providers.base import ProviderConfigBase, Resource
from providers.http import HttpSettings
from providers.lean import Lean
from providers.registry import PROVIDERS

__all__ = [
    "ApprovalPolicy",
    "ConfigError",
    "DiscoverySettings",
    "LeaseSettings",
    "LockSettings",
    "ProviderConfig",
    "ResourceConfig",
    "Settings",
    "StopSettings",
    "StopbotConfig",
    "UnknownEnvironmentError",
    "UnknownResourceError",
    "configured_database_url",
    "database_url_problem",
    "interpolate",
    "load_config",
    "parse_config",
    "read_config_document",
]

if TYPE_CHECKING:
    ProviderConfig = ProviderConfigBase
else:
    # A ``providers:`` entry: the model its ``type:`` names, from the one list of providers
    # (built at run time, so the type checker sees what every entry has in common).
    ProviderConfig = Annotated[
        Union[tuple(kind.config for kind in PROVIDERS)],  # noqa: UP007 (no `|` over a tuple)
        Field(discriminator="type"),
    ]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A Slack user group's id, read only to load files written before approver_groups.
_SLACK_GROUP_ID = re.compile(r"S[A-Z0-9]{2,40}")


class Settings(BaseSettings):
    """Process settings, from the environment (never from the YAML file: these are secrets
    or deployment facts)."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    stopbot_config: Path | None = Field(default=None, description="Path of stopbot.yaml.")
    stopbot_db: str = Field(
        default="stopbot.db",
        description="The SQLite file of the store (bot/store) when no database URL is given.",
    )
    stopbot_database_url: SecretStr | None = Field(
        default=None,
        description="A postgresql:// URL: the store in PostgreSQL, shared by every replica "
        "(before database_url in stopbot.yaml, and STOPBOT_DB).",
    )
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str | None = Field(
        default=None, description="Base URL of the Slack Web API (tests, local playground)."
    )

    @field_validator(
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
        "stopbot_database_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """``SLACK_SIGNING_SECRET=`` (an empty value) is no secret: it is left unset, so
        that the bot refuses to start rather than verify nothing."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def config_path(self) -> Path:
        return self.stopbot_config or Path("stopbot.yaml")

    def store_location(self, configured: SecretStr | None = None) -> str:
        """Where the store is: ``STOPBOT_DATABASE_URL``, else the configuration's
        ``database_url`` (``configured``), else the SQLite file ``STOPBOT_DB``. A URL that
        is no PostgreSQL URL is a ConfigError that never repeats its password."""
        if self.stopbot_database_url is not None:
            url = self.stopbot_database_url.get_secret_value()
            problem = database_url_problem(url)
            if problem:
                raise ConfigError("STOPBOT_DATABASE_URL", [("", problem)])
            return url
        if configured is not None:
            return configured.get_secret_value()
        return self.stopbot_db


def database_url_problem(url: str) -> str | None:
    """What is wrong with a database URL, in words without its password; None if nothing."""
    try:
        PostgresLocation.parse(url)
    except StoreLocationError as exc:
        return str(exc)
    return None


class ConfigError(Exception):
    """A configuration problem, worded for the person who wrote the file."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [
            f"{self.source}: {path}: {reason}" if path else f"{self.source}: {reason}"
            for path, reason in self.problems
        ]
        return "\n".join(lines)


class UnknownResourceError(LookupError):
    """No resource by that name or ``provider:id``; carries the closest names."""

    def __init__(self, ref: str, suggestions: list[str]) -> None:
        self.ref = ref
        self.suggestions = suggestions
        hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"Unknown resource {ref!r}.{hint}")


class UnknownEnvironmentError(LookupError):
    """An environment name not under ``environments:``."""

    def __init__(self, ref: str, suggestions: list[str]) -> None:
        hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"Unknown environment {ref!r}.{hint}")
        self.ref = ref
        self.suggestions = suggestions


class ApprovalPolicy(BaseModel):
    """Whether stopping needs a second person, who, and for how long the request stands."""

    model_config = ConfigDict(extra="forbid")

    required: bool = True
    approvers: list[str] = Field(default_factory=list, description="User ids who may approve.")
    approver_groups: list[str] = Field(
        default_factory=list, description="User group ids whose members may approve."
    )
    min_approvals: int = Field(default=1, ge=1, le=10)
    expires_after: Duration = Field(default=dt.timedelta(minutes=30))
    post_to: Literal["channel", "dm"] = Field(
        default="channel",
        description="Post the request in the requester's channel, or DM "
        "each approver (user groups are expanded).",
    )
    _groups_read_from_approvers: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _legacy_groups(self) -> ApprovalPolicy:
        """Files written before ``approver_groups`` listed Slack user groups among the
        approvers, told apart by their ids (``S…``): such an id is read as a group, and
        :meth:`StopbotConfig.deprecations` asks for it to be moved. Only here is an id's
        look taken into account; the rules know a group by the key that lists it."""
        legacy = [a for a in self.approvers if _SLACK_GROUP_ID.fullmatch(a)]
        if legacy:
            self.approvers = [a for a in self.approvers if a not in legacy]
            self.approver_groups = [*self.approver_groups, *legacy]
            self._groups_read_from_approvers = legacy
        return self

    @property
    def groups_read_from_approvers(self) -> list[str]:
        """The user groups an older file listed among the approvers (see _legacy_groups)."""
        return self._groups_read_from_approvers

    def everyone(self) -> list[str]:
        """The approvers then the groups, as a face lists who may decide."""
        return [*self.approvers, *self.approver_groups]


class TagApproval(BaseModel):
    """An approval policy for every resource carrying these tags."""

    model_config = ConfigDict(extra="forbid")

    tags: dict[str, str] = Field(min_length=1)
    approval: ApprovalPolicy


class LockSettings(BaseModel):
    """Bot locks set from Slack (config key ``locks``)."""

    model_config = ConfigDict(extra="forbid")

    max_duration: Duration = Field(default=dt.timedelta(days=7))
    warn_before_expiry: Duration = Field(
        default=dt.timedelta(minutes=30), description="DM the owner, with Extend, this early."
    )


class LeaseSettings(BaseModel):
    """Wake leases, wakes for a duration (``wake <resource> for 2h``) (config key ``leases``)."""

    model_config = ConfigDict(extra="forbid")

    max_duration: Duration = Field(
        default=dt.timedelta(days=7), description="The longest a lease may run (or be extended to)."
    )
    warn_before: Duration = Field(
        default=dt.timedelta(minutes=15),
        description="DM the owner, with Extend 1h, Keep until tomorrow's run and Stop now, "
        "this early.",
    )


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_LIMIT = 60
"""Resource and schedule names are typed in commands and carried in Slack's buttons and
menus, whose ids and values Slack limits (a menu option's value: 150 characters)."""


class ResourceConfig(Lean):
    """One resource users may stop, by a unique name."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=NAME_LIMIT, pattern=NAME_PATTERN)
    provider: str
    id: str = Field(min_length=1)
    tags: dict[str, str] = Field(default_factory=dict)
    lambda_instance_id: str | None = Field(
        default=None, description="~okeanos: the lambda instance the application runs on."
    )
    allowed_users: list[str] = Field(
        default_factory=list, description="Slack user ids who may stop it (empty: the global rule)."
    )
    allowed_groups: list[str] = Field(
        default_factory=list, description="User group ids whose members may stop it."
    )
    approval: ApprovalPolicy | None = None
    cost_per_hour: float | None = Field(
        default=None, ge=0, description="What it costs an hour while it runs (savings)."
    )

    def to_resource(self) -> Resource:
        options = {"lambda_instance_id": self.lambda_instance_id} if self.lambda_instance_id else {}
        return Resource(
            name=self.name, provider=self.provider, id=self.id, options=options, tags=self.tags
        )


class StopSettings(BaseModel):
    """How stops are confirmed and followed (config key ``stops``)."""

    model_config = ConfigDict(extra="forbid")

    confirm_ttl: Duration = Field(
        default=dt.timedelta(minutes=10), description="A confirmation expires after this."
    )
    timeout: Duration = Field(
        default=dt.timedelta(minutes=30), description="Give up following a stop after this."
    )
    poll_initial: Duration = Field(default=dt.timedelta(seconds=2))
    poll_max: Duration = Field(default=dt.timedelta(seconds=15))
    poll_batch_window: Duration = Field(
        default=dt.timedelta(milliseconds=100),
        description="Status reads of stops on one provider within this share one list call.",
    )
    progress_interval: Duration = Field(
        default=dt.timedelta(seconds=2),
        description="At most one progress message update per this, per stop (Slack rate limits).",
    )


class RecoverySettings(BaseModel):
    """How a process tells that another died, and takes its work over (config key
    ``recovery``; see bot/processes.py)."""

    model_config = ConfigDict(extra="forbid")

    lease: Duration = Field(
        default=dt.timedelta(seconds=30),
        description="A process on another host whose heartbeat is older than this is dead "
        "(on the same host, a dead process is known at once).",
    )
    sweep_interval: Duration = Field(
        default=dt.timedelta(seconds=10),
        description="How often a process renews its heartbeat and takes over what dead "
        "ones left (at most a third of the lease).",
    )

    leader_timeout: Duration = Field(
        default=dt.timedelta(seconds=5),
        description="With several replicas on PostgreSQL: a leader (schedules, "
        "housekeeping) that is silent this long, paused or cut off, is replaced.",
    )

    @model_validator(mode="after")
    def _sweeps_within_the_lease(self) -> RecoverySettings:
        if self.sweep_interval * 3 > self.lease:
            raise ValueError(
                "sweep_interval must be at most a third of lease, or a live process could "
                "be taken for dead between two heartbeats"
            )
        return self


class Selector(BaseModel):
    """What a schedule stops: these resources by name, an environment's members (then in
    its tiers' order: see bot/environments.py), or every resource that matches all of
    ``provider``, ``tags`` (the configuration's and, for discovered resources, the
    provider's own) and ``name`` (a glob, e.g. ``dev-*``) that are given."""

    model_config = ConfigDict(extra="forbid")

    tags: dict[str, str] | None = None
    resources: list[str] | None = None
    environment: str | None = None
    provider: str | None = Field(default=None, description="A provider account's name.")
    name: str | None = Field(default=None, description="A glob over resource names: 'dev-*'.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Selector:
        matching = (self.tags, self.provider, self.name)
        if self.environment is not None:
            if self.resources is not None or any(m is not None for m in matching):
                raise ValueError(
                    "give one of tags: {key: value}, resources: [names] or environment: <name>"
                )
            return self
        if self.resources is not None and any(m is not None for m in matching):
            raise ValueError(
                "give either resources: [names], or provider, tags and name to match, not both"
            )
        if self.resources is None and all(m is None for m in matching):
            raise ValueError(
                "give tags: {key: value}, provider: <name>, name: <glob> or resources: [names]"
            )
        return self

    def matches(self, resource: Resource) -> bool:
        """Whether ``resource`` is selected (by name when ``resources`` lists names)."""
        if self.resources is not None:
            return resource.name in self.resources
        if self.provider is not None and resource.provider != self.provider:
            return False
        if self.name is not None and not fnmatch.fnmatchcase(resource.name, self.name):
            return False
        return all(resource.tags.get(k) == v for k, v in (self.tags or {}).items())

    def describe(self) -> str:
        if self.environment is not None:
            return f"environment {self.environment}"
        if self.resources is not None:
            return "resources " + ", ".join(self.resources)
        parts = []
        if self.provider is not None:
            parts.append(f"provider {self.provider}")
        if self.tags is not None:
            parts.append("tags " + ", ".join(f"{k}={v}" for k, v in sorted(self.tags.items())))
        if self.name is not None:
            parts.append(f"name {self.name}")
        return ", ".join(parts)


def known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)"
        ) from None
    return value


class ScheduleConfig(BaseModel):
    """A recurring stop, e.g. dev clusters at 20:00 Paris time on weekdays; with
    ``start_cron``, office hours: the same schedule starts in the morning what its stop
    runs stopped."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=NAME_LIMIT, pattern=NAME_PATTERN)
    cron: str = Field(description="Standard 5-field crontab: minute hour day month weekday.")
    action: str = Field(
        default="stop",
        description="What ``cron`` does: stop. Morning starts are ``start_cron`` on the same "
        "schedule (office hours), so that a start knows which stop run it undoes.",
    )
    start_cron: str | None = Field(
        default=None,
        description="Office hours: when to start again what this schedule's stop runs "
        "stopped (same timezone, holidays and warnings), e.g. '0 8 * * 1-5'.",
    )
    timezone: str = "UTC"
    select: Selector
    channel: str | None = Field(default=None, description="Where warnings and summaries go.")
    warn_before: Duration = Field(default=dt.timedelta(minutes=15))
    skip_on: list[str] = Field(default_factory=list, description="Calendar names.")
    until: dt.time | None = Field(
        default=None, description="Working hours start: drift is watched until then."
    )
    approval: bool = Field(
        default=False, description="Ask for approval of protected resources on scheduled runs."
    )
    retries: int = Field(default=1, ge=0, le=5, description="Tries again after a failure.")
    force: bool = Field(
        default=False, description="Forced stops where the provider has them (Feldera)."
    )
    in_use: Literal["keep", "stop"] = Field(
        default="keep",
        description="A resource found in use at the warning, with nobody answering its "
        "question by the run: keep it running, or stop it anyway.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @field_validator("action")
    @classmethod
    def _stop_action(cls, value: str) -> str:
        if value != "stop":
            raise ValueError(
                f"action {value!r} is not one: a schedule's cron stops. To start in the "
                "morning what it stopped at night, give the same schedule a start_cron "
                "(office hours), e.g. start_cron: '0 8 * * 1-5'"
            )
        return value

    @field_validator("cron", "start_cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        from bot.cron import cron_trigger

        if value is not None:
            cron_trigger(value, "UTC")
        return value


class SchedulingSettings(BaseModel):
    """How schedules run (config key ``scheduling``)."""

    model_config = ConfigDict(extra="forbid")

    grace_time: Duration = Field(
        default=dt.timedelta(minutes=30),
        description="A run missed while the bot was down still runs at start within this.",
    )
    max_stops_in_progress: int | None = Field(
        default=None,
        ge=1,
        description="Stops of one run in progress at once per provider (sent, not yet "
        "ended); null: no cap, only the providers' request limits (providers[].requests). "
        "For a provider that queues many stops badly.",
    )
    per_provider_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Deprecated: read as providers[].requests.max_in_flight where a "
        "provider sets none (see StopbotConfig.deprecations).",
    )
    opt_out_tag: str = Field(
        default="stopbot/skip", description="Tag a resource 'true' to opt out."
    )
    retry_delay: Duration = Field(default=dt.timedelta(minutes=1))
    summary_interval: Duration = Field(
        default=dt.timedelta(seconds=5), description="At most one summary update per this."
    )
    drift_check_interval: Duration = Field(default=dt.timedelta(minutes=5))
    deployed_within: Duration = Field(
        default=dt.timedelta(minutes=60),
        description="A resource deployed this recently is in use: its scheduled stop asks "
        "first (Qovery's last deployment).",
    )


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = Weekday.__args__  # type: ignore[attr-defined]


class DiscoverySettings(BaseModel):
    """How discovered resources are kept fresh (config key ``discovery``; providers opt in
    with ``discover:``)."""

    model_config = ConfigDict(extra="forbid")

    interval: Duration = Field(
        default=dt.timedelta(minutes=10),
        description="How often the leader lists each discovered provider account again.",
    )
    channel: str | None = Field(
        default=None,
        description="Where a resource gone at the provider is told, once (else logged only).",
    )

    @field_validator("interval")
    @classmethod
    def _at_least_a_minute(cls, value: dt.timedelta) -> dt.timedelta:
        if value < dt.timedelta(minutes=1):
            raise ValueError("at least 1m: each refresh lists every discovered account")
        return value


class TagRate(BaseModel):
    """What resources carrying every one of ``tags`` cost an hour while they run."""

    model_config = ConfigDict(extra="forbid")

    tags: dict[str, str] = Field(min_length=1)
    per_hour: float = Field(ge=0)


class DigestSettings(BaseModel):
    """The weekly savings digest (config key ``savings.digest``)."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(min_length=1)
    weekday: Weekday = "monday"
    at: dt.time = dt.time(9, 0)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)


class SavingsSettings(BaseModel):
    """What stopping saves (config key ``savings``): rates an hour of running, by provider
    (a default), by tag, by resource (``resources[].cost_per_hour``, which wins), in one
    currency; where the provider's API tells (Qovery's currentCost) and no rate is
    configured, its figures."""

    model_config = ConfigDict(extra="forbid")

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")
    providers: dict[str, float] = Field(
        default_factory=dict, description="provider name -> a default rate an hour"
    )
    tags: list[TagRate] = Field(default_factory=list)
    from_providers: bool = Field(
        default=True, description="Ask the providers' APIs where no rate is configured."
    )
    check_interval: Duration = Field(
        default=dt.timedelta(minutes=10),
        description="How often what is counted stopped is read, to stop counting what runs.",
    )
    digest: DigestSettings | None = None

    @field_validator("providers")
    @classmethod
    def _not_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for name, rate in value.items():
            if rate < 0:
                raise ValueError(f"the rate of {name!r} is negative ({rate:g})")
        return value


@dataclasses.dataclass(frozen=True)
class _ResourceIndex:
    source: list[ResourceConfig]
    by_name: dict[str, ResourceConfig]
    by_id: dict[tuple[str, str], ResourceConfig]


class StopbotConfig(BaseModel):
    """The whole ``stopbot.yaml``."""

    model_config = ConfigDict(extra="forbid")
    _index: _ResourceIndex | None = PrivateAttr(default=None)
    _configured: list[ResourceConfig] | None = PrivateAttr(default=None)
    _built: tuple[list[ResourceConfig], list[Resource]] | None = PrivateAttr(default=None)

    providers: list[ProviderConfig] = Field(default_factory=list)
    resources: list[ResourceConfig] = Field(default_factory=list)
    http: HttpSettings = Field(default_factory=HttpSettings)
    stops: StopSettings = Field(default_factory=StopSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    admins: list[str] = Field(
        default_factory=list, description="Slack user ids who may stop anything and override."
    )
    allowed_users: list[str] = Field(
        default_factory=list,
        description="Who may stop resources without their own rule; "
        "empty with allowed_groups empty: everyone in the workspace.",
    )
    allowed_groups: list[str] = Field(default_factory=list)
    names: dict[str, str] = Field(
        default_factory=dict,
        description="User and user group id -> the name the terminal shows for them (Slack "
        "shows its own; the terminal asks Slack's users.info too when SLACK_BOT_TOKEN is set).",
    )
    identities: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Slack user id -> {provider name: the name that provider gives them}, "
        "to recognise the owner of a provider lock (e.g. Qovery's owner_name).",
    )
    approval: ApprovalPolicy = Field(
        default_factory=lambda: ApprovalPolicy(required=False),
        description="The default for resources with no rule of their own.",
    )
    approval_by_tag: list[TagApproval] = Field(default_factory=list)
    locks: LockSettings = Field(default_factory=LockSettings)
    leases: LeaseSettings = Field(default_factory=LeaseSettings)
    schedules: list[ScheduleConfig] = Field(default_factory=list)
    calendars: dict[str, list[dt.date]] = Field(
        default_factory=dict, description="Named lists of days off, for schedules' skip_on."
    )
    scheduling: SchedulingSettings = Field(default_factory=SchedulingSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    savings: SavingsSettings = Field(default_factory=SavingsSettings)
    database_url: SecretStr | None = Field(
        default=None,
        description="A postgresql:// URL: the store in PostgreSQL, shared by every replica "
        "(STOPBOT_DATABASE_URL, when set, wins).",
    )
    environments: dict[str, list[dict[str, list[str]]]] = Field(
        default_factory=dict,
        description="Environment name -> its tiers in order, each a one-key mapping "
        "{label: [resource names]}: an environment stops tier after tier, and wakes in reverse.",
    )
    cli_is_admin: bool = Field(
        default=True,
        description="The terminal's user holds the credentials anyway: treat `stopbot stop` "
        "as an admin. Set false to apply allowed_users to `cli:<login>` ids too.",
    )

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, value: SecretStr | None) -> SecretStr | None:
        problem = database_url_problem(value.get_secret_value()) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _legacy_concurrency(self) -> StopbotConfig:
        """``scheduling.per_provider_concurrency`` limited the stops in progress per provider
        (10), which is what kept requests to a provider at 10 at a time: it now limits
        just that, the requests in flight, for each provider that sets no limit of its own."""
        legacy = self.scheduling.per_provider_concurrency
        if legacy is not None:
            for provider in self.providers:
                if "max_in_flight" not in provider.requests.model_fields_set:
                    provider.requests = provider.requests.model_copy(
                        update={"max_in_flight": legacy}
                    )
        return self

    def deprecations(self) -> list[str]:
        """One line for each deprecated setting in use: what it does now, what to write."""
        lines = [
            f"{path}.approvers: {', '.join(policy.groups_read_from_approvers)} read as user "
            f"group(s): list user groups under {path}.approver_groups"
            for path, policy in self._approval_policies()
            if policy.groups_read_from_approvers
        ]
        legacy = self.scheduling.per_provider_concurrency
        if legacy is None:
            return lines
        return [
            *lines,
            f"scheduling.per_provider_concurrency ({legacy}) is deprecated: it held a slot for "
            "each stop until the resource had stopped, and is now read as the requests in "
            f"flight each provider account allows (providers[].requests.max_in_flight: {legacy} "
            "where a provider sets none). Set that instead, and "
            "scheduling.max_stops_in_progress only for a provider that queues stops badly.",
        ]

    def reference_problems(self) -> list[tuple[str, str]]:
        """What the schema cannot see: duplicate names and dangling references."""
        problems: list[tuple[str, str]] = []
        provider_types: dict[str, str] = {}
        for i, p in enumerate(self.providers):
            if p.name in provider_types:
                problems.append((f"providers[{i}].name", f"{p.name!r} is used twice"))
            provider_types[p.name] = p.type
        seen: set[str] = set()
        for i, r in enumerate(self.resources):
            if r.name in seen:
                problems.append((f"resources[{i}].name", f"{r.name!r} is used twice"))
            seen.add(r.name)
            if r.provider not in provider_types:
                known = ", ".join(sorted(provider_types)) or "none configured"
                problems.append(
                    (
                        f"resources[{i}].provider",
                        f"no provider named {r.provider!r} (known: {known})",
                    )
                )
            elif provider_types[r.provider] == "okeanos" and not r.lambda_instance_id:
                problems.append(
                    (
                        f"resources[{i}].lambda_instance_id",
                        "required for an ~okeanos application: the lambda instance it runs on",
                    )
                )
        problems += self._approval_problems()
        problems += self._schedule_problems()
        problems += self._environment_problems()
        problems += [
            (f"savings.providers.{name}", f"no provider named {name!r}")
            for name in self.savings.providers
            if name not in provider_types
        ]
        return problems

    def _schedule_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        names = {r.name for r in self.resources}
        seen: set[str] = set()
        for i, s in enumerate(self.schedules):
            if s.name in seen:
                problems.append((f"schedules[{i}].name", f"{s.name!r} is used twice"))
            seen.add(s.name)
            if s.select.provider is not None and s.select.provider not in {
                p.name for p in self.providers
            }:
                problems.append(
                    (f"schedules[{i}].select.provider", f"no provider named {s.select.provider!r}")
                )
            for j, r in enumerate(s.select.resources or []):
                if r not in names:
                    problems.append(
                        (f"schedules[{i}].select.resources[{j}]", f"no resource named {r!r}")
                    )
            env = s.select.environment
            if env is not None and env not in self.environments:
                known = ", ".join(sorted(self.environments)) or "none configured"
                problems.append(
                    (
                        f"schedules[{i}].select.environment",
                        f"no environment named {env!r} (known: {known})",
                    )
                )
            for j, c in enumerate(s.skip_on):
                if c not in self.calendars:
                    known = ", ".join(sorted(self.calendars)) or "none defined"
                    problems.append(
                        (
                            f"schedules[{i}].skip_on[{j}]",
                            f"no calendar named {c!r} (known: {known})",
                        )
                    )
        return problems

    def _environment_problems(self) -> list[tuple[str, str]]:
        """Each tier one label with its members; each member a configured resource, in one
        tier of its environment only (a resource in two tiers has no order)."""
        problems: list[tuple[str, str]] = []
        names = {r.name for r in self.resources}
        for env, tiers in self.environments.items():
            if not tiers:
                problems.append((f"environments.{env}", "an environment needs at least one tier"))
            placed: dict[str, int] = {}
            for i, tier in enumerate(tiers):
                path = f"environments.{env}[{i}]"
                if len(tier) != 1:
                    problems.append(
                        (path, "a tier is one label with its resources, e.g. {nova: [web-1]}")
                    )
                for label, members in tier.items():
                    if not members:
                        problems.append((f"{path}.{label}", "a tier needs at least one resource"))
                    for j, member in enumerate(members):
                        where = f"{path}.{label}[{j}]"
                        if member not in names:
                            problems.append((where, f"no resource named {member!r}"))
                        elif member in placed:
                            problems.append(
                                (
                                    where,
                                    f"{member!r} is in tier {placed[member] + 1} already: a "
                                    "resource stands in one tier of an environment",
                                )
                            )
                        else:
                            placed[member] = i
        return problems

    def environment(self, name: str) -> list[tuple[str, list[str]]]:
        """The tiers of environment ``name``, in stop order: (label, resource names).
        Raises UnknownEnvironmentError."""
        tiers = self.environments.get(name.strip())
        if tiers is None:
            raise UnknownEnvironmentError(
                name, difflib.get_close_matches(name, list(self.environments), n=3, cutoff=0.5)
            )
        return [(label, list(members)) for tier in tiers for label, members in tier.items()]

    def _approval_policies(self) -> list[tuple[str, ApprovalPolicy]]:
        """Every approval rule with its key path."""
        policies: list[tuple[str, ApprovalPolicy]] = [("approval", self.approval)]
        policies += [
            (f"approval_by_tag[{i}].approval", r.approval)
            for i, r in enumerate(self.approval_by_tag)
        ]
        policies += [
            (f"resources[{i}].approval", r.approval)
            for i, r in enumerate(self.resources)
            if r.approval is not None
        ]
        return policies

    def _approval_problems(self) -> list[tuple[str, str]]:
        return [
            (f"{path}.approvers", "an approval that is required needs at least one approver")
            for path, policy in self._approval_policies()
            if policy.required and not policy.everyone()
        ]

    def provider(self, name: str) -> ProviderConfig:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)

    def _resource_index(self) -> _ResourceIndex:
        """Resources by name and by (provider, id), built again if ``resources`` is
        replaced: a stop looks its resource up several times, and scanning 5,000 of them
        each time was a measurable share of a nightly run."""
        # Through the private dict, not ``self._index``: pydantic's attribute lookup
        # probes the private attribute for a descriptor, raising and catching an
        # AttributeError each time (6 % of a nightly run's CPU, a few lookups a stop).
        private = self.__pydantic_private__ or {}
        index = private.get("_index")
        if index is None or index.source is not self.resources:
            by_name: dict[str, ResourceConfig] = {}
            by_id: dict[tuple[str, str], ResourceConfig] = {}
            for r in self.resources:  # the first wins, as a scan would find it
                by_name.setdefault(r.name, r)
                by_id.setdefault((r.provider, r.id), r)
            index = self._index = _ResourceIndex(self.resources, by_name, by_id)
        return cast(_ResourceIndex, index)

    def resource(self, ref: str) -> Resource:
        """The resource named ``ref``, or given as ``provider:id``."""
        ref = ref.strip()
        index = self._resource_index()
        found = index.by_name.get(ref)
        if found is None:
            provider, sep, rid = ref.partition(":")
            if sep:
                found = index.by_id.get((provider, rid))
        if found is not None:
            return found.to_resource()
        names = [r.name for r in self.resources]
        raise UnknownResourceError(ref, difflib.get_close_matches(ref, names, n=3, cutoff=0.5))

    def resource_config(self, name: str) -> ResourceConfig:
        found = self._resource_index().by_name.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def approval_for(self, name: str) -> ApprovalPolicy | None:
        """The approval a stop of ``name`` needs: its own rule, else the first tag rule that
        matches, else the global default; None when no approval is required."""
        rc = self.resource_config(name)
        policy = rc.approval
        if policy is None:
            matching = (
                rule.approval
                for rule in self.approval_by_tag
                if all(rc.tags.get(k) == v for k, v in rule.tags.items())
            )
            policy = next(matching, self.approval)
        return policy if policy.required else None

    def actor(self, user_id: str, names: frozenset[str] = frozenset()) -> Actor:
        """A user as the workflow knows them: their mapped provider identities, and the
        other ``names`` a provider lock may carry (counted only for providers with no
        mapped identities at all)."""
        return Actor(
            id=user_id,
            names=names,
            identities=self.identities.get(user_id, {}),
            mapped=frozenset(p for names in self.identities.values() for p in names),
        )

    def configured_resources(self) -> list[ResourceConfig]:
        """The resources ``stopbot.yaml`` names, as first read: ``resources`` also holds
        the discovered ones once discovery laid them beside these (bot/discovery.py)."""
        if self._configured is None:
            self._configured = list(self.resources)
        return self._configured

    def all_resources(self) -> list[Resource]:
        """Every resource, as the providers take them. Built once for the resources as
        they are (10,000 built anew took 26-28 ms, asked at each schedule's run, each
        rights check of a schedule's run for a user who is no admin): kept until
        ``resources`` is replaced (discovery replaces it), as :meth:`_resource_index`."""
        private = self.__pydantic_private__ or {}  # (see _resource_index)
        built = private.get("_built")
        if built is None or built[0] is not self.resources:
            built = self._built = (self.resources, [r.to_resource() for r in self.resources])
        return list(built[1])  # (a Resource is frozen: the copy is of the list only)


def interpolate(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` in every string of a YAML tree; ``$${`` stays a literal ``${``."""
    if isinstance(value, str):
        missing = [m for m in _VAR.findall(value.replace("$${", "")) if m not in env]
        if missing:
            raise ConfigError("", [(path, f"environment variable {missing[0]} is not set")])
        parts = value.split("$${")
        return "${".join(_VAR.sub(lambda m: env[m.group(1)], part) for part in parts)
    if isinstance(value, dict):
        return {k: interpolate(v, env, _join(path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


_PLAIN_KEY = re.compile(r"[\w:/@.-]+")


def _join(path: str, key: str) -> str:
    """A key as the user wrote it; quoted when it has spaces, quotes or line breaks, so
    that each problem stays on one line and the key shows what is odd about it."""
    shown = key if _PLAIN_KEY.fullmatch(key) else repr(key)
    return f"{path}.{shown}" if path else shown


def _error_path(loc: tuple[int | str, ...], document: Any) -> str:
    """``('providers', 0, 'qovery', 'token')`` → ``providers[0].token`` (the union tag dropped)."""
    path = ""
    node = document
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # pydantic's discriminated-union tag, not a key the user wrote
        path = _join(path, part)
        node = node.get(part) if isinstance(node, dict) else None
    return path


# What a pattern the schema checks means, for the person who wrote the value.
_PATTERN_WORDS = {
    r"^https?://": "must be a URL starting with https:// (or http://)",
    NAME_PATTERN: "use letters, digits, '_', '.' and '-' only, starting with a letter or digit",
}


def parse_config(document: Any, source: str, env: Mapping[str, str] | None = None) -> StopbotConfig:
    """Validate an already-parsed YAML document."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(source, [("", "the file must be a mapping (providers:, resources:)")])
    try:
        document = interpolate(document, os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(source, exc.problems) from None
    try:
        config = StopbotConfig.model_validate(document)
    except ValidationError as exc:
        problems = [
            (_error_path(error["loc"], document), _reason(error))
            for error in exc.errors(include_url=False)
        ]
        # Every mistake in one pass: the references among what is valid are checked too.
        raise ConfigError(source, problems + _references_beside(document, exc)) from None
    problems = config.reference_problems()
    if problems:
        raise ConfigError(source, problems)
    return config


# pydantic's wording of a broken rule, for the person who wrote the value.
_RULE_WORDS: dict[str, str] = {
    "missing": "missing: this key is required",
    "greater_than_equal": "must be {ge} or more",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be {le} or less",
    "less_than": "must be less than {lt}",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
    "too_short": "must have at least {min_length} item(s)",
    "too_long": "must have at most {max_length} item(s)",
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "list_type": "must be a list",
    "literal_error": "must be one of {expected}",
    "enum": "must be one of {expected}",
    "time_parsing": "must be a time of day, like 07:00",
    "time_type": "must be a time of day, like 07:00",
    "date_from_datetime_parsing": "must be a date, like 2026-12-25",
    "date_parsing": "must be a date, like 2026-12-25",
    "date_type": "must be a date, like 2026-12-25",
}


def _reason(error: Any) -> str:
    """One validation error in words (never pydantic's own, "Input should be …")."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "union_tag_invalid":
        return f"unknown provider type; expected one of {ctx['expected_tags']}"
    if kind == "union_tag_not_found":
        return "add type: (the provider's kind: qovery, openstack, okeanos or feldera)"
    if kind == "extra_forbidden":
        return "unknown key (check its spelling)"
    if kind == "string_pattern_mismatch":
        return _PATTERN_WORDS.get(
            str(ctx.get("pattern")), f"does not have the expected form ({ctx.get('pattern')})"
        )
    if kind in _RULE_WORDS:
        try:
            return _RULE_WORDS[kind].format(**ctx)
        except (KeyError, IndexError):
            pass
    return str(error["msg"]).removeprefix("Value error, ")


_LISTS = ("providers", "resources", "schedules", "approval_by_tag")


def _references_beside(document: dict[str, Any], exc: ValidationError) -> list[tuple[str, str]]:
    """The reference problems (dangling names, duplicates) of what remains valid once the
    invalid values are set aside, so a file's mistakes come in one pass. An invalid value
    is removed (its default stands in); an entry still invalid without it is set aside
    whole, and a name it holds still counts as defined: no false "no provider named …"."""
    pruned: dict[str, Any] = copy.deepcopy(document)
    originals = {
        key: list(range(len(pruned[key]))) for key in _LISTS if isinstance(pruned.get(key), list)
    }
    set_aside: set[str] = set()
    errors = exc.errors(include_url=False)
    for _ in range(3):
        entries: set[tuple[str, int]] = set()
        for error in errors:
            loc = list(error["loc"])
            if not loc or not isinstance(loc[0], str):
                return []
            entry = (loc[0], loc[1]) if loc[0] in originals and len(loc) > 1 else None
            if error["type"] == "missing" or not _drop_leaf(pruned, loc):
                if entry is None:
                    pruned.pop(loc[0], None)
                else:
                    entries.add(entry)  # type: ignore[arg-type]
        for key, index in sorted(entries, reverse=True):
            item = pruned[key][index]
            if isinstance(item, dict) and "name" in item:
                set_aside.add(repr(str(item["name"])))
            del pruned[key][index]
            del originals[key][index]
        try:
            config = StopbotConfig.model_validate(pruned)
        except ValidationError as again:
            errors = again.errors(include_url=False)
            continue
        break
    else:
        return []
    found = []
    for path, reason in config.reference_problems():
        if any(name in reason for name in set_aside):
            continue
        if set_aside:  # the names set aside are defined, but not listed as known
            reason = re.sub(r" \(known: [^)]*\)$", "", reason)
        match = re.match(r"^(\w+)\[(\d+)\]", path)
        if match and match.group(1) in originals:
            original = originals[match.group(1)][int(match.group(2))]
            path = f"{match.group(1)}[{original}]{path[match.end() :]}"
        found.append((path, reason))
    return found


def _drop_leaf(document: Any, loc: list[Any]) -> bool:
    """Remove the value at ``loc`` from its mapping (pydantic's union tags skipped);
    False when it is no mapping's key (a list item, or gone already)."""
    node = document
    for part in loc[:-1]:
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if in_list or (isinstance(node, dict) and part in node):
            node = node[part]
        elif isinstance(node, dict) and node.get("type") == part:
            continue
        else:
            return False
    last = loc[-1]
    if isinstance(node, dict) and last in node and loc[0] != last:
        del node[last]
        return True
    return False


def configured_database_url(path: Path, env: Mapping[str, str] | None = None) -> SecretStr | None:
    """The ``database_url`` of the configuration at ``path`` (None without the file or the
    key), read alone: a command that only reads the store needs no provider's secrets."""
    if not path.exists():
        return None
    document = _read_yaml(path)
    value = document.get("database_url") if isinstance(document, dict) else None
    if value is None:
        return None
    try:
        url = interpolate(value, os.environ if env is None else env, "database_url")
    except ConfigError as exc:
        raise ConfigError(str(path), exc.problems) from None
    problem = database_url_problem(str(url))
    if problem:
        raise ConfigError(str(path), [("database_url", problem)])
    return SecretStr(str(url))


def load_config(path: Path, env: Mapping[str, str] | None = None) -> StopbotConfig:
    """Read, interpolate and validate ``path``."""
    return parse_config(_read_yaml(path), str(path), env)


def read_config_document(path: Path) -> Any:
    """The YAML document at ``path``, not yet validated (ConfigError when unreadable)."""
    return _read_yaml(path)


_SAFE_LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)
"""PyYAML's safe loader, in C (libyaml, in PyYAML's wheels) where it is there: a
configuration of 10,000 resources loads in 0.6 s instead of 2.7 s, and 22 MB fewer."""


def _read_yaml(path: Path) -> Any:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            source, [("", "no such file (set STOPBOT_CONFIG or pass a path)")]
        ) from None
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        document = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [(where, f"invalid YAML: {problem}")]) from None
    return document
