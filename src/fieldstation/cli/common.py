"""What every command shares: the console, loading a station file, exit codes."""

from __future__ import annotations

from pathlib import Path

import typer

from fieldstation.config import ConfigError, StationConfig, default_config, load_config
from fieldstation.home import StationHome
from fieldstation.runtime.logs import TolerantConsole

__all__ = [
    "EXIT_INVALID",
    "console",
    "err_console",
    "home_of",
    "load_or_exit",
    "print_config_error",
]

EXIT_INVALID = 2
"""Exit status for invalid input (a bad station file, a bad argument)."""

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
