"""Config of power suspenders (``[[suspenders]]``) and clock sanity (``[clock]``).

A suspender pauses chosen jobs while a reading is beyond a threshold and resumes them once it
is back past a resume level (hysteresis), with a minimum time in each state. Clock sanity holds
recording until the wall clock can be trusted (docs/power.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fieldstation.config.base import MAX_STRING, Name, StrictModel
from fieldstation.config.units import Seconds

__all__ = ["ClockConfig", "SuspenderConfig", "SuspenderSource"]

SuspenderSource = Literal[
    "battery_voltage", "battery_percent", "battery_current", "cpu_temperature", "reading"
]
"""What a suspender watches: the INA219 of ``[battery]`` (volts, percent of its curve,
amperes with positive = discharging), the CPU temperature (degrees C, from
``/sys/class/thermal``) or the latest value of a ``readings`` sensor's quantity."""

_JOB_PREFIXES = ("recorder:", "processor:", "output:")


class SuspenderConfig(StrictModel):
    """One ``[[suspenders]]`` entry: pause ``jobs`` while ``source`` is below ``below`` (or
    above ``above``); resume once it is back at ``resume`` (a level on the safe side of the
    threshold, for hysteresis) and the minimum times have passed."""

    name: Name = Field(description="Name of the suspender, in events, status and heartbeats.")
    source: SuspenderSource = Field(
        description="What is watched: battery_voltage (V), battery_percent (%), battery_current "
        "(A, positive = discharging), cpu_temperature (degrees C) or reading (a readings "
        "sensor's latest value, with 'sensor' and 'quantity')."
    )
    sensor: Name | None = Field(
        default=None, description="With source = 'reading': the readings sensor's name."
    )
    quantity: str | None = Field(
        default=None,
        max_length=64,
        description="With source = 'reading': the quantity of that sensor (e.g. 'voltage').",
    )
    below: float | None = Field(
        default=None, description="Suspend when the value falls below this (give below or above)."
    )
    above: float | None = Field(
        default=None, description="Suspend when the value rises above this (give below or above)."
    )
    resume: float = Field(
        description="Resume when the value is back at this level: at or above it for 'below', "
        "at or below it for 'above'. Must be on the safe side of the threshold (hysteresis)."
    )
    jobs: list[str] = Field(
        min_length=1,
        description="Jobs paused: 'recorder:<sensor>', 'processor:<name>', 'output:<name>'; "
        "shell patterns allowed ('recorder:*', 'processor:*').",
    )
    hold: Seconds = Field(
        default=0.0,
        ge=0,
        description="The value must stay beyond the threshold (or back at the resume level) "
        "this long before the suspender acts (a short sag under load is ignored).",
    )
    min_suspended: Seconds = Field(
        default=300.0, ge=0, description="Shortest time the jobs stay paused once suspended."
    )
    min_running: Seconds = Field(
        default=60.0, ge=0, description="Shortest time the jobs run after a resume."
    )
    interval: Seconds = Field(
        default=30.0, gt=0, description="Time between two looks at the value."
    )
    stale_after: Seconds = Field(
        default=600.0,
        gt=0,
        description="With source = 'reading': a latest value older than this is unknown (the "
        "suspender keeps its state).",
    )

    @field_validator("jobs")
    @classmethod
    def _job_names(cls, jobs: list[str]) -> list[str]:
        for job in jobs:
            if not job.startswith(_JOB_PREFIXES) or len(job) > MAX_STRING:
                raise ValueError(
                    f"job {job!r}: name a recorder, processor or output as 'recorder:<sensor>', "
                    "'processor:<name>' or 'output:<name>' (patterns such as 'recorder:*' allowed)"
                )
        return jobs

    @model_validator(mode="after")
    def _thresholds(self) -> SuspenderConfig:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of 'below' and 'above'")
        if self.below is not None and self.resume <= self.below:
            raise ValueError(
                f"resume ({self.resume:g}) must be above below ({self.below:g}) for hysteresis"
            )
        if self.above is not None and self.resume >= self.above:
            raise ValueError(
                f"resume ({self.resume:g}) must be below above ({self.above:g}) for hysteresis"
            )
        if self.source == "reading" and (self.sensor is None or self.quantity is None):
            raise ValueError("source = 'reading' needs 'sensor' and 'quantity'")
        if self.source != "reading" and (self.sensor is not None or self.quantity is not None):
            raise ValueError("'sensor' and 'quantity' are only for source = 'reading'")
        return self


class ClockConfig(StrictModel):
    """Clock sanity: whether recording waits for a trustworthy wall clock, and how clock
    steps are detected."""

    check: bool = Field(
        default=True,
        description="Check the clock before and while recording (floor, sync, steps).",
    )
    unsynced: Literal["wait", "mark"] = Field(
        default="wait",
        description="While the clock is not trusted: 'wait' (record nothing) or 'mark' "
        "(record, with clock_unsynced = true on each recording row).",
    )
    require_sync: bool = Field(
        default=False,
        description="Trust the clock only once the kernel says NTP synchronised it "
        "(timedatectl or adjtimex); otherwise the floor alone decides (a station with an RTC "
        "and no network).",
    )
    not_before: datetime | None = Field(
        default=None,
        description="Floor of a trusted clock (aware); default: the release date of this "
        "fieldstation version. The newest time in the station database is a floor too.",
    )
    step_threshold: Seconds = Field(
        default=2.0,
        gt=0,
        description="A difference this large between wall-clock and monotonic time elapsed "
        "between two looks is a clock step: the session is cut and an event recorded.",
    )
    poll: Seconds = Field(
        default=10.0,
        gt=0,
        description="While waiting, look at the clock (and at suspensions) this often.",
    )

    @field_validator("not_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("not_before needs a time zone (e.g. 2026-01-01T00:00:00Z)")
        return value
