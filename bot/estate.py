"""The embedded estate: what the bot runs on when no ``stopbot.yaml`` names providers.

One definition, shared by ``stopbot serve``/``stopbot dev`` (the playground) and every CLI
command: the sample resources on the built-in simulators, the local people's rights (Ada
is an admin, stopping ``spark`` needs Priya's approval) and an office-hours schedule that
fires a few minutes after start, so its warning, Skip/Snooze/Keep and summary can be seen
in the first five minutes.

A configuration file without ``providers:`` is laid over it, key by key (the file wins):
``schedules:``, ``admins:``, ``approval_by_tag:`` and the rest can be tried on the
simulators, in the playground and the CLI alike.

A running playground leaves a note beside its database (:class:`PlaygroundNote`): a CLI
command on that database finds it and talks to the playground's simulators, on the
playground's clock, instead of starting simulators of its own that know nothing of what
was stopped there.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from providers.simulators.samples import sample_config

__all__ = [
    "ESTATE_ADMIN",
    "ESTATE_APPROVER",
    "ESTATE_CHANNEL",
    "ESTATE_PEOPLE",
    "OFFICE_HOURS",
    "PROTECTED_RESOURCE",
    "PlaygroundNote",
    "embedded_document",
    "office_hours",
    "over_estate",
]

ESTATE_CHANNEL = "C0LOCAL01"
"""The playground's channel (#platform-team), where the schedule's messages go."""
ESTATE_ADMIN = "U0LOCALADM"
ESTATE_APPROVER = "U0LOCALAPV"
ESTATE_PEOPLE = {
    "U0LOCALDEV": "Dana Developer",
    "U0LOCALAPP": "Alice Martin",
    ESTATE_APPROVER: "Priya Patel",
    ESTATE_ADMIN: "Ada Admin",
}
"""The playground's people by Slack id, as the terminal names them (``names:``)."""
PROTECTED_RESOURCE = "spark"
"""The sample resource whose stops wait for the approver (the shared batch cluster)."""

OFFICE_HOURS = "office-hours"
SCHEDULE_ZONE = "Europe/Paris"
FIRST_FIRE_AFTER = dt.timedelta(minutes=4)
"""The sample schedule's first fire: at least this long after start (whole minutes)."""
WARN_BEFORE = "3m"
START_CRON = "0 8 * * 1-5"
"""The morning start of what office-hours stopped (a wake starts one by hand)."""


def office_hours(started: dt.datetime) -> dict[str, Any]:
    """The sample schedule: the end of office hours, set a few minutes after ``started``
    (the first whole minute at least FIRST_FIRE_AFTER later), then daily at that time.

    A plain ``schedules:`` entry: to try another, copy it into ``stopbot.yaml``.
    """
    fire = (started + FIRST_FIRE_AFTER).astimezone(ZoneInfo(SCHEDULE_ZONE))
    if fire.second or fire.microsecond:
        fire = fire.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return {
        "name": OFFICE_HOURS,
        "cron": f"{fire.minute} {fire.hour} * * *",
        "start_cron": START_CRON,
        "timezone": SCHEDULE_ZONE,
        "select": {"tags": {"env": "dev"}},
        "channel": ESTATE_CHANNEL,
        "warn_before": WARN_BEFORE,
        # Feldera's open-source edition (the simulator's) only has forced stops.
        "force": True,
    }


def embedded_document(simulators_url: str, started: dt.datetime) -> dict[str, Any]:
    """The embedded estate as a ``stopbot.yaml`` document, for simulators at
    ``simulators_url``, its schedule placed after ``started``."""
    document = copy.deepcopy(sample_config(simulators_url))
    document["admins"] = [ESTATE_ADMIN]
    document["names"] = dict(ESTATE_PEOPLE)
    for resource in document["resources"]:
        if resource["name"] == PROTECTED_RESOURCE:
            resource["approval"] = {"required": True, "approvers": [ESTATE_APPROVER]}
    document["schedules"] = [office_hours(started)]
    return document


def over_estate(estate: dict[str, Any], file_document: Any) -> dict[str, Any]:
    """``file_document`` (a configuration without ``providers:``) laid over the estate:
    each top-level key it has replaces the estate's. Anything that is not a mapping is
    returned as is, for the configuration's own error."""
    if file_document is None:
        return estate
    if not isinstance(file_document, dict):
        return file_document  # type: ignore[no-any-return]
    return {**estate, **file_document}


@dataclass(frozen=True)
class PlaygroundNote:
    """What a running playground tells the CLI commands on its database: its process,
    where its simulators are, and when it started (which places the sample schedule)."""

    pid: int
    simulators_url: str
    started: dt.datetime

    @staticmethod
    def path_for(database: str) -> Path | None:
        """The note's file beside a SQLite database (None for PostgreSQL or memory)."""
        if "://" in database or database == ":memory:":
            return None
        return Path(f"{database}.playground.json")

    def write(self, database: str) -> None:
        path = self.path_for(database)
        if path is None:
            return
        body = {
            "pid": self.pid,
            "simulators_url": self.simulators_url,
            "started": self.started.isoformat(),
        }
        path.write_text(json.dumps(body), encoding="utf-8")

    def remove(self, database: str) -> None:
        path = self.path_for(database)
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                current = PlaygroundNote._read(path)
                if current is None or current.pid == self.pid:
                    path.unlink()

    @classmethod
    def running(cls, database: str) -> PlaygroundNote | None:
        """The note of a playground running on ``database``: its process alive and its
        simulators answering. A note left by one that was killed is ignored."""
        path = cls.path_for(database)
        if path is None:
            return None
        note = cls._read(path)
        if note is None or not _alive(note.pid):
            return None
        try:
            answer = httpx.get(f"{note.simulators_url}/_sim/clock", timeout=2.0)
            answer.raise_for_status()
        except httpx.HTTPError:
            return None
        return note

    def clock_offset(self) -> dt.timedelta:
        """How far the playground's clock is ahead of this one (its "skip ahead")."""
        answer = httpx.get(f"{self.simulators_url}/_sim/clock", timeout=2.0)
        answer.raise_for_status()
        now = dt.datetime.fromtimestamp(float(answer.json()["now"]), dt.UTC)
        return now - dt.datetime.now(dt.UTC)

    @staticmethod
    def _read(path: Path) -> PlaygroundNote | None:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            return PlaygroundNote(
                pid=int(body["pid"]),
                simulators_url=str(body["simulators_url"]),
                started=dt.datetime.fromisoformat(body["started"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
