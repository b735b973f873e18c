"""Config of the station's alert rules (``[[alerts]]``): what fires, and when it stays quiet.

Three rule kinds, told apart by ``on``:

- ``on = "detection"``: detections whose label matches ``labels`` (exact names or shell-style
  groups such as ``"Strix*"``; omitted: every label) with ``score >= min_score``, and a
  ``condition``: ``any``, ``first_of_day`` (first of the label on the station's local day),
  ``first_ever``, ``not_seen_for`` (first after ``not_seen_days`` days without the label) or
  ``count`` (``count`` detections of the label within ``window`` seconds). Detections of a
  re-analysis (``fieldstation reprocess``: a later run of a processor on a recording it had
  already analysed) fire only rules with ``reanalysis = true``; ``first_ever``,
  ``first_of_day`` and ``not_seen_for`` judge against the station's whole history (its
  detections table), also for a rule added long after the label was first seen.
- ``on = "event"``: station events (``job_failed``, ``disk_low``, ``device_error``,
  ``battery_low``, or any event kind the station records).
- ``on = "reading"``: a slow sensor's value crossing ``above`` (or ``below``); it fires again
  only after the value went back past the threshold by ``hysteresis``.

Every rule has a ``cooldown`` (seconds after a firing during which the rule stays silent) and
optional ``quiet_hours`` (local times of the station's timezone, ``"22:00-06:30"``): firings
inside them are dropped, not delayed (an alert at 07:00 about an owl at 23:00 helps nobody).
"""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from fieldstation.config.base import Name, StrictModel
from fieldstation.config.units import Seconds

__all__ = [
    "EVENT_ALIASES",
    "AlertRule",
    "DetectionRule",
    "EventRule",
    "QuietHours",
    "ReadingRule",
    "parse_quiet_hours",
]

EVENT_ALIASES: dict[str, tuple[str, ...]] = {
    "job_failed": ("job_failed", "job_config_error"),
    "disk_low": ("disk_low",),
    "device_error": ("device_error",),
    "battery_low": ("battery_low",),
}
"""Event names a rule may give -> the station's event kinds they stand for."""

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


QuietHours = tuple[time, time]
"""Start and end of the quiet hours, local times; the end may be before the start (overnight)."""


def parse_quiet_hours(text: str) -> QuietHours:
    """``"22:00-06:30"`` -> (22:00, 06:30). Raises ValueError naming the expected form."""
    parts = text.split("-")
    if len(parts) != 2 or not all(_HHMM.match(p.strip()) for p in parts):
        raise ValueError(
            f"quiet_hours {text!r} must be 'HH:MM-HH:MM' in the station's timezone, "
            "e.g. '22:00-06:30'"
        )
    start, end = (time.fromisoformat(p.strip()) for p in parts)
    if start == end:
        raise ValueError(f"quiet_hours {text!r} is empty: start and end are the same time")
    return start, end


class _RuleBase(StrictModel):
    name: Name = Field(description="Unique rule name; shown in the alert and its message id.")
    enabled: bool = Field(default=True, description="A disabled rule never fires.")
    cooldown: Seconds = Field(
        default=600.0,
        ge=0,
        description="Seconds after a firing during which this rule stays silent (per label "
        "for detection rules, per event kind, per sensor quantity for readings).",
    )
    quiet_hours: str | None = Field(
        default=None,
        description="Local times 'HH:MM-HH:MM' (station timezone) when the rule does not fire; "
        "may span midnight ('22:00-06:30').",
    )
    outputs: list[Name] | None = Field(
        default=None,
        description="Outputs the alert goes to; omitted: every output taking 'alert' messages.",
    )
    title: str | None = Field(
        default=None,
        max_length=200,
        description="Title of the alert; omitted: one made from the rule and what fired it.",
    )

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str | None) -> str | None:
        if value is not None:
            parse_quiet_hours(value)
        return value

    @property
    def quiet(self) -> QuietHours | None:
        """The quiet hours as (start, end) local times, or None."""
        return parse_quiet_hours(self.quiet_hours) if self.quiet_hours else None


