"""BirdNET adapter vs the BirdNET team's ``birdnet`` package on the same model and file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fieldstation.processing.model import RecordingInput

pytestmark = [pytest.mark.extras, pytest.mark.samples]

THRESHOLD = 0.01  # low, so that many (window, label) pairs are compared


def reference(require: Any, path: Path, overlap: float) -> dict[tuple[float, str], float]:
    """Per-window scores ≥ THRESHOLD from ``birdnet`` (load_custom: it cannot download here)."""
    birdnet = require.module("extras", "birdnet", "birdnet extra not installed")
    from fieldstation.processing.birdnet import model_files

    model_path, labels_path = model_files()
    model = birdnet.load_custom("acoustic", "2.4", "tf", model_path, labels_path, library="litert")
    result = model.predict(
        str(path),
        top_k=None,
        overlap_duration_s=overlap,
        default_confidence_threshold=THRESHOLD,
        show_stats=None,
    )
    rows = result.to_structured_array()
    return {
        (round(float(r["start_time"]), 3), str(r["species_name"])): float(r["confidence"])
        for r in rows
    }


def ours(require: Any, path: Path, overlap: float) -> dict[tuple[float, str], float]:
    require.module("extras", "ai_edge_litert", "birdnet extra not installed")
    from fieldstation.processing.birdnet import BirdnetConfig, BirdnetModel

    cfg = BirdnetConfig(name="b", model="birdnet", overlap=overlap, min_confidence=THRESHOLD)
    output = BirdnetModel(cfg).run(RecordingInput.from_file(path))
    return {(round(d.start, 3), d.label): d.score for d in output.detections}


@pytest.mark.parametrize("overlap", [0.0, 1.5])
def test_scores_match_the_birdnet_package(
    require: Any, bird_files: list[Path], overlap: float
) -> None:
    path = bird_files[0]  # 32 kHz: exercises resampling and the padded last window
    want = reference(require, path, overlap)
    got = ours(require, path, overlap)
    assert len(want) > 5
    # pairs near the threshold may fall on either side by float noise
    core = {k for k, v in want.items() if v >= THRESHOLD + 1e-3}
    assert core <= set(got)
    assert {k for k, v in got.items() if v >= THRESHOLD + 1e-3} <= set(want)
    worst = max(abs(got[k] - want[k]) for k in core)
    assert worst <= 1e-3, worst
    top: dict[float, Any] = {}
    for (start, label), score in want.items():
        if score > top.get(start, ("", -1.0))[1]:
            top[start] = (label, score)
    for start, (label, _score) in top.items():
        best = max((s, lab) for (st, lab), s in got.items() if st == start)
        assert best[1] == label


def test_species_list_and_missing_extra_message(require: Any, bird_files: list[Path]) -> None:
    require.module("extras", "ai_edge_litert", "birdnet extra not installed")
    from fieldstation.processing.birdnet import BirdnetConfig, BirdnetModel

    keep = "Leiothlypis peregrina_Tennessee Warbler"
    cfg = BirdnetConfig(name="b", model="birdnet", species=[keep], min_confidence=0.1)
    output = BirdnetModel(cfg).run(RecordingInput.from_file(bird_files[0]))
    assert output.detections and {d.label for d in output.detections} == {keep}


def test_unknown_species_are_refused(require: Any) -> None:
    require.module("extras", "ai_edge_litert", "birdnet extra not installed")
    from fieldstation.processing.birdnet import BirdnetConfig, BirdnetModel

    with pytest.raises(ValueError, match="Blackbird"):
        BirdnetModel(BirdnetConfig(name="b", model="birdnet", species=["Blackbird"]))
