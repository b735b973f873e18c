"""The whole station under the runtime: `fieldstation run` as a subprocess, signals to the
supervisor, and a fault-injection run (SIGKILLed jobs, a hanging job, an always-crashing job)
that must lose and duplicate nothing beyond at-least-once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomli_w
from sqlalchemy import func, select

from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.runtime.client import ControlClient
from fieldstation.runtime.jobs import ProcessJobSpec
from fieldstation.runtime.liveness import RecorderLiveness
from fieldstation.runtime.station import Station, process_jobs
from fieldstation.store import open_database
from fieldstation.store.models import Delivery, Detection, Event, Message, ModelRun, Recording
from fieldstation.testing.disk import fill_disk
from fieldstation.testing.jobs import job_processes

JOBS = "fieldstation.testing.jobs"
CLI = [sys.executable, "-m", "fieldstation.cli"]


CUT_BY = {"shutdown": ("shutdown", "complete"), "stopped": ("stopped", "complete")}
"""End reasons of the last chunk after a stop: the stop's own, or ``complete`` when the stop
fell on a chunk boundary (the recorder reads no block after the stop, decision 0025)."""


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def fast_station(home: Path, *, speed: float = 1.0, chunk: str = "2s") -> dict[str, Any]:
    """The default station, smaller and faster: 16 kHz, short chunks, quick polling."""
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    sensor = data["sensors"][0]
    sensor.update(sample_rate="16kHz", chunk=chunk, speed=speed, min_free="1MB")
    data["processors"][0].update(poll_interval="0.2s", high="7kHz")
    data["retention"]["min_free"] = "1MB"
    data["runtime"].update(
        backoff_initial="0.05s",
        backoff_max="0.3s",
        liveness_grace="1s",
        stop_timeout="3s",
        status_interval="0.5s",
        outbox_poll="0.2s",
    )
    return data


def write_station(home: Path, data: dict[str, Any]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "station.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def station_pids(status: dict[str, Any]) -> list[int]:
    return [j["pid"] for j in status["jobs"] if j["kind"] == "process" and j["pid"]]


def gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def counts(home: Path) -> dict[str, int]:
    db = open_database(home / "station.db", migrate=False)
    try:
        with db.session() as s:
            return {
                "recordings": s.scalar(select(func.count(Recording.id))) or 0,
                "processed": s.scalar(
                    select(func.count(Recording.id)).where(Recording.state == "processed")
                )
                or 0,
                "detections": s.scalar(select(func.count(Detection.id))) or 0,
                "sent": s.scalar(select(func.count(Delivery.id)).where(Delivery.state == "sent"))
                or 0,
            }
    finally:
        db.dispose()


@pytest.mark.slow
def test_run_for_20s_default_station(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "FIELDSTATION_HOME": str(home), "COLUMNS": "200"}
    run = subprocess.Popen(
        [*CLI, "run", "--for", "20s"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        socket = StationHome(home).control_socket
        wait_for(socket.exists)
        with ControlClient(socket) as client:
            status = wait_for(
                lambda: (
                    (s := client.status())
                    and all(j["state"] == "running" for j in s["jobs"])
                    and len(station_pids(s)) == 2
                    and s
                )
            )
        names = {j["name"] for j in status["jobs"]}
        assert {"recorder:mic", "processor:energy", "outbox"} <= names
        assert status["healthy"] is True and status["shutting_down"] is False
        pids = station_pids(status)
        shown = subprocess.run(
            [*CLI, "status", "--json", "--home", str(home)], capture_output=True, text=True
        )
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["running"] is True
        second = subprocess.run([*CLI, "run", "--for", "1s"], env=env, capture_output=True)
        assert second.returncode == 1
        assert f"in use by process {run.pid}" in second.stderr.decode().replace("\n", " ")
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    text = output.decode()
    assert run.returncode == 0, text
    assert "chunk committed" in text and "processed" in text
    assert gone([run.pid, *pids])
    found = counts(home)
    assert found["recordings"] >= 2 and found["detections"] >= 1, found
    lines = (home / "outbox.jsonl").read_text().splitlines()
    kinds = Counter(json.loads(line)["kind"] for line in lines)
    assert kinds["detection"] >= 1 and kinds["heartbeat"] >= 1, kinds
    stopped = subprocess.run([*CLI, "status", "--home", str(home)], capture_output=True)
    assert stopped.returncode == 1


@pytest.mark.slow
def test_station_outlives_a_console_that_goes_away(tmp_path: Path) -> None:
    """``fieldstation run | head -1``: the reader leaves; the station records on, stops in order
    at the end of ``--for`` and exits 0 (rich would raise SystemExit inside a log call)."""
    home = tmp_path / "home"
    config = write_station(home, fast_station(home))
    run = subprocess.Popen(
        [*CLI, "run", "-c", str(config), "--for", "6s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert run.stdout is not None
        assert run.stdout.readline()
        run.stdout.close()  # the pipe is broken from here on
        # the fork server and both jobs (a migration or recovery child may come and go before)
        children = wait_for(
            lambda: len(c := psutil.Process(run.pid).children(recursive=True)) >= 3 and c
        )
        assert run.wait(30) == 0
    finally:
        if run.poll() is None:
            run.kill()
    wait_for(lambda: gone([child.pid for child in children]), timeout=10)
    db = open_database(home / "station.db", migrate=False)
    try:
        with db.session() as s:
            rows = s.scalars(select(Recording).order_by(Recording.id)).all()
    finally:
        db.dispose()
    # the open chunk ends 'shutdown'; 'complete' when the stop fell between a chunk's last block
    # and the next block (decision 0025: no block read after the stop, so no chunk is opened)
    assert len(rows) >= 2 and rows[-1].end_reason in CUT_BY["shutdown"], [
        r.end_reason for r in rows
    ]


@pytest.mark.slow
def test_replay_without_sample_rate_takes_the_files_rate_in_a_job(tmp_path: Path) -> None:
    """The job process validates the station again from what the supervisor sends it; a
    replay sensor must still know that ``sample_rate`` was omitted (it was 48 kHz there)."""
    import numpy as np
    import soundfile as sf

    source = tmp_path / "at-22050.wav"
    tone = np.sin(2 * np.pi * 440 * np.arange(22050 * 3) / 22050) * 0.3
    sf.write(source, tone.astype(np.float32), 22050, subtype="PCM_16")
    home = tmp_path / "home"
    data = fast_station(home, chunk="1s")
    data["sensors"][0] = {
        "name": "mic",
        "kind": "replay",
        "files": [str(source)],
        "loop": True,
        "chunk": "1s",
        "schedule": "always",
        "min_free": "1MB",
    }
    config = write_station(home, data)
    done = subprocess.run([*CLI, "run", "-c", str(config), "--for", "4s"], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    db = open_database(home / "station.db", migrate=False)
    try:
        with db.session() as s:
            rates = set(s.scalars(select(Recording.rate)).all())
            restarts = s.scalar(select(func.count(Event.id)).where(Event.kind == "job_restarted"))
    finally:
        db.dispose()
    assert rates == {22050} and restarts == 0, (rates, restarts)


@pytest.mark.slow
def test_sigterm_and_sigkill_of_the_supervisor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = write_station(home, fast_station(home))

    def start() -> tuple[subprocess.Popen[bytes], list[int]]:
        run = subprocess.Popen(
            [*CLI, "run", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        socket = StationHome(home).control_socket
        wait_for(socket.exists)
        with ControlClient(socket) as client:
            status = wait_for(
                lambda: (
                    (s := client.status())
                    and (s["jobs"][0]["last_progress"] or {}).get("what") == "chunk"
                    and s
                )
            )
        return run, station_pids(status)

    # operator stop: the open chunk ends with 'stopped', the job stays stopped until started
    run, pids = start()
    cli = [*CLI, "stop", "recorder:mic", "--config", str(config)]
    assert subprocess.run(cli, capture_output=True).returncode == 0
    with ControlClient(StationHome(home).control_socket) as client:
        wait_for(lambda: client.status()["jobs"][0]["state"] == "stopped")
        db = open_database(home / "station.db", migrate=False)
        with db.session() as s:
            last = s.scalars(select(Recording).order_by(Recording.id.desc())).first()
            assert last is not None and last.end_reason in CUT_BY["stopped"]
        db.dispose()
        unknown = subprocess.run([*CLI, "start", "nope", "--home", str(home)], capture_output=True)
        assert unknown.returncode == 2 and b"no job named 'nope'" in unknown.stderr
        cli[3] = "start"
        assert subprocess.run(cli, capture_output=True).returncode == 0
        status = wait_for(
            lambda: (
                (s := client.status())
                and (s["jobs"][0]["last_progress"] or {}).get("what") == "chunk"
                and s
            )
        )
        pids = station_pids(status)

    # SIGTERM: graceful, every child gone within 10 s, the open chunk ends with 'shutdown'
    run.send_signal(signal.SIGTERM)
    assert run.wait(10) == 0
    assert gone(pids)
    db = open_database(home / "station.db", migrate=False)
    with db.session() as s:
        last = s.scalars(select(Recording).order_by(Recording.id.desc())).first()
        assert last is not None and last.end_reason in CUT_BY["shutdown"]
    db.dispose()

    # SIGKILL: the children die with their parent; the next run recovers and resumes
    run, pids = start()
    time.sleep(0.7)  # inside a chunk, so a partial one is left in spool/
    run.send_signal(signal.SIGKILL)
    run.wait(5)
    wait_for(lambda: gone(pids), timeout=10)
    before = counts(home)
    spooled = [p for p in (home / "spool").rglob("*") if p.is_file()]
    final = subprocess.run([*CLI, "run", "-c", str(config), "--for", "6s"], capture_output=True)
    assert final.returncode == 0, final.stdout.decode()[-2000:]
    db = open_database(home / "station.db", migrate=False)
    with db.session() as s:
        old = list(s.scalars(select(Recording).where(Recording.id <= before["recordings"])))
        assert old and all(r.state == "processed" for r in old)
        assert all(r.file_state == "present" for r in old)
        pending = s.scalar(
            select(func.count(Delivery.id))
            .join(Message)
            .where(Delivery.state == "pending", Message.recording_id <= before["recordings"])
        )
        assert pending == 0
        if spooled:
            recovery = s.scalars(select(Event).where(Event.kind == "recovery")).all()
            assert recovery, "spool files left by SIGKILL were not recovered"
    db.dispose()
    assert not [p for p in (home / "spool").rglob("*") if p.is_file() and p.suffix != ".part"]


# --- fault injection -------------------------------------------------------------------------


@pytest.mark.slow
def test_fault_injection_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = fast_station(home, speed=4.0, chunk="2s")
    data["runtime"].update(max_restarts=25, restart_window="10m")
    config: StationConfig = parse_config(data)
    extra = [
        ProcessJobSpec("hang", f"{JOBS}:hanging", liveness=RecorderLiveness(chunk=0.2, grace=0.3)),
        ProcessJobSpec("crash", f"{JOBS}:crashing"),
    ]
    station = Station(config, jobs=process_jobs(config) + extra, control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    rng = random.Random(2024)
    try:
        assert station.ready.wait(60)
        supervisor = station.supervisor
        assert supervisor is not None
        targets = ["recorder:mic", "processor:energy"]
        killed: set[int] = set()
        while len(killed) < 30:
            name = rng.choice(targets)

            def fresh(n: str = name) -> int | None:
                job = supervisor.job(n)
                ok = job["state"] in ("starting", "running") and job["pid"] not in killed
                return job["pid"] if ok else None

            try:
                pid = wait_for(fresh, timeout=60)
            except AssertionError:
                raise AssertionError(f"{name} not back: {supervisor.job(name)}") from None
            time.sleep(rng.uniform(0.0, 0.3))
            with contextlib.suppress(ProcessLookupError):  # it may have just ended
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        # generous timeouts: under load each restart of the crashing job takes seconds
        wait_for(lambda: supervisor.job("crash")["state"] == "failed", timeout=180)
        wait_for(lambda: supervisor.job("hang")["restarts"] >= 2, timeout=60)
        wait_for(lambda: all(supervisor.job(n)["state"] == "running" for n in targets), 60)
        time.sleep(1.5)
    finally:
        stop.set()
        runner.join(60)
    assert not runner.is_alive()
    assert job_processes() == []
    # a short second run recovers spool leftovers and finishes pending work
    rest = Station(config, control=False, tick=0.1)
    stop2 = threading.Event()
    runner = threading.Thread(target=rest.run, args=(stop2,))
    runner.start()
    assert rest.ready.wait(60)
    high_water = counts(home)["recordings"]

    last: dict[str, Any] = {}

    def settled() -> bool:
        db = open_database(home / "station.db", migrate=False)
        try:
            with db.session() as s:
                undone = s.scalar(
                    select(func.count(Recording.id)).where(
                        Recording.id <= high_water, Recording.state != "processed"
                    )
                )
                unsent = s.scalar(
                    select(func.count(Delivery.id))
                    .join(Message)
                    .where(Delivery.state != "sent", Message.kind != "heartbeat")
                    .where((Message.recording_id <= high_water) | Message.recording_id.is_(None))
                )
                states = Counter(
                    s.scalars(select(Recording.state).where(Recording.id <= high_water)).all()
                )
                last.update(undone=undone, unsent=unsent, states=states)
                return undone == 0 and unsent == 0
        finally:
            db.dispose()

    try:
        wait_for(settled, timeout=120)
    except AssertionError:
        raise AssertionError(f"not settled: {last}, jobs {rest.status()['jobs']}") from None
    finally:
        stop2.set()
        runner.join(60)
    assert job_processes() == []

    db = open_database(home / "station.db", migrate=False)
    with db.session() as s:
        recordings = list(s.scalars(select(Recording)))
        # every file in data/ has exactly one row, every present row its file
        files = {p.relative_to(home).as_posix() for p in (home / "data").rglob("*.flac")}
        rows = Counter(r.path for r in recordings)
        assert max(rows.values()) == 1
        present = {r.path for r in recordings if r.file_state == "present"}
        assert present == files
        # a session's chunks are gapless: frames [n*N, (n+1)*N)
        sessions: dict[str, list[Recording]] = {}
        for r in recordings:
            sessions.setdefault(r.session_id, []).append(r)
        per_chunk = 2 * 16_000  # chunk = 2 s at 16 kHz
        missing = 0
        for chunks in sessions.values():
            chunks.sort(key=lambda r: r.chunk_index)
            for r in chunks:
                assert r.start_frame == r.chunk_index * per_chunk and r.frames <= per_chunk
            for a, b in zip(chunks, chunks[1:], strict=False):
                assert b.chunk_index > a.chunk_index
                if b.chunk_index == a.chunk_index + 1:
                    assert b.start_frame == a.start_frame + a.frames == b.chunk_index * per_chunk
                    assert a.frames == per_chunk  # only a session's last chunk may be short
                missing += b.chunk_index - a.chunk_index - 1
        # a chunk missing inside a session is one a SIGKILL cut before it could be salvaged:
        # it is in quarantine/, never silently gone
        quarantined = [p for p in (home / "quarantine").rglob("*") if p.is_file()]
        assert missing <= len(quarantined)
        # one successful model run per processed recording: no duplicated detections
        runs = Counter(
            s.scalars(select(ModelRun.recording_id).where(ModelRun.status == "ok")).all()
        )
        assert runs and max(runs.values()) == 1, runs.most_common(3)
        per_run = s.execute(select(Detection.model_run_id, Detection.recording_id)).all()
        assert all(runs[rec] == 1 for _, rec in per_run)
        # every message marked sent is in the file output (at-least-once: maybe twice)
        sent_ids = set(
            s.scalars(
                select(Message.message_id).join(Delivery).where(Delivery.state == "sent")
            ).all()
        )
        events = Counter(s.scalars(select(Event.kind)).all())
        hung = [
            e
            for e in s.scalars(select(Event).where(Event.kind == "job_restarted"))
            if e.source == "hang"
        ]
    db.dispose()
    lines = [json.loads(x) for x in (home / "outbox.jsonl").read_text().splitlines()]
    in_file = {line["id"] for line in lines}
    assert sent_ids <= in_file
    assert len(lines) - len(in_file) <= 5  # duplicates only from deliveries cut by a kill
    assert events["job_failed"] == 1
    assert events["job_restarted"] >= 30 + 5 + 2
    assert hung and hung[0].data["reason"].startswith("hung:")


def test_events_kept_on_a_full_disk_are_written_at_shutdown(small_disk: Path) -> None:
    """An event the full database refused, still kept when the station stops (space came back
    between two status ticks), is written before the database closes."""
    home = small_disk / "home"
    data = fast_station(home)
    data["runtime"]["status_interval"] = "1h"  # no tick writes it: only the shutdown can
    station = Station(parse_config(data), jobs=[], threads=False, control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    try:
        assert station.ready.wait(30)
        wait_for(lambda: (home / "run" / "status.json").exists())
        fill_disk(small_disk / "filler")
        station.record_event("kept", "test", "refused, then kept", "warning", {"n": 1})
        assert station._events is not None and station._events.pending == 1
        (small_disk / "filler").unlink()
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
    db = open_database(home / "station.db", migrate=False)
    try:
        with db.session() as session:
            kinds = [e.kind for e in session.scalars(select(Event))]
    finally:
        db.dispose()
    assert "kept" in kinds


def test_an_event_that_cannot_be_stored_neither_stops_the_status_thread_nor_blocks_others(
    small_disk: Path,
) -> None:
    """Kept behind a refused event, one whose data is not JSON is dropped when space returns;
    the status tick writes the others and status.json keeps being rewritten."""
    home = small_disk / "home"
    data = fast_station(home)
    data["runtime"]["status_interval"] = "0.2s"
    station = Station(parse_config(data), jobs=[], threads=False, control=False, tick=0.1)
    status = home / "run" / "status.json"
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    try:
        assert station.ready.wait(30)
        wait_for(status.exists)
        fill_disk(small_disk / "filler")
        station.record_event("before", "test", "refused", "warning", {})
        station.record_event("bad", "test", "not JSON", "warning", {"at": object()})
        station.record_event("after", "test", "refused too", "warning", {})
        (small_disk / "filler").unlink()
        events = open_database(home / "station.db", migrate=False)
        try:

            def kinds() -> list[str]:
                with events.session() as session:
                    return [e.kind for e in session.scalars(select(Event))]

            wait_for(lambda: "after" in kinds())
            assert kinds() == ["before", "after"]
        finally:
            events.dispose()
        seen = json.loads(status.read_text())["updated_at"]
        wait_for(lambda: json.loads(status.read_text())["updated_at"] != seen)
        assert [t for t in threading.enumerate() if t.name == "status"]
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
