"""Producers build bodies through the schemas (``to_wire``) and the wire format stays what
stations sent before (bodies written as dicts): same keys, same values, same bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from fieldstation.messages import (
    AlertBody,
    DetectionBody,
    EventBody,
    HeartbeatBody,
    ReadingsBody,
    RecordingBody,
    SummaryBody,
    build_envelope,
    parse_message,
    to_wire,
)
from fieldstation.messages.bodies import Body
from fieldstation.store.db import Database
from fieldstation.store.events import record_event
from fieldstation.store.models import Message

T = datetime(2026, 6, 1, 4, 12, 9, 120000, tzinfo=UTC)
SHA = "ab" * 32

# Bodies exactly as the producers wrote them by hand before they went through the models
# (times by datetime.isoformat(), floats where the schema says float).
LEGACY: list[tuple[type[Body], dict[str, Any]]] = [
    (
        RecordingBody,
        {
            "recording_id": 7,
            "sensor": "mic",
            "path": "data/mic/a.flac",
            "session_id": "s-1",
            "capture_id": None,
            "chunk_index": 0,
            "start_frame": 0,
            "started_at": T.isoformat(),
            "duration": 60.0,
            "media": "audio",
            "rate": 48000,
            "channels": 1,
            "frames": 2880000,
            "bytes": 123456,
            "sha256": SHA,
            "format": "flac",
            "end_reason": "slot_end",
            "sample_rate": 48000,
        },
    ),
    (
        RecordingBody,
        {
            "recording_id": 8,
            "sensor": "cam",
            "path": "data/cam/a.mkv",
            "session_id": "s-2",
            "capture_id": "c-1",
            "chunk_index": 3,
            "start_frame": 90,
            "started_at": T.isoformat(),
            "duration": 3.0,
            "media": "video",
            "rate": 30,
            "channels": 3,
            "frames": 90,
            "bytes": 9999,
            "sha256": SHA,
            "format": "mkv",
            "end_reason": "duration",
            "stream": {
                "shape": [240, 320, 3],
                "dtype": "uint8",
                "codec": "ffv1",
                "fields": [],
                "units": [],
            },
        },
    ),
    (
        DetectionBody,
        {
            "recording_id": 7,
            "sensor": "mic",
            "recording_started_at": T.isoformat(),
            "processor": "energy",
            "model": "energy",
            "model_version": None,
            "detections": [
                {
                    "label": "loud",
                    "score": 0.5,
                    "start": 1.5,
                    "end": 2.0,
                    "low_hz": None,
                    "high_hz": 8000.0,
                    "detected_at": (T + timedelta(seconds=1.5)).isoformat(),
                    "extra": {"rms": 0.1},
                },
            ],
        },
    ),
    (
        HeartbeatBody,
        {
            "status": "ok",
            "reasons": [],
            "seq": 1,
            "interval": 300.0,
            "network_up": None,
            "station_uptime_s": 0.5,
            "config_hash_in_force": "h",
            "metrics": {
                "host": {"cpu_percent": 3.0},
                "outbox": {"pending": 0, "oldest_age_s": None},
                "last_recording_age_s": None,
                "last_detection_age_s": 2.0,
                "jobs": [],
                "deployment_id": 1,
                "config_hash": "h",
                "versions": {"python": "3.11"},
                "battery": None,
                "errors": [],
            },
        },
    ),
    (
        SummaryBody,
        {
            "period_start": T.isoformat(),
            "period_end": (T + timedelta(hours=1)).isoformat(),
            "interval": 3600.0,
            "recordings": 2,
            "recorded_s": 120.0,
            "detections": 3,
            "labels": [{"label": "loud", "count": 3, "max_score": 0.9, "mean_score": 0.5}],
            "readings": [
                {
                    "sensor": "air",
                    "quantity": "temperature",
                    "unit": "Cel",
                    "count": 60,
                    "min": 1.0,
                    "max": 2.5,
                    "mean": 1.75,
                }
            ],
            "late": False,
        },
    ),
    (
        EventBody,
        {
            "event": "job_restarted",
            "severity": "warning",
            "source": "supervisor",
            "message": "restarted",
            "data": {"pid": 12},
            "event_id": 4,
        },
    ),
    (
        ReadingsBody,
        {
            "sensor": "air",
            "measured_at": T.isoformat(),
            "period": 60.0,
            "values": {"temperature": 1.5, "humidity": None},
            "units": {"temperature": "Cel", "humidity": "%"},
        },
    ),
    (
        AlertBody,
        {
            "rule": "owl",
            "title": "Owl",
            "message": "an owl",
            "severity": "info",
            "occurred_at": T.isoformat(),
            "ref": "detection:3",
            "data": {},
            "attachment": None,
        },
    ),
]


@pytest.mark.parametrize(("model", "legacy"), LEGACY, ids=[m.__name__ for m, _ in LEGACY])
def test_a_body_built_through_its_model_is_the_bytes_stations_sent(
    model: type[Body], legacy: dict[str, Any]
) -> None:
    wire = to_wire(model.model_validate(legacy))
    assert wire == legacy
    assert json.dumps(wire, separators=(",", ":")) == json.dumps(legacy, separators=(",", ":"))


def test_unset_fields_are_absent_none_is_null_and_times_keep_their_offset() -> None:
    body = to_wire(
        ReadingsBody(
            sensor="air",
            measured_at=datetime(2026, 6, 1, 2, tzinfo=timezone(timedelta(hours=2))),
            period=60,
            values={"t": None},
            units={"t": "Cel"},
        )
    )
    assert body["measured_at"] == "2026-06-01T02:00:00+02:00"  # not pydantic's "Z" form
    assert body["values"] == {"t": None}
    assert body["period"] == 60.0 and isinstance(body["period"], float)  # the schema's type
    event = to_wire(EventBody(event="x", severity="info", source="s", message="m", event_id=1))
    assert "data" not in event  # a default the producer did not set is not sent


def test_a_producer_cannot_send_what_the_schema_refuses() -> None:
    with pytest.raises(ValidationError, match="extra"):
        EventBody(event="x", severity="info", source="s", message="m", event_id=1, oops=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="severity"):
        EventBody(event="x", severity="loud", source="s", message="m", event_id=1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="timezone"):
        ReadingsBody(sensor="a", measured_at=datetime(2026, 6, 1), period=1, values={}, units={})


def test_a_wire_body_parses_back_to_the_same_model() -> None:
    for model, legacy in LEGACY:
        built = model.model_validate(legacy)
        kind = {v: k for k, v in _kinds().items()}[model]
        raw = build_envelope(
            kind=kind, station="s", body=to_wire(built), message_id="m", created_at=T
        ).to_json()
        assert parse_message(raw).body == built


def _kinds() -> dict[str, type[Body]]:
    from fieldstation.messages import BODY_MODELS, SCHEMA_VERSION

    return BODY_MODELS[SCHEMA_VERSION]


def test_record_event_writes_its_body_through_the_schema(db: Database) -> None:
    with db.session() as session:
        event = record_event(
            session,
            kind="disk_low",
            source="retention",
            message="disk low",
            now=T,
            station_id="hedge-07",
            destinations=["file"],
            severity="warning",
            data={"free": 12},
        )
        event_id = event.id
    with db.session() as session:
        payload = session.scalars(select(Message.payload)).one()
    envelope = parse_message(payload)
    assert envelope.body == EventBody(
        event="disk_low",
        severity="warning",
        source="retention",
        message="disk low",
        data={"free": 12},
        event_id=event_id,
    )
    assert json.loads(payload)["body"] == {
        "event": "disk_low",
        "severity": "warning",
        "source": "retention",
        "message": "disk low",
        "data": {"free": 12},
        "event_id": event_id,
    }
