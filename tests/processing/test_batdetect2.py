"""BatDetect2 adapter vs ``batdetect2.api`` run directly on the real bat recordings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fieldstation.processing.model import RecordingInput

pytestmark = [pytest.mark.extras, pytest.mark.samples]


def test_same_detections_as_the_api(require: Any, bat_files: list[Path]) -> None:
    api = require.module("extras", "batdetect2.api", "batdetect2 extra not installed")
    from fieldstation.processing.batdetect2 import BatDetect2Config, BatDetect2Model

    model = BatDetect2Model(BatDetect2Config(name="bats", model="batdetect2"))
    files = [p for p in bat_files if "NoBat" not in p.name][:2] + [
        p for p in bat_files if "NoBat" in p.name
    ]
    total = 0
    for path in files:
        reference = api.process_file(
            str(path), api.model, config=api.get_config(detection_threshold=0.3)
        )["pred_dict"]["annotation"]
        got = model.run(RecordingInput.from_file(path)).detections
        assert len(got) == len(reference), path.name
        for det, ann in zip(got, reference, strict=True):
            assert det.label == ann["class"]
            assert det.score == pytest.approx(ann["det_prob"], abs=1e-4)
            assert det.start == pytest.approx(ann["start_time"], abs=1e-6)
            assert det.end == pytest.approx(ann["end_time"], abs=1e-6)
            assert (det.low_hz, det.high_hz) == (ann["low_freq"], ann["high_freq"])
        total += len(got)
    assert total > 0


def test_threshold_changes_what_is_reported(require: Any, bat_files: list[Path]) -> None:
    require.module("extras", "batdetect2.api", "batdetect2 extra not installed")
    from fieldstation.processing.batdetect2 import BatDetect2Config, BatDetect2Model

    path = next(p for p in bat_files if "NoBat" not in p.name)
    low = BatDetect2Model(BatDetect2Config(name="b", model="batdetect2", detection_threshold=0.1))
    high = BatDetect2Model(BatDetect2Config(name="b", model="batdetect2", detection_threshold=0.6))
    found_low = low.run(RecordingInput.from_file(path)).detections
    found_high = high.run(RecordingInput.from_file(path)).detections
    assert len(found_low) > len(found_high)
    assert all(d.score >= 0.6 for d in found_high)
