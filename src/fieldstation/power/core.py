"""The suspender's decisions, without I/O: (state, value, now) -> transition or nothing.

:class:`SuspenderCore` is one ``[[suspenders]]`` entry as a two-state machine, ``running`` and
``suspended``. It is fed a value (volts, percent, amperes, degrees C, or a reading; ``None``
when unknown) with the monotonic time of the injected clock, and returns a :class:`Transition`
when the jobs it holds must be paused or resumed. It never reads a sensor, writes an event or
touches a job: :class:`~fieldstation.power.job.Suspenders` does those, driving the core (the
sans-IO shape of :mod:`fieldstation.runtime.core`). So hysteresis, the ``hold`` debounce and
the minimum time in each state are tested on a :class:`~fieldstation.clock.VirtualClock`.

Rules (``below`` threshold; ``above`` is the mirror image):

- ``running`` -> ``suspended`` when the value has been below ``below`` for ``hold`` seconds
  and the jobs have run ``min_running`` seconds since the last resume (not at start-up: a
  station booting on a flat battery suspends at its first look);
- ``suspended`` -> ``running`` when the value has been at or above ``resume`` for ``hold``
  seconds and the jobs have been paused ``min_suspended`` seconds;
- a value between ``below`` and ``resume`` changes nothing (hysteresis), nor does ``None``
  (a battery monitor that stopped answering keeps the last decision).

Not thread-safe: one owner calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fieldstation.config.power import SuspenderConfig

__all__ = ["State", "SuspenderCore", "Transition"]

State = Literal["running", "suspended"]

UNITS = {
    "battery_voltage": "V",
    "battery_percent": "%",
    "battery_current": "A",
    "cpu_temperature": "C",
    "reading": "",
}
"""Unit of each source, for messages."""


@dataclass(frozen=True)
class Transition:
    """The suspender changed state at monotonic ``at`` because of ``value``."""

    suspender: str
    state: State
    value: float
    threshold: float
    at: float
    message: str


@dataclass
class SuspenderCore:
    """Decisions for one suspender (rules in the module docstring)."""

    config: SuspenderConfig
    state: State = "running"
    since: float | None = None
    """Monotonic time of the last transition (None: none yet, no minimum applies)."""
    beyond_since: float | None = None
    """Monotonic time since which the value has been on the other side (debounce)."""
    last_value: float | None = None

    def _crossed(self, value: float) -> bool:
        """Whether ``value`` asks to leave the current state."""
        c = self.config
        if self.state == "running":
            return value < c.below if c.below is not None else value > (c.above or 0.0)
        return value >= c.resume if c.below is not None else value <= c.resume

    def _threshold(self) -> float:
        c = self.config
        if self.state == "suspended":
            return c.resume
        return c.below if c.below is not None else float(c.above or 0.0)

    def observe(self, value: float | None, now: float) -> Transition | None:
        """The value is ``value`` at monotonic ``now`` (seconds); returns the transition to
        carry out, or None."""
        if value is None:
            return None
        self.last_value = value
        if not self._crossed(value):
            self.beyond_since = None
            return None
        if self.beyond_since is None:
            self.beyond_since = now
        if now - self.beyond_since < self.config.hold:
            return None
        minimum = self.config.min_running if self.state == "running" else self.config.min_suspended
        if self.since is not None and now - self.since < minimum:
            return None
        threshold = self._threshold()
        self.state = "suspended" if self.state == "running" else "running"
        self.since = now
        self.beyond_since = None
        return Transition(
            suspender=self.config.name,
            state=self.state,
            value=value,
            threshold=threshold,
            at=now,
            message=self._message(value, threshold),
        )

    def _message(self, value: float, threshold: float) -> str:
        c = self.config
        unit = UNITS[c.source]
        what = c.source.replace("_", " ") if c.source != "reading" else f"{c.sensor} {c.quantity}"
        jobs = ", ".join(c.jobs)
        if self.state == "suspended":
            side = "below" if c.below is not None else "above"
            return (
                f"suspender {c.name}: {what} {value:g}{unit} {side} {threshold:g}{unit}; "
                f"paused {jobs} until it is back at {c.resume:g}{unit}"
            )
        return (
            f"suspender {c.name}: {what} {value:g}{unit} back at {threshold:g}{unit}; "
            f"resumed {jobs}"
        )

    def reason(self) -> str | None:
        """Why the jobs are paused (for waiting reports and status), None while running."""
        if self.state == "running":
            return None
        c = self.config
        unit = UNITS[c.source]
        side = "below" if c.below is not None else "above"
        limit = c.below if c.below is not None else c.above
        value = "" if self.last_value is None else f" {self.last_value:g}{unit}"
        return f"suspended by {c.name}: {c.source}{value} went {side} {limit:g}{unit}"
