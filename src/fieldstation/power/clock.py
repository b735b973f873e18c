"""Clock sanity: can the wall clock be trusted, and did it step?

A station without a real-time clock boots in 1970, or at the time it last shut down, until
NTP sets the clock; every timestamp written before then is wrong. :class:`ClockGuard` answers
two questions on an injected :class:`~fieldstation.clock.Clock`:

- **trusted?** The wall clock is trusted when it is not before the *floor*: the newest time
  the station itself wrote (:func:`newest_timestamp`: recordings, events, readings), the
  highest wall time this guard saw, and the release date of this version
  (:data:`RELEASE_DATE`, or ``clock.not_before``). With ``clock.require_sync`` the kernel
  must also say NTP synchronised it (:func:`system_synced`: ``timedatectl show -p
  NTPSynchronized``, else ``adjtimex(2)`` through ctypes). WeeWX waits for a sane clock the
  same way.
- **stepped?** Between two looks the wall clock must move as far as the monotonic clock
  (within ``clock.step_threshold``); a larger difference is a step (NTP stepping the clock,
  ``date -s``, a resume from suspend) and is returned as a :class:`ClockStep`.

The floor makes a clock stepped back wait until it is past the times already written, so no
timestamp goes backwards in the database and no schedule slot is recorded twice (decision
record 0101). :meth:`ClockGuard.stamp` gives a time for rows written meanwhile that is never
before the floor.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from fieldstation.clock import Clock
from fieldstation.config.power import ClockConfig

if TYPE_CHECKING:
    from fieldstation.store.db import Database

__all__ = [
    "RELEASE_DATE",
    "ClockGuard",
    "ClockStep",
    "SyncProbe",
    "adjtimex_synced",
    "newest_timestamp",
    "system_synced",
    "timedatectl_synced",
]

log = logging.getLogger(__name__)

RELEASE_DATE = datetime(2025, 12, 1, tzinfo=UTC)
"""No clock reading before this is true: the build date of this version of fieldstation
(moved forward at each release). ``clock.not_before`` overrides it."""

SYNC_CACHE = 60.0
"""Seconds a sync answer is reused (``timedatectl`` is a process start)."""

SyncProbe = Callable[[], bool | None]
"""``probe()``: True when NTP synchronised the clock, False when not, None when unknown."""

TIME_ERROR = 5
"""``adjtimex(2)`` return value of a clock that is not synchronised."""


def timedatectl_synced(timeout: float = 5.0) -> bool | None:
    """``timedatectl show -p NTPSynchronized --value``: True for ``yes``, False for ``no``,
    None without systemd (no ``timedatectl``, no D-Bus, a container)."""
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    answer = done.stdout.strip().lower()
    if done.returncode != 0 or answer not in ("yes", "no"):
        return None
    return answer == "yes"


def adjtimex_synced() -> bool | None:
    """The kernel's clock state by ``adjtimex(2)`` with ``modes = 0`` (read only): False for
    ``TIME_ERROR`` (not synchronised), True otherwise, None when libc has no ``adjtimex``
    (not Linux). The ``struct timex`` (208 bytes on 64-bit Linux) is only read by the
    kernel's answer here, so a zeroed buffer larger than it is passed."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    buffer = ctypes.create_string_buffer(512)  # modes (first int) = 0: read only
    state = int(adjtimex(buffer))
    if state < 0:
        return None
    return state != TIME_ERROR


def system_synced() -> bool | None:
    """:func:`timedatectl_synced`, else :func:`adjtimex_synced`."""
    answer = timedatectl_synced()
    return answer if answer is not None else adjtimex_synced()


def newest_timestamp(db: Database, sensor: str | None = None) -> datetime | None:
    """The newest time the station wrote: the latest recording's end and creation (of
    ``sensor`` only, when given: other recorders of a running station write concurrently and
    their rows may be a moment ahead), event and reading (aware UTC); None in an empty
    database."""
    from sqlalchemy import func, select

    from fieldstation.store.models import Event, Reading, Recording

    found: list[datetime] = []
    with db.session() as session:
        latest = select(Recording.started_at, Recording.duration)
        newest = select(func.max(Recording.created_at))
        if sensor is not None:
            latest = latest.where(Recording.sensor == sensor)
            newest = newest.where(Recording.sensor == sensor)
        row = session.execute(latest.order_by(Recording.started_at.desc()).limit(1)).first()
        if row is not None:
            found.append(row[0] + timedelta(seconds=float(row[1])))
        for query in (
            newest,
            select(func.max(Event.created_at)),
            select(func.max(Reading.measured_at)),
        ):
            value = session.execute(query).scalar()
            if value is not None:
                found.append(value)
    aware = [t if t.tzinfo is not None else t.replace(tzinfo=UTC) for t in found]
    return max(aware) if aware else None


