"""The energy detector on signals synthesised here with known onsets."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from fieldstation.processing.energy import EnergyConfig, EnergyDetector
from fieldstation.processing.model import Model

RATE = 48_000


def make_detector(**fields: object) -> EnergyDetector:
    return EnergyDetector(EnergyConfig(name="energy", model="energy", **fields))


def test_is_a_model() -> None:
    assert isinstance(make_detector(), Model)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_onset_found_within_10_ms(seed: int, chirp_signal: Callable[..., np.ndarray]) -> None:
    rng = np.random.default_rng(100 + seed)
    # well separated onsets at random sub-frame positions
    onsets = [0.3 + 0.9 * i + float(rng.uniform(0, 0.3)) for i in range(10)]
    x = chirp_signal(10.5, onsets, seed=seed, snr_db=15)
    found = make_detector().detect(x, RATE)
    assert len(found) == len(onsets), [(d.start, d.end) for d in found]
    for onset, det in zip(onsets, found, strict=True):
        assert abs(det.start - onset) <= 0.010, (onset, det.start)
        assert det.end >= onset + 0.02
        assert 0 < det.score <= 1


@pytest.mark.parametrize("seed", range(5))
def test_no_detection_on_noise_alone(seed: int, chirp_signal: Callable[..., np.ndarray]) -> None:
    x = chirp_signal(30.0, [], seed=seed)
    assert make_detector().detect(x, RATE) == []


def test_floor_adapts_to_a_rising_background(chirp_signal: Callable[..., np.ndarray]) -> None:
    # background rises 12 dB (the threshold) over 40 s; fixed thresholds would fire on it
    x = chirp_signal(40.0, [5.0, 35.0], seed=3, snr_db=20)
    x = x * np.linspace(1.0, 4.0, len(x), dtype=np.float32)
    found = make_detector().detect(x, RATE)
    assert [round(d.start, 2) for d in found] == [5.0, 35.0]


def test_out_of_band_energy_is_ignored(chirp_signal: Callable[..., np.ndarray]) -> None:
    x = chirp_signal(5.0, [], seed=5)
    t = np.arange(int(0.2 * RATE)) / RATE
    x[RATE : RATE + len(t)] += 0.5 * np.sin(2 * np.pi * 300 * t)  # loud 300 Hz hum burst
    assert make_detector(low=1000, high=12000).detect(x, RATE) == []
    assert len(make_detector(low=100, high=500).detect(x, RATE)) == 1


def test_min_duration_and_merge_gap(chirp_signal: Callable[..., np.ndarray]) -> None:
    x = chirp_signal(5.0, [1.0, 1.06], seed=6)
    assert len(make_detector(merge_gap=0.1).detect(x, RATE)) == 1
    assert len(make_detector(merge_gap=0.0).detect(x, RATE)) == 2
    assert make_detector(min_duration=0.2).detect(x, RATE) == []


def test_band_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="must be above"):
        EnergyConfig(name="e", model="energy", low=5000, high=1000)
