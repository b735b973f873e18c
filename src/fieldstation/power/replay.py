"""A battery that plays a recorded or synthetic curve: the INA219's fake, runs anywhere.

:class:`ReplayBattery` has the ``read()`` of :class:`~fieldstation.health.battery.Ina219Battery`
and returns the point of a series ``(seconds, volts, amperes)`` at the clock's monotonic time
since it was built (linear between points, the last point after the end). On a
:class:`~fieldstation.clock.VirtualClock` a day of battery plays in milliseconds.

:func:`synthetic_day` is the documented synthetic series of the power tests (docs/power.md):
a 12 V lead-acid battery discharged overnight, flat at the bottom, recharged by a solar panel,
with a ripple on top (a load switching on and off, the regulator hunting) that crosses any
single threshold many times near the cut-off, as a real battery under load does.
"""

from __future__ import annotations

import bisect
import csv
import math
from collections.abc import Sequence
from pathlib import Path

from fieldstation.clock import Clock
from fieldstation.health.battery import BatteryReading, percent_from_curve

__all__ = ["ReplayBattery", "read_curve", "synthetic_day"]

Point = tuple[float, float, float]
"""``(seconds since start, volts, amperes)``; amperes positive = discharging."""


def synthetic_day(step: float = 60.0, ripple: float = 0.12) -> list[Point]:
    """24 h of a 12 V lead-acid battery, one point per ``step`` seconds.

    - 0-10 h: discharging at 0.8 A, 12.6 V falling linearly to 11.6 V;
    - 10-14 h: flat at 11.6 V (the station would drain it further);
    - 14-20 h: charging at -1.5 A (solar), 11.6 V rising to 13.2 V;
    - 20-24 h: discharging at 0.8 A, 12.9 V falling to 12.6 V.

    On top: ``ripple`` volts peak of a 7-minute sine plus a 3-minute one of half that size
    (deterministic, no random numbers), so the voltage crosses 11.9 V (and 12.4 V) back and
    forth for tens of minutes on the way down and up.
    """
    points: list[Point] = []
    n = int(24 * 3600 / step)
    for i in range(n + 1):
        t = i * step
        h = t / 3600.0
        if h < 10:
            base, amps = 12.6 - (1.0 * h / 10), 0.8
        elif h < 14:
            base, amps = 11.6, 0.8
        elif h < 20:
            base, amps = 11.6 + 1.6 * (h - 14) / 6, -1.5
        else:
            base, amps = 12.9 - 0.3 * (h - 20) / 4, 0.8
        wobble = ripple * math.sin(2 * math.pi * t / 420.0)
        wobble += ripple / 2 * math.sin(2 * math.pi * t / 180.0 + 1.0)
        points.append((t, round(base + wobble, 4), amps))
    return points


def read_curve(path: Path) -> list[Point]:
    """A series from a CSV file with columns ``seconds,volts,amperes`` (a header line and
    lines starting with ``#`` are skipped). Raises ``ValueError`` on a malformed line."""
    points: list[Point] = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if not row or row[0].startswith("#") or row[0].strip() == "seconds":
                continue
            seconds, volts, amps = (float(x) for x in row[:3])
            points.append((seconds, volts, amps))
    return points


class ReplayBattery:
    """Plays ``points`` (sorted by time) on ``clock``'s monotonic time; ``curve``: volts to
    percent points, as ``battery.curve`` (default: the 12 V lead-acid curve of
    :class:`~fieldstation.config.health.BatteryConfig`)."""

    def __init__(
        self,
        points: Sequence[Point],
        clock: Clock,
        curve: Sequence[tuple[float, float]] | None = None,
    ) -> None:
        if not points:
            raise ValueError("a replayed battery needs at least one point")
        self.points = sorted(points)
        self._times = [p[0] for p in self.points]
        self.clock = clock
        self.start = clock.monotonic()
        if curve is None:
            from fieldstation.config.health import BatteryConfig

            curve = BatteryConfig().curve
        self.curve = list(curve)

    def at(self, seconds: float) -> tuple[float, float]:
        """Volts and amperes ``seconds`` after the start (linear between points)."""
        i = bisect.bisect_right(self._times, seconds)
        if i == 0:
            return self.points[0][1], self.points[0][2]
        if i >= len(self.points):
            return self.points[-1][1], self.points[-1][2]
        (t0, v0, a0), (t1, v1, a1) = self.points[i - 1], self.points[i]
        f = (seconds - t0) / (t1 - t0) if t1 > t0 else 1.0
        return v0 + (v1 - v0) * f, a0 + (a1 - a0) * f

    def read(self) -> BatteryReading:
        """The reading now (:class:`~fieldstation.health.battery.BatteryReading`)."""
        volts, amps = self.at(self.clock.monotonic() - self.start)
        return BatteryReading(
            voltage=volts,
            current=amps,
            power=volts * amps,
            percent=percent_from_curve(volts, self.curve),
        )

    def read_dict(self) -> dict[str, float | None]:
        """:meth:`read` as a dict (the heartbeat's battery)."""
        return self.read().as_dict()
