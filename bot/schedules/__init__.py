"""Scheduled stops, one module per job: the engine that fires, runs and watches them
(:mod:`bot.schedules.engine`), and the rights of the people who act on them
(:mod:`bot.schedules.rights`). Nothing here knows about Slack."""

from bot.schedules.engine import (
    Change,
    Outcome,
    PlanItem,
    RunReport,
    ScheduleEngine,
    ScheduleError,
    ScheduleNotifier,
    ScheduleRunner,
)
from bot.schedules.rights import ScheduleRights

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
