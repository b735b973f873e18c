"""Replay inputs that can never work are configuration errors (not retried); damaged files are
skipped under ``mismatched = "skip"``, even when the damage shows only while playing; empty
files never make a loop spin. All on real files: a real FIFO, real FLAC with bytes damaged."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from fieldstation.clock import VirtualClock
from fieldstation.config import config_data, config_hash, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.job import EXIT_CONFIG, ConfigurationError, JobContext
from fieldstation.sensors import SensorConfigError, build_sensor
from fieldstation.sensors.player import ReplaySensor
from fieldstation.sensors.replay import ReplayConfig
from fieldstation.store import open_database
from fieldstation.store.deployments import start_deployment


def cfg(files: list[Path], **kw: object) -> ReplayConfig:
    return ReplayConfig.model_validate({"name": "r", "kind": "replay", "files": files, **kw})


def noise(frames: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((frames, 1)) * 3000).astype(np.int16)


def write(path: Path, frames: int, seed: int = 0, rate: int = 8000) -> np.ndarray:
    data = noise(frames, seed)
    sf.write(str(path), data, rate, subtype="PCM_16")
    return data


def damage_middle(path: Path) -> None:
    """Overwrite 2000 bytes in the middle of ``path`` with random bytes (header intact)."""
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 2000] = np.random.default_rng(9).bytes(2000)
    path.write_bytes(bytes(raw))


def drain(sensor: ReplaySensor, limit: int = 10_000) -> list[np.ndarray]:
    out = []
    for _ in range(limit):
        block = sensor.read()
        if block is None:
            return out
        out.append(block.data)
    raise AssertionError("the replay never ended")


def test_missing_file_is_a_configuration_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"files\[0\].*nope\.wav does not exist"):
        build_sensor(cfg([tmp_path / "nope.wav"]), VirtualClock())


def test_fifo_is_named_as_a_fifo_and_never_opened(tmp_path: Path) -> None:
    """A FIFO was reported as "does not exist"; opening it would block for ever."""
    fifo = tmp_path / "a.wav"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match=r"a\.wav is a FIFO"):
        build_sensor(cfg([fifo]), VirtualClock())
    good = write(tmp_path / "b.wav", 800)
    sensor = build_sensor(cfg([fifo, tmp_path / "b.wav"], mismatched="skip"), VirtualClock())
    assert isinstance(sensor, ReplaySensor)
    sensor.open()
    assert np.array_equal(np.concatenate(drain(sensor)), good)
    assert sensor.health().details["skipped"] == [str(fifo)]


UNREADABLE = """
import sys
from fieldstation.clock import VirtualClock
from fieldstation.job import ConfigurationError
from fieldstation.sensors import build_sensor
from fieldstation.sensors.replay import ReplayConfig
config = ReplayConfig.model_validate({"name": "r", "kind": "replay", "files": [sys.argv[1]]})
try:
    build_sensor(config, VirtualClock())
except ConfigurationError as error:
    print("configuration error:", error)
except Exception as error:
    print("other error:", error)
"""


def test_unreadable_file_is_a_configuration_error() -> None:
    """Root reads a mode 000 file anyway, so as root the check runs as nobody (setpriv)."""
    import shutil
    import subprocess
    import sys
    import tempfile

    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and no setpriv to drop to nobody")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run([*prefix, sys.executable, "-c", "pass"], capture_output=True)
        if probe.returncode != 0:  # e.g. pyenv's 3.12 loads libpython from root's 0700 home
            pytest.skip(f"this interpreter does not run as nobody: {probe.stderr.decode()[:200]}")
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "a.wav"
        write(path, 800)
        path.chmod(0)
        done = subprocess.run(
            [*prefix, sys.executable, "-c", UNREADABLE, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.stdout.startswith("configuration error:"), done.stdout + done.stderr
    assert "a.wav is not readable" in done.stdout


def test_undecodable_file_under_error_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ConfigurationError, match=r"a\.wav cannot be read.*'skip'") as caught:
        build_sensor(cfg([tmp_path / "a.wav"]), VirtualClock())
    assert isinstance(caught.value, SensorConfigError)  # still what callers catch today


def test_file_damaged_mid_stream_is_skipped_and_the_next_file_plays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The header of b.flac is fine; its body fails to decode part-way ("lost sync")."""
    a = write(tmp_path / "a.flac", 8000, seed=1)
    write(tmp_path / "b.flac", 16000, seed=2)
    damage_middle(tmp_path / "b.flac")
    c = write(tmp_path / "c.flac", 8000, seed=3)
    assert sf.info(str(tmp_path / "b.flac")).frames == 16000  # the header does not tell
    sensor = ReplaySensor(cfg([tmp_path], mismatched="skip", block=0.1), VirtualClock())
    sensor.open()
    with caplog.at_level(logging.WARNING):
        got = np.concatenate(drain(sensor))
    assert np.array_equal(got[: len(a)], a)
    assert np.array_equal(got[-len(c) :], c)  # c plays whole, right after what b gave
    assert sensor.health().details["skipped"] == [str(tmp_path / "b.flac")]
    assert any("b.flac" in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)


