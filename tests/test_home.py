"""The station home: layout and the one-runtime lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fieldstation.home import StationHome, StationLockedError

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
