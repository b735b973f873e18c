"""A full disk for 30 s must cost 30 s of recording, not an hour: the whole station runs with its
home on a real 20 MB filesystem (tmpfs, else a loop-mounted ext4 image), the disk is filled
and held full for 30 s, then freed. The recorder must pause (``disk_low``), resume within
seconds, never be ``failed``; the console must show no traceback; the database stays intact
and every row has its file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import tomli_w
from sqlalchemy import select

from fieldstation.config import template_text
from fieldstation.home import StationHome
from fieldstation.recording.chunk import ChunkWriter
from fieldstation.recording.disk import is_disk_full
from fieldstation.recording.job import run_recorder
from fieldstation.recording.metadata import ChunkSpec
from fieldstation.recording.recovery import recover_spool
from fieldstation.runtime.client import ControlClient
from fieldstation.sensors.base import audio_description
from fieldstation.sensors.generator import SyntheticSensor
from fieldstation.store.models import Event, Recording
from fieldstation.testing.disk import FillDiskAt, fill_disk

CLI = [sys.executable, "-m", "fieldstation.cli"]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture
def home(small_disk: Path) -> StationHome:
    """The station home (and its database) on the small filesystem."""
    return StationHome(small_disk / "home").ensure()


def rows(db: Path) -> list[tuple[str, str, str, str]]:
    """(path, file_state, end_reason, started_at) of every recording, read-only."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(
            "SELECT path, file_state, end_reason, started_at FROM recordings ORDER BY id"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def _utc(text: str) -> datetime:
    """A stored time (naive UTC in SQLite) as an aware UTC datetime."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def station_file(home: Path, where: Path, min_free: str) -> Path:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    data["sensors"][0].update(sample_rate="16kHz", chunk="1s", min_free=min_free)
    data["processors"] = []
    data["retention"]["min_free"] = "1MB"
    data["runtime"].update(
        backoff_initial="0.05s",
        backoff_max="0.3s",
        liveness_grace="2s",
        stop_timeout="5s",
        status_interval="0.5s",
    )
    path = where / "station.toml"
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "min_free",
    [
        "0",  # no guard: every write meets ENOSPC (chunk, sidecar, commit, recovery, database)
        "1MB",  # the guard sees the disk fill, unless a write meets ENOSPC first
    ],
)
def test_disk_full_for_30s_pauses_recording_and_resumes(
    small_disk: Path, tmp_path: Path, min_free: str
) -> None:
    home = small_disk / "home"
    config = station_file(home, tmp_path, min_free)
    db = home / "station.db"
    console = open(tmp_path / "console.txt", "wb")  # noqa: SIM115 - closed in finally
    env = {**os.environ, "COLUMNS": "200"}
    run = subprocess.Popen(
        [*CLI, "run", "-c", str(config)], env=env, stdout=console, stderr=console
    )
    filler = small_disk / "filler"
    states: list[dict[str, str]] = []
    try:
        socket = StationHome(home).control_socket
        wait_for(socket.exists, 60, "station start")
        wait_for(lambda: len(rows(db)) >= 2, 60, "two chunks before the fault")

        def jobs() -> dict[str, str]:
            with ControlClient(socket) as client:
                found = {j["name"]: j["state"] for j in client.status()["jobs"]}
            states.append(found)
            return found

        # the disk is full for 30 s: topped up as soon as anything frees space
        full_until = time.monotonic() + 30
        while time.monotonic() < full_until:
            fill_disk(filler)
            with contextlib.suppress(OSError):
                jobs()
            time.sleep(0.5)
        filler.unlink()
        freed = datetime.now(UTC)
        freed_at = time.monotonic()

        def resumed() -> bool:
            return any(_utc(r[3]) >= freed for r in rows(db))

        wait_for(resumed, 30, "a chunk started after space returned")
        took = time.monotonic() - freed_at
        final = jobs()
        assert final["recorder:mic"] == "running", final
    finally:
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)
        try:
            run.wait(60)
        finally:
            if run.poll() is None:
                run.kill()
            console.close()
            shutil.copytree(home / "logs", tmp_path / "logs", dirs_exist_ok=True)  # to look at
    text = (tmp_path / "console.txt").read_text(errors="replace")
    print(f"recording resumed {took:.1f} s after space returned")
    assert run.returncode == 0, text[-3000:]
    assert "Traceback" not in text and "Logging error" not in text, text[-5000:]
    assert not any("failed" in s.values() for s in states), [s for s in states if s][-5:]
    con = sqlite3.connect(str(db))
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        recordings = con.execute("SELECT path, file_state FROM recordings").fetchall()
    finally:
        con.close()
    assert recordings
    for path, state in recordings:
        assert state == "present" and (home / path).is_file(), path


# --- the recorder and its recovery on a full disk, in-process on virtual time ----------------


def chunk_spec(config: Any, ctx: Any, fmt: str = "flac") -> ChunkSpec:
    station = config.station
    return ChunkSpec(
        station=station.id,
        sensor="syn",
        session_id="s",
        chunk_index=0,
        start_frame=0,
        started_at=ctx.clock.now(),
        stream=audio_description(16000, 1, "int16", fmt),
        deployment_id=ctx.deployment_id,
        config_hash="x",
        version="test",
        latitude=station.latitude,
        longitude=station.longitude,
        elevation=station.elevation,
    )


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_libsndfile_system_error_on_a_full_disk_counts_as_full(  # type: ignore[no-untyped-def]
    make_station, make_ctx, home, small_disk, fmt
):
    """libsndfile says only "System error." on a full disk: the chunk writer raises soundfile's
    public ``LibsndfileError`` as it is, and :func:`is_disk_full` counts it as a full disk
    while the disk is nearly full, at a write and at open; with space it does not."""
    config = make_station({"name": "syn", "kind": "synthetic", "sample_rate": "16kHz"})
    ctx, _ = make_ctx(config)
    writer = ChunkWriter(home.spool, chunk_spec(config, ctx, fmt))
    samples = np.zeros((16000, 1), dtype="int16")
    writer.write(samples)
    filler = small_disk / "filler"
    fill_disk(filler)

    def free() -> int:
        return shutil.disk_usage(small_disk).free

    with pytest.raises(Exception) as raised:
        for _ in range(100):  # past what libsndfile and the FLAC encoder buffer
            writer.write(samples)
    assert is_disk_full(raised.value, free), repr(raised.value)
    writer.abandon()
    if fmt == "wav":  # a WAV header is written at open: a file that takes no byte
        full = home.root / "full.wav"
        full.symlink_to("/dev/full")
        with pytest.raises(Exception) as raised:
            ChunkWriter(home.spool, chunk_spec(config, ctx, fmt), audio=full, sidecar=False)
        assert is_disk_full(raised.value, free), repr(raised.value)
        filler.unlink()
        assert not is_disk_full(raised.value, free)  # /dev/full, but the home's disk has space


def test_a_full_disk_mid_chunk_pauses_the_recorder_and_it_resumes(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home, small_disk
):
    """No guard (``min_free = 0``): the disk fills in the middle of the third chunk, so the
    FLAC write, the database and the log meet ENOSPC. The recorder pauses (``waiting`` with the
    reason), keeps its event, resumes a second after the filler is removed (30 s later, virtual
    time) and commits the cut chunk with end reason ``disk_low``; it never raises."""
    config = make_station(
        {
            "name": "syn",
            "kind": "synthetic",
            "sample_rate": "16kHz",
            "chunk": "1s",
            "block": "0.1s",
            "min_free": "0",
        }
    )
    ctx, progress = make_ctx(config)
    filler = small_disk / "filler"
    sensor = FillDiskAt(SyntheticSensor(config.sensor("syn"), ctx.clock), 25, filler)
    report = progress.__call__
    freed: list[Any] = []

    def watch(what: str, details: dict[str, Any]) -> None:
        report(what, details)
        full = [d for d in progress.of("waiting") if "disk full" in d.get("reason", "")]
        if not freed and len(full) >= 30:  # 30 s (virtual) of a full disk
            filler.unlink()
            freed.append(ctx.clock.now())
        if freed and len([1 for w, _ in progress.reports[-3:] if w == "chunk"]) == 3:
            ctx.stop.set()

    ctx.progress = watch  # type: ignore[method-assign]
    run_recorder(ctx, "syn", sensor=sensor)  # returns at the stop: no exception
    assert freed, progress.reports[-5:]
    with db.session() as session:
        rows = list(session.scalars(select(Recording).order_by(Recording.id)))
        events = list(session.scalars(select(Event).where(Event.kind == "disk_low")))
    reasons = [(r.chunk_index, r.end_reason) for r in rows]
    assert reasons[:2] == [(0, "complete"), (1, "complete")], reasons
    cut = [r for r in rows if r.end_reason == "disk_low"]
    assert len(cut) == 1 and cut[0].chunk_index == 2 and 0 < cut[0].frames < 16000, reasons
    after = [r for r in rows if r.started_at.replace(tzinfo=UTC) >= freed[0]]
    assert len(after) >= 3
    assert (after[0].started_at.replace(tzinfo=UTC) - freed[0]).total_seconds() <= 2.0
    # the event the full database refused was kept and written, with its own time
    assert len(events) == 1 and events[0].created_at.replace(tzinfo=UTC) < freed[0]
    assert "disk full" in events[0].message
    for row in rows:
        assert (home.root / row.path).is_file()
    assert not any(home.spool.iterdir())
    with db.engine.connect() as con:
        assert con.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def test_recovery_that_cannot_write_its_salvage_leaves_the_chunk_in_spool(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home, small_disk
):
    """An unfinished chunk is salvaged into ``<stem>.salvage.flac`` first; on a full disk that
    fails: the chunk and its sidecar stay exactly as they were (never quarantined or deleted),
    no temp file is left, and the next try, with space back, commits it."""
    config = make_station({"name": "syn", "kind": "synthetic", "sample_rate": "16kHz"})
    ctx, _ = make_ctx(config)
    spec = chunk_spec(config, ctx)
    writer = ChunkWriter(home.spool, spec)
    samples = (np.random.default_rng(1).standard_normal((40_000, 1)) * 3000).astype("int16")
    writer.write(samples)
    writer.abandon()  # a crash: unfinished
    before = {p.name: p.read_bytes() for p in home.spool.iterdir()}
    filler = small_disk / "filler"
    fill_disk(filler)
    with pytest.raises(Exception) as raised:
        recover_spool(ctx, "syn")
    assert is_disk_full(raised.value, lambda: shutil.disk_usage(small_disk).free)
    assert {p.name: p.read_bytes() for p in home.spool.iterdir()} == before
    assert not any(home.quarantine.rglob("*")) if home.quarantine.exists() else True
    filler.unlink()
    report = recover_spool(ctx, "syn")
    assert len(report.salvaged) == 1 and report.quarantined == []
    kept = sf.read(str(home.root / report.salvaged[0]), dtype="int16", always_2d=True)[0]
    assert len(kept) >= 36_864 and np.array_equal(kept, samples[: len(kept)])


def test_what_counts_as_a_full_disk(tmp_path: Path) -> None:
    """ENOSPC/EDQUOT anywhere in the chain, SQLite's SQLITE_FULL (also wrapped by SQLAlchemy),
    and an errno-less libsndfile error only while the disk is nearly full."""
    from sqlalchemy.exc import OperationalError

    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("while writing") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    full = sqlite3.connect(str(tmp_path / "full.db"))
    full.execute("CREATE TABLE t (x BLOB)")
    full.execute("PRAGMA max_page_count = 2")  # a real SQLITE_FULL from SQLite
    with pytest.raises(sqlite3.OperationalError) as raised:
        full.execute("INSERT INTO t VALUES (zeroblob(100000))")
    full.close()
    assert is_disk_full(raised.value)
    assert is_disk_full(OperationalError("INSERT", {}, raised.value))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    system_error = sf.LibsndfileError(2, "Error writing: ")  # code 2: "System error."
    assert str(system_error).endswith("System error.")
    assert is_disk_full(system_error, lambda: 0)
    assert not is_disk_full(system_error, lambda: 10**9)
    assert not is_disk_full(system_error)


def test_configuration_and_sensor_errors_are_never_a_full_disk() -> None:
    """Only libsndfile's "System error" is ambiguous: a configuration error (a replay file
    missing), a sensor error, a plain RuntimeError or an errno-less OSError on a nearly full
    disk are what they are, not a reason to pause for space; nor is a configuration error whose
    cause is libsndfile's "System error"."""
    from fieldstation.sensors import DeviceError, SensorError
    from fieldstation.sensors.base import config_error

    def empty() -> int:
        return 0

    system_error = sf.LibsndfileError(2, "Error opening 'x.flac': ")
    assert is_disk_full(system_error, empty)
    assert not is_disk_full(sf.LibsndfileError(1, "Error opening 'x.flac': "), empty)
    for error in (
        config_error("replay file /data/x.flac is missing"),
        SensorError("cannot decode"),
        DeviceError("unplugged"),
        RuntimeError("something else"),
        OSError("no errno"),
    ):
        assert not is_disk_full(error, empty), repr(error)
    for wrapper in (config_error("replay file cannot be read"), SensorError("cannot read")):
        try:
            try:
                raise sf.LibsndfileError(2, "Error reading: ")
            except sf.LibsndfileError as inner:
                raise wrapper from inner
        except RuntimeError as outer:
            assert not is_disk_full(outer, empty), repr(outer)


