"""BatDetect2 adapter vs ``batdetect2.api`` run directly on the real bat recordings.

Every one of the 9 real bat WAVs is compared (count, labels, scores, times, bands), and a
time-expanded copy checks the ``time_expansion`` option. The model is loaded once per module
and each reference is computed once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from fieldstation.processing.model import RecordingInput

pytestmark = [pytest.mark.extras, pytest.mark.samples]

BAT_FILES = 9  # the WAVs in batdetect2 1.3.1's tests/data (TESTBED.md)

Annotations = list[dict[str, Any]]


@pytest.fixture(scope="module")
def api(require: Any) -> Any:
    """``batdetect2.api`` (importing it loads torch and the model, once for the module)."""
    return require.module("extras", "batdetect2.api", "batdetect2 extra not installed")


@pytest.fixture(scope="module")
def model(api: Any) -> Any:
    """Our adapter with its default settings (threshold 0.3, no time expansion)."""
    from fieldstation.processing.batdetect2 import BatDetect2Config, BatDetect2Model

    return BatDetect2Model(BatDetect2Config(name="bats", model="batdetect2"))


@pytest.fixture(scope="module")
def reference(api: Any) -> Callable[..., Annotations]:
    """``reference(path, threshold=0.3, time_expansion=1.0)``: the annotations of
    ``batdetect2.api.process_file`` itself (each computed once)."""
    cache: dict[tuple[str, float, float], Annotations] = {}

    def annotations(path: Path, threshold: float = 0.3, time_expansion: float = 1.0) -> Annotations:
        key = (str(path), threshold, time_expansion)
        if key not in cache:
            settings = api.get_config(detection_threshold=threshold, time_expansion=time_expansion)
            cache[key] = list(
                api.process_file(str(path), api.model, config=settings)["pred_dict"]["annotation"]
            )
        return cache[key]

    return annotations


def assert_same(got: list[Any], want: Annotations, name: str) -> None:
    assert len(got) == len(want), name
    for det, ann in zip(got, want, strict=True):
        assert det.label == ann["class"], name
        assert det.score == pytest.approx(ann["det_prob"], abs=1e-4), name
        assert det.start == pytest.approx(ann["start_time"], abs=1e-6), name
        assert det.end == pytest.approx(ann["end_time"], abs=1e-6), name
        assert (det.low_hz, det.high_hz) == (ann["low_freq"], ann["high_freq"]), name
        assert det.extra["class_prob"] == pytest.approx(ann["class_prob"], abs=1e-4), name


def test_all_the_bat_files_are_there(bat_files: list[Path]) -> None:
    assert len(bat_files) == BAT_FILES, [p.name for p in bat_files]


@pytest.mark.parametrize("index", range(BAT_FILES))
def test_same_detections_as_the_api(
    bat_files: list[Path], model: Any, reference: Callable[..., Annotations], index: int
) -> None:
    path = bat_files[index]
    want = reference(path)
    assert_same(model.run(RecordingInput.from_file(path)).detections, want, path.name)
    assert want or "NoBat" in path.name, f"{path.name}: the API found no call"


def test_time_expansion_matches_the_api_and_restores_real_time(
    bat_files: list[Path], model: Any, reference: Callable[..., Annotations], tmp_path: Path
) -> None:
    from fieldstation.processing.batdetect2 import BatDetect2Config, BatDetect2Model

    source = next(p for p in bat_files if sf.info(str(p)).samplerate == 192_000)
    samples, rate = sf.read(str(source), dtype="int16")
    expanded = tmp_path / f"te10_{source.name}"  # as a 10x time-expansion detector stores it
    sf.write(str(expanded), samples, rate // 10, subtype="PCM_16")
    slowed = BatDetect2Model(BatDetect2Config(name="b", model="batdetect2", time_expansion=10))
    got = slowed.run(RecordingInput.from_file(expanded)).detections
    assert_same(got, reference(expanded, time_expansion=10.0), expanded.name)
    # undone expansion: the calls of the original recording, at their real times and bands
    original = reference(source)
    assert original and [(d.label, round(d.start, 4)) for d in got] == [
        (a["class"], round(a["start_time"], 4)) for a in original
    ]
    # read as if it were real time, the slowed calls are far below bat frequencies
    assert (
        reference(expanded) == [] and model.run(RecordingInput.from_file(expanded)).detections == []
    )


def test_threshold_changes_what_is_reported(
    bat_files: list[Path], api: Any, reference: Callable[..., Annotations]
) -> None:
    from fieldstation.processing.batdetect2 import BatDetect2Config, BatDetect2Model

    path = next(p for p in bat_files if "NoBat" not in p.name)
    low = BatDetect2Model(BatDetect2Config(name="b", model="batdetect2", detection_threshold=0.1))
    high = BatDetect2Model(BatDetect2Config(name="b", model="batdetect2", detection_threshold=0.6))
    found_low = low.run(RecordingInput.from_file(path)).detections
    found_high = high.run(RecordingInput.from_file(path)).detections
    assert len(found_low) > len(found_high)
    assert all(d.score >= 0.6 for d in found_high)
    assert_same(found_high, reference(path, threshold=0.6), path.name)


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_body_is_quarantined_at_once(
    bat_files: list[Path], model: Any, make_station: Any, damage: str, tmp_path: Path
) -> None:
    from fieldstation.processing.worker import ProcessorWorker
    from fieldstation.store.models import Recording

    source = next(p for p in bat_files if "NoBat" not in p.name)
    samples, rate = sf.read(str(source), dtype="int16")
    flac = tmp_path / "bat.flac"  # a station chunk as the recorder writes it
    sf.write(str(flac), samples, rate, subtype="PCM_16")
    raw = bytearray(flac.read_bytes())
    if damage == "truncated":  # cut short (a crash or a full disk): the header still says 4 s
        raw = raw[: len(raw) // 2]
    else:  # garbled in the middle of the body
        middle = len(raw) // 3
        raw[middle : middle + 2000] = bytes((b * 7 + 13) & 255 for b in raw[middle : middle + 2000])
    flac.write_bytes(bytes(raw))
    assert sf.info(str(flac)).frames == len(samples)  # the header is intact and says 4 s
    station = make_station(processors=[{"name": "bats", "model": "batdetect2"}])
    rid = station.add_recording(raw=flac.read_bytes(), sensor="bat", rate=rate)
    result = ProcessorWorker(station.context(), "bats", model=model).step()
    assert (result.outcome, result.recording_id) == ("quarantined", rid), result
    assert result.error is not None and "cannot decode" in result.error
    with station.db.session() as session:
        row = session.get(Recording, rid)
        assert row is not None and (row.state, row.attempts) == ("quarantined", 1)


def test_the_decode_check_reads_the_whole_body(bat_files: list[Path], tmp_path: Path) -> None:
    # soundfile only: runs without the extra too
    from fieldstation.processing.batdetect2 import check_decodable
    from fieldstation.processing.model import UndecodableAudioError

    source = next(p for p in bat_files if "NoBat" not in p.name)
    samples, rate = sf.read(str(source), dtype="int16")
    assert check_decodable(source) == len(samples)
    flac = tmp_path / "bat.flac"
    sf.write(str(flac), samples, rate, subtype="PCM_16")
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    with pytest.raises(UndecodableAudioError, match="cannot decode .*bat.flac"):
        check_decodable(flac)
    # a WAV cut short has no bad frame: its header's size is corrected, it stays usable
    wav = tmp_path / "bat.wav"
    wav.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    assert 0 < check_decodable(wav) < len(samples)
