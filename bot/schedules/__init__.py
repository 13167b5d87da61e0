"""Scheduled stops, one module per job (see :mod:`bot.schedules.engine`, which assembles
them), and the rights of the people who act on them (:mod:`bot.schedules.rights`). Nothing
here knows about Slack."""

from bot.schedules.engine import ScheduleEngine
from bot.schedules.facts import (
    Change,
    Outcome,
    PlanItem,
    RunReport,
    ScheduleError,
    ScheduleNotifier,
)
from bot.schedules.rights import ScheduleRights
from bot.schedules.runner import ScheduleRunner

__all__ = [
    "Change",
    "Outcome",
    "PlanItem",
    "RunReport",
    "ScheduleEngine",
    "ScheduleError",
    "ScheduleNotifier",
    "ScheduleRights",
    "ScheduleRunner",
]
