"""Press patterns of one button: a pure, debounced state machine on an injected time line.

Feed it the raw edges of the pin (``edge(pressed, at)``, ``at`` in monotonic seconds) and ask
it what happened by a time (``poll(now)``); it never reads a clock or a pin itself, so it is
tested edge by edge on virtual time and driven by gpiozero on a Raspberry Pi
(:mod:`fieldstation.field.button`).

Debounce ("settle" rule): a new level counts only once it has held for ``debounce`` seconds
with no other edge; it counts from the moment it began. Contact bounce (edges a few ms apart)
is therefore invisible, whatever its length below ``debounce``.

Patterns, decided on release (``held`` = release - press, seconds):

- ``very_long``: ``held >= very_long_press`` (when set);
- ``long``: ``held >= long_press``;
- ``double``: a second press that starts less than ``double_window`` after the first release
  (whatever the second press's length);
- ``short``: any other press, reported once ``double_window`` has passed after its release
  with no second press (at once when ``double_window`` is 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Press", "PressDetector", "PressKind", "PressTiming"]

PressKind = Literal["short", "double", "long", "very_long"]


@dataclass(frozen=True)
class PressTiming:
    """Timing of the patterns, seconds (see the module docstring)."""

    debounce: float = 0.03
    double_window: float = 0.4
    long_press: float = 2.0
    very_long_press: float | None = 8.0

    @classmethod
    def of(cls, config: object) -> PressTiming:
        """From a :class:`~fieldstation.config.field.ButtonConfig`."""
        return cls(
            debounce=float(config.debounce),  # type: ignore[attr-defined]
            double_window=float(config.double_window),  # type: ignore[attr-defined]
            long_press=float(config.long_press),  # type: ignore[attr-defined]
            very_long_press=(
                None
                if config.very_long_press is None  # type: ignore[attr-defined]
                else float(config.very_long_press)  # type: ignore[attr-defined]
            ),
        )


@dataclass(frozen=True)
class Press:
    """One recognised press: its kind, when it was released (monotonic s) and how long the
    (last) press was held (s)."""

    kind: PressKind
    at: float
    held: float


class PressDetector:
    """The state machine of one button (see the module docstring). Not thread-safe: one
    owner feeds it."""

    def __init__(self, timing: PressTiming) -> None:
        self.timing = timing
        self._raw = False
        """The pin's last reported level (True = pressed)."""
        self._raw_since = 0.0
        self._stable = False
        """The debounced level."""
        self._down_since: float | None = None
        self._second = False
        """The current press is the second of a double press."""
        self._released_at: float | None = None
        """A short press waiting for its double window to pass."""
        self._released_held = 0.0

    @property
    def pressed(self) -> bool:
        """The debounced level (True while the button is held)."""
        return self._stable

    def edge(self, pressed: bool, at: float) -> list[Press]:
        """The pin went to ``pressed`` at ``at``; returns presses decided up to ``at``."""
        found = self.poll(at)
        if pressed != self._raw:
            self._raw, self._raw_since = pressed, at
        return found

    def deadline(self) -> float | None:
        """When :meth:`poll` may next find something (monotonic s), or None."""
        times: list[float] = []
        if self._raw != self._stable:
            times.append(self._raw_since + self.timing.debounce)
        if self._released_at is not None:
            times.append(self._released_at + self.timing.double_window)
        return min(times) if times else None

    def poll(self, now: float) -> list[Press]:
        """Presses decided by ``now`` (monotonic s), oldest first."""
        found: list[Press] = []
        settle = self._raw_since + self.timing.debounce
        if self._raw != self._stable and now >= settle:
            # a short press whose window ended before this level settled comes first
            self._expire(self._raw_since, found)
            self._stable = self._raw
            if self._stable:
                self._on_press(self._raw_since)
            else:
                self._on_release(self._raw_since, found)
        self._expire(now, found)
        return found

    def _expire(self, now: float, found: list[Press]) -> None:
        """Report the waiting short press once its double window has passed, unless a press
        that began inside the window is still settling (it may be the second of a double)."""
        released = self._released_at
        if released is None:
            return
        end = released + self.timing.double_window
        settling = self._raw and not self._stable and self._raw_since < end
        if now >= end and not settling:
            found.append(Press("short", released, self._released_held))
            self._released_at = None

    def _on_press(self, at: float) -> None:
        released = self._released_at
        self._second = released is not None and at - released < self.timing.double_window
        if self._second:
            self._released_at = None
        self._down_since = at

    def _on_release(self, at: float, found: list[Press]) -> None:
        assert self._down_since is not None
        held = at - self._down_since
        self._down_since = None
        timing = self.timing
        if self._second:
            self._second = False
            found.append(Press("double", at, held))
        elif timing.very_long_press is not None and held >= timing.very_long_press:
            found.append(Press("very_long", at, held))
        elif held >= timing.long_press:
            found.append(Press("long", at, held))
        elif timing.double_window <= 0:
            found.append(Press("short", at, held))
        else:
            self._released_at, self._released_held = at, held
