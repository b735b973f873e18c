"""Media in processing: processors claim only recordings of their model's media; a station file
whose processor names a sensor of another media is refused; ``analyze`` refuses a file of the
wrong media and runs the motion model on an MKV."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import shutil
import tomllib
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import soundfile as sf
import tomli_w
from sqlalchemy import select
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.config import ConfigError, parse_config, template_text
from fieldstation.processing.worker import ProcessorWorker, covering_processors
from fieldstation.store import processing as repo
from fieldstation.store.models import Detection, Recording
from fieldstation.testing.rows import add_model_run

START = datetime.fromisoformat("2026-06-01T05:00:00+00:00")
PROCESSORS = [{"name": "energy", "model": "energy"}, {"name": "yard", "model": "motion"}]
runner = CliRunner()


def _clip_maker() -> ModuleType:
    """tests/processing/test_motion.py, for its ``make_clip``."""
    spec = importlib.util.spec_from_file_location(
        "motion_clips", Path(__file__).with_name("test_motion.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def moving_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s 640x360 25 fps H.264 MKV whose box moves from 2 s to 4 s, x 100..360, y 150..210."""
    folder = tmp_path_factory.mktemp("media")
    return _clip_maker().make_clip(folder / "moving.mkv", [(2.0, 4.0)])  # type: ignore[no-any-return]


def insert(station: Any, source: Path, *, sensor: str, at: int) -> int:
    """Copy ``source`` (an MKV: video at 25 fps; else audio) under the station's data/ and add
    its ``recorded`` row, started ``at`` seconds after START; returns its id."""
    started_at = START + timedelta(seconds=at)
    media = "video" if source.suffix == ".mkv" else "audio"
    rel = Path("data") / sensor / started_at.date().isoformat() / f"{at:04d}{source.suffix}"
    path = station.home.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    if media == "video":
        rate, frames = 25, 150
    else:
        info = sf.info(str(path))
        rate, frames = int(info.samplerate), int(info.frames)
    with station.db.session() as session:
        row = Recording(
            deployment_id=station.deployment_id,
            sensor=sensor,
            path=str(rel),
            session_id=str(uuid.uuid4()),
            chunk_index=0,
            start_frame=0,
            started_at=started_at,
            duration=frames / rate,
            media=media,
            rate=rate,
            channels=3 if media == "video" else 1,
            frames=frames,
            bytes=path.stat().st_size,
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            format=source.suffix[1:],
            end_reason="complete",
            created_at=started_at,
            extra={},
        )
        session.add(row)
        session.flush()
        return row.id


@pytest.fixture
def chirps(tmp_path: Path, chirp_signal: Any) -> Path:
    """A 4 s FLAC of noise with chirps at 1.0 and 2.5 s (the energy model finds two)."""
    path = tmp_path / "chirps.flac"
    sf.write(path, chirp_signal(4.0, [1.0, 2.5], seed=1), 48_000)
    return path


def row_of(station: Any, rid: int) -> Recording:
    with station.db.session() as session:
        row = session.get(Recording, rid)
        assert row is not None
        session.expunge(row)
        return row


def test_each_processor_claims_only_recordings_of_its_media(
    make_station, moving_clip: Path, chirps: Path
) -> None:
    station = make_station(processors=PROCESSORS)
    video = insert(station, moving_clip, sensor="cam", at=60)  # the oldest: claimed first
    audio = insert(station, chirps, sensor="mic", at=120)
    ctx = station.context()
    energy, motion = ProcessorWorker(ctx, "energy"), ProcessorWorker(ctx, "yard")
    assert (energy.media, motion.media) == ("audio", "video")
    assert energy.pending() == 1 and motion.pending() == 1

    result = energy.step()
    assert (result.outcome, result.recording_id, result.detections) == ("processed", audio, 2)
    assert energy.step().outcome == "idle" and energy.pending() == 0
    assert row_of(station, video).state == "recorded"  # untouched: never claimed, no attempt
    assert row_of(station, video).attempts == 0
    assert row_of(station, audio).state == "processed"  # energy is its only processor

    result = motion.step()
    assert (result.outcome, result.recording_id, result.detections) == ("processed", video, 1)
    assert motion.step().outcome == "idle" and motion.pending() == 0
    row = row_of(station, video)
    assert row.state == "processed"
    thumbnail = f"thumbnails/cam/{START.date().isoformat()}/0060.yard.jpg"
    assert row.extra["thumbnails"] == {"yard": thumbnail}
    assert (station.home.root / thumbnail).read_bytes()[:3] == b"\xff\xd8\xff"
    with station.db.session() as session:
        det = session.scalars(select(Detection).where(Detection.recording_id == video)).one()
        assert det.label == "motion" and abs(det.start - 2.0) <= 0.08
        assert det.detected_at == START + timedelta(seconds=60 + det.start)
        assert len(det.extra["box"]) == 4 and det.extra["peak_fraction"] > 0


def test_an_undecodable_video_is_quarantined_by_the_motion_processor(
    make_station, tmp_path: Path
) -> None:
    station = make_station(processors=PROCESSORS)
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40)
    rid = insert(station, garbage, sensor="cam", at=60)
    result = ProcessorWorker(station.context(), "yard").step()
    assert (result.outcome, result.recording_id) == ("quarantined", rid)
    row = row_of(station, rid)
    assert row.state == "quarantined" and row.path.startswith("quarantine/")
    assert (station.home.root / row.path).exists()
    assert not (station.home.root / "thumbnails").exists()


