"""``fieldstation export``: detections, recordings or readings to CSV, Parquet, Raven
selection tables or an SQL database, incremental per target, with a progress bar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from fieldstation.cli.common import EXIT_INVALID, ConfigOpt, err_console, home_of, load_or_exit

__all__ = ["export", "register"]


def export(
    config: ConfigOpt = None,
    what: Annotated[
        str, typer.Option("--what", help="detections, recordings, readings or runs.")
    ] = "detections",
    fmt: Annotated[
        str, typer.Option("--format", help="csv, parquet, raven (detections) or sql.")
    ] = "csv",
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="csv: a file; parquet, raven: a folder; sql: a SQLAlchemy URL "
            "(postgresql+psycopg://user@host/db).",
        ),
    ] = "",
    since: Annotated[
        str | None, typer.Option("--since", help="Only rows younger than this age (2d, 6h).")
    ] = None,
    full: Annotated[
        bool,
        typer.Option("--full", help="Everything again, ignoring and keeping the target's cursor."),
    ] = False,
) -> None:
    """Export what is new since the last export to the same target (its cursor is kept in
    the station home, state/exports.json); --full exports everything."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from fieldstation.config.units import parse_duration
    from fieldstation.export import ExportError, run_export
    from fieldstation.store import open_database

    station = load_or_exit(config)
    if not to:
        err_console.print("[red]--to is required[/]: a file, a folder or a database URL")
        raise typer.Exit(EXIT_INVALID)
    start = None
    if since is not None:
        try:
            start = datetime.now(UTC) - timedelta(seconds=parse_duration(since))
        except ValueError as error:
            err_console.print(f"[red]--since {since!r}[/]: {error}")
            raise typer.Exit(EXIT_INVALID) from None
    home = home_of(station)
    if not home.database.exists():
        err_console.print(f"[red]no station database at {home.database}[/]: has the station run?")
        raise typer.Exit(EXIT_INVALID)
    db = open_database(home.database, migrate=False)
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as bar:
            task = bar.add_task(f"{what} -> {fmt}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = run_export(
                db,
                home_root=home.root,
                station=station.station.id,
                what=what,
                fmt=fmt,
                to=to,
                since=start,
                incremental=not full,
                progress=progress,
            )
    except ExportError as error:
        err_console.print(f"[red]cannot export[/]: {error}")
        raise typer.Exit(EXIT_INVALID) from None
    finally:
        db.dispose()
    print(f"exported {result.rows} {what} to {result.target}")


def register(app: typer.Typer) -> None:
    """Add ``export`` to ``app``."""
    app.command()(export)
