"""The synthetic sensor: deterministic, block-size independent, documented chirp onsets."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from fieldstation.clock import VirtualClock
from fieldstation.sensors import Sensor, build_sensor
from fieldstation.sensors.generator import SyntheticSensor
from fieldstation.sensors.synthetic import SyntheticConfig, chirp_onsets


def cfg(**kw: object) -> SyntheticConfig:
    base: dict[str, object] = {"name": "s", "kind": "synthetic", "sample_rate": 48000}
    return SyntheticConfig.model_validate({**base, **kw})


def test_stream_is_the_same_whatever_the_block_size() -> None:
    clock = VirtualClock()
    a = SyntheticSensor(cfg(block=0.1), clock)
    b = SyntheticSensor(cfg(block=0.037), clock)
    for sensor in (a, b):
        sensor.open()
    got_a = np.concatenate([a.read().data for _ in range(30)])  # type: ignore[union-attr]
    got_b = np.concatenate([b.read().data for _ in range(82)])  # type: ignore[union-attr]
    n = min(len(got_a), len(got_b))
    assert n > 140000
    assert np.array_equal(got_a[:n], got_b[:n])
    assert got_a.dtype == np.int16 and got_a.shape[1] == 1


def test_blocks_carry_running_frame_index_and_paced_capture_times() -> None:
    clock = VirtualClock(datetime(2026, 6, 1, tzinfo=UTC))
    sensor = SyntheticSensor(cfg(block=0.25, speed=2.0), clock)
    assert isinstance(sensor, Sensor)
    sensor.open()
    blocks = [sensor.read() for _ in range(4)]
    assert [b.start_frame for b in blocks] == [0, 12000, 24000, 36000]  # type: ignore[union-attr]
    assert blocks[1].captured_at == datetime(2026, 6, 1, 0, 0, 0, 250000, tzinfo=UTC)  # type: ignore[union-attr]
    assert clock.monotonic() == pytest.approx(0.5)  # 1 s of audio at speed 2
    assert sensor.health().frames == 48000


def test_chirp_onsets_are_where_the_documentation_says() -> None:
    config = cfg(chirp_interval=0.5, chirp_duration=0.02, frequency=3000)
    assert chirp_onsets(config, 0, 48000) == [12000, 36000]
    assert chirp_onsets(config, 12001, 60001) == [36000, 60000]
    x = SyntheticSensor(config, VirtualClock()).samples(0, 96000)[:, 0].astype(float)
    energy = np.convolve(x * x, np.ones(480), mode="valid")  # 10 ms windows
    loud = np.flatnonzero(energy > 100 * np.median(energy))
    starts = loud[np.insert(np.diff(loud) > 1, 0, True)] + 480
    assert len(starts) == 4
    for found, onset in zip(starts, [12000, 36000, 60000, 84000], strict=True):
        assert abs(found - onset) < 480
    # the chirp sweeps from 0.5 f to 1.5 f: its spectrum peaks inside that band
    seg = x[12000:12960]
    peak = np.argmax(np.abs(np.fft.rfft(seg))) * 48000 / len(seg)
    assert 1500 <= peak <= 4500


def test_seed_and_sample_formats() -> None:
    clock = VirtualClock()
    one = SyntheticSensor(cfg(signal="noise", seed=1), clock).samples(0, 1000)
    two = SyntheticSensor(cfg(signal="noise", seed=2), clock).samples(0, 1000)
    assert not np.array_equal(one, two)
    i24 = SyntheticSensor(cfg(sample_format="int24"), clock).samples(0, 5000)
    assert i24.dtype == np.int32 and np.all(i24 % 256 == 0)
    f32 = SyntheticSensor(cfg(sample_format="float32", format="wav", signal="tone"), clock)
    tone = f32.samples(0, 4800)
    assert tone.dtype == np.float32 and 0.45 < np.abs(tone).max() <= 0.52  # -6 dBFS peak


def test_bad_configs_are_rejected_with_reasons() -> None:
    with pytest.raises(ValidationError, match="Nyquist"):
        cfg(sample_rate=8000, frequency=4000)
    with pytest.raises(ValidationError, match="FLAC cannot store"):
        cfg(sample_format="float32")


def test_built_through_its_plugin() -> None:
    sensor = build_sensor(cfg(), VirtualClock())
    assert isinstance(sensor, SyntheticSensor)
