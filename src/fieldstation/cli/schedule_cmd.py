"""``fieldstation schedule``: when each sensor records, for how long, and the disk it needs."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from fieldstation.cli.common import (
    EXIT_INVALID,
    ConfigOpt,
    LegacyConfigArg,
    config_path,
    console,
    err_console,
    load_or_exit,
    plural,
)
from fieldstation.clock import SystemClock
from fieldstation.config.sensors import SensorConfig
from fieldstation.config.station import StationConfig
from fieldstation.config.units import format_bytes, format_seconds
from fieldstation.schedule import DayPlan, SchedulePlanner

if TYPE_CHECKING:
    from fieldstation.cli.json_output import ScheduleSensor

__all__ = ["FLAC_RATIO", "register", "schedule"]

FLAC_RATIO = 0.5
"""Rough size of a FLAC file relative to raw PCM. An estimate: FLAC typically stores field
recordings at 40-70 % of PCM, depending on noise; noisy, high-rate audio compresses least."""


def _local(moment: datetime, tz: ZoneInfo, day: date | None = None) -> str:
    local = moment.astimezone(tz)
    text = local.strftime("%H:%M")
    if day is not None and text == "00:00" and (local.date() - day).days == 1:
        return "24:00"
    if day is not None and local.date() != day:
        shift = (local.date() - day).days
        text += f" ({shift:+d}d)"
    return text


def _parse_start(text: str | None, tz: ZoneInfo) -> datetime:
    if text is None:
        return SystemClock().now()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        err_console.print(
            f"[red]--start {text!r}[/] is not a date or time; use e.g. 2027-06-21 or "
            "2027-06-21T05:00 (station local time unless an offset is given)"
        )
        raise typer.Exit(EXIT_INVALID) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed


def _notes(plan: DayPlan) -> str:
    notes = []
    if not plan.active:
        notes.append("filtered out")
    if plan.polar:
        edges = ", ".join(dict.fromkeys(f.edge for f in plan.polar))
        done = "whole day recorded" if plan.polar[0].action == "whole_day" else "window skipped"
        notes.append(f"[yellow]polar fallback[/]: no {edges} → {done}")
    return "; ".join(notes)


def _sensor_report(
    config: StationConfig, sensor: SensorConfig, start: datetime, days: int, slot_count: int
) -> None:
    station = config.station
    tz = station.tz
    schedule = config.schedule_for(sensor)
    planner = SchedulePlanner(schedule, station)
    label = f"schedule {sensor.schedule!r}" if sensor.schedule else "no schedule: continuous"
    state = "" if sensor.enabled else " [dim](disabled)[/]"
    console.rule(f"[bold]{sensor.name}[/] ({sensor.kind}, {label}){state}")

    upcoming = Table(title=f"next slots ({station.timezone})", title_justify="left")
    for column in ("date", "start", "end", "length"):
        upcoming.add_column(column)
    now = start
    for _ in range(slot_count):
        slot = planner.next_slot(now)
        if slot is None:
            break
        upcoming.add_row(
            slot.day.isoformat(),
            _local(slot.start, tz),
            _local(slot.end, tz, slot.day),
            format_seconds(slot.duration),
        )
        now = slot.end
    if upcoming.row_count:
        console.print(upcoming)
    else:
        console.print("[yellow]no slot in the next 400 days[/]")

    rate = sensor.bytes_per_second()
    flac = getattr(sensor, "format", None) == "flac"
    table = Table(title="per day", title_justify="left")
    for column in ("date", "windows", "slots", "hours"):
        table.add_column(column, justify="right" if column in ("slots", "hours") else "left")
    if rate is not None:
        table.add_column(f"{sensor.storage_label()} / day", justify="right")
        if flac:
            table.add_column("≈ FLAC / day", justify="right")
    table.add_column("notes")
    first = start.astimezone(tz).date()
    total = 0.0
    for plan in planner.plan_days(first, days):
        seconds = plan.recorded_seconds
        total += seconds
        windows = ", ".join(
            f"{_local(a, tz, plan.day)}–{_local(b, tz, plan.day)}" for a, b in plan.windows
        )
        row = [
            f"{plan.day.isoformat()} {plan.day.strftime('%a')}",
            windows or "—",
            str(len(plan.slots)),
            f"{seconds / 3600:.2f}",
        ]
        if rate is not None:
            row.append(format_bytes(seconds * rate))
            if flac:
                row.append(format_bytes(seconds * rate * FLAC_RATIO))
        row.append(_notes(plan))
        table.add_row(*row)
    console.print(table)
    if rate is None:
        console.print("storage: this sensor does not report its data rate")
    else:
        per_day = total / max(days, 1)
        text = (
            f"storage estimate from {format_bytes(rate)}/s of {sensor.storage_label()}: "
            f"{format_bytes(per_day * rate)} per day on average"
        )
        if flac:
            text += (
                f"; FLAC files are roughly half of that (≈ "
                f"{format_bytes(per_day * rate * FLAC_RATIO)} per day), an estimate: the real "
                "ratio depends on the sound"
            )
        console.print(text, highlight=False)


def _sensor_json(
    config: StationConfig, sensor: SensorConfig, start: datetime, days: int, slot_count: int
) -> ScheduleSensor:
    """The plan of ``sensor`` as :class:`~fieldstation.cli.json_output.ScheduleSensor`."""
    from fieldstation.cli.json_output import ScheduleDay, ScheduleSensor, ScheduleSlot

    tz = config.station.tz
    planner = SchedulePlanner(config.schedule_for(sensor), config.station)
    upcoming = []
    now = start
    for _ in range(slot_count):
        slot = planner.next_slot(now)
        if slot is None:
            break
        upcoming.append(
            ScheduleSlot(
                start=slot.start.astimezone(tz),
                end=slot.end.astimezone(tz),
                duration_s=slot.duration,
            )
        )
        now = slot.end
    rate = sensor.bytes_per_second()
    plans = []
    total = 0.0
    for plan in planner.plan_days(start.astimezone(tz).date(), days):
        total += plan.recorded_seconds
        plans.append(
            ScheduleDay(
                date=plan.day.isoformat(),
                windows=[(a.astimezone(tz), b.astimezone(tz)) for a, b in plan.windows],
                slots=len(plan.slots),
                recorded_s=plan.recorded_seconds,
                bytes=None if rate is None else plan.recorded_seconds * rate,
                active=plan.active,
                polar=list(dict.fromkeys(f.edge for f in plan.polar)),
            )
        )
    return ScheduleSensor(
        name=sensor.name,
        kind=sensor.kind,
        enabled=sensor.enabled,
        schedule=sensor.schedule,
        bytes_per_second=rate,
        storage_label=sensor.storage_label(),
        next_slots=upcoming,
        days=plans,
        bytes_per_day=None if rate is None else total / max(days, 1) * rate,
    )


def schedule(
    legacy: LegacyConfigArg = None,
    config: ConfigOpt = None,
    days: Annotated[int, typer.Option(min=1, max=400, help="Days to plan.")] = 7,
    sensor: Annotated[
        str | None, typer.Option(help="Only this sensor (default: every sensor).")
    ] = None,
    slots: Annotated[int, typer.Option(min=0, max=1000, help="Next slots listed.")] = 5,
    start: Annotated[
        str | None,
        typer.Option(help="Plan from this date or time (station local; default: now)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (for scripts) instead of tables.")
    ] = False,
) -> None:
    """Preview each sensor's recording slots, hours per day and storage, with polar fallbacks."""
    station = load_or_exit(config_path(config, legacy, "schedule"))
    chosen = station.sensors
    if sensor is not None:
        chosen = [s for s in station.sensors if s.name == sensor]
        if not chosen:
            known = ", ".join(s.name for s in station.sensors) or "none"
            err_console.print(f"[red]no sensor named {sensor!r}[/] (sensors: {known})")
            raise typer.Exit(EXIT_INVALID)
    begin = _parse_start(start, station.station.tz)
    if as_json:
        from fieldstation.cli.json_output import ScheduleList, dump

        dump(
            ScheduleList(
                station=station.station.id,
                timezone=station.station.timezone,
                start=begin,
                days=days,
                sensors=[_sensor_json(station, s, begin, days, slots) for s in chosen],
            )
        )
        return
    if not chosen:
        console.print("this station has no sensors")
        return
    console.print(
        f"station {station.station.id!r} at {station.station.latitude:.4f}, "
        f"{station.station.longitude:.4f} ({station.station.timezone}); planning "
        f"{plural(days, 'day')} "
        f"from {begin.astimezone(station.station.tz):%Y-%m-%d %H:%M %Z}",
        highlight=False,
    )
    for item in chosen:
        _sensor_report(station, item, begin, days, slots)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(schedule)
