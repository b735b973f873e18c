"""Fixtures of the runtime tests: station configs with fast supervisor settings; a fork server
whose fork() fails."""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from fieldstation.config import StationConfig, parse_config, template_text

StationFactory = Callable[..., StationConfig]
NoForks = Callable[[int], AbstractContextManager[None]]


def station_config(home: Path, **sections: Any) -> StationConfig:
    """The embedded default station living in ``home`` with top-level ``sections`` replaced."""
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    data.update(sections)
    return parse_config(data)


@pytest.fixture
def make_station() -> StationFactory:
    """``make_station(home_path, **sections)`` -> StationConfig."""
    return station_config


def _pids_cgroup_of(pid: int, root: Path) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(",") or (controllers == "" and root.name != "pids"):
            return root / path.lstrip("/")
    raise LookupError("no pids cgroup")


@contextmanager
def _no_forks(pid: int) -> Iterator[None]:
    """Process ``pid`` in a pids cgroup that allows no new task: its ``fork()`` fails with
    EAGAIN, the kernel's own refusal (as when the station runs out of processes or memory).
    Root ignores ``RLIMIT_NPROC``, so a cgroup it is. Skips where no pids cgroup can be made."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        group = root / f"fieldstation-test-{os.getpid()}"
        try:
            group.mkdir()
        except OSError:
            continue
        if (group / "pids.max").exists():
            break
        group.rmdir()
    else:
        pytest.skip("no pids cgroup can be made here (needs root and the pids controller)")
    home = _pids_cgroup_of(pid, root)
    try:
        (group / "pids.max").write_text("1\n")
        (group / "cgroup.procs").write_text(f"{pid}\n")
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone: the cgroup is empty anyway
            (home / "cgroup.procs").write_text(f"{pid}\n")
        group.rmdir()


@pytest.fixture
def no_forks() -> NoForks:
    """``with no_forks(pid):`` process ``pid``'s fork() fails with EAGAIN (skips where no pids
    cgroup can be made)."""
    return _no_forks