def test_file_damaged_mid_stream_under_error_is_a_configuration_error(tmp_path: Path) -> None:
    write(tmp_path / "b.flac", 16000, seed=2)
    damage_middle(tmp_path / "b.flac")
    sensor = ReplaySensor(cfg([tmp_path / "b.flac"], block=0.1), VirtualClock())
    sensor.open()
    with pytest.raises(ConfigurationError, match=r"b\.flac cannot be decoded \(after \d+ frame"):
        drain(sensor)


def _read_in_thread(sensor: ReplaySensor, blocks: int) -> list[Any]:
    """Read ``blocks`` blocks in a daemon thread; a read that spins fails the test, not hangs."""
    out: list[Any] = []

    def run() -> None:
        try:
            sensor.open()
            for _ in range(blocks):
                out.append(sensor.read())
        except BaseException as error:  # noqa: BLE001 - handed to the test
            out.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "read() spins on an empty file"
    return out


def test_empty_file_with_loop_is_skipped_not_spun_on(tmp_path: Path) -> None:
    sf.write(str(tmp_path / "a.wav"), np.zeros((0, 1), np.int16), 8000, subtype="PCM_16")
    b = write(tmp_path / "b.wav", 800)
    sensor = ReplaySensor(cfg([tmp_path], loop=True, block=0.1), VirtualClock())
    got = _read_in_thread(sensor, 3)
    assert all(not isinstance(x, BaseException) for x in got), got
    assert np.array_equal(np.concatenate([x.data for x in got]), np.tile(b, (3, 1)))
    assert sensor.health().details["skipped"] == [str(tmp_path / "a.wav")]


def test_only_empty_files_with_loop_is_a_configuration_error(tmp_path: Path) -> None:
    sf.write(str(tmp_path / "a.wav"), np.zeros((0, 1), np.int16), 8000, subtype="PCM_16")
    try:
        sensor = ReplaySensor(cfg([tmp_path / "a.wav"], loop=True), VirtualClock())
    except ConfigurationError as error:
        assert "can be read and holds audio" in str(error)
        return
    got = _read_in_thread(sensor, 1)  # old code: spins here
    assert isinstance(got[0], ConfigurationError), got


# -- the recorder job ------------------------------------------------------------------------


def _station(tmp_path: Path, sensor: dict[str, Any]) -> tuple[JobContext, dict[str, Any]]:
    home = StationHome(tmp_path / "home").ensure()
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data["sensors"] = [sensor]
    data["processors"] = []
    config = parse_config(data)
    db = open_database(home.database)
    with db.session() as session:
        deployment = start_deployment(
            session,
            station_id=config.station.id,
            config_hash=config_hash(config),
            config={},
            version="test",
            now=VirtualClock().now(),
        )
        deployment_id = deployment.id
    db.dispose()
    ctx = JobContext(config=config, home=home, deployment_id=deployment_id, name="recorder:rep")
    return ctx, config_data(config)


def test_recorder_job_raises_configuration_error_and_its_process_exits_78(
    tmp_path: Path,
) -> None:
    from fieldstation.recording.job import run_recorder
    from fieldstation.runtime.jobs import ProcessJobSpec, child_main
    from fieldstation.runtime.station import RECORDER

    fifo = tmp_path / "in.wav"
    os.mkfifo(fifo)
    ctx, data = _station(tmp_path, {"name": "rep", "kind": "replay", "files": [str(fifo)]})
    with pytest.raises(ConfigurationError, match="FIFO"):
        run_recorder(ctx, "rep", stop_when_exhausted=True)

    spec = ProcessJobSpec(name="recorder:rep", target=RECORDER, args=("rep",))
    parent, child = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(
        target=child_main, args=(spec, data, ctx.home, ctx.deployment_id, child)
    )
    process.start()
    child.close()
    process.join(60)
    assert process.exitcode == EXIT_CONFIG
    reports = []
    while parent.poll(1):
        try:
            reports.append(parent.recv_bytes().decode())
        except EOFError:
            break
    assert any("config_error" in r and "FIFO" in r for r in reports), reports