@dataclass(frozen=True)
class ClockStep:
    """The wall clock moved ``seconds`` more (negative: less) than the monotonic clock
    between two looks; ``expected`` is where it should have been, ``now`` where it is."""

    seconds: float
    expected: datetime
    now: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "step_s": round(self.seconds, 3),
            "expected": self.expected.isoformat(),
            "now": self.now.isoformat(),
        }


class ClockGuard:
    """Trust and steps of ``clock`` (module docstring). ``floor``: the newest time already
    written (see :func:`newest_timestamp`), or None; ``sync``: the NTP probe (default
    :func:`system_synced`; consulted only with ``config.require_sync``, or by
    :meth:`status`). Not thread-safe: one owner."""

    def __init__(
        self,
        config: ClockConfig,
        clock: Clock,
        *,
        floor: datetime | None = None,
        sync: SyncProbe | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        base = config.not_before or RELEASE_DATE
        self.floor = max(base, floor) if floor is not None else base
        """Times before this are known to be wrong (raised as time goes by)."""
        self.sync = sync or system_synced
        self._synced: tuple[float, bool | None] | None = None
        self._last: tuple[datetime, float] | None = None
        self.steps = 0

    def check(self) -> ClockStep | None:
        """Look at the clock: a :class:`ClockStep` when it stepped since the last look; the
        floor rises to the wall time while the clock is trusted."""
        now, mono = self.clock.now(), self.clock.monotonic()
        last, self._last = self._last, (now, mono)
        step = None
        if last is not None:
            expected = last[0] + timedelta(seconds=mono - last[1])
            delta = (now - expected).total_seconds()
            if abs(delta) >= self.config.step_threshold:
                step = ClockStep(delta, expected, now)
                self.steps += 1
        if now > self.floor:
            self.floor = now  # a stepped-back clock must come past this again
        return step

    def synced(self) -> bool | None:
        """The NTP answer, asked at most every :data:`SYNC_CACHE` seconds."""
        mono = self.clock.monotonic()
        if self._synced is None or mono - self._synced[0] >= SYNC_CACHE:
            try:
                answer = self.sync()
            except Exception as error:  # a broken probe is "unknown", never a crash
                log.warning("clock sync state unknown: %s", error)
                answer = None
            self._synced = (mono, answer)
        return self._synced[1]

    def untrusted(self) -> str | None:
        """Why the clock cannot be trusted now, or None when it can."""
        now = self.clock.now()
        if now < self.floor and self.config.require_sync and self.synced() is True:
            # NTP says the clock is right: the floor came from a clock that ran ahead (an
            # RTC read wrong, a mistyped `date -s`) and must not stop recording for good
            log.warning(
                "clock synchronised by NTP at %s, before the newest time written (%s): "
                "trusting NTP",
                now.isoformat(timespec="seconds"),
                self.floor.isoformat(timespec="seconds"),
            )
            self.floor = now
        if now < self.floor:
            return (
                f"clock not trusted: {now.isoformat(timespec='seconds')} is before "
                f"{self.floor.isoformat(timespec='seconds')}, the newest time already written "
                "(waiting for NTP or an RTC to set the clock)"
            )
        if self.config.require_sync and self.synced() is not True:
            return "clock not trusted: not synchronised by NTP yet (clock.require_sync)"
        return None

    def stamp(self) -> datetime:
        """A time for a row written now: the wall time, never before the floor."""
        return max(self.clock.now(), self.floor)

    def status(self) -> dict[str, object]:
        """JSON-ready: ``trusted``, ``reason``, ``floor``, ``synced``, ``steps``."""
        reason = self.untrusted()
        return {
            "trusted": reason is None,
            "reason": reason,
            "floor": self.floor.isoformat(),
            "synced": self._synced[1] if self._synced is not None else None,
            "steps": self.steps,
        }