class DetectionRule(_RuleBase):
    """Fires on detections (see the module docstring)."""

    on: Literal["detection"] = Field(description="Rule kind: detections.")
    labels: list[str] | None = Field(
        default=None,
        description="Labels that match: exact names or shell-style patterns ('Strix*'); "
        "omitted: every label.",
    )
    sensors: list[Name] | None = Field(
        default=None, description="Only detections of recordings of these sensors."
    )
    min_score: float = Field(default=0.0, ge=0, le=1, description="Lowest score that counts.")
    condition: Literal["any", "first_of_day", "first_ever", "not_seen_for", "count"] = Field(
        default="any",
        description="any | first_of_day (station's local day) | first_ever | not_seen_for "
        "(not_seen_days) | count (count within window).",
    )
    not_seen_days: float = Field(
        default=30.0, gt=0, description="not_seen_for: days without the label before it fires."
    )
    count: int = Field(default=5, ge=1, description="count: detections of a label in window.")
    window: Seconds = Field(
        default=3600.0, gt=0, description="count: seconds over which detections are counted."
    )
    reanalysis: bool = Field(
        default=False,
        description="Also fire on detections of a re-analysis (a later run of a processor on "
        "a recording it had already analysed, as 'fieldstation reprocess' stores them); by "
        "default those never fire and are not counted.",
    )


class EventRule(_RuleBase):
    """Fires on station events."""

    on: Literal["event"] = Field(description="Rule kind: station events.")
    events: list[str] = Field(
        min_length=1,
        description="Events that fire: job_failed (also job_config_error), disk_low, "
        "device_error, battery_low, or any other event kind of the station.",
    )
    min_severity: Literal["info", "warning", "error"] = Field(
        default="info", description="Lowest event severity that fires."
    )

    def kinds(self) -> frozenset[str]:
        """The station event kinds this rule fires on."""
        out: set[str] = set()
        for name in self.events:
            out.update(EVENT_ALIASES.get(name, (name,)))
        return frozenset(out)


class ReadingRule(_RuleBase):
    """Fires when a slow sensor's value crosses a threshold (with hysteresis)."""

    on: Literal["reading"] = Field(description="Rule kind: readings of slow sensors.")
    quantity: str = Field(min_length=1, description="Quantity, e.g. 'temperature'.")
    sensor: Name | None = Field(default=None, description="Only this sensor; omitted: any.")
    above: float | None = Field(default=None, description="Fires when the value rises above.")
    below: float | None = Field(default=None, description="Fires when the value falls below.")
    hysteresis: float = Field(
        default=0.0,
        ge=0,
        description="Re-arms only once the value is back past the threshold by this much "
        "(in the quantity's unit).",
    )

    @model_validator(mode="after")
    def _one_threshold(self) -> ReadingRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("a reading rule needs exactly one of 'above' or 'below'")
        return self


AlertRule = Annotated[DetectionRule | EventRule | ReadingRule, Field(discriminator="on")]
"""One ``[[alerts]]`` entry; ``on`` says which kind."""


def alert_issues(rules: list[AlertRule], outputs: list[str], jobs: list[str]) -> list[str]:
    """Problems across sections: duplicate rule names, a rule naming an output that does not
    exist (``outputs`` are the station's output names), duplicate ``[[jobs]]`` names."""
    problems = []
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.name in seen:
            problems.append(f"alerts[{i}].name: duplicate rule name {rule.name!r}")
        seen.add(rule.name)
        for j, name in enumerate(rule.outputs or []):
            if name not in outputs:
                known = ", ".join(outputs) or "none defined"
                problems.append(f"alerts[{i}].outputs[{j}]: no output named {name!r} ({known})")
    names: set[str] = set()
    for i, job in enumerate(jobs):
        if job in names:
            problems.append(f"jobs[{i}].name: duplicate job name {job!r}")
        names.add(job)
    return problems
