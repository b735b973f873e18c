"""What the command-line tests share: the typer app's commands, walked, and a station file."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

from fieldstation.cli.app import app
from fieldstation.cli.guided import set_value
from fieldstation.config import template_text

CLI = [sys.executable, "-m", "fieldstation.cli"]

NOT_STATION_COMMANDS = {
    ("init",): "writes a new station file",
    ("analyze",): "files, no station",
    ("config", "schema"): "the schema of any station file",
    ("web-password",): "hashes a password, no station",
}
"""Commands that take no station file; every other command outside ``hub`` must take
``-c/--config FILE``."""


def commands(
    command: Any = None, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group of the app, as ``(path, click command)``, the root first:
    introspected at run time, so commands added later are walked too."""
    if command is None:
        command = typer.main.get_command(app)
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from commands(sub, (*path, name))


def station_commands() -> list[tuple[str, ...]]:
    """Paths of the leaf commands that work on a station (not hub, not listed above)."""
    return [
        path
        for path, command in commands()
        if path
        and path[0] != "hub"
        and not hasattr(command, "commands")
        and path not in NOT_STATION_COMMANDS
    ]


def station_text(home: Path, *, chunk: str = "2s", rate: str = "16kHz") -> str:
    """The commented station file of ``init`` with its home at ``home``, short chunks at a
    low rate (a quick, light synthetic microphone)."""
    text = set_value(template_text("cli-test"), "[station]", "home", str(home))
    text = set_value(text, "[[sensors]]", "chunk", chunk)
    text = set_value(text, "[[sensors]]", "sample_rate", rate)
    return set_value(text, "[[sensors]]", "min_free", "1MB")


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something true (returned), or fail after
    ``timeout`` seconds (a bound for a loaded machine, not a guess of the time it takes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what or 'condition'} not met within {timeout} s")
