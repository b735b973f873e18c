"""``fieldstation record -c FILE --sensor NAME --for 30s``: record one sensor now, then stop.

Runs the same recorder job the station runs, after the station's own start-up path
(:func:`~fieldstation.runtime.startup.start_station`: lock, schema check, migration,
deployment, lease expiry, recovery), holding the station lock so no runtime records into the
same home at the same time. By default the sensor's schedule
applies inside the period; ``--now`` records the whole period regardless of the schedule.

The recorder stops once ``--for`` of frames are in committed chunks (``run_recorder(
max_frames=...)``), counted from the first captured frame, so ``--for 5s`` at 48 kHz is exactly
240000 frames however slowly the sensor started. The run also ends at a deadline whatever the
schedule (start + ``--for``): slots starting in the period are cut at it (only a slot open
since the period's start, as with ``--now`` or continuous recording, may run a short margin
past it to complete the frames), the recorder's waits between slots never run past it
(``until``), and the command sets the stop event at the end of the margin, so a duty cycle
whose next slot lies beyond the period (or a recorder backing off a failed device, or a
sensor that never delivers) cannot keep it waiting. When no slot was open in the period the
command says so.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer

from fieldstation.cli.common import (
    EXIT_INVALID,
    ConfigOpt,
    LegacyConfigArg,
    config_path,
    console,
    err_console,
    home_of,
    load_or_exit,
    plural,
)
from fieldstation.config.units import parse_duration

__all__ = ["record", "register"]

START_MARGIN = 5.0
"""Seconds (at least; 10 % of the period when longer) a slot open at the end of the period may
go on so that the frames asked for are all recorded after a slow sensor start; the command
stops then whatever the sensor does."""


def _clipped(slots: Any, deadline: datetime, end_by: datetime, since: datetime) -> Any:
    """The slots of ``slots`` that start before ``deadline``, cut at ``deadline``; except a
    slot already open at ``since`` (the period's start: the period lies in it), which may run
    to ``end_by`` so that the frames asked for are all recorded after a slow sensor start."""
    from fieldstation.recording.job import ContinuousSlot

    first = slots(since)
    open_at_start = first is not None and first.start <= since < first.end

    def clipped(now: datetime) -> ContinuousSlot | None:
        slot = slots(now)
        if slot is None or slot.start >= deadline:
            return None
        # the slot open when the period began (continuous recording gives one from ``now``)
        same = open_at_start and slot.start < first.end
        return ContinuousSlot(slot.start, min(slot.end, end_by if same else deadline))

    return clipped


def _whole_period(start: datetime, end: datetime) -> Any:
    """A slot function with the single slot ``[start, end)``."""
    from fieldstation.recording.job import ContinuousSlot

    return lambda now: ContinuousSlot(start, end)


def record(
    legacy: LegacyConfigArg = None,
    config: ConfigOpt = None,
    sensor: Annotated[
        str | None, typer.Option("--sensor", "-s", help="Sensor name (default: the first).")
    ] = None,
    duration: Annotated[
        str, typer.Option("--for", help="How long to record, e.g. '30s', '5m', '1h'.")
    ] = "30s",
    now: Annotated[
        bool, typer.Option("--now", help="Record the whole period, ignoring the schedule.")
    ] = False,
) -> None:
    """Record one sensor for a while into the station home (chunks, rows, outbox messages)."""
    from fieldstation.clock import SystemClock
    from fieldstation.home import StationLockedError
    from fieldstation.job import JobContext
    from fieldstation.recording.job import RecorderError, run_recorder, schedule_slots
    from fieldstation.recording.rows import run_readings
    from fieldstation.runtime.startup import private_umask, start_station
    from fieldstation.sensors import SensorError, build_sensor
    from fieldstation.sensors.readings.config import is_slow

    cfg = load_or_exit(config_path(config, legacy, "record"))
    try:
        seconds = parse_duration(duration)
    except ValueError as error:
        err_console.print(f"[red]--for: {error}[/]")
        raise typer.Exit(EXIT_INVALID) from None
    enabled = [s.name for s in cfg.sensors if s.enabled]
    name = sensor or (enabled[0] if enabled else None)
    if name is None or name not in [s.name for s in cfg.sensors]:
        err_console.print(f"[red]no sensor {name!r}; sensors: {', '.join(enabled) or 'none'}[/]")
        raise typer.Exit(EXIT_INVALID)
    home = home_of(cfg)
    clock = SystemClock()
    with private_umask():  # from the start: the database, logs and data it creates
        try:
            started = start_station(cfg, clock)  # lock → schema → migrate → deployment → recovery
        except StationLockedError as error:
            err_console.print(f"[red]{error}[/]")
            raise typer.Exit(1) from None
        with started.lock:
            db = started.db
            stop = threading.Event()
            deadline = clock.now() + timedelta(seconds=seconds)  # reset after recovery, below
            chunks: list[dict[str, Any]] = []
            measured: list[dict[str, Any]] = []
            failure: list[BaseException] = []

            def progress(what: str, details: dict[str, Any]) -> None:
                if what == "chunk":
                    chunks.append(details)
                    console.print(f"  {details['path']}  {details['frames']} frames")
                elif what == "readings":
                    measured.append(details)
                    console.print(
                        f"  {details['measured_at']}  {plural(int(details['rows']), 'value')}"
                    )
                elif what == "slot":
                    console.print(f"recording {name}: {details['start']} → {details['end']}")
                elif what == "waiting" and clock.now() >= deadline:
                    stop.set()

            ctx = JobContext(
                cfg,
                home,
                started.deployment_id,
                clock,
                stop,
                progress,
                name=f"record:{name}",
                stop_reason="stopped",
            )
            ctx.__dict__["db"] = db  # share the open database (cached_property slot)
            report = started.recovery
            if report is not None and report.changed:
                console.print(f"recovery: { {k: len(v) for k, v in report.as_dict().items()} }")
            try:  # built (its libraries imported) before the period starts, not in it
                built = build_sensor(cfg.sensor(name), clock, home=home.root)
            except SensorError as error:
                err_console.print(f"[red]{error}[/]")
                raise typer.Exit(EXIT_INVALID) from None
            slow = is_slow(cfg.sensor(name))
            # exactly the frames asked for: counted from the first captured frame, not from a
            # deadline set before the sensor opened (which a slow start would eat into)
            max_frames = None if slow else round(seconds * built.describe().rate)
            begin = clock.now()
            deadline = begin + timedelta(seconds=seconds)  # slots start before it
            # a slot open at the deadline goes on until the frames are in, at most this long
            # (a sensor that delivers nothing cannot keep the command waiting)
            guard = deadline + timedelta(seconds=max(START_MARGIN, 0.1 * seconds))
            base: Any
            if now:
                base = _whole_period(begin, guard)
            else:
                try:
                    base = schedule_slots(cfg, cfg.sensor(name))
                except RecorderError as error:
                    err_console.print(f"[red]{error}[/]")
                    raise typer.Exit(EXIT_INVALID) from None

            def job() -> None:
                try:
                    if slow:  # a thermometer: rows, not chunks
                        run_readings(
                            ctx,
                            name,
                            slots=_clipped(base, deadline, deadline, begin),
                            sensor=built,
                            stop_when_exhausted=True,
                            until=deadline,
                        )
                        return
                    run_recorder(
                        ctx,
                        name,
                        slots=_clipped(base, deadline, guard, begin),
                        sensor=built,
                        stop_when_exhausted=True,
                        until=deadline,
                        max_frames=max_frames,
                    )
                except BaseException as error:  # reported below, in the main thread
                    failure.append(error)

            worker = threading.Thread(target=job, name=f"record:{name}")
            worker.start()
            try:
                end = deadline if slow else guard
                while worker.is_alive():
                    left = (end - clock.now()).total_seconds()
                    if left <= 0:
                        stop.set()  # the period is over, whatever the recorder is doing
                    worker.join(min(0.2, left) if left > 0 else 0.2)
            except KeyboardInterrupt:
                stop.set()
                worker.join()
            if started.events is not None:  # a recovery_failed event the disk refused
                started.events.flush()
            db.dispose()
    if failure:
        problem = failure[0]
        if isinstance(problem, RecorderError | SensorError):
            err_console.print(f"[red]{problem}[/]")
            raise typer.Exit(EXIT_INVALID)
        raise problem
    if measured:
        rows = sum(int(m["rows"]) for m in measured)
        console.print(
            f"{plural(len(measured), 'measurement')}, {plural(rows, 'value')}, in {home.database}"
        )
        return
    total = sum(int(c["frames"]) for c in chunks)
    if not chunks and not now:
        console.print(
            f"no slot of {name}'s schedule was open in these {duration}: nothing recorded "
            "(--now records regardless of the schedule)"
        )
        return
    console.print(f"{plural(len(chunks), 'chunk')}, {plural(total, 'frame')}, in {home.data}")


def register(app: typer.Typer) -> None:
    """Add ``record`` to ``app``."""
    app.command("record")(record)
