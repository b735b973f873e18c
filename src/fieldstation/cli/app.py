"""The ``fieldstation`` command line (typer + rich).

Each command module has a ``register(app)`` function; this module only assembles them, so a
command lives beside its peers, not here.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from fieldstation import __version__

__all__ = ["app", "main"]

COMMAND_MODULES = (
    "fieldstation.cli.config_cmds",  # init, validate, config schema
    "fieldstation.cli.schedule_cmd",  # schedule
    "fieldstation.cli.record_cmd",  # record
    "fieldstation.cli.analyze_cmd",  # analyze, reprocess
    "fieldstation.cli.outbox_cmd",  # outbox
    "fieldstation.cli.data_cmd",  # recordings, detections, pin
    "fieldstation.cli.runtime_cmd",  # run, status, start/stop/restart, logs, install, uninstall
)

app = typer.Typer(
    name="fieldstation",
    help="Run and manage an autonomous field sensor station.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"fieldstation {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Run and manage an autonomous field sensor station."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    """Entry point of the ``fieldstation`` script.

    Errors every command can meet on a station home are printed as one line and exit 2
    instead of a traceback: a database written by a newer release
    (:class:`~fieldstation.store.db.SchemaVersionError`) and a station home held by another
    process (:class:`~fieldstation.home.StationLockedError`).
    """
    try:
        app()
    except Exception as error:
        from fieldstation.cli.common import EXIT_INVALID, err_console
        from fieldstation.home import StationLockedError
        from fieldstation.store.db import SchemaVersionError

        if not isinstance(error, SchemaVersionError | StationLockedError):
            raise
        err_console.print(f"[red]{error}[/]", highlight=False, soft_wrap=True)
        raise SystemExit(EXIT_INVALID) from None
