"""Message schemas: every body a real station produces validates; bad messages are refused
with a clear reason and stored as dead letters."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fieldstation.config import parse_config, template_text
from fieldstation.hub.db import open_hub_database
from fieldstation.hub.models import DeadLetter, IngestedMessage
from fieldstation.hub.store import Incoming, store_batch
from fieldstation.messages import (
    BODY_MODELS,
    KINDS,
    DetectionBody,
    MalformedMessageError,
    RecordingBody,
    UnknownKindError,
    UnknownSchemaError,
    build_envelope,
    parse_message,
    parse_status,
)
from fieldstation.runtime.station import Station


def station_data(home: Path) -> dict[str, Any]:
    """The default station, fast: 16 kHz 2 s chunks, a heartbeat a second, a summary every
    2 s, and a slow system sensor measured every second (readings)."""
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    data["sensors"][0].update(sample_rate="16kHz", chunk="2s", speed=4.0, min_free="1MB")
    data["sensors"].append({"name": "host", "kind": "system", "period": "1s"})
    data["processors"][0].update(poll_interval="0.2s", high="7kHz")
    data["retention"]["min_free"] = "1MB"
    data["heartbeat"].update(interval="1s", summary_interval="2s")
    # an alert on every detection, checked twice a second, so the outbox holds alerts too
    data["alerts"] = [{"name": "every-detection", "on": "detection", "cooldown": 0}]
    data["jobs"] = [{"name": "alerts", "kind": "alerts", "interval": "0.5s"}]
    data["runtime"].update(
        backoff_initial="0.05s",
        backoff_max="0.3s",
        liveness_grace="1s",
        stop_timeout="3s",
        status_interval="0.5s",
        outbox_poll="0.2s",
    )
    return data


STATION_KINDS = KINDS - {"command_result"}
"""Kinds a station sends on its own (``command_result`` answers a fleet command: the command
tests, tests/commands, check those bodies)."""


def read_outbox(home: Path) -> list[bytes]:
    path = home / "outbox.jsonl"
    return path.read_bytes().splitlines() if path.exists() else []


@pytest.mark.slow
def test_every_message_of_a_real_station_validates(tmp_path: Path) -> None:
    """A real station (recorder, energy detector, a slow system sensor, heartbeats, summaries,
    the file output) runs until its outbox.jsonl holds every kind; its processor is SIGKILLed
    once so the supervisor records an event. Every line must parse to its kind's model."""
    home = tmp_path / "home"
    station = Station(parse_config(station_data(home)), control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    try:
        assert station.ready.wait(60)
        supervisor = station.supervisor
        assert supervisor is not None
        pid = supervisor.job("processor:energy")["pid"]
        os.kill(pid, signal.SIGKILL)  # a crash: the supervisor restarts it and says so (event)
        deadline = time.monotonic() + 90
        kinds: Counter[str] = Counter()
        while time.monotonic() < deadline:
            kinds = Counter(json.loads(line)["kind"] for line in read_outbox(home))
            if all(kinds[kind] for kind in STATION_KINDS):
                break
            time.sleep(0.2)  # polling a file the station appends to (the event we wait for)
    finally:
        stop.set()
        runner.join(60)
    lines = read_outbox(home)  # the stop adds events (station stopped)
    assert lines
    parsed = [parse_message(line) for line in lines]  # raises on any body that does not fit
    seen = Counter(envelope.kind for envelope in parsed)
    assert set(seen) == STATION_KINDS, seen
    for envelope in parsed:
        assert isinstance(envelope.body, BODY_MODELS[1][envelope.kind])
        assert envelope.station == "default"
        # the model keeps every field the producer wrote (none dropped, none invented)
        original = json.loads(next(x for x in lines if json.loads(x)["id"] == envelope.id))
        dumped = envelope.body.model_dump(mode="json", exclude_unset=True)
        assert set(dumped) == set(original["body"]), envelope.kind


ENVELOPE = {
    "schema": 1,
    "id": "m-1",
    "kind": "detection",
    "station": "hedge-07",
    "created_at": "2026-06-01T04:12:09.120000+00:00",
    "body": {
        "recording_id": 7,
        "sensor": "mic",
        "recording_started_at": "2026-06-01T04:12:00+00:00",
        "processor": "energy",
        "model": "energy",
        "model_version": "1",
        "detections": [
            {
                "label": "energy",
                "score": 0.9,
                "start": 1.0,
                "end": 1.5,
                "low_hz": 1000.0,
                "high_hz": 7000.0,
                "detected_at": "2026-06-01T04:12:01+00:00",
                "extra": {},
            }
        ],
    },
}


def variant(**changes: Any) -> bytes:
    return json.dumps({**ENVELOPE, **changes}).encode()


def test_a_good_message_parses_to_its_model() -> None:
    envelope = parse_message(variant())
    assert isinstance(envelope.body, DetectionBody)
    assert envelope.body.detections[0].detected_at.utcoffset() is not None
    again = parse_message(envelope.to_json())
    assert again == envelope


@pytest.mark.parametrize(
    ("raw", "error", "reason"),
    [
        (b"{not json", MalformedMessageError, "not JSON"),
        (b"[1, 2]", MalformedMessageError, "not a JSON object"),
        (variant(schema=2), UnknownSchemaError, "unknown schema version 2"),
        (variant(schema="1"), MalformedMessageError, "schema: must be an integer"),
        (variant(kind="telemetry"), UnknownKindError, "unknown kind 'telemetry'"),
        (variant(created_at="2026-06-01T04:12:09"), MalformedMessageError, "created_at"),
        (variant(body={"recording_id": 7}), MalformedMessageError, "detection body: body.sensor"),
        (
            variant(body={**ENVELOPE["body"], "detections": [{"label": "x"}]}),
            MalformedMessageError,
            "body.detections.0.score",
        ),
        (
            variant(body={**ENVELOPE["body"], "colour": "red"}),
            MalformedMessageError,
            "body.colour: Extra inputs are not permitted",
        ),
    ],
)
def test_bad_messages_are_refused_with_a_reason(raw: bytes, error: type, reason: str) -> None:
    with pytest.raises(error) as caught:
        parse_message(raw)
    assert reason in caught.value.reason


def test_status_payloads() -> None:
    assert parse_status(b"online") == "online"
    assert parse_status("offline") == "offline"
    with pytest.raises(MalformedMessageError, match="'online' or 'offline'"):
        parse_status(b"maybe")


def test_build_envelope_validates_the_body() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 6, 1, tzinfo=UTC)
    envelope = build_envelope(
        kind="detection", station="s", body=ENVELOPE["body"], message_id="x", created_at=now
    )
    assert parse_message(envelope.to_json()) == envelope
    with pytest.raises(MalformedMessageError, match="event body"):
        build_envelope(kind="event", station="s", body={}, message_id="y", created_at=now)


