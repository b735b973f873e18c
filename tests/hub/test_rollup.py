"""The detection rollup (decision 0145) against the detections themselves, on SQLite and
PostgreSQL: after new, redelivered and partly redelivered batches (and one message twice in a
batch) the counts per (station, label, UTC day) and per (station, UTC day) equal a GROUP BY
over ``detections``; migration 0005 backfills detections stored before it; the explorer's
counts read the rollup in whole UTC days."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import literal, select, text

from fieldstation.hub import rollup
from fieldstation.hub.db import MIGRATIONS, HubDatabase, make_engine, open_hub_database
from fieldstation.hub.fleet import DetectionFilter, detection_counts_per_day
from fieldstation.hub.models import Detection, DetectionDay, StationDay, UTCDateTime
from fieldstation.hub.store import Incoming, store_batch
from fieldstation.messages import build_envelope

T0 = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def detection_message(rng: random.Random, station: str, at: datetime) -> bytes:
    """A detection message of 1-3 detections of 4 labels around ``at`` (some in UTC+2, so
    their UTC day differs from their local one)."""
    items = []
    for k in range(rng.randint(1, 3)):
        when = at + timedelta(minutes=rng.randrange(240))
        if rng.random() < 0.3:
            when = when.astimezone(PLUS_TWO)
        items.append(
            {
                "label": f"species-{rng.randrange(4)}",
                "score": 0.5,
                "start": float(k),
                "end": k + 1.0,
                "detected_at": when.isoformat(),
            }
        )
    body = {
        "recording_id": rng.randrange(10_000),
        "sensor": "mic",
        "recording_started_at": at.isoformat(),
        "processor": "energy",
        "model": "energy",
        "model_version": "1",
        "detections": items,
    }
    return build_envelope(
        kind="detection",
        station=station,
        body=body,
        created_at=at,
        message_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    ).to_json()


def truth(db: HubDatabase) -> tuple[Counter[Any], Counter[Any]]:
    """Counts per (station, label, UTC day) and (station, UTC day) from ``detections``."""
    per_label: Counter[Any] = Counter()
    per_station: Counter[Any] = Counter()
    with db.session() as session:
        for station, label, at in session.execute(
            select(Detection.station, Detection.label, Detection.detected_at)
        ):
            per_label[(station, label, at.astimezone(UTC).date())] += 1
            per_station[(station, at.astimezone(UTC).date())] += 1
    return per_label, per_station


def rolled(db: HubDatabase) -> tuple[Counter[Any], Counter[Any]]:
    with db.session() as session:
        per_label = Counter(
            {
                (r.station, r.label, r.day): r.count
                for r in session.execute(select(DetectionDay.__table__))
            }
        )
        per_station = Counter(
            {(r.station, r.day): r.count for r in session.execute(select(StationDay.__table__))}
        )
    return per_label, per_station


def test_rollup_counts_equal_the_detections_after_new_and_redelivered_batches(
    hub_url: str,
) -> None:
    rng = random.Random(16)
    db = open_hub_database(hub_url)
    try:
        messages = [
            detection_message(rng, f"st-{i % 3}", T0 + timedelta(hours=3 * i)) for i in range(60)
        ]
        first, second, third = messages[:20], messages[20:40], messages[40:]

        def store(payloads: list[bytes]) -> Any:
            return store_batch(db, [Incoming(p, "test") for p in payloads], via="test", now=T0)

        assert store(first).stored == 20
        # redelivered whole, then partly redelivered with new ones, then twice in one batch
        assert store(first).duplicates == 20
        mixed = store(first[5:15] + second)
        assert (mixed.stored, mixed.duplicates) == (20, 10)
        twice = store(third[:10] + third[:10] + third[10:])
        assert (twice.stored, twice.duplicates) == (20, 10)
        assert store(list(reversed(messages))).duplicates == 60
        per_label, per_station = truth(db)
        assert sum(per_label.values()) > 60 and len({k[2] for k in per_label}) > 5
        assert rolled(db) == (per_label, per_station)
        # the explorer's counts, whole UTC days: all, one station, one label, a window
        every = Counter[date]()
        for (_, day), n in per_station.items():
            every[day] += n
        assert detection_counts_per_day(db, DetectionFilter()) == [
            (d.isoformat(), n) for d, n in sorted(every.items())
        ]
        days = sorted(every)
        window = DetectionFilter(
            label="species-1",
            station="st-2",
            since=datetime.combine(days[2], datetime.min.time(), UTC) + timedelta(hours=5),
            until=datetime.combine(days[5], datetime.min.time(), UTC),  # midnight: excluded
        )
        expected = sorted(
            (d.isoformat(), n)
            for (s, label, d), n in per_label.items()
            if s == "st-2" and label == "species-1" and days[2] <= d < days[5]
        )
        assert detection_counts_per_day(db, window) == expected
        # a rebuild (after a bulk import) recounts the same
        with db.session() as session:
            rollup.rebuild(session)
        assert rolled(db) == (per_label, per_station)
    finally:
        db.dispose()


def test_migration_0005_backfills_the_detections_stored_before_it(hub_url: str) -> None:
    engine = make_engine(hub_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    rng = random.Random(5)
    rows = []
    with engine.begin() as connection:
        for m in range(30):
            station = f"st-{m % 2}"
            connection.execute(
                text(
                    "INSERT INTO messages (message_id, station, kind, schema_version, "
                    "created_at, received_at, received_via) VALUES (:m, :s, 'detection', 1, "
                    ":at, :at, 'test')"
                ),
                {"m": f"m{m}", "s": station, "at": T0},
            )
            for k in range(3):
                at = T0 + timedelta(hours=rng.randrange(72), minutes=rng.randrange(60))
                rows.append((station, f"species-{k}", at.date()))
                connection.execute(
                    Detection.__table__.insert(),
                    {
                        "message_id": f"m{m}",
                        "station": station,
                        "recording_id": m,
                        "sensor": "mic",
                        "processor": "energy",
                        "model": "energy",
                        "label": f"species-{k}",
                        "score": 0.5,
                        "start": 0.0,
                        "end": 1.0,
                        "detected_at": at,
                        "extra": {},
                    },
                )
    engine.dispose()
    db = open_hub_database(hub_url)  # upgrades 0002 -> head: the backfill
    try:
        per_label, per_station = rolled(db)
        assert per_label == Counter(rows)
        assert per_station == Counter((s, d) for s, _, d in rows)
    finally:
        db.dispose()


def test_two_writers_adding_to_the_same_days_at_once_count_exactly(hub_url: str) -> None:
    """Two threads (as two hub processes would) store overlapping batches at once: the same
    stations, labels and days, each message delivered to both; no deadlock, exact counts."""
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(3)
    db = open_hub_database(hub_url)
    try:
        messages = [
            detection_message(rng, f"st-{i % 2}", T0 + timedelta(hours=i % 5)) for i in range(120)
        ]
        batches = [messages[i : i + 15] for i in range(0, len(messages), 15)]

        def writer(order: int) -> int:
            stored = 0
            for batch in batches[::order]:
                result = store_batch(db, [Incoming(p, "test") for p in batch], via="t", now=T0)
                stored += result.stored
            return stored

        with ThreadPoolExecutor(2) as pool:
            stored = sum(pool.map(writer, (1, -1)))
        assert stored == 120
        assert rolled(db) == truth(db)
    finally:
        db.dispose()


def test_count_inserted_takes_returned_rows_tuples_and_mappings_and_refuses_naive_times(
    hub_url: str,
) -> None:
    db = open_hub_database(hub_url)
    try:
        late = datetime(2026, 6, 1, 23, 30, tzinfo=PLUS_TWO)  # 21:30 UTC, June 1st
        with db.session() as session:
            returned = session.execute(  # SQLAlchemy rows, as an insert's RETURNING gives
                select(
                    literal("st-r").label("station"),
                    literal("wren").label("label"),
                    literal(late, UTCDateTime()).label("detected_at"),
                )
            ).all()
            rollup.count_inserted(session, returned)
            rollup.count_inserted(
                session, [{"station": "st-r", "label": "wren", "detected_at": T0}]
            )
        assert rolled(db) == (
            Counter({("st-r", "wren", date(2026, 6, 1)): 2}),
            Counter({("st-r", date(2026, 6, 1)): 2}),
        )
        with pytest.raises(ValueError, match="naive"), db.session() as session:
            rollup.count_inserted(session, [("st-r", "wren", datetime(2026, 6, 1, 12))])
    finally:
        db.dispose()
