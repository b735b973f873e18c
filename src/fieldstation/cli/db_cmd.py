"""``fieldstation db check`` and ``fieldstation db recover``: the station database's health.

check: ``PRAGMA integrity_check`` and the schema revision, read-only (it works on a read-only
home and beside a running station); exit 0 when the database is sound, 1 when not.
recover: under the station lock, move a damaged ``station.db`` (and its ``-wal``/``-shm``)
aside as ``station.db.damaged-<UTC time>``, then run the station's start-up path
(:func:`~fieldstation.runtime.startup.start_station`) on the new empty database: the
deployments named in the files' embedded metadata are restored and every file under ``data/``
gets its recording row back, as start-up recovery does for an empty database. Detections,
outbox messages and events lived only in the old file: they stay there, for forensics.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from fieldstation.cli.common import (
    ConfigOpt,
    LegacyConfigArg,
    config_path,
    console,
    err_console,
    home_of,
    load_or_exit,
    plural,
)

__all__ = ["check", "recover", "register"]

db_app = typer.Typer(help="Check and recover the station database.", no_args_is_help=True)


def _integrity(path: Path) -> tuple[list[str], str | None]:
    """``(problems, revision)`` of the database at ``path``, opened read-only: problems is
    empty when ``PRAGMA integrity_check`` says ok. Raises ``HomeError`` (cannot be read)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from fieldstation.store.db import database_error, open_database

    db = open_database(path, migrate=False, read_only=True)
    try:
        revision = db.check_schema()
        with db.engine.connect() as connection:
            rows = connection.execute(text("PRAGMA integrity_check")).scalars().all()
    except DBAPIError as error:
        raise (database_error(error, path) or error) from error
    finally:
        db.dispose()
    return [str(row) for row in rows if row != "ok"], revision


@db_app.command("check")
def check(legacy: LegacyConfigArg = None, config: ConfigOpt = None) -> None:
    """Check the station database (integrity and schema); exit 1 when it is damaged."""
    from fieldstation.home import HomeError
    from fieldstation.store.db import SCHEMA_HEAD

    home = home_of(load_or_exit(config_path(config, legacy, "db check")))
    path = home.database
    if not path.exists():
        err_console.print(f"no station database at {path}: the station never ran", style="red")
        raise typer.Exit(1)
    try:
        problems, revision = _integrity(path)
    except HomeError as error:
        err_console.print(str(error), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if problems:
        err_console.print(
            f"{path}: damaged, {plural(len(problems), 'integrity problem')}; 'fieldstation db "
            "recover' moves it aside and rebuilds it from data/",
            style="red",
            markup=False,
            soft_wrap=True,
        )
        for problem in problems[:10]:
            err_console.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    state = "at head" if revision == SCHEMA_HEAD else f"to be migrated to {SCHEMA_HEAD}"
    if revision is None:
        state = "empty (no schema yet)"
    console.print(f"{path}: integrity ok, schema {revision} ({state})", highlight=False)


def _move_aside(path: Path, now: datetime) -> list[Path]:
    """Rename ``path`` and its ``-wal``/``-shm`` to ``<name>.damaged-<UTC time>[-wal|-shm]``
    durably; returns the new paths."""
    from fieldstation.home import move_durably

    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    moved = []
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            target = path.with_name(f"{path.name}.damaged-{stamp}{suffix}")
            move_durably(source, target)
            moved.append(target)
    return moved


@db_app.command("recover")
def recover(
    legacy: LegacyConfigArg = None,
    config: ConfigOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Rebuild even when the database checks sound (its detections, "
            "outbox and events stay in the moved-aside file).",
        ),
    ] = False,
) -> None:
    """Move a damaged station database aside and rebuild it from data/ (the station must be
    stopped)."""
    from fieldstation.home import HomeError, StationLockedError
    from fieldstation.runtime.startup import start_station

    cfg = load_or_exit(config_path(config, legacy, "db recover"))
    home = home_of(cfg)
    path = home.database
    try:
        lock = home.lock()
    except StationLockedError as error:
        err_console.print(str(error), style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    try:
        if path.exists() and not force:
            try:
                problems, _ = _integrity(path)
            except HomeError:
                problems = ["cannot be read"]
            if not problems:
                err_console.print(
                    f"{path} checks sound: nothing to recover (--force rebuilds it anyway; "
                    "detections, outbox and events would then stay in the old file only)",
                    style="yellow",
                    markup=False,
                    soft_wrap=True,
                )
                raise typer.Exit(1)
        moved = _move_aside(path, datetime.now(UTC)) if path.exists() else []
        for target in moved:
            console.print(f"moved aside: {target}", highlight=False)
        started = start_station(cfg, lock=lock)
    except BaseException:
        lock.release()
        raise
    started.close()
    report = started.recovery
    if started.recovery_error is not None:
        err_console.print(f"recovery failed: {started.recovery_error}", style="red", markup=False)
        raise typer.Exit(1)
    console.print(
        f"{path} rebuilt: deployment {started.deployment_id}, "
        f"{plural(len(report.registered) if report else 0, 'recording')} registered from "
        f"data/, {len(report.quarantined) if report else 0} quarantined",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add the ``db`` command group to ``app``."""
    app.add_typer(db_app, name="db")
