"""Recording schedules: windows (local clock or sun-relative), duty cycles, filters, slots.

Pure functions of a :class:`~fieldstation.config.schedule.ScheduleConfig` and the station's
place and timezone; nothing here does IO or waits. The recorder asks :func:`next_slot`; previews
use :func:`plan_days`; :func:`slots_between` lists slots in a range. Rules: ``docs/schedules.md``.
"""

from fieldstation.schedule.edges import SunEventMissing
from fieldstation.schedule.slots import (
    DEFAULT_HORIZON_DAYS,
    DayPlan,
    SchedulePlanner,
    Slot,
    next_slot,
    plan_days,
    planner,
    slots_between,
)
from fieldstation.schedule.windows import PolarFallback

__all__ = [
    "DEFAULT_HORIZON_DAYS",
    "DayPlan",
    "PolarFallback",
    "SchedulePlanner",
    "Slot",
    "SunEventMissing",
    "next_slot",
    "plan_days",
    "planner",
    "slots_between",
]
