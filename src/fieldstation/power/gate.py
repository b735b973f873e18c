"""What a recorder asks before and during a session: paused? clock trusted? clock stepped?

:class:`RecorderGate` combines the suspensions in force (:mod:`fieldstation.power.state`) and
the :class:`~fieldstation.power.clock.ClockGuard` for one recorder:

- :meth:`~RecorderGate.hold` before a session: a reason not to start one (the recorder
  waits, reporting it), or None;
- :meth:`~RecorderGate.cut` between two blocks of a session: the end reason of the chunk in
  progress when the session must end now: ``suspended`` or ``clock_step``;
- :meth:`~RecorderGate.wait` instead of a plain wait between slots: in pieces of at most
  ``clock.poll`` seconds, returning early when the clock stepped, so a step never makes the
  recorder sleep past a slot (it would skip it);
- :meth:`~RecorderGate.stamp` the creation time of rows (never before the clock's floor);
- :meth:`~RecorderGate.extra` what every chunk's row gets (``clock_unsynced``).

Each clock step is an event ``clock_step`` of the recorder; the first look at an untrusted
clock after a trusted one is an event ``clock_untrusted``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from fieldstation.clock import Clock
from fieldstation.power.clock import ClockGuard, ClockStep
from fieldstation.power.state import SuspensionFile, SuspensionSource, state_path

if TYPE_CHECKING:
    from datetime import datetime

    from fieldstation.job import JobContext
    from fieldstation.store.events import EventBacklog

__all__ = ["SUSPEND_POLL", "RecorderGate"]

log = logging.getLogger(__name__)

SUSPEND_POLL = 1.0
"""Seconds between two looks at the suspensions while a session records."""


class RecorderGate:
    """The gate of recorder job ``job`` (module docstring). ``suspensions``: where pauses
    come from (None: never paused); ``guard``: the clock guard (None: ``clock.check =
    false``); ``mark``: record while the clock is untrusted, marking the rows, instead of
    waiting; ``events``: where its events go (``source`` names the recorder)."""

    def __init__(
        self,
        job: str,
        clock: Clock,
        *,
        suspensions: SuspensionSource | None = None,
        guard: ClockGuard | None = None,
        mark: bool = False,
        poll: float = 10.0,
        events: EventBacklog | None = None,
        source: str = "",
    ) -> None:
        self.job = job
        self.clock = clock
        self.suspensions = suspensions
        self.guard = guard
        self.mark = mark
        self.poll = poll
        self.events = events
        self.source = source or job
        self.unsynced = False
        """The session in progress started while the clock was untrusted (``mark``)."""
        self._suspend_checked: float | None = None
        self._untrusted_reported = False

    @classmethod
    def of(cls, ctx: JobContext, sensor: str, events: EventBacklog) -> RecorderGate:
        """The gate of ``ctx``'s recorder of ``sensor`` by the station file: suspensions when
        a ``[[suspenders]]`` entry names it, the clock guard when ``clock.check`` (its floor:
        the newest time in the station database: events, readings, this sensor's
        recordings)."""
        from fnmatch import fnmatchcase

        from fieldstation.power.clock import newest_timestamp

        config = ctx.config
        job = f"recorder:{sensor}"
        held = any(fnmatchcase(job, p) for s in config.suspenders for p in s.jobs)
        guard = None
        if config.clock.check:
            guard = ClockGuard(config.clock, ctx.clock, floor=newest_timestamp(ctx.db, sensor))
        return cls(
            job,
            ctx.clock,
            suspensions=SuspensionFile(state_path(ctx.home)) if held else None,
            guard=guard,
            mark=config.clock.unsynced == "mark",
            poll=config.clock.poll,
            events=events,
            source=ctx.name or job,
        )

    # --- asked by the recorder ------------------------------------------------------------

    def hold(self) -> str | None:
        """Before a session: why not to start one now, or None (then the session is marked
        ``clock_unsynced`` when the clock is untrusted and ``mark`` is set)."""
        self._look_at_clock()
        if self.suspensions is not None:
            self._suspend_checked = self.clock.monotonic()
            reason = self.suspensions.reason(self.job)
            if reason is not None:
                return reason
        untrusted = self.guard.untrusted() if self.guard is not None else None
        if untrusted is not None and not self._untrusted_reported:
            self._untrusted_reported = True
            what = "recording marked clock_unsynced" if self.mark else "recording waits"
            self._event("clock_untrusted", f"{self.source}: {untrusted}; {what}", "warning", {})
        elif untrusted is None:
            self._untrusted_reported = False
        self.unsynced = untrusted is not None
        if untrusted is not None and not self.mark:
            return untrusted
        return None

    def cut(self) -> str | None:
        """During a session, before reading the next block: ``clock_step`` (the clock
        stepped: an event is recorded), ``suspended`` (a suspender now holds this recorder),
        or None to go on."""
        if self._look_at_clock() is not None:
            return "clock_step"
        if self.suspensions is not None:
            mono = self.clock.monotonic()
            if self._suspend_checked is None or mono - self._suspend_checked >= SUSPEND_POLL:
                self._suspend_checked = mono
                if self.suspensions.reason(self.job) is not None:
                    return "suspended"
        return None

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``stop`` in pieces of at most ``poll`` seconds while the
        clock is guarded; returns early (False) when the clock stepped; True when ``stop``
        is set."""
        if self.guard is None:
            return self.clock.wait(stop, seconds)
        if self._look_at_clock() is not None:
            return False
        left = seconds
        while left > 0:
            piece = min(left, self.poll)
            if self.clock.wait(stop, piece):
                return True
            if self._look_at_clock() is not None:
                return False
            left -= piece
        return stop.is_set()

    def stamp(self) -> datetime:
        """Creation time of a row written now: the wall time, never before the clock's
        floor (no timestamp goes backwards after a step back)."""
        return self.guard.stamp() if self.guard is not None else self.clock.now()

    def extra(self) -> dict[str, Any]:
        """What the row of a chunk of this session gets: ``{"clock_unsynced": True}`` when
        it started on an untrusted clock (``mark``), else nothing."""
        return {"clock_unsynced": True} if self.unsynced else {}

    # --- inside ---------------------------------------------------------------------------

    def _look_at_clock(self) -> ClockStep | None:
        if self.guard is None:
            return None
        step = self.guard.check()
        if step is not None:
            way = "forward" if step.seconds > 0 else "back"
            self._event(
                "clock_step",
                f"{self.source}: the clock stepped {way} by {abs(step.seconds):.1f} s "
                f"(to {step.now.isoformat(timespec='seconds')}); a session in progress is cut",
                "warning",
                step.as_dict(),
            )
        return step

    def _event(self, kind: str, message: str, severity: Any, data: dict[str, Any]) -> None:
        log.warning("%s", message)
        if self.events is not None:
            self.events.record(
                kind=kind,
                source=self.source,
                message=message,
                now=self.stamp(),
                severity=severity,
                data=data,
            )
