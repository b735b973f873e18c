"""Start-up recovery: spool salvage and quarantine, orphan data files, missing files, SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import select

from fieldstation.clock import SystemClock
from fieldstation.job import JobContext
from fieldstation.recording.audio import salvage_frames
from fieldstation.recording.chunk import ChunkWriter, sha256_file
from fieldstation.recording.job import run_recorder
from fieldstation.recording.metadata import ChunkSpec
from fieldstation.recording.recovery import RecoveryReport, recover
from fieldstation.sensors.base import audio_description
from fieldstation.sensors.generator import SyntheticSensor
from fieldstation.store.models import Message, Recording


def spec_for(ctx: JobContext, fmt: str = "flac", index: int = 0, rate: int = 8000) -> ChunkSpec:
    return ChunkSpec(
        station=ctx.config.station.id,
        sensor="syn",
        session_id=str(uuid.uuid4()),
        chunk_index=index,
        start_frame=index * rate,
        started_at=ctx.clock.now() + timedelta(seconds=index),
        stream=audio_description(rate, 1, "int16", fmt),
        deployment_id=ctx.deployment_id,
        config_hash="h",
        version="test",
        latitude=1.0,
        longitude=2.0,
        elevation=3.0,
    )


def noise(frames: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((frames, 1)) * 3000).astype(np.int16)


def all_rows(db: Any) -> list[Recording]:
    with db.session() as session:
        return list(session.scalars(select(Recording).order_by(Recording.id)))


@pytest.fixture
def ctx(make_station, make_ctx) -> JobContext:  # type: ignore[no-untyped-def]
    context, _ = make_ctx(
        make_station({"name": "syn", "kind": "synthetic", "sample_rate": 8000, "frequency": 1000})
    )
    return context


def test_closed_chunk_left_in_spool_is_committed_with_its_end_reason(ctx, db, spool_empty):  # type: ignore[no-untyped-def]
    writer = ChunkWriter(ctx.home.spool, spec_for(ctx))
    writer.write(noise(5000))
    finished = writer.finish("window_end")  # crash here: closed but not renamed
    report = recover(ctx)
    rows = all_rows(db)
    assert [(r.frames, r.end_reason, r.sha256) for r in rows] == [
        (5000, "window_end", finished.sha256)
    ]
    assert report.committed == [rows[0].path] and spool_empty()
    with db.session() as session:
        assert session.scalars(select(Message).where(Message.kind == "recording")).one()


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_unfinished_chunk_is_salvaged_up_to_its_last_whole_block(ctx, db, spool_empty, fmt):  # type: ignore[no-untyped-def]
    spec = spec_for(ctx, fmt)
    writer = ChunkWriter(ctx.home.spool, spec)
    data = noise(40000)
    writer.write(data)
    writer._writer._file.flush()  # what reached the disk before the power cut
    size = writer.audio.stat().st_size
    with open(writer.audio, "rb") as f:
        head = f.read(size * 2 // 3 + 1)  # cut mid-frame
    writer.abandon()
    writer.audio.write_bytes(head)
    report = recover(ctx)
    (row,) = all_rows(db)
    assert report.salvaged == [row.path] and spool_empty()
    assert row.end_reason == "recovered" and 0 < row.frames < 40000
    got = sf.read(str(ctx.home.root / row.path), dtype="int16", always_2d=True)[0]
    assert np.array_equal(got, data[: row.frames])
    assert row.sha256 == sha256_file(ctx.home.root / row.path)
    assert (row.session_id, row.started_at) == (spec.session_id, spec.started_at)


def test_a_crash_after_a_salvaged_chunk_is_renamed_leaves_it_a_row(
    ctx, db, spool_empty, monkeypatch
):  # type: ignore[no-untyped-def]
    """Recovery salvages an unfinished chunk, renames it into data/ and dies before its row
    (a recorder SIGKILLed while it recovers its previous chunk): the next quick recovery, which
    does not walk data/, still finds it by the hash in its sidecar."""
    import fieldstation.recording.commit as commit

    writer = ChunkWriter(ctx.home.spool, spec_for(ctx))
    writer.write(noise(40000))
    writer._writer._file.flush()
    size = writer.audio.stat().st_size
    with open(writer.audio, "rb") as f:
        head = f.read(size * 2 // 3 + 1)
    writer.abandon()
    writer.audio.write_bytes(head)

    class Killed(BaseException):
        pass

    def die(*args: Any, **kwargs: Any) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(commit, "insert_row", die)
        with pytest.raises(Killed):
            recover(ctx, full=False)
    assert all_rows(db) == [] and len(list((ctx.home.root / "data").rglob("*.flac"))) == 1
    report = recover(ctx, full=False)
    (row,) = all_rows(db)
    assert report.registered == [row.path] and spool_empty()
    assert row.end_reason == "recovered" and 0 < row.frames < 40000
    assert row.sha256 == sha256_file(ctx.home.root / row.path)


def test_undecodable_or_unknown_spool_files_are_quarantined(ctx, db, spool_empty):  # type: ignore[no-untyped-def]
    writer = ChunkWriter(ctx.home.spool, spec_for(ctx))
    writer.abandon()
    writer.audio.write_bytes(b"fLaC garbage")
    (ctx.home.spool / "stray.wav").write_bytes(b"RIFF....")
    report = recover(ctx)
    assert sorted(Path(p).name for p in report.quarantined) == sorted(
        [writer.audio.name, "stray.wav"]
    )
    assert all_rows(db) == [] and spool_empty()


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_data_file_without_row_gets_its_row_from_embedded_metadata(ctx, db, fmt):  # type: ignore[no-untyped-def]
    spec = spec_for(ctx, fmt, index=3)
    writer = ChunkWriter(ctx.home.spool, spec, sidecar=False)
    writer.write(noise(8000))
    finished = writer.finish("complete")
    target = ctx.home.root / spec.relpath()
    target.parent.mkdir(parents=True)
    os.replace(finished.audio, target)  # crash after the rename, sidecar lost too
    report = recover(ctx)
    (row,) = all_rows(db)
    assert report.registered == [spec.relpath()]
    assert (row.session_id, row.chunk_index, row.start_frame) == (spec.session_id, 3, 24000)
    assert (row.frames, row.sha256, row.started_at) == (8000, finished.sha256, spec.started_at)
    assert row.end_reason == ("complete" if fmt == "wav" else "recovered")


def test_row_whose_file_is_gone_is_marked_missing_and_recovery_is_idempotent(ctx, db):  # type: ignore[no-untyped-def]
    from fieldstation.recording.commit import commit_chunk

    writer = ChunkWriter(ctx.home.spool, spec_for(ctx))
    writer.write(noise(100))
    row = commit_chunk(ctx.db, ctx.config, ctx.home, writer.finish("complete"), ctx.clock.now())
    (ctx.home.root / row.path).unlink()
    assert recover(ctx).missing == [row.id]
    assert all_rows(db)[0].file_state == "missing"
    assert not recover(ctx).changed


def _wait_until(condition: Any, message: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.01)


def _recorder_child(config: Any, home: Any, deployment_id: int, sensor: str) -> None:
    ctx = JobContext(config, home, deployment_id, SystemClock(), name=f"recorder:{sensor}")
    run_recorder(ctx, sensor)


KILL_SENSORS = [
    {
        "name": n,
        "kind": "synthetic",
        "sample_rate": 16000,
        "frequency": 2000,
        "speed": 8.0,
        "chunk": "0.25s",  # 4000 frames: 5 blocks of 800
        "block": "0.05s",
        "format": fmt,
        "min_free": "1MB",
    }
    for n, fmt in (("f", "flac"), ("w", "wav"))
]


def _assert_recovered_state(db: Any, home: Any, config: Any) -> list[Recording]:
    """Spool empty, data files and present rows one to one, every file intact and equal to
    the synthetic source at its frames; returns the rows."""
    assert not any(home.spool.iterdir()), "spool not empty"
    data_files = {p.relative_to(home.root).as_posix() for p in home.data.rglob("*.*")}
    rows = all_rows(db)
    assert data_files == {r.path for r in rows if r.file_state == "present"}
    generators = {s.name: SyntheticSensor(s, SystemClock()) for s in config.sensors}
    for r in rows:
        path = home.root / r.path
        assert sha256_file(path) == r.sha256, r.path
        got = sf.read(str(path), dtype="int16", always_2d=True)[0]
        assert len(got) == r.frames
        expected = generators[r.sensor].samples(r.start_frame, r.start_frame + r.frames)
        assert np.array_equal(got, expected), f"{r.path}: samples differ from the source"
    return rows


def _recorder_killed_at(config: Any, home: Any, deployment_id: int, point: str) -> None:
    """A recorder that SIGKILLs itself at one exact point of its second chunk (patched here,
    in the forked child only)."""
    from fieldstation.recording import commit

    calls = 0

    def second_time() -> bool:
        nonlocal calls
        calls += 1
        return calls == 2

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    place, insert, write = commit.place_in_data, commit.insert_row, ChunkWriter.write
    if point == "mid_chunk":  # 3 of the 5 blocks of the second chunk written

        def write_then_die(self: ChunkWriter, data: Any) -> None:
            write(self, data)
            if self.spec.chunk_index == 1 and self.frames == 2400:
                die()

        ChunkWriter.write = write_then_die  # type: ignore[method-assign]
    elif point == "closed_in_spool":  # closed and fsynced, not renamed

        def die_then_place(*args: Any) -> str:
            if second_time():
                die()
            return place(*args)

        commit.place_in_data = die_then_place
    elif point == "renamed_no_row":  # in data/, no row yet

        def die_then_insert(*args: Any) -> Any:
            if second_time():
                die()
            return insert(*args)

        commit.insert_row = die_then_insert
    elif point == "row_sidecar_left":  # row committed, sidecar not yet deleted

        def insert_then_die(*args: Any) -> Any:
            row = insert(*args)
            if second_time():
                die()
            return row

        commit.insert_row = insert_then_die
    sensor = "w" if point == "mid_chunk" else "f"  # WAV frames reach the disk as written
    _recorder_child(config, home, deployment_id, sensor)


@pytest.mark.parametrize(
    ("point", "outcome"),
    [
        ("mid_chunk", "salvaged"),
        ("closed_in_spool", "committed"),
        ("renamed_no_row", "registered"),
        ("row_sidecar_left", "removed"),
    ],
)
def test_sigkill_at_each_commit_phase_is_recovered(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home, point, outcome
):
    config = make_station(*KILL_SENSORS)
    ctx, _ = make_ctx(config)
    child = multiprocessing.get_context("fork").Process(
        target=_recorder_killed_at, args=(config, home, ctx.deployment_id, point)
    )
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL, f"the recorder did not die at {point}"
    before = all_rows(db)
    report = recover(ctx)
    rows = _assert_recovered_state(db, home, config)
    found = {k: v for k, v in report.as_dict().items() if v}
    assert set(found) - {"removed"} == {outcome} - {"removed"}, found  # + the sidecar deleted
    assert len(found[outcome]) == 1, found
    assert not report.quarantined
    # the first chunk was committed before the kill; the second is recovered (or was in)
    assert [(r.chunk_index, r.end_reason) for r in before][:1] == [(0, "complete")]
    expected = "recovered" if point == "mid_chunk" else "complete"
    assert [(r.chunk_index, r.frames, r.end_reason) for r in rows] == [
        (0, 4000, "complete"),
        (1, 2400 if point == "mid_chunk" else 4000, expected),
    ]


@pytest.mark.slow
def test_sigkill_at_random_instants_loses_nothing_committed(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home, spool_empty
):
    # random instants land mostly mid-chunk; each commit phase is also killed on purpose by
    # test_sigkill_at_each_commit_phase_is_recovered, so every recovery path surely runs
    config = make_station(*KILL_SENSORS)
    ctx, _ = make_ctx(config)
    fork = multiprocessing.get_context("fork")
    rng = random.Random(20260601)
    quarantined = 0
    outcomes: dict[str, int] = {}
    for i in range(50):
        name = "fw"[i % 2]
        committed = len(all_rows(db))
        child = fork.Process(target=_recorder_child, args=(config, home, ctx.deployment_id, name))
        child.start()
        if i % 5:
            # the instant is random from the child's first commit, not from its start: how
            # long a fork takes to record its first chunk depends on the machine's load
            _wait_until(lambda n=committed: len(all_rows(db)) > n, f"kill {i}: no commit")
            time.sleep(rng.uniform(0.0, 0.3))
        else:  # every fifth kill lands in the start-up, maybe before the first frame
            time.sleep(rng.uniform(0.0, 0.1))
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        report = recover(ctx)
        quarantined += len(report.quarantined)
        for key, value in report.as_dict().items():
            outcomes[key] = outcomes.get(key, 0) + len(value)
        assert spool_empty(), f"kill {i}: spool not empty"
        data_files = {p.relative_to(home.root).as_posix() for p in home.data.rglob("*.*")}
        present = {r.path for r in all_rows(db) if r.file_state == "present"}
        assert data_files == present, f"kill {i}"
    rows = all_rows(db)
    assert len(rows) >= 40 and all(r.file_state == "present" for r in rows)  # 1+ per wait
    reasons = {r.end_reason for r in rows}
    assert reasons <= {"complete", "recovered"} and "complete" in reasons
    generators = {s.name: SyntheticSensor(s, SystemClock()) for s in config.sensors}  # type: ignore[arg-type]
    sessions: dict[str, list[Recording]] = {}
    for r in rows:
        path = home.root / r.path
        assert sha256_file(path) == r.sha256
        got = sf.read(str(path), dtype="int16", always_2d=True)[0]
        assert len(got) == r.frames
        expected = generators[r.sensor].samples(r.start_frame, r.start_frame + r.frames)
        assert np.array_equal(got, expected), f"{r.path}: samples differ from the source"
        sessions.setdefault(r.session_id, []).append(r)
    for chunks in sessions.values():
        chunks.sort(key=lambda r: r.chunk_index)
        for a, b in zip(chunks, chunks[1:], strict=False):
            assert b.start_frame == a.start_frame + a.frames
    print("recovery outcomes over 50 kills:", outcomes, "rows:", len(rows))
    # only files with no decodable frame at all (killed before the first frame reached the
    # disk) may be quarantined: nothing that could be salvaged is set aside
    for path in home.quarantine.iterdir():
        assert len(salvage_frames(path, "int16")) == 0, f"{path.name} had frames"
    assert len(list(home.quarantine.iterdir())) == quarantined


def test_a_starting_recorder_salvages_only_its_own_spool_files(make_station, make_ctx, db):  # type: ignore[no-untyped-def]
    synth = {"kind": "synthetic", "sample_rate": 8000, "frequency": 1000, "chunk": "1s"}
    config = make_station({**synth, "name": "syn"}, {**synth, "name": "syn_b"})
    ctx, progress = make_ctx(config)
    mine = ChunkWriter(ctx.home.spool, spec_for(ctx))  # sensor "syn"
    mine.write(noise(3000))
    mine.abandon()  # the recorder died mid-chunk
    other_spec = ChunkSpec(**{**spec_for(ctx).__dict__, "sensor": "syn_b"})
    other = ChunkWriter(ctx.home.spool, other_spec)
    other.write(noise(100))  # another recorder is writing this one right now
    progress.stop_after_chunks = 1
    run_recorder(ctx, "syn")
    rows = all_rows(db)
    assert [(r.sensor, r.end_reason, r.frames) for r in rows] == [
        ("syn", "recovered", 3000),
        ("syn", "complete", 8000),
    ]
    assert other.audio.exists() and other.sidecar.exists()
    other.abandon()


def test_a_new_day_folder_is_fsynced_into_its_parents(ctx, monkeypatch):  # type: ignore[no-untyped-def]
    from fieldstation.recording.commit import place_in_data

    seen: list[Path] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        seen.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    writer = ChunkWriter(ctx.home.spool, spec_for(ctx))
    writer.write(noise(100))
    finished = writer.finish("complete")
    monkeypatch.setattr(os, "fsync", fsync)
    relpath = place_in_data(ctx.home, finished.audio, finished.spec.relpath())
    day = (ctx.home.root / relpath).parent
    # data/ existed: the new data/syn/ entry goes into data/, the new day's into data/syn/,
    # then the file's into the day, and its removal from spool/
    assert seen == [ctx.home.data, day.parent, day, ctx.home.spool]


def test_a_chunk_renamed_to_a_suffixed_name_keeps_its_end_reason(ctx, db, spool_empty):  # type: ignore[no-untyped-def]
    from fieldstation.recording.commit import commit_chunk, place_in_data

    spec = spec_for(ctx)  # FLAC: the end reason is not inside the file, only in the sidecar
    first = ChunkWriter(ctx.home.spool, spec)
    first.write(noise(1000, seed=1))
    taken = commit_chunk(ctx.db, ctx.config, ctx.home, first.finish("complete"), ctx.clock.now())
    second = ChunkWriter(ctx.home.spool, spec)  # same name (e.g. the clock stepped back)
    second.write(noise(700, seed=2))
    finished = second.finish("window_end")
    relpath = place_in_data(ctx.home, finished.audio, spec.relpath())  # crash before the row
    assert relpath != taken.path and relpath.endswith("_1.flac")
    report = recover(ctx)
    assert report.registered == [relpath] and spool_empty()
    rows = {r.path: r for r in all_rows(db)}
    assert (rows[relpath].end_reason, rows[relpath].frames) == ("window_end", 700)
    assert rows[relpath].sha256 == finished.sha256
    assert rows[taken.path].end_reason == "complete"


def test_report_reads_as_one_line_for_the_log() -> None:
    assert str(RecoveryReport()) == "nothing to recover"
    report = RecoveryReport(committed=["spool/a.flac"], missing=[4, 7], removed=list("abcde"))
    assert str(report) == (
        "1 committed (spool/a.flac), 2 missing (ids 4, 7), 5 removed (a, b, c, +2 more)"
    )
