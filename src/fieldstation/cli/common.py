"""What every command shares: the console, loading a station file, exit codes."""

from __future__ import annotations

from pathlib import Path

import typer

from fieldstation.config import ConfigError, StationConfig, default_config, load_config
from fieldstation.home import StationHome
from fieldstation.job import EXIT_CONFIG
from fieldstation.runtime.logs import TolerantConsole

__all__ = [
    "EXIT_CONFIG",
    "EXIT_INVALID",
    "exit_status_of",
    "console",
    "err_console",
    "home_of",
    "load_or_exit",
    "print_config_error",
    "station_error",
]

EXIT_INVALID = 2
"""Exit status for invalid input (a bad station file, a bad argument)."""

# EXIT_CONFIG (fieldstation.job's, re-exported): the exit status when the station cannot start
# until someone acts (a damaged database, a home of another station): EX_CONFIG, which the
# systemd unit names in RestartPreventExitStatus= so that it does not restart in a loop.

console = TolerantConsole()
err_console = TolerantConsole(stderr=True)
"""Output of the commands: a reader that goes away (``| head``) silences them, never stops
``fieldstation run`` half-way."""


def print_config_error(error: ConfigError) -> None:
    """Print every issue of ``error`` with its key path, value and reason."""
    where = f" in {error.source}" if error.source else ""
    err_console.print(f"[bold red]{len(error.issues)} error(s){where}[/]", soft_wrap=True)
    for issue in error.issues:
        err_console.print(f"  {issue}", highlight=False, markup=False, soft_wrap=True)


def load_or_exit(path: Path | None) -> StationConfig:
    """Load the station file at ``path`` (None: the embedded default) or exit with status 2."""
    if path is None:
        return default_config()
    try:
        return load_config(path)
    except ConfigError as error:
        print_config_error(error)
        raise typer.Exit(EXIT_INVALID) from None


def home_of(config: StationConfig) -> StationHome:
    """The station home of ``config`` (not created)."""
    return StationHome(config.home_path())


def station_error(error: BaseException) -> BaseException | None:
    """The one-line error a user must act on behind ``error``, or None for an unexpected one
    (a bug: its traceback is worth having).

    Recognised: :class:`~fieldstation.home.HomeError` (read-only home, full disk, damaged or
    newer database, a home of another station), :class:`~fieldstation.home.StationLockedError`
    and a database driver error of a kind :func:`~fieldstation.store.db.database_error`
    knows (met while a command ran, after the database opened).
    """
    from sqlalchemy.exc import DBAPIError

    from fieldstation.home import HomeError, StationLockedError
    from fieldstation.store.db import database_error

    if isinstance(error, HomeError | StationLockedError):
        return error
    if isinstance(error, DBAPIError):
        notes = [n for n in getattr(error, "__notes__", ()) if n.startswith("station database: ")]
        path = Path(notes[0].partition(": ")[2]) if notes else Path("station.db")
        return database_error(error, path)
    if isinstance(error, OSError):
        from fieldstation.home import home_error

        return home_error(error, Path(error.filename or "."))
    return None


def exit_status_of(error: BaseException) -> int:
    """The exit status for a :func:`station_error`: :data:`EXIT_CONFIG` when retrying cannot
    help (a damaged database, a home of another station), :data:`EXIT_INVALID` for a newer
    release's database or a home in use (as before), else 1."""
    from fieldstation.home import StationLockedError
    from fieldstation.store.db import DatabaseDamagedError, SchemaVersionError
    from fieldstation.store.deployments import StationMismatchError

    if isinstance(error, DatabaseDamagedError | StationMismatchError):
        return EXIT_CONFIG
    if isinstance(error, SchemaVersionError | StationLockedError):
        return EXIT_INVALID
    return 1
