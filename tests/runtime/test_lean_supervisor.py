"""``fieldstation run`` runs the supervisor without the command line (decision 0146): the
supervisor of a running station has imported neither typer, rich nor click (nor httpx, which
imports them), whether the script took its plain path or handed over from typer (``os.execve``,
same PID). Seen in the real process: ``GET /modules`` of the control API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fieldstation.config import template_text
from fieldstation.home import StationHome
from fieldstation.runtime.client import ControlClient, StationNotRunningError
from fieldstation.runtime.run import plain_run

CLI = [sys.executable, "-m", "fieldstation.cli"]
COMMAND_LINE = {"typer", "rich", "click", "shellingham", "pygments", "httpx"}


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except StationNotRunningError:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def _supervisor_modules(home: Path, *args: str, env: dict[str, str]) -> tuple[int, set[str]]:
    """Start ``fieldstation run *args``; once every job runs: its PID and the top-level names
    of the modules its supervisor has imported."""
    run = subprocess.Popen(
        [*CLI, "run", *args, "--for", "120s"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        socket = StationHome(home).control_socket
        with ControlClient(socket) as client:
            wait_for(
                lambda: (
                    socket.exists()
                    and (jobs := client.status()["jobs"])
                    and all(j["state"] == "running" for j in jobs)
                )
            )
            answer = client.modules()
    finally:
        run.terminate()
        assert run.wait(60) == 0
    assert answer["pid"] == run.pid  # the process started, not a child of it
    return run.pid, {name.split(".")[0] for name in answer["modules"]}


@pytest.mark.slow
def test_the_supervisor_of_the_embedded_default_station_loads_no_command_line(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "FIELDSTATION_HOME": str(home)}
    env.pop("FIELDSTATION_CONFIG", None)
    _, loaded = _supervisor_modules(home, env=env)
    assert {"fieldstation", "sqlalchemy", "pydantic"} <= loaded  # the check sees imports
    assert sorted(COMMAND_LINE & loaded) == []


@pytest.mark.slow
def test_run_handed_over_by_the_command_line_loads_no_command_line_either(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = home / "station.toml"
    config.write_text(template_text().replace('id = "default"', 'id = "lean"', 1))
    env = {**os.environ, "FIELDSTATION_HOME": str(home)}
    # the deprecated positional file is the command line's (typer's) to parse: it hands over
    _, loaded = _supervisor_modules(home, str(config), env=env)
    assert sorted(COMMAND_LINE & loaded) == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run"], (None, None)),
        (["run", "-c", "s.toml"], (Path("s.toml"), None)),
        (["run", "--config=s.toml", "--for", "5m"], (Path("s.toml"), "5m")),
        (["run", "--for=20s", "--config", "s.toml"], (Path("s.toml"), "20s")),
    ],
)
def test_a_plain_run_is_read_without_the_command_line(
    argv: list[str], expected: tuple[Path | None, str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIELDSTATION_CONFIG", raising=False)
    assert plain_run(argv) == expected


def test_the_station_file_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDSTATION_CONFIG", "env.toml")
    assert plain_run(["run"]) == (Path("env.toml"), None)
    assert plain_run(["run", "-c", "given.toml"]) == (Path("given.toml"), None)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["status"],
        ["run", "--help"],
        ["run", "station.toml"],  # the deprecated positional file: typer warns
        ["run", "-c"],
        ["run", "-c", "a.toml", "-c", "b.toml"],
        ["run", "-c=a.toml"],
        ["run", "--config="],
        ["run", "--for", "--config", "a.toml"],
        ["run", "--unknown"],
    ],
)
def test_anything_else_goes_to_the_command_line(argv: list[str]) -> None:
    assert plain_run(argv) is None
