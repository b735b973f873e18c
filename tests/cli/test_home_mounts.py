"""A station home on a read-only mount, and one on a full disk: reading commands work,
writing ones say what is wrong in one line (where, and for a full disk how much is free).

Real mounts: a read-only bind mount and a small tmpfs (we are root on the testbed); skipped
with the reason where mounting is not allowed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "fieldstation.cli"]

pytestmark = pytest.mark.slow


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here (mount {' '.join(args)}): {done.stderr.strip()}")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    """The error line: the last of stderr; no traceback anywhere (the lines before it may
    only be the station's INFO log)."""
    output = done.stdout + done.stderr
    assert "Traceback" not in output and "sqlalchemy" not in output.lower(), output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(" INFO " in line or line.startswith(" ") for line in lines[:-1]), output
    return lines[-1]


def station_file(path: Path, home: Path) -> Path:
    path.write_text(
        f"""
[station]
id = "ro"
latitude = 51.0
longitude = 0.0
home = "{home}"

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


@pytest.fixture
def read_only_home(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A home that recorded (rw), then seen through a read-only bind mount: (config, home)."""
    source, view = tmp_path / "card", tmp_path / "mnt"
    source.mkdir()
    view.mkdir()
    done = cli(
        "record", "-c", str(station_file(tmp_path / "rw.toml", source / "home")), "--for", "1s"
    )
    assert done.returncode == 0, done.stderr
    mount("--bind", str(source), str(view))
    try:
        mount("-o", "remount,bind,ro", str(view))
        yield station_file(tmp_path / "ro.toml", view / "home"), view / "home"
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_a_read_only_home_reads_and_refuses_writes_in_one_line(
    read_only_home: tuple[Path, Path],
) -> None:
    config, home = read_only_home
    with pytest.raises(OSError):
        (home / "probe").touch()
    done = cli("recordings", "-c", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert " recording" in done.stdout and "data/mic" in done.stdout.replace("\n", "")
    for args in (["detections", "-c", str(config)], ["outbox", "status", "-c", str(config)]):
        done = cli(*args)
        assert done.returncode == 0, (args, done.stdout + done.stderr)
    done = cli("db", "check", "-c", str(config))
    assert done.returncode == 0 and "integrity ok" in done.stdout, done.stdout + done.stderr
    for args in (
        ["run", "-c", str(config), "--for", "1s"],
        ["record", "-c", str(config), "--for", "1s"],
        ["pin", "1", "--config", str(config)],
    ):
        done = cli(*args)
        line = last_line(done)
        assert done.returncode == 1, (args, done.stdout + done.stderr)
        assert "read-only" in line and str(home) in line, (args, line)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: the folder for a station home."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk))
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("left_kib", [0, 48])
def test_a_full_disk_at_start_is_one_line_saying_where_and_how_much_is_free(
    tmp_path: Path, small_disk: Path, left_kib: int
) -> None:
    """Full to the last byte (the lock cannot be written), or with 48 KiB left (the migration
    runs out of space): one line; once space is freed the station starts."""
    filler = small_disk / "filler"
    count = ["count=" + str(1024 - left_kib // 4)] if left_kib else []
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k", *count], capture_output=True)
    config = station_file(tmp_path / "station.toml", small_disk / "home")
    done = cli("run", "-c", str(config), "--for", "1s")
    line = last_line(done)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "is full" in line and str(small_disk) in line and "free of 4.0 MiB" in line, line
    filler.unlink()
    done = cli("run", "-c", str(config), "--for", "1s")
    assert done.returncode == 0, done.stdout + done.stderr