def test_a_vanished_home_is_its_own_error_not_a_full_disk(tmp_path: Path) -> None:
    """``statvfs`` failing (the card removed) raises a ``HomeError`` saying the home is gone;
    an ambiguous libsndfile error is then not a full disk."""
    from fieldstation.home import HomeError
    from fieldstation.recording.disk import DiskGuard

    gone = tmp_path / "card" / "home"
    guard = DiskGuard(gone, 1000)
    with pytest.raises(HomeError, match="gone"):
        guard.free()
    with pytest.raises(HomeError, match="gone"):
        guard.may_start()
    assert not is_disk_full(sf.LibsndfileError(2, "Error writing: "), guard.free)


def test_may_start_is_the_one_rule_min_free_then_resume_free_after_a_full_disk(
    tmp_path: Path,
) -> None:
    """``min_free`` bytes let a chunk start; after a write failed for want of space,
    ``resume_free`` (at least :data:`FULL_MARGIN`) bytes are needed."""
    from types import SimpleNamespace

    from fieldstation.recording.disk import FULL_MARGIN, DiskGuard

    free = {"bytes": 2000}
    guard = DiskGuard(tmp_path, 1000, lambda _p: SimpleNamespace(free=free["bytes"]))
    assert guard.may_start() and not guard.may_start(after_full=True)
    assert guard.may_start(free=1000) and not guard.may_start(free=999)
    free["bytes"] = FULL_MARGIN
    assert guard.may_start(after_full=True)
