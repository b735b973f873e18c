"""A first start-up killed (SIGKILL) while it creates the schema never bricks the station.

Real processes, real SIGKILL. Two ways to pick the instants: (1) at every statement boundary of
the migration, deterministically (the child pauses itself before its N-th statement and the
test kills it there), and (2) after random delays, drawn with a fixed seed, spread over the
migration window measured on this machine once the database file appears. After each kill the
next start must succeed and bring the schema to head.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from fieldstation.store import SCHEMA_HEAD, open_database
from fieldstation.store.models import Base

pytestmark = pytest.mark.slow

KILLS = 24

FIRST_START = textwrap.dedent(
    """
    import sys, time
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    pause_at = int(sys.argv[2])
    seen = 0

    def pause(*args, **kwargs):
        global seen
        seen += 1
        if seen == pause_at:
            print("paused", flush=True)
            time.sleep(600)

    event.listen(Engine, "before_cursor_execute", pause)
    event.listen(Engine, "commit", pause)
    from fieldstation.store import open_database

    open_database(sys.argv[1]).dispose()
    print("done", seen, flush=True)
    """
)


def _first_start(path: Path, pause_at: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", FIRST_START, str(path), str(pause_at)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _assert_next_start_succeeds(path: Path) -> None:
    database = open_database(path)
    try:
        assert database.revision() == SCHEMA_HEAD
        assert set(Base.metadata.tables) <= set(inspect(database.engine).get_table_names())
        with database.engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    finally:
        database.dispose()


def test_killed_at_every_statement_boundary_the_next_start_succeeds(tmp_path: Path) -> None:
    probe = _first_start(tmp_path / "probe.db", 0)
    out, _ = probe.communicate(timeout=120)
    assert probe.returncode == 0, out
    statements = int(out.split()[-1])  # statements + commits of a whole first start-up
    assert statements > 20
    instants = sorted(set(range(1, statements + 1, max(1, statements // KILLS))) | {statements})
    assert len(instants) >= 20
    for n in instants:
        path = tmp_path / f"s{n}.db"
        child = _first_start(path, n)
        try:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            assert line == "paused", (n, line)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        assert child.returncode == -signal.SIGKILL
        _assert_next_start_succeeds(path)


def test_killed_after_random_delays_the_next_start_succeeds(tmp_path: Path) -> None:
    # the window: from the moment the file appears to the end of a first start-up
    probe_path = tmp_path / "probe.db"
    t0 = time.monotonic()
    probe = _first_start(probe_path, 0)
    appeared = None
    while probe.poll() is None:
        if appeared is None and probe_path.exists():
            appeared = time.monotonic()
        time.sleep(0.001)
    assert probe.returncode == 0 and appeared is not None
    window = time.monotonic() - appeared
    assert window < time.monotonic() - t0
    rng = random.Random(14)
    for i in range(KILLS):
        path = tmp_path / f"r{i}.db"
        child = _first_start(path, 0)
        try:
            deadline = time.monotonic() + 60
            while not path.exists() and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, window))
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        _assert_next_start_succeeds(path)


def test_first_start_ups_racing_on_one_new_database_all_succeed(tmp_path: Path) -> None:
    """A reading command run while the station starts for the first time migrates too: the
    second migration waits for the first (write lock taken before the schema is read) and
    finds the schema at head."""
    path = tmp_path / "s.db"
    racers = [_first_start(path, 0) for _ in range(4)]
    for racer in racers:
        out, _ = racer.communicate(timeout=120)
        assert racer.returncode == 0, out
    _assert_next_start_succeeds(path)