def _run_job_process(ctx: JobContext, data: dict[str, Any]) -> tuple[int | None, list[str]]:
    from fieldstation.runtime.jobs import ProcessJobSpec, child_main
    from fieldstation.runtime.station import RECORDER

    spec = ProcessJobSpec(name="recorder:rep", target=RECORDER, args=("rep",))
    parent, child = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(
        target=child_main, args=(spec, data, ctx.home, ctx.deployment_id, child)
    )
    process.start()
    child.close()
    process.join(60)
    if process.exitcode is None:
        process.kill()
        process.join()
        return None, []
    reports = []
    while parent.poll(1):
        try:
            reports.append(parent.recv_bytes().decode())
        except EOFError:
            break
    return process.exitcode, reports


def test_recorder_of_only_empty_files_looping_exits_78_instead_of_spinning(
    tmp_path: Path,
) -> None:
    """It used to spin at 100 % of a core in read(), deaf to SIGTERM, until liveness killed it."""
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 1), np.int16), 8000, subtype="PCM_16")
    sensor = {"name": "rep", "kind": "replay", "files": [str(empty)], "loop": True}
    ctx, data = _station(tmp_path, sensor)
    code, reports = _run_job_process(ctx, data)
    assert code == EXIT_CONFIG
    assert any("config_error" in r and "empty.wav" in r for r in reports), reports


def test_recorder_records_the_good_files_around_a_damaged_one(tmp_path: Path) -> None:
    """Under mismatched = 'skip' a file found damaged mid-stream used to crash the recorder at
    every restart, so the good files were never recorded."""
    from sqlalchemy import func, select

    from fieldstation.recording.job import run_recorder
    from fieldstation.store.models import Recording

    folder = tmp_path / "in"
    folder.mkdir()
    a = write(folder / "a.flac", 8000, seed=1)
    write(folder / "b.flac", 16000, seed=2)
    damage_middle(folder / "b.flac")
    c = write(folder / "c.flac", 8000, seed=3)
    sensor = {
        "name": "rep",
        "kind": "replay",
        "files": [str(folder)],
        "mismatched": "skip",
        "speed": 200,
        "chunk": "1s",
        "format": "wav",
    }
    ctx, _ = _station(tmp_path, sensor)
    run_recorder(ctx, "rep", stop_when_exhausted=True)
    with ctx.db.session() as session:
        frames = session.scalar(select(func.sum(Recording.frames)))
    ctx.db.dispose()
    assert frames is not None and frames >= len(a) + len(c)
    assert frames < len(a) + 16000 + len(c)  # b's frames from the damage on are gone


def test_sigterm_stops_a_slow_replay_promptly(tmp_path: Path) -> None:
    """At speed 0.01 a 1 s block takes 100 s to "happen"; the recorder used to sleep through
    SIGTERM in read() until the stop timeout's alarm killed it."""
    import json
    import signal
    import time

    from fieldstation.runtime.jobs import ProcessJobSpec, child_main
    from fieldstation.runtime.station import RECORDER

    write(tmp_path / "a.wav", 8000)
    sensor = {
        "name": "rep",
        "kind": "replay",
        "files": [str(tmp_path / "a.wav")],
        "speed": 0.01,
        "block": 1.0,
        "format": "wav",
    }
    ctx, data = _station(tmp_path, sensor)
    data["runtime"] = {"stop_timeout": "60s"}
    spec = ProcessJobSpec(name="recorder:rep", target=RECORDER, args=("rep",))
    parent, child = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(
        target=child_main, args=(spec, data, ctx.home, ctx.deployment_id, child)
    )
    process.start()
    child.close()
    try:
        while True:  # the slot is open: the recorder is reading
            assert parent.poll(60), "no progress report"
            if json.loads(parent.recv_bytes())["what"] == "slot":
                break
        assert process.pid is not None
        sent = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        process.join(30)
        took = time.monotonic() - sent
    finally:
        if process.exitcode is None:
            process.kill()
            process.join()
    assert process.exitcode == 0
    assert took < 10, took


def test_replay_file_above_flacs_rate_is_a_configuration_error(tmp_path: Path) -> None:
    """The rate comes from the file; FLAC chunks cannot hold 700 kHz (it used to fail at every
    chunk, restarted over and over)."""
    write(tmp_path / "bat.wav", 7000, rate=700_000)
    with pytest.raises(ConfigurationError, match=r"bat\.wav is at 700000 Hz.*655350.*'wav'"):
        build_sensor(cfg([tmp_path / "bat.wav"]), VirtualClock())
    build_sensor(cfg([tmp_path / "bat.wav"], format="wav"), VirtualClock())
