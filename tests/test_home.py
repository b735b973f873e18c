"""The station home: layout and the one-runtime lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fieldstation.home import StationHome, StationLockedError, make_dirs_durably, move_durably

HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fieldstation.home import StationHome
    lock = StationHome(Path(sys.argv[1])).lock()
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_ensure_creates_the_layout(tmp_path: Path) -> None:
    home = StationHome(tmp_path / "h").ensure()
    for folder in (home.spool, home.data, home.quarantine, home.logs, home.run):
        assert folder.is_dir()


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Paths of everything fsynced from now on (files and folders), in order."""
    seen: list[Path] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        seen.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_new_folders_are_fsynced_into_their_parents(tmp_path: Path, fsynced: list[Path]) -> None:
    made = make_dirs_durably(tmp_path / "data" / "mic" / "2026-06-01")
    assert made == [tmp_path / "data", tmp_path / "data" / "mic", tmp_path / "data/mic/2026-06-01"]
    assert fsynced == [tmp_path, tmp_path / "data", tmp_path / "data" / "mic"]
    fsynced.clear()
    assert make_dirs_durably(tmp_path / "data" / "mic") == [] and fsynced == []


def test_ensure_and_move_fsync_the_folders_they_create(tmp_path: Path, fsynced: list[Path]) -> None:
    home = StationHome(tmp_path / "var" / "h").ensure()
    root = home.root
    assert fsynced[:2] == [tmp_path, tmp_path / "var"]  # the home's own entry, up to what existed
    assert fsynced.count(root) == 5  # one entry per folder of the layout
    fsynced.clear()
    (home.spool / "x.flac").write_bytes(b"x")
    move_durably(home.spool / "x.flac", home.quarantine / "2026" / "x.flac")
    assert fsynced == [home.quarantine, home.quarantine / "2026", home.spool]


def test_second_process_fails_fast_naming_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "h")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from fieldstation.home import StationHome;"
                "StationHome(Path(sys.argv[1])).lock()",
                str(tmp_path / "h"),
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert probe.returncode != 0
        assert f"in use by process {holder.pid}" in probe.stderr
        with pytest.raises(StationLockedError) as caught:
            StationHome(tmp_path / "h").lock()
        assert caught.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the lock with the dead holder: the home can be taken again.
    lock = StationHome(tmp_path / "h").lock()
    assert StationHome(tmp_path / "h").holder_pid() == os.getpid()
    lock.release()


def test_quarantine_target_never_overwrites(tmp_path: Path) -> None:
    home = StationHome(tmp_path / "h").ensure()
    first = home.quarantine_target("a.flac")
    assert first == home.quarantine / "a.flac"
    first.write_bytes(b"1")
    second = home.quarantine_target("a.flac")
    assert second == home.quarantine / "a_1.flac"
    second.write_bytes(b"2")
    assert home.quarantine_target("a.flac") == home.quarantine / "a_2.flac"


def test_move_durably_moves_across_folders(tmp_path: Path) -> None:
    from fieldstation.home import move_durably

    source = tmp_path / "spool" / "x.wav"
    source.parent.mkdir()
    source.write_bytes(b"data")
    target = tmp_path / "quarantine" / "x.wav"
    move_durably(source, target)
    assert not source.exists() and target.read_bytes() == b"data"
    with pytest.raises(FileNotFoundError):
        move_durably(source, target)
