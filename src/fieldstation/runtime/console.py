"""The rich console of the command line and of logs on a terminal, whose reader may go away.

Its own module so that a process logging to the journal or a pipe (``fieldstation run`` under
systemd, :mod:`fieldstation.runtime.run`) never imports rich (issue 22: memory).
"""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console

__all__ = ["TolerantConsole"]


class TolerantConsole(Console):
    """A rich console whose reader may go away: on a broken pipe it falls silent (its file
    descriptor is pointed at /dev/null) instead of raising ``SystemExit``. When its file is
    not a terminal (a pipe, the journal) text is never wrapped at the assumed 80 columns
    (``soft_wrap``), unless the caller says otherwise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "soft_wrap" not in kwargs and not self.is_terminal:
            self.soft_wrap = True

    def on_broken_pipe(self) -> None:
        self.quiet = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self.file.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError):  # a file without a descriptor: quiet is enough
            pass
