"""The ``fieldstation`` command line (typer + rich).

Each command module has a ``register(app)`` function; this module only assembles them, so a
command lives beside its peers, not here.
"""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

from fieldstation import __version__
from fieldstation.cli.common import use_plain_help

__all__ = ["app", "main"]

COMMAND_MODULES = (
    "fieldstation.cli.config_cmds",  # init, validate, config schema
    "fieldstation.cli.schedule_cmd",  # schedule
    "fieldstation.cli.record_cmd",  # record
    "fieldstation.cli.analyze_cmd",  # analyze, reprocess
    "fieldstation.cli.outbox_cmd",  # outbox
    "fieldstation.cli.data_cmd",  # recordings, detections, pin
    "fieldstation.cli.db_cmd",  # db check, db recover
    "fieldstation.cli.runtime_cmd",  # run, status, start/stop/restart, logs, install, uninstall
    "fieldstation.cli.hub_cmd",
    "fieldstation.cli.web_cmd",  # web-password
    "fieldstation.cli.live_cmd",  # live (terminal level meter of the live taps)
    "fieldstation.cli.export_cmd",  # export
)

app = typer.Typer(
    name="fieldstation",
    help="Run and manage an autonomous field sensor station.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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

use_plain_help(app)  # help in plain words (FILE, TEXT), not typer's <bool> and {config}


def main() -> None:
    """Entry point of the ``fieldstation`` script.

    Errors every command can meet on a station home are printed as one line instead of a
    traceback (``cli.common.station_error``): a database written by a newer release or held
    by another process (exit 2), a damaged database or a home of another station (exit 78,
    which systemd does not restart), a read-only home or a full disk (exit 1).
    """
    try:
        app()
    except Exception as error:
        from fieldstation.cli.common import err_console, exit_status_of, station_error

        problem = station_error(error)
        if problem is None:
            raise
        err_console.print(str(problem), style="red", highlight=False, markup=False, soft_wrap=True)
        raise SystemExit(exit_status_of(problem)) from None
