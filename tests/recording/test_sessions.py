"""Sessions of several streams: one capture id and anchor per slot, a manifest of every chunk."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from fieldstation.clock import VirtualClock
from fieldstation.config import ConfigError
from fieldstation.recording.job import ContinuousSlot, capture_id_for, run_recorder
from fieldstation.recording.sessions import capture_manifest, list_captures
from fieldstation.store.models import Recording

START = datetime(2026, 6, 1, tzinfo=UTC)
MIC = {"name": "mic", "kind": "synthetic", "sample_rate": 8000, "frequency": 1000, "chunk": "2s"}
BAT = {"name": "bat", "kind": "synthetic", "sample_rate": 16000, "chunk": "3s"}


def slots_every(first: datetime, record: float, every: float) -> Any:
    def slots(now: datetime) -> ContinuousSlot:
        k = max(0, int((now - first).total_seconds() // every))
        while True:
            start = first + timedelta(seconds=k * every)
            if start + timedelta(seconds=record) > now:
                return ContinuousSlot(start, start + timedelta(seconds=record))
            k += 1

    return slots


def test_streams_of_a_session_share_id_and_anchor_and_line_up_in_the_manifest(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db
):
    config = make_station(MIC, BAT, sessions=[{"name": "pair", "sensors": ["mic", "bat"]}])
    slots = slots_every(START, record=5.0, every=10.0)
    until = START + timedelta(seconds=20)
    # each recorder runs in its own process in a station, on its own clock: the bat recorder
    # opens its stream 0.25 s after the slot starts, the microphone at once
    mic_ctx, _ = make_ctx(config, VirtualClock(START))
    bat_clock = VirtualClock(START)
    bat_ctx, _ = make_ctx(config, bat_clock)
    run_recorder(mic_ctx, "mic", slots=slots, until=until)
    bat_clock.advance(0.25)
    run_recorder(bat_ctx, "bat", slots=slots, until=until)

    with db.session() as session:
        captures = list_captures(session)
        manifests = [capture_manifest(session, c["capture_id"]) for c in captures]
    assert len(captures) == 2  # two slots: 00:00:00 and 00:00:10
    anchors = sorted(m["anchor"] for m in manifests if m)
    assert anchors == [START.isoformat(), (START + timedelta(seconds=10)).isoformat()]
    for manifest in manifests:
        assert manifest is not None and manifest["session"] == "pair"
        anchor = datetime.fromisoformat(manifest["anchor"])
        assert manifest["capture_id"] == capture_id_for(config.station.id, "pair", anchor)
        mic, bat = manifest["streams"]["mic"], manifest["streams"]["bat"]
        assert (mic["rate"], bat["rate"]) == (8000, 16000)
        assert mic["frames"] == 5 * 8000  # the whole slot
        assert [c["frames"] for c in mic["chunks"]] == [16000, 16000, 8000]
        assert mic["chunks"][0]["offset_frames"] == 0
        # in the first slot the bat stream opened 0.25 s late: 4000 of its frames; in the
        # second both waited for the slot and started on time
        late = 0.25 if anchor == START else 0.0
        assert bat["chunks"][0]["offset"] == late, json.dumps(manifest, indent=1)
        assert bat["chunks"][0]["offset_frames"] == late * 16000
        assert bat["frames"] == (5 - late) * 16000
        for stream in (mic, bat):  # chunks follow each other to the frame
            for a, b in zip(stream["chunks"], stream["chunks"][1:], strict=False):
                assert b["offset_frames"] == a["offset_frames"] + a["frames"]


def test_a_sensor_in_two_sessions_or_with_another_schedule_is_a_config_error(  # type: ignore[no-untyped-def]
    make_station,
):
    with pytest.raises(ConfigError) as raised:
        make_station(
            MIC,
            {**BAT, "schedule": "night"},
            schedules={"night": {"windows": [{"start": "20:00", "end": "04:00"}]}},
            sessions=[
                {"name": "pair", "sensors": ["mic", "bat"]},
                {"name": "again", "sensors": ["mic", "nope"]},
            ],
        )
    text = str(raised.value)
    assert "sessions[0].sensors" in text and "must share a schedule" in text
    assert "bat has night" in text and "mic has none" in text
    assert "sessions[1].sensors[0]" in text and "already in session 'pair'" in text
    assert "sessions[1].sensors[1]" in text and "no such sensor" in text


def test_chunks_carry_the_latest_gps_fix_instead_of_the_station_files_place(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home
):
    from fieldstation.recording.metadata import read_embedded
    from fieldstation.store.readings import NewReading, insert_readings

    config = make_station(MIC)
    slots = slots_every(START, record=2.0, every=10.0)
    ctx, _ = make_ctx(config, VirtualClock(START))
    run_recorder(ctx, "mic", slots=slots, until=START + timedelta(seconds=2))  # before any fix
    with db.session() as session:
        insert_readings(
            session,
            deployment_id=ctx.deployment_id,
            sensor="gps",
            readings=[
                NewReading("latitude", "deg", START, 78.2232),
                NewReading("longitude", "deg", START, 15.6267),
                NewReading("elevation", "m", START, 9.0),
            ],
        )
    ctx, _ = make_ctx(config, VirtualClock(START + timedelta(seconds=10)))
    run_recorder(ctx, "mic", slots=slots, until=START + timedelta(seconds=12))
    with db.session() as session:
        paths = list(session.scalars(select(Recording.path).order_by(Recording.id)))
    places = [read_embedded(home.root / p)[0] for p in paths]
    station = config.station
    assert (places[0].latitude, places[0].longitude) == (station.latitude, station.longitude)
    assert (places[-1].latitude, places[-1].longitude, places[-1].elevation) == (
        78.2232,
        15.6267,
        9.0,
    )


def test_the_manifest_lists_a_slow_sensors_values_and_is_written_by_the_cli(  # type: ignore[no-untyped-def]
    make_station, make_ctx, db, home, tmp_path
):
    import json as jsonlib
    import tomllib

    import tomli_w
    from typer.testing import CliRunner

    from fieldstation.cli.app import app
    from fieldstation.config import template_text
    from fieldstation.store.readings import NewReading, insert_readings

    temp = {"name": "temp", "kind": "system", "period": "1s"}
    sessions = [{"name": "hive", "sensors": ["mic", "temp"]}]
    config = make_station(MIC, temp, sessions=sessions)
    slots = slots_every(START, record=5.0, every=10.0)
    ctx, _ = make_ctx(config, VirtualClock(START))
    run_recorder(ctx, "mic", slots=slots, until=START + timedelta(seconds=5))
    with db.session() as session:
        insert_readings(
            session,
            deployment_id=ctx.deployment_id,
            sensor="temp",
            readings=[
                NewReading("load_1m", "1", START + timedelta(seconds=s), float(s))
                for s in (1, 3, 7)  # the last after the session's chunks end
            ],
        )
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home.root)
    data["sensors"] = [MIC, temp]
    data["sessions"] = sessions
    path = tmp_path / "hive.toml"
    path.write_text(tomli_w.dumps(data))
    with db.session() as session:
        (capture,) = [c["capture_id"] for c in list_captures(session)]
    result = CliRunner().invoke(app, ["sessions", "-c", str(path), "--id", capture, "--write"])
    assert result.exit_code == 0, result.output
    written = home.data / "sessions" / "hive" / f"{capture}.json"
    manifest = jsonlib.loads(written.read_text())
    assert [c["frames"] for c in manifest["streams"]["mic"]["chunks"]] == [16000, 16000, 8000]
    assert [(v["offset"], v["value"]) for v in manifest["readings"]["temp"]] == [
        (1.0, 1.0),
        (3.0, 3.0),
    ]
