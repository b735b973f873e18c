"""store_batch on a mixed batch: each new message stored exactly once, duplicates (stored
before, or twice in the batch) stored nothing, malformed ones and one the database refuses
became dead letters, and the stations' state follows the newest heartbeat; on SQLite and on
PostgreSQL (the set-based statements differ)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from fieldstation.hub.db import open_hub_database
from fieldstation.hub.models import (
    DeadLetter,
    Detection,
    Event,
    Heartbeat,
    IngestedMessage,
    Station,
)
from fieldstation.hub.store import Incoming, store_batch
from fieldstation.messages import build_envelope

T0 = datetime(2026, 6, 1, 4, 0, tzinfo=UTC)


def heartbeat(station: str, seq: int, at: datetime, disk_free: int) -> bytes:
    body = {
        "status": "ok" if seq % 2 else "degraded",
        "reasons": [] if seq % 2 else ["disk low"],
        "seq": seq,
        "interval": 60.0,
        "network_up": True,
        "station_uptime_s": 60.0 * seq,
        "config_hash_in_force": f"hash-{seq}",
        "metrics": {
            "host": {"disk_free": disk_free, "disk_percent": 41.5},
            "outbox": {"pending": seq},
            "last_recording_age_s": 4.0,
            "last_detection_age_s": None,
            "jobs": [{"name": "recorder:mic", "state": "running", "restarts": seq}],
            "deployment_id": 1,
            "config_hash": f"hash-{seq}",
            "versions": {"fieldstation": "0.1.0"},
        },
    }
    return build_envelope(
        kind="heartbeat",
        station=station,
        body=body,
        message_id=f"{station}-hb-{seq}",
        created_at=at,
    ).to_json()


def detection(station: str, n: int, labels: list[str], at: datetime) -> bytes:
    body: dict[str, Any] = {
        "recording_id": n,
        "sensor": "mic",
        "recording_started_at": at.isoformat(),
        "processor": "energy",
        "model": "energy",
        "model_version": "1",
        "detections": [
            {
                "label": label,
                "score": 0.25 + k / 10,
                "start": float(k),
                "end": k + 0.5,
                "detected_at": (at + timedelta(seconds=k)).isoformat(),
                "extra": {"note": f"d{k}", "nested": [1, None, "\u00e9"]},
            }
            for k, label in enumerate(labels)
        ],
    }
    return build_envelope(
        kind="detection", station=station, body=body, message_id=f"{station}-det-{n}", created_at=at
    ).to_json()


def event(station: str, n: int, at: datetime) -> bytes:
    body = {
        "event": "restart",
        "severity": "warning",
        "source": "sup",
        "message": "x",
        "event_id": n,
    }
    return build_envelope(
        kind="event", station=station, body=body, message_id=f"{station}-ev-{n}", created_at=at
    ).to_json()


def item(payload: bytes, station: str) -> Incoming:
    return Incoming(payload, f"mqtt:fieldstation/{station}/x", station)


def test_a_mixed_batch_stores_each_new_message_exactly_once(hub_url: str) -> None:
    db = open_hub_database(hub_url)
    try:
        # stored before the batch: one detection and one heartbeat (newer than the batch's)
        before = [
            item(detection("a", 1, ["wren", "robin"], T0), "a"),
            item(heartbeat("b", 9, T0 + timedelta(minutes=9), disk_free=900), "b"),
        ]
        assert store_batch(db, before, via="test", now=T0).stored == 2

        too_long = detection("a", 99, ["x" * 301], T0)  # label is VARCHAR(300): refused by the DB
        batch = [
            item(detection("a", 1, ["wren", "robin"], T0), "a"),  # duplicate (stored before)
            item(detection("a", 2, ["wren"], T0 + timedelta(minutes=1)), "a"),  # new
            item(detection("a", 2, ["wren"], T0 + timedelta(minutes=1)), "a"),  # twice in batch
            item(heartbeat("a", 1, T0, disk_free=100), "a"),  # new
            item(heartbeat("a", 2, T0 + timedelta(minutes=2), disk_free=200), "a"),  # new, newest
            item(heartbeat("b", 3, T0 + timedelta(minutes=3), disk_free=300), "b"),  # new, older
            item(heartbeat("b", 9, T0 + timedelta(minutes=9), disk_free=900), "b"),  # duplicate
            item(detection("c", 1, ["owl", "owl", "jay"], T0 + timedelta(minutes=5)), "c"),
            item(event("c", 1, T0), "c"),  # new
            item(b"{not json", "c"),  # malformed
            item(detection("c", 2, [], T0)[:-1] + b', "colour": "red"}', "c"),  # extra field
            item(event("c", 2, T0), "b"),  # station 'c' on b's topic
            item(too_long, "a"),
        ]
        refused = int(db.dialect == "postgresql")  # SQLite does not check VARCHAR lengths
        first = store_batch(db, batch, via="test", now=T0 + timedelta(minutes=10))
        assert (first.stored, first.duplicates, first.dead) == (7 - refused, 3, 3 + refused)
        assert first.detections == 5 - refused  # rows inserted: a-det-2 (1), c-det-1 (3), ...
        again = store_batch(db, batch, via="test", now=T0 + timedelta(minutes=11))
        assert (again.stored, again.duplicates, again.dead) == (0, 10 - refused, 3 + refused)
        assert again.detections == 0

        with db.session() as s:
            ids = Counter(s.scalars(select(IngestedMessage.message_id)))
            assert set(ids.values()) == {1}
            assert set(ids) - {"a-det-99"} == {
                "a-det-1", "a-det-2", "a-hb-1", "a-hb-2", "b-hb-3", "b-hb-9", "c-det-1", "c-ev-1"
            }  # fmt: skip
            assert ("a-det-99" in ids) is not bool(refused)
            rows = s.execute(select(Detection.message_id, Detection.label, Detection.extra)).all()
            assert Counter((r.message_id, r.label) for r in rows if r.message_id != "a-det-99") == {
                ("a-det-1", "wren"): 1,
                ("a-det-1", "robin"): 1,
                ("a-det-2", "wren"): 1,
                ("c-det-1", "owl"): 2,
                ("c-det-1", "jay"): 1,
            }
            assert {r.extra["nested"][2] for r in rows} == {"\u00e9"}
            beats = s.execute(select(Heartbeat.message_id, Heartbeat.body)).all()
            assert sorted(b.message_id for b in beats) == ["a-hb-1", "a-hb-2", "b-hb-3", "b-hb-9"]
            assert all(b.body["metrics"]["jobs"][0]["name"] == "recorder:mic" for b in beats)
            assert s.scalar(select(func.count()).select_from(Event)) == 1
            assert s.scalar(select(func.count()).select_from(DeadLetter)) == 3 + refused

            stations = {st.id: st for st in s.scalars(select(Station))}
            assert set(stations) == {"a", "b", "c"}
            a, b, c = stations["a"], stations["b"], stations["c"]
            # a: the newest of the batch's two heartbeats
            assert (a.last_heartbeat_at, a.disk_free, a.outbox_pending) == (
                T0 + timedelta(minutes=2),
                200,
                2,
            )
            assert (a.health, a.reasons, a.config_hash) == ("degraded", ["disk low"], "hash-2")
            assert a.jobs and a.jobs[0]["restarts"] == 2
            assert a.last_detection_at == T0 + timedelta(minutes=1)
            # b: the batch's heartbeat is older than the one stored before: kept
            assert (b.last_heartbeat_at, b.disk_free) == (T0 + timedelta(minutes=9), 900)
            assert b.first_seen_at == T0 and b.last_seen_at == T0 + timedelta(minutes=10)
            # c: no heartbeat yet; newest detection time of its detections
            assert c.last_heartbeat_at is None and c.disk_free is None
            assert c.last_detection_at == T0 + timedelta(minutes=5, seconds=2)
        reasons = "\n".join(first.reasons or [])
        assert "not JSON" in reasons and "colour" in reasons
        assert ("the database refused it" in reasons) is bool(refused)
    finally:
        db.dispose()


def test_messages_that_cannot_be_parsed_or_named_are_dead_letters_not_a_stuck_batch(
    hub_url: str,
) -> None:
    """A body nested far too deep and a topic whose station part is longer than the column
    are stored as dead letters with the reason: the batch commits (an exception here would
    leave ingest retrying the same batch for ever)."""
    from fieldstation.hub.db import open_hub_database
    from fieldstation.hub.store import Incoming, store_batch

    db = open_hub_database(hub_url)
    try:
        deep = b'{"schema": 1, "body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        long_station = "s" * 500
        batch = [
            Incoming(deep, "mqtt:fieldstation/st-1/event", "st-1"),
            Incoming(b"{}", f"mqtt:fieldstation/{long_station}/event", long_station),
        ]
        result = store_batch(db, batch, via="test")
        assert result.dead == 2 and result.stored == 0
        assert result.reasons is not None
        assert any("nested too deep" in reason for reason in result.reasons)
    finally:
        db.dispose()


def test_a_status_of_an_over_long_station_id_is_ignored_not_retried(hub_url: str) -> None:
    """The retained status of a station id longer than the database holds is ignored with a
    warning; the batch beside it commits (ingest's own commit step, no broker needed)."""
    from fieldstation.hub.config import MqttIngestConfig
    from fieldstation.hub.db import open_hub_database
    from fieldstation.hub.ingest import MqttIngest, _Delivery

    db = open_hub_database(hub_url)
    try:
        ingest = MqttIngest(MqttIngestConfig(host="127.0.0.1"), db)
        long_station = "s" * 500
        batch = [
            _Delivery(0, 1, 1, f"fieldstation/{long_station}/status", b"online"),
            _Delivery(0, 2, 1, "fieldstation/st-1/status", b"online"),
        ]
        ingest._commit(batch)  # raised (and was retried for ever) before
        from sqlalchemy import select

        from fieldstation.hub.models import Station

        with db.session() as session:
            assert list(session.scalars(select(Station.id))) == ["st-1"]
    finally:
        db.dispose()
