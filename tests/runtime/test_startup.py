"""The one start-up path (runtime/startup.py): lock, private home, schema, migration,
deployment (of this station only), lease expiry, recovery; nothing held after a failure."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from fieldstation.clock import VirtualClock
from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome, StationLockedError
from fieldstation.runtime.startup import private_umask, start_station
from fieldstation.store import DatabaseDamagedError, open_database
from fieldstation.store.deployments import StationMismatchError
from fieldstation.store.models import Event, Recording
from fieldstation.store.recordings import insert_recording
from fieldstation.testing.disk import fill_disk


def make_config(home: Path, station_id: str | None = None) -> StationConfig:
    """The embedded default station in ``home`` (with another id if given)."""
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    if station_id is not None:
        data["station"]["id"] = station_id
    return parse_config(data)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_start_holds_the_lock_and_continues_its_deployment(
    config: StationConfig, clock: VirtualClock
) -> None:
    started = start_station(config, clock)
    try:
        assert started.deployment_id == 1 and started.recovery is not None
        with pytest.raises(StationLockedError):
            start_station(config, clock)
    finally:
        started.close()
    again = start_station(config, clock)  # the lock is free again; same config, same deployment
    assert again.deployment_id == 1
    again.close()


def test_start_up_ends_the_leases_of_the_last_run(
    config: StationConfig, clock: VirtualClock
) -> None:
    started = start_station(config, clock)
    with started.db.session() as session:
        row = insert_recording(
            session,
            deployment_id=started.deployment_id,
            sensor="mic",
            path="data/mic/x.wav",
            session_id="s",
            chunk_index=0,
            start_frame=0,
            started_at=clock.now(),
            duration=1.0,
            rate=8000,
            channels=1,
            frames=8000,
            bytes=1,
            sha256="0" * 64,
            format="wav",
            end_reason="complete",
            created_at=clock.now(),
        )
        session.execute(
            update(Recording)
            .where(Recording.id == row.id)
            .values(
                state="processing",
                claimed_by="processor:e:1#abc",
                lease_expires_at=clock.now() + timedelta(hours=1),
            )
        )
    started.close()
    again = start_station(config, clock, recover=False)
    assert again.released == 1
    with again.db.session() as session:
        assert session.scalar(select(Recording.lease_expires_at)) == clock.now()
    again.close()


def test_a_home_of_another_station_is_refused_and_nothing_stays_held(
    config: StationConfig, clock: VirtualClock
) -> None:
    start_station(config, clock).close()
    other = make_config(config.home_path(), "intruder")
    with pytest.raises(StationMismatchError, match=rf"'{config.station.id}'.*'intruder'"):
        start_station(other, clock)
    start_station(config, clock).close()  # lock released after the failure


def test_a_damaged_database_is_one_clear_error_and_the_lock_is_released(
    config: StationConfig, clock: VirtualClock
) -> None:
    home = StationHome(config.home_path()).ensure()
    home.database.write_bytes(os.urandom(8192))
    with pytest.raises(DatabaseDamagedError, match="db recover"):
        start_station(config, clock)
    home.lock().release()


def test_start_up_makes_an_open_home_private(tmp_path: Path, clock: VirtualClock) -> None:
    """A home left open by an older release: 0755 home, 0644 database, logs and status."""
    config = make_config(tmp_path / "home")
    home = StationHome(config.home_path()).ensure()
    open_database(home.database).dispose()
    (home.logs / "station.log").write_text("x")
    home.status_file.write_text("{}")
    for path, old in [
        (home.root, 0o755),
        (home.database, 0o644),
        (home.logs / "station.log", 0o644),
        (home.status_file, 0o640),
    ]:
        path.chmod(old)
    started = start_station(config, clock)
    try:
        assert mode(home.root) == 0o700
        for path in (home.database, home.logs / "station.log", home.status_file):
            assert mode(path) == 0o600, path
        for suffix in ("-wal", "-shm"):  # SQLite gives them the database file's mode
            wal = Path(f"{home.database}{suffix}")
            if wal.exists():
                assert mode(wal) == 0o600
    finally:
        started.close()


def test_a_new_home_is_private_from_the_start(tmp_path: Path, clock: VirtualClock) -> None:
    config = make_config(tmp_path / "new" / "home")
    started = start_station(config, clock)
    started.close()
    home = StationHome(config.home_path())
    assert mode(home.root) == 0o700
    assert mode(home.database) == 0o600
    assert mode(home.lock_file) == 0o600
    # its folders too, whatever the umask of the command (run, record, status...) that made them
    for folder in (home.spool, home.data, home.quarantine, home.logs, home.run):
        assert mode(folder) == 0o700, folder


def test_files_made_while_the_station_runs_are_private(tmp_path: Path) -> None:
    before = os.umask(0o022)
    try:
        with private_umask():
            (tmp_path / "status.json").write_text("{}")
        (tmp_path / "after").write_text("")
        assert mode(tmp_path / "status.json") == 0o600
        assert mode(tmp_path / "after") == 0o644  # restored
    finally:
        os.umask(before)


@pytest.mark.slow
def test_the_first_start_of_a_rebuilt_home_restores_deployments_of_its_files(
    tmp_path: Path,
) -> None:
    """Files of deployments 1 and 2 under data/, no database: each gets its row under its own
    deployment, and the new deployment comes after them."""
    import sys

    home = tmp_path / "home"
    text = f"""
[station]
id = "re"
latitude = 51.0
longitude = 0.0
home = "{home}"

[[sensors]]
name = "mic"
kind = "synthetic"
sample_rate = "8kHz"
frequency = "FREQ"
chunk = "0.5s"
format = "flac"
"""
    path = tmp_path / "station.toml"
    for freq in ("1kHz", "2kHz"):
        path.write_text(text.replace("FREQ", freq))
        cli = [sys.executable, "-m", "fieldstation.cli", "record", "-c", str(path), "--for", "0.6s"]
        assert subprocess.run(cli, capture_output=True, timeout=120).returncode == 0
    for file in home.glob("station.db*"):
        file.unlink()
    from fieldstation.config import load_config

    started = start_station(load_config(path), VirtualClock(datetime(2027, 1, 1, tzinfo=UTC)))
    try:
        assert started.deployment_id == 3
        with started.db.session() as session:
            deployments = {r.deployment_id for r in session.scalars(select(Recording))}
        assert deployments == {1, 2}
        assert len(started.recovery.registered) >= 2
    finally:
        started.close()


def test_a_recovery_that_fails_on_a_full_disk_does_not_stop_start_up(
    small_disk: Path, clock: VirtualClock
) -> None:
    """The disk fills while recovery runs and recovery fails: start-up goes on, and the
    ``recovery_failed`` event the database refuses is kept and written once space returns."""
    filler = small_disk / "filler"

    def runner(function: Callable[..., Any], *args: Any) -> Any:
        if function.__name__ == "_recover":
            fill_disk(filler)
            raise OSError(errno.ENOSPC, "No space left on device")
        return function(*args)

    config = make_config(small_disk / "home")
    started = start_station(config, clock, runner=runner)
    try:
        assert started.recovery is None and "No space left" in (started.recovery_error or "")
        assert started.events is not None and started.events.pending == 1
        filler.unlink()
        assert started.events.flush()
        with started.db.session() as session:
            events = list(session.scalars(select(Event)))
        assert [(e.kind, e.severity) for e in events] == [("recovery_failed", "error")]
    finally:
        started.close()
