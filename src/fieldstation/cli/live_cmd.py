"""``fieldstation live [SENSOR] -c FILE``: a terminal level meter reading the recorders' live
taps while the station runs (:mod:`fieldstation.cli.live_meter`, imported when it runs).

One row per audio (or fast readings) sensor: peak and RMS dBFS of what arrived in the last
refresh, as bars and numbers, redrawn several times a second with ``rich.live.Live``; a sensor
whose recorder is not running shows ``no signal``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Annotated

import typer

from fieldstation.cli.common import (
    EXIT_INVALID,
    ConfigOpt,
    console,
    err_console,
    home_of,
    load_or_exit,
)
from fieldstation.sensors.readings.config import is_slow

__all__ = ["live", "register"]


def live(
    sensor: Annotated[
        str | None, typer.Argument(help="Only this sensor (default: every audio sensor).")
    ] = None,
    config: ConfigOpt = None,
    seconds: Annotated[
        float | None, typer.Option(min=0.1, help="Stop after this many seconds (default: Ctrl-C).")
    ] = None,
) -> None:
    """Show live input levels (peak and RMS dBFS) of the running station's recorders."""
    from rich.live import Live

    from fieldstation.cli.live_meter import LevelRow, meter_table, watch_levels

    station = load_or_exit(config)
    candidates = [s for s in station.sensors if not is_slow(s) and s.media != "video"]
    if sensor is not None:
        candidates = [s for s in candidates if s.name == sensor]
        if not candidates:
            known = ", ".join(s.name for s in station.sensors if not is_slow(s)) or "none"
            err_console.print(
                f"[red]no audio sensor named {sensor!r}[/] (sensors with levels: {known})"
            )
            raise typer.Exit(EXIT_INVALID)
    if not candidates:
        console.print("this station has no audio sensor")
        return
    names = [s.name for s in candidates]
    home = home_of(station)
    out = console
    with (
        Live(
            meter_table([LevelRow(n) for n in names], time.monotonic()),
            console=out,
            refresh_per_second=10,
            transient=False,
        ) as view,
        contextlib.suppress(KeyboardInterrupt),
    ):  # Ctrl-C ends the meter, not an error
        watch_levels(
            home, names, lambda rows: view.update(meter_table(rows, time.monotonic())), seconds
        )


def register(app: typer.Typer) -> None:
    """Add ``live`` to ``app``."""
    app.command()(live)
