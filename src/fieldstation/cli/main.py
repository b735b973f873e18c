"""The ``fieldstation`` script's entry point: a plain ``fieldstation run`` starts the station
without loading the command line (typer, rich: :func:`fieldstation.runtime.run.run_plain`);
every other command, and a ``run`` with anything to report, goes to :mod:`.app`."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``fieldstation`` script and of ``python -m fieldstation.cli``."""
    from fieldstation.runtime.run import run_plain

    run_plain(sys.argv[1:])  # returns only when the command line has to parse the arguments
    from fieldstation.cli.app import main as command_line

    command_line()
