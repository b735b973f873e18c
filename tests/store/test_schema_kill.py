"""A first start-up killed (SIGKILL) while it creates the schema never bricks the station.

Real processes running the station's start-up path (``runtime.startup.start_station``: lock,
schema check, migration, deployment, lease expiry, recovery), real SIGKILL. Each first start-up
is a child forked from this test process with everything imported, so a kill costs
milliseconds, not an interpreter start. Two ways to pick the instants: (1) at statement
boundaries spread over the whole first start-up, deterministically (the child pauses itself
before its N-th statement and the test kills it there), and (2) after random delays, drawn with
a fixed seed, spread over the window measured on this machine from the moment the database file
appears to the end of the start-up. After each kill the next start must succeed, with the
schema at head and a deployment.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import alembic.command  # noqa: F401 - imported before forking: the children start at once
import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine

import fieldstation.recording.recovery  # noqa: F401 - as above
from fieldstation.config import load_config
from fieldstation.runtime.startup import start_station
from fieldstation.store import SCHEMA_HEAD, open_database
from fieldstation.store.models import Base

pytestmark = pytest.mark.slow

KILLS = 24


def _station(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A station file whose home is ``tmp_path/name``: (station file, its database)."""
    home = tmp_path / name
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'[station]\nid = "k"\nlatitude = 51.0\nlongitude = 0.0\nhome = "{home}"\n'
        '[[sensors]]\nname = "mic"\nkind = "synthetic"\nsample_rate = "8kHz"\n'
        'frequency = "1kHz"\n'
    )
    return config, home / "station.db"


def _first_start(config: Path, pause_at: int) -> tuple[int, int]:
    """Fork a child running the first start-up of ``config`` (a station file; or only the
    migration, given a database file); it pauses before its
    ``pause_at``-th statement (or commit), saying ``p`` on the pipe, and says
    ``done <statements>`` when it ends. Returns (pid, read end of the pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read)
            seen = 0

            def pause(*args: object, **kwargs: object) -> None:
                nonlocal seen
                seen += 1
                if seen == pause_at:
                    os.write(write, b"p")
                    time.sleep(600)

            event.listen(Engine, "before_cursor_execute", pause)
            event.listen(Engine, "commit", pause)
            if config.suffix == ".db":
                open_database(config).dispose()
            else:
                start_station(load_config(config)).close()
            os.write(write, f"done {seen}".encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    return pid, read


def _kill(pid: int) -> bool:
    """SIGKILL the child ``pid`` and reap it; True when the kill ended it (False: it had
    already finished)."""
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _assert_next_start_succeeds(config: Path) -> None:
    if config.suffix == ".db":
        _assert_schema_at_head(config)
        return
    started = start_station(load_config(config))
    try:
        assert started.deployment_id == 1
    finally:
        started.close()
    _assert_schema_at_head(started.home.database)


def _assert_schema_at_head(path: Path) -> None:
    database = open_database(path)
    try:
        assert database.revision() == SCHEMA_HEAD
        assert set(Base.metadata.tables) <= set(inspect(database.engine).get_table_names())
        with database.engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    finally:
        database.dispose()


def _probe(tmp_path: Path, target: str = "start-up") -> tuple[int, float]:
    """A whole first start-up: (statements and commits it ran, seconds from the moment its
    database file appeared to its end)."""
    config, path = _target(tmp_path, "probe", target)
    pid, read = _first_start(config, 0)
    appeared = None
    while True:
        if appeared is None and path.exists():
            appeared = time.monotonic()
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.0005)
    message = os.read(read, 100).decode()
    os.close(read)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, message
    assert appeared is not None
    return int(message.split()[-1]), time.monotonic() - appeared


def _target(tmp_path: Path, name: str, target: str) -> tuple[Path, Path]:
    """What a child runs: the station's start-up, or only the migration (which runs on the
    code of any release: this is how the test was checked against the old code)."""
    if target == "migration":
        return tmp_path / f"{name}.db", tmp_path / f"{name}.db"
    return _station(tmp_path, name)


@pytest.mark.parametrize("target", ["start-up", "migration"])
def test_killed_at_statement_boundaries_the_next_start_succeeds(
    tmp_path: Path, target: str
) -> None:
    statements, _ = _probe(tmp_path, target)
    assert statements > 20
    instants = sorted(set(range(1, statements + 1, max(1, statements // KILLS))) | {statements})
    assert len(instants) >= 20
    for n in instants:
        config, _ = _target(tmp_path, f"s{n}", target)
        pid, read = _first_start(config, n)
        try:
            assert os.read(read, 1) == b"p", n
        finally:
            killed = _kill(pid)
            os.close(read)
        assert killed, n
        _assert_next_start_succeeds(config)


def test_killed_after_random_delays_the_next_start_succeeds(tmp_path: Path) -> None:
    """Until 24 children were killed in flight (one that finished before its kill counts
    for nothing; at most 100 tries)."""
    _, window = _probe(tmp_path)
    rng = random.Random(14)
    killed = 0
    for i in range(100):
        config, path = _station(tmp_path, f"r{i}")
        pid, read = _first_start(config, 0)
        try:
            deadline = time.monotonic() + 60
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.0002)
            time.sleep(rng.uniform(0, window))
        finally:
            killed += _kill(pid)
            os.close(read)
        _assert_next_start_succeeds(config)
        if killed == KILLS:
            break
    assert killed == KILLS


MIGRATE = textwrap.dedent(
    """
    import sys
    from fieldstation.store import open_database

    open_database(sys.argv[1]).dispose()
    """
)


def test_first_start_ups_racing_on_one_new_database_all_succeed(tmp_path: Path) -> None:
    """A reading command run while the station starts for the first time migrates too: the
    second migration waits for the first (write lock taken before the schema is read) and
    finds the schema at head."""
    path = tmp_path / "s.db"
    racers = [
        subprocess.Popen([sys.executable, "-c", MIGRATE, str(path)], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for racer in racers:
        _, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err.decode()
    _assert_schema_at_head(path)