def test_claim_next_filters_by_media_in_the_cached_statement(make_station, moving_clip, chirps):
    station = make_station(processors=PROCESSORS)
    video = insert(station, moving_clip, sensor="cam", at=60)
    audio = insert(station, chirps, sensor="mic", at=120)
    now = START + timedelta(hours=1)
    repo._claim_statement.cache_clear()

    def claim(media: str | None) -> int | None:
        with station.db.session() as session:
            row = repo.claim_next(
                session,
                processor="p",
                sensors=None,
                token=repo.claim_token("p@1"),
                now=now,
                lease=60,
                max_attempts=3,
                media=media,
            )
            return None if row is None else row.id

    assert claim("audio") == audio and claim("audio") is None
    assert claim("readings") is None
    assert claim("video") == video and claim("video") is None
    info = repo._claim_statement.cache_info()
    assert (info.misses, info.hits) == (3, 2)  # one statement per media, reused
    with station.db.session() as session:
        pending = {
            media: repo.count_pending(session, processor="q", sensors=None, media=media)
            for media in ("audio", "video", "readings", None)
        }
    assert pending == {"audio": 1, "video": 1, "readings": 0, None: 2}


def test_reprocessable_filters_by_media(make_station, moving_clip, chirps) -> None:
    station = make_station(processors=PROCESSORS)
    video = insert(station, moving_clip, sensor="cam", at=60)
    audio = insert(station, chirps, sensor="mic", at=120)
    with station.db.session() as session:  # energy "did" both (a run from before media)
        for rid in (video, audio):
            add_model_run(session, rid, started_at=START, processor="energy")
    with station.db.session() as session:
        rows = repo.reprocessable(session, processor="energy", sensors=None, media="audio")
        assert [r.id for r in rows] == [audio]
        rows = repo.reprocessable(session, processor="energy", sensors=None)
        assert [r.id for r in rows] == [video, audio]


def test_covering_processors_are_those_of_the_recordings_media(make_station) -> None:
    station = make_station(
        processors=[*PROCESSORS, {"name": "off", "model": "motion", "enabled": False}]
    )
    config = station.config
    assert covering_processors(config, "cam", "video") == ["yard"]
    assert covering_processors(config, "cam", "audio") == ["energy"]
    assert covering_processors(config, "mic") == ["energy"]  # mic: a synthetic (audio) sensor
    assert covering_processors(config, "gone") == ["energy"]  # not in the file: audio


def test_a_model_whose_media_is_not_its_plugins_is_refused(make_station, monkeypatch) -> None:
    import dataclasses

    from fieldstation.config.plugins import load_plugin
    from fieldstation.job import ConfigurationError
    from fieldstation.processing import worker

    station = make_station(processors=PROCESSORS)
    liar = dataclasses.replace(load_plugin("models", "energy"), media="video")
    monkeypatch.setattr(worker, "load_plugin", lambda group, name: liar)
    with pytest.raises(ConfigurationError, match="declares media video .* analyses audio"):
        worker.build_model(station.config.processor("energy"))


def station_data(home: Path, processors: list[dict[str, Any]]) -> dict[str, Any]:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    data["processors"] = processors
    return data


def test_a_processor_naming_a_sensor_of_another_media_is_a_config_error(tmp_path: Path) -> None:
    data = station_data(tmp_path, [{"name": "yard", "model": "motion", "sensors": ["mic"]}])
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    [issue] = caught.value.issues
    assert issue.path == "processors[0].sensors[0]" and issue.value == "mic"
    assert (
        "processor 'yard' (model 'motion') analyses video, but sensor 'mic' records audio"
        in issue.message
    )
    # the same through `fieldstation validate`
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    result = runner.invoke(app, ["validate", "-c", str(path), "--no-host-checks"])
    assert result.exit_code == 2
    assert "analyses video, but sensor 'mic' records audio" in " ".join(result.output.split())
    # naming no sensors (all of them) or sensors of its media is fine
    parse_config(station_data(tmp_path, [{"name": "yard", "model": "motion"}]))
    parse_config(station_data(tmp_path, [{"name": "e", "model": "energy", "sensors": ["mic"]}]))


def test_analyze_runs_the_motion_model_on_an_mkv(tmp_path: Path, moving_clip: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    clip = folder / "clip.mkv"
    shutil.copyfile(moving_clip, clip)
    (folder / "notes.wav").write_bytes(b"not searched: not video")
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["analyze", str(folder), "--model", "motion", "--csv", str(out)])
    assert result.exit_code == 0, result.output
    [row] = list(csv.DictReader(out.open()))
    assert (Path(row["file"]).name, row["label"]) == ("clip.mkv", "motion")
    assert abs(float(row["start"]) - 2.0) <= 0.08 and abs(float(row["end"]) - 4.0) <= 0.08
    box = json.loads(row["extra"])["box"]
    assert all(abs(a - b) <= 12 for a, b in zip(box, [100, 150, 360, 210], strict=True))
    assert (folder / "clip.motion.jpg").exists()
    assert "thumbnail:" in result.output and "clip.motion.jpg" in result.output
    # settings go through --set as for any model
    result = runner.invoke(app, ["analyze", str(clip), "-m", "motion", "--set", "min_duration=5"])
    assert result.exit_code == 0 and "0 detections in 1 file analysed" in result.output


def test_analyze_refuses_a_file_of_another_media(tmp_path: Path, moving_clip, chirps) -> None:
    clip = tmp_path / "clip.mkv"
    shutil.copyfile(moving_clip, clip)
    result = runner.invoke(app, ["analyze", str(clip), "--model", "energy"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "model 'energy' analyses audio, but this file is video" in text
    result = runner.invoke(app, ["analyze", str(chirps), str(clip), "--model", "motion"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "model 'motion' analyses video, but this file is audio" in text
    assert not list(tmp_path.glob("*.jpg"))  # refused before anything ran
