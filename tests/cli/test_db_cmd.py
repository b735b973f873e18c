"""A damaged station.db: one clear line (exit 78 for the station, which systemd does not
restart), ``fieldstation db check`` and ``fieldstation db recover``; a home of another
station is refused naming both ids."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fieldstation.store import open_database
from fieldstation.store.models import Deployment, Recording

CLI = [sys.executable, "-m", "fieldstation.cli"]


def station_file(tmp_path: Path, station_id: str = "cli", home: Path | None = None) -> Path:
    home_line = f'home = "{home}"' if home is not None else ""
    path = tmp_path / f"{station_id}.toml"
    path.write_text(
        f"""
[station]
id = "{station_id}"
latitude = 51.0
longitude = 0.0
{home_line}

[[sensors]]
name = "mic"
kind = "synthetic"
sample_rate = "8kHz"
frequency = "1kHz"
chunk = "0.5s"
format = "wav"
"""
    )
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The error: the last line of stderr, asserted to stand alone (no traceback; the
    lines before it are the station's own INFO log lines, if any)."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "sqlalchemy" not in output.lower(), output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(" INFO " in line or line.startswith(" ") for line in lines[:-1]), output
    return lines[-1]


def recorded_rows(home: Path) -> list[tuple[str, int]]:
    db = open_database(home / "station.db", migrate=False)
    with db.session() as session:
        rows = [(r.path, r.deployment_id) for r in session.scalars(select(Recording))]
    db.dispose()
    return sorted(rows)


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path, list[tuple[str, int]]]:
    """A station that recorded under two deployments (the config changed in between)."""
    home = tmp_path / "home"
    config = station_file(tmp_path, home=home)
    assert cli("record", "-c", str(config), "--for", "1s", "--now").returncode == 0
    config.write_text(config.read_text().replace('"1kHz"', '"1.5kHz"'))
    done = cli("record", "-c", str(config), "--for", "1s", "--now")
    assert done.returncode == 0, done.stderr
    rows = recorded_rows(home)
    assert {d for _, d in rows} == {1, 2}
    return config, home, rows


DAMAGES = {
    "random bytes": lambda p: p.write_bytes(os.urandom(64 * 1024)),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]),
    "a directory": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_database_is_one_line_then_db_recover_rebuilds_it(
    recorded: tuple[Path, Path, list[tuple[str, int]]], damage: str
) -> None:
    config, home, rows = recorded
    database = home / "station.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    DAMAGES[damage](database)

    done = cli("run", "-c", str(config), "--for", "1s")
    line = one_line(done)
    assert done.returncode == 78, done.stderr
    assert str(database) in line and "db recover" in line

    done = cli("recordings", "-c", str(config))
    assert done.returncode == 78 and "db recover" in one_line(done)

    done = cli("db", "check", "-c", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr

    done = cli("db", "recover", "-c", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"{len(rows)} recording{'s' if len(rows) != 1 else ''} registered from data/" in done.stdout
    )
    assert list(home.glob("station.db.damaged-*"))
    assert recorded_rows(home) == rows  # every file back, under its own deployment

    assert cli("db", "check", "-c", str(config)).returncode == 0
    db = open_database(database, migrate=False)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Deployment)) == 3
    db.dispose()
    done = cli("run", "-c", str(config), "--for", "1s")
    assert done.returncode == 0, done.stdout + done.stderr


def test_db_recover_refuses_a_sound_database_without_force(tmp_path: Path) -> None:
    config = station_file(tmp_path, home=tmp_path / "home")
    open_database(tmp_path / "home" / "station.db").dispose()
    done = cli("db", "check", "-c", str(config))
    assert done.returncode == 0 and "integrity ok" in done.stdout
    done = cli("db", "recover", "-c", str(config))
    assert done.returncode == 1 and "checks sound" in done.stderr
    assert not list((tmp_path / "home").glob("station.db.damaged-*"))


@pytest.mark.slow
def test_a_home_of_another_station_is_refused_naming_both_ids(tmp_path: Path) -> None:
    shared = {"FIELDSTATION_HOME": str(tmp_path / "shared")}
    first = station_file(tmp_path, "north")
    second = station_file(tmp_path, "south")
    done = cli("record", "-c", str(first), "--for", "0.5s", "--now", env=shared)
    assert done.returncode == 0, done.stderr
    for args in (
        ["record", "-c", str(second), "--for", "0.5s", "--now"],
        ["run", "-c", str(second)],
    ):
        done = cli(*args, env=shared)
        line = one_line(done)
        assert done.returncode == 78
        assert "'north'" in line and "'south'" in line and "FIELDSTATION_HOME" in line


def test_the_systemd_unit_does_not_restart_a_station_that_cannot_start() -> None:
    from fieldstation.runtime.systemd import render_unit

    unit = render_unit(
        station_id="s", config_path=Path("/srv/s.toml"), home=Path("/srv/s"), user=True
    )
    assert "RestartPreventExitStatus=2 78" in unit.splitlines()