def test_refused_messages_land_in_dead_letters_once(hub_url: str) -> None:
    db = open_hub_database(hub_url)
    try:
        batch = [
            Incoming(variant(), "mqtt:fieldstation/hedge-07/detection", "hedge-07"),
            Incoming(variant(id="m-2", schema=7), "mqtt:fieldstation/hedge-07/detection"),
            Incoming(variant(id="m-3", body={}), "mqtt:fieldstation/hedge-07/detection"),
            Incoming(b"\xff\xfe", "mqtt:fieldstation/hedge-07/detection"),
            Incoming(variant(id="m-4"), "mqtt:fieldstation/other/detection", "other"),
        ]
        first = store_batch(db, batch, via="test")
        again = store_batch(db, batch, via="test")  # a redelivery stores nothing twice
        assert (first.stored, first.dead) == (1, 4)
        assert (again.stored, again.duplicates, again.dead) == (0, 1, 4)
        with db.session() as s:
            letters = {d.source + " " + d.reason for d in s.scalars(select(DeadLetter))}
            assert s.scalar(select(func.count()).select_from(IngestedMessage)) == 1
        assert len(letters) == 4
        text = "\n".join(sorted(letters))
        assert "unknown schema version 7" in text
        assert "detection body: body.recording_id: Field required" in text
        assert "not JSON" in text
        assert "station 'hedge-07' in the envelope, but mqtt:fieldstation/other/detection" in text
    finally:
        db.dispose()


def test_a_message_the_database_refuses_is_a_dead_letter_and_the_rest_are_stored(
    postgres_url: str,
) -> None:
    """A body its schema accepts but a column cannot hold (a 400-character label in a
    VARCHAR(300)) used to fail its whole batch on every redelivery: ingest stopped for good."""
    db = open_hub_database(postgres_url)
    try:
        long = {**ENVELOPE["body"], "sensor": "m" * 400}  # type: ignore[dict-item]
        batch = [
            Incoming(variant(id="ok-1"), "mqtt:fieldstation/hedge-07/detection", "hedge-07"),
            Incoming(variant(id="bad", body=long), "mqtt:fieldstation/hedge-07/detection"),
            Incoming(variant(id="ok-2"), "mqtt:fieldstation/hedge-07/detection", "hedge-07"),
        ]
        first = store_batch(db, batch, via="test")
        assert (first.stored, first.dead) == (2, 1)
        assert first.reasons and "the database refused it" in first.reasons[0]
        again = store_batch(db, batch, via="test")  # redelivered: nothing new, nothing stuck
        assert (again.stored, again.duplicates, again.dead) == (0, 2, 1)
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(IngestedMessage)) == 2
            assert s.scalar(select(func.count()).select_from(DeadLetter)) == 1
    finally:
        db.dispose()


def test_not_a_number_is_refused_by_the_schema() -> None:
    body = {**ENVELOPE["body"]}  # type: ignore[dict-item]
    body["detections"] = [{**body["detections"][0], "score": float("nan")}]
    with pytest.raises(MalformedMessageError, match="score"):
        parse_message(variant(body=body))


def test_a_recording_notice_of_a_station_before_media_still_parses() -> None:
    body = {
        "recording_id": 3,
        "sensor": "mic",
        "path": "data/mic/2026-06-01/a.flac",
        "session_id": "s",
        "chunk_index": 0,
        "start_frame": 0,
        "started_at": "2026-06-01T04:12:00+00:00",
        "duration": 60.0,
        "sample_rate": 48000,
        "channels": 1,
        "frames": 2880000,
        "bytes": 1000,
        "sha256": "0" * 64,
        "format": "flac",
        "end_reason": "complete",
    }
    envelope = parse_message(variant(kind="recording", id="old", body=body))
    assert isinstance(envelope.body, RecordingBody)
    assert (envelope.body.media, envelope.body.rate) == ("audio", 48000)
