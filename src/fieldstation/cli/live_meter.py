"""The terminal level meter of ``fieldstation live``: reads the recorders' live taps
(:mod:`fieldstation.recording.tap`) and draws peak and RMS dBFS per sensor
(:mod:`fieldstation.recording.levels`) with rich. Imported only when ``live`` runs, so the
command line (and ``fieldstation run``'s supervisor) does not load numpy or ZeroMQ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from rich.table import Table
from rich.text import Text

from fieldstation.home import StationHome
from fieldstation.recording.levels import Levels, levels
from fieldstation.recording.tap import LiveSubscriber, TapError

__all__ = ["REFRESH", "LevelRow", "meter_table", "watch_levels"]

REFRESH = 0.2
"""Seconds between two redraws of the meter."""
METER_MIN = -80.0
"""dBFS at the left end of a bar."""
STALE = 2.0
"""Seconds without a block after which a sensor shows ``no signal``."""


@dataclass
class LevelRow:
    """What the meter shows for one sensor."""

    sensor: str
    levels: Levels | None = None
    """Levels of the blocks of the last refresh; None before any block."""
    last_seen: float | None = None
    """``time.monotonic()`` of the last block."""
    blocks: int = 0
    rate: int | None = None
    pending: list[np.ndarray] = field(default_factory=list)


def _bar(db: float, width: int, style: str) -> Text:
    filled = int(round(max(0.0, min(1.0, (db - METER_MIN) / -METER_MIN)) * width))
    return Text("█" * filled, style=style) + Text("·" * (width - filled), style="dim")


def meter_table(rows: list[LevelRow], now: float, width: int = 40) -> Table:
    """The meter: one line per sensor with its peak and RMS bars (``METER_MIN`` to 0 dBFS)."""
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("sensor")
    table.add_column(f"level ({METER_MIN:.0f} … 0 dBFS)")
    table.add_column("peak", justify="right")
    table.add_column("RMS", justify="right")
    for row in rows:
        if row.levels is None or row.last_seen is None or now - row.last_seen > STALE:
            table.add_row(row.sensor, Text("no signal (is it recording?)", style="dim"), "", "")
            continue
        peak, rms = max(row.levels.peak), max(row.levels.rms)
        style = "red" if peak > -1.0 else "yellow" if peak > -12.0 else "green"
        bars = _bar(peak, width, style) + Text("\n") + _bar(rms, width, "cyan")
        table.add_row(row.sensor, bars, f"{peak:6.1f}", f"{rms:6.1f}")
    return table


def watch_levels(
    home: StationHome,
    sensors: list[str],
    on_refresh: Callable[[list[LevelRow]], None],
    seconds: float | None = None,
    refresh: float = REFRESH,
) -> list[LevelRow]:
    """Read the live taps of ``sensors`` in ``home`` and call ``on_refresh(rows)`` every
    ``refresh`` seconds with each sensor's levels over that interval, for ``seconds`` (None:
    until interrupted); returns the rows. A message that cannot be read is skipped."""
    rows = [LevelRow(name) for name in sensors]
    subscribers = [LiveSubscriber(home, name) for name in sensors]
    try:
        end = None if seconds is None else time.monotonic() + seconds
        next_refresh = time.monotonic() + refresh
        while end is None or time.monotonic() < end:
            for row, live in zip(rows, subscribers, strict=True):
                while True:
                    try:
                        block = live.receive(0)
                    except TapError:
                        continue
                    if block is None:
                        break
                    if block.jpeg is None and len(block.data):
                        row.pending.append(block.data)
                        row.last_seen = time.monotonic()
                        row.rate = block.rate
                        row.blocks += 1
            now = time.monotonic()
            if now >= next_refresh:
                next_refresh = now + refresh
                for row in rows:
                    if row.pending:
                        row.levels = levels(np.concatenate(row.pending))
                        row.pending = []
                on_refresh(rows)
            time.sleep(min(0.02, refresh))
    finally:
        for live in subscribers:
            live.close()
    return rows
