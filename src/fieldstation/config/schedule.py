"""Config models of recording schedules (semantics live in :mod:`fieldstation.schedule`)."""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fieldstation.config.base import StrictModel
from fieldstation.config.units import Seconds, parse_duration

__all__ = [
    "SUN_EVENTS",
    "DutyCycleConfig",
    "ScheduleConfig",
    "WindowConfig",
    "parse_edge",
]

SUN_EVENTS = (
    "sunrise",
    "sunset",
    "noon",
    "civil_dawn",
    "civil_dusk",
    "nautical_dawn",
    "nautical_dusk",
    "astronomical_dawn",
    "astronomical_dusk",
)
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_CLOCK = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)(?::([0-5]\d))?$")
_SUN = re.compile(r"^([a-z_]+)\s*(?:([+-])\s*(\S.*))?$")
MAX_SUN_OFFSET = 12 * 3600.0
"""Largest shift from a sun event, seconds (12 h): keeps a window near its own local date."""


def parse_edge(text: str) -> tuple[str, float]:
    """Parse a window edge into ``(anchor, offset_seconds)``.

    ``anchor`` is ``"clock"`` (offset = seconds after local midnight, 0..86400) or a sun event
    name from :data:`SUN_EVENTS` (offset = signed seconds, at most 12 h either way). Raises
    ``ValueError`` with the accepted forms.
    """
    value = text.strip().lower()
    clock = _CLOCK.match(value)
    if clock:
        hours, minutes, seconds = int(clock[1]), int(clock[2]), int(clock[3] or 0)
        total = hours * 3600 + minutes * 60 + seconds
        if total > 86400:
            raise ValueError(f"{text!r} is past 24:00")
        return "clock", float(total)
    sun = _SUN.match(value)
    if sun and sun[1] in SUN_EVENTS:
        offset = parse_duration(sun[3]) if sun[3] else 0.0
        if offset > MAX_SUN_OFFSET:
            raise ValueError(
                f"{text!r}: the offset from {sun[1]} is more than 12h; use a local time or "
                "another sun event instead"
            )
        return sun[1], -offset if sun[2] == "-" else offset
    raise ValueError(
        f"{text!r} is not a window edge: use a local time 'HH:MM' or a sun event "
        f"({', '.join(SUN_EVENTS)}) with an optional offset such as 'sunset-30m'"
    )


class WindowConfig(StrictModel):
    """A daily recording window; it may cross midnight (``22:00`` to ``04:00``)."""

    start: str = Field(description="Local time 'HH:MM' or sun event with offset ('sunrise-30m').")
    end: str = Field(description="Local time 'HH:MM' or sun event with offset ('sunset+1h').")

    @field_validator("start", "end")
    @classmethod
    def _edge(cls, value: str) -> str:
        parse_edge(value)
        return value


class DutyCycleConfig(StrictModel):
    """Record for ``record`` seconds, then sleep, repeating inside each window."""

    record: Seconds = Field(gt=0, description="Length of each recording slot, seconds.")
    sleep: Seconds | None = Field(
        default=None, ge=0, description="Pause after each slot, seconds (or give 'every')."
    )
    every: Seconds | None = Field(
        default=None, gt=0, description="Period from one slot start to the next, seconds."
    )
    align: Literal["window", "clock"] = Field(
        default="window",
        description="'window': slots start at the window start (Beemon); 'clock': slots start at "
        "multiples of the period from local midnight plus offset (acoupi's aligned schedule).",
    )
    offset: Seconds = Field(
        default=0.0,
        ge=0,
        description="Shift of clock-aligned starts after each multiple of the period, seconds "
        "(align = 'clock' only; less than the period).",
    )

    @model_validator(mode="after")
    def _period(self) -> DutyCycleConfig:
        if (self.sleep is None) == (self.every is None):
            raise ValueError("give exactly one of 'sleep' or 'every'")
        if self.every is not None and self.every < self.record:
            raise ValueError(
                f"'every' ({self.every:g} s) is shorter than 'record' ({self.record:g} s)"
            )
        if self.align == "window" and self.offset:
            raise ValueError("'offset' applies to align = 'clock' only; remove it")
        if self.align == "clock":
            period_us = round(self.period * 1_000_000)
            if period_us <= 0 or (86_400 * 1_000_000) % period_us:
                raise ValueError(
                    f"with align = 'clock' the period ({self.period:g} s) must divide a day "
                    "exactly (e.g. 10s, 5m, 15m, 1h, 3h), so starts fall at the same times "
                    "every day"
                )
            if self.offset >= self.period:
                raise ValueError(
                    f"'offset' ({self.offset:g} s) must be less than the period ({self.period:g} s)"
                )
        return self

    @property
    def period(self) -> float:
        """Seconds from one slot start to the next."""
        return self.every if self.every is not None else self.record + (self.sleep or 0.0)


class ScheduleConfig(StrictModel):
    """Windows plus optional duty cycle and day filters. No duty cycle = record continuously."""

    windows: list[WindowConfig] = Field(
        default_factory=lambda: [WindowConfig(start="00:00", end="24:00")],
        min_length=1,
        description="Daily windows; overlapping windows merge.",
    )
    duty_cycle: DutyCycleConfig | None = Field(default=None, description="Optional duty cycle.")
    first_date: date | None = Field(default=None, description="First local date recorded.")
    last_date: date | None = Field(default=None, description="Last local date recorded.")
    weekdays: list[Weekday] | None = Field(
        default=None, description="Days of the week recorded (at least one); omitted means all."
    )
    every_nth_day: int = Field(
        default=1, ge=1, description="Record one day in N, counted from first_date (or 1970-01-01)."
    )
    polar: Literal["skip", "whole_day"] = Field(
        default="skip",
        description="When a sun event does not happen (polar day or night): skip the window that "
        "day, or record the whole day.",
    )

    @field_validator("weekdays")
    @classmethod
    def _some_weekdays(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError(
                "give at least one weekday, or leave 'weekdays' out to record every day"
            )
        return value

    @model_validator(mode="after")
    def _dates(self) -> ScheduleConfig:
        if self.first_date and self.last_date and self.last_date < self.first_date:
            raise ValueError("last_date is before first_date")
        return self
