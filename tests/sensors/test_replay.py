"""The replay sensor: files as a live stream, no resampling, loop, pacing on the clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fieldstation.clock import VirtualClock
from fieldstation.sensors import SensorConfigError, build_sensor
from fieldstation.sensors.player import ReplaySensor
from fieldstation.sensors.replay import ReplayConfig


def cfg(files: list[Path], **kw: object) -> ReplayConfig:
    return ReplayConfig.model_validate({"name": "r", "kind": "replay", "files": files, **kw})


def write(
    path: Path, frames: int, rate: int = 8000, seed: int = 0, channels: int = 1
) -> np.ndarray:
    data = (np.random.default_rng(seed).standard_normal((frames, channels)) * 2000).astype(np.int16)
    sf.write(str(path), data, rate, subtype="PCM_16")
    return data


def drain(sensor: ReplaySensor, limit: int = 10_000) -> list:  # type: ignore[type-arg]
    blocks = []
    for _ in range(limit):
        block = sensor.read()
        if block is None:
            return blocks
        blocks.append(block)
    return blocks


def test_folder_plays_as_one_gapless_stream_paced_by_the_clock(tmp_path: Path) -> None:
    a = write(tmp_path / "a.wav", 5000, seed=1)
    b = write(tmp_path / "b.WAV", 3001, seed=2)
    (tmp_path / "notes.txt").write_text("not audio")
    clock = VirtualClock()
    sensor = ReplaySensor(cfg([tmp_path], speed=4.0, block=0.1), clock)
    assert (sensor.sample_rate, sensor.channels) == (8000, 1)  # from the first file
    sensor.open()
    blocks = drain(sensor)
    assert [blk.start_frame for blk in blocks] == list(range(0, 8001, 800))
    assert np.array_equal(np.concatenate([blk.data for blk in blocks]), np.concatenate([a, b]))
    assert clock.monotonic() == pytest.approx(8001 / 8000 / 4)
    t0 = blocks[0].captured_at
    assert all(b.captured_at == t0 + timedelta(seconds=b.start_frame / 8000) for b in blocks)


def test_loop_starts_again_after_the_last_file(tmp_path: Path) -> None:
    a = write(tmp_path / "a.wav", 1000)
    sensor = ReplaySensor(cfg([tmp_path / "a.wav"], loop=True, block=0.1), VirtualClock())
    sensor.open()
    got = np.concatenate([sensor.read().data for _ in range(5)])  # type: ignore[union-attr]
    assert np.array_equal(got, np.tile(a, (4, 1)))


def test_sample_rate_mismatch_is_an_error_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path / "a.wav", 100, rate=8000)
    write(tmp_path / "b.wav", 100, rate=16000)
    with pytest.raises(SensorConfigError, match=r"b\.wav is at 16000 Hz.*8000 Hz.*sox"):
        ReplaySensor(cfg([tmp_path]), VirtualClock())
    with pytest.raises(SensorConfigError, match=r"a\.wav is at 8000 Hz.*48000"):
        ReplaySensor(cfg([tmp_path / "a.wav"], sample_rate=48000), VirtualClock())


def test_missing_files_and_channel_mismatch(tmp_path: Path) -> None:
    with pytest.raises(SensorConfigError, match="does not exist"):
        build_sensor(cfg([tmp_path / "nope.wav"]), VirtualClock())
    (tmp_path / "empty").mkdir()
    with pytest.raises(SensorConfigError, match="holds no audio"):
        build_sensor(cfg([tmp_path / "empty"]), VirtualClock())
    write(tmp_path / "st.wav", 100, channels=2)
    with pytest.raises(SensorConfigError, match="2 channel"):
        build_sensor(cfg([tmp_path / "st.wav"], channels=1), VirtualClock())


@pytest.mark.samples
def test_real_bird_file_is_read_unchanged(bird_files: list[Path]) -> None:
    source, rate = sf.read(str(bird_files[0]), dtype="int16", always_2d=True)
    sensor = ReplaySensor(cfg(bird_files[:1], block=0.5, speed=100.0), VirtualClock())
    assert sensor.sample_rate == rate == 32000
    sensor.open()
    assert np.array_equal(np.concatenate([b.data for b in drain(sensor)]), source)
    sensor.close()
    assert sensor.health().state == "closed"


def test_mismatched_skip_leaves_other_rates_out(tmp_path: Path) -> None:
    a = write(tmp_path / "a.wav", 800, rate=8000)
    write(tmp_path / "b.wav", 100, rate=16000)
    c = write(tmp_path / "c.wav", 800, rate=8000, seed=3)
    sensor = ReplaySensor(cfg([tmp_path], mismatched="skip", block=0.1), VirtualClock())
    sensor.open()
    got = np.concatenate([b.data for b in drain(sensor)])
    assert np.array_equal(got, np.concatenate([a, c]))
    assert sensor.health().details["skipped"] == [str(tmp_path / "b.wav")]
    with pytest.raises(SensorConfigError, match="no replay file"):
        ReplaySensor(cfg([tmp_path / "b.wav"], sample_rate=8000, mismatched="skip"), VirtualClock())


def test_unreadable_files_are_an_error_or_skipped(tmp_path: Path) -> None:
    """A garbage .wav in the folder: 'error' names it and the way out; 'skip' plays the rest
    (the first readable file gives the rate)."""
    (tmp_path / "0-garbage.wav").write_bytes(np.random.default_rng(1).bytes(4096))
    a = write(tmp_path / "a.wav", 800, rate=8000)
    with pytest.raises(SensorConfigError, match=r"0-garbage.wav cannot be read.*'skip'"):
        ReplaySensor(cfg([tmp_path], block=0.1), VirtualClock())
    sensor = ReplaySensor(cfg([tmp_path], mismatched="skip", block=0.1), VirtualClock())
    assert sensor.sample_rate == 8000
    sensor.open()
    assert np.array_equal(np.concatenate([b.data for b in drain(sensor)]), a)
    assert sensor.health().details["skipped"] == [str(tmp_path / "0-garbage.wav")]
    (tmp_path / "a.wav").unlink()
    with pytest.raises(SensorConfigError, match="can be read"):
        ReplaySensor(cfg([tmp_path], mismatched="skip"), VirtualClock())
