"""Alerts and the station's history: a re-analysis (``fieldstation reprocess``) fires nothing
unless a rule opts in, and a rule added to a station that has already seen a label knows it
(the detections table), on virtual time."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from fieldstation.alerts.job import AlertJob
from fieldstation.clock import VirtualClock
from fieldstation.home import StationHome
from fieldstation.processing.model import Detection as Found
from fieldstation.store import Database
from fieldstation.store import processing as repo
from fieldstation.store.models import Detection, Message

from .conftest import JsonHook, Stored, station_config

OWL = "Strix aluco_Tawny Owl"


def notify(hook: JsonHook) -> list[dict[str, Any]]:
    return [{"name": "notify", "kind": "apprise", "urls": [hook.url]}]


def store_run(
    db: Database,
    clock: VirtualClock,
    detection_id: int,
    run: repo.RunInfo,
    found: list[Found],
    required: tuple[str, ...],
) -> None:
    """Store ``run`` on the recording of ``detection_id`` the way ``fieldstation reprocess``
    does (no claim: ``token=None``), finding ``found``."""
    with db.session() as session:
        recording_id = session.scalar(
            select(Detection.recording_id).where(Detection.id == detection_id)
        )
        assert recording_id is not None
        repo.complete(
            session,
            recording_id=recording_id,
            token=None,
            run=run,
            detections=found,
            required=required,
            destinations=[],
            station_id="default",
            now=clock.now(),
        )


def reprocess(db: Database, clock: VirtualClock, detection_id: int, *labels: str) -> None:
    """Store a new run of the ``energy`` processor on the recording of ``detection_id``,
    finding ``labels`` (:func:`store_run`)."""
    run = repo.RunInfo(
        processor="energy",
        model="energy",
        model_version="1+0123456789ab",
        started_at=clock.now(),
        duration=0.1,
        run_key=f"reprocess:{clock.now().isoformat()}",
    )
    found = [Found(label, 0.95, 0.0, 1.0) for label in labels]
    store_run(db, clock, detection_id, run, found, required=("energy",))


def alert_labels(db: Database) -> list[str]:
    with db.session() as session:
        payloads = session.scalars(
            select(Message.payload).where(Message.kind == "alert").order_by(Message.id)
        ).all()
    return [json.loads(p)["body"]["data"]["label"] for p in payloads]


def test_a_reprocessed_recording_fires_no_second_alert(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, hook: JsonHook
) -> None:
    rules = [
        {"name": "any", "on": "detection", "labels": ["Strix*"], "cooldown": 0},
        {"name": "day", "on": "detection", "condition": "first_of_day", "cooldown": 0},
        {"name": "new", "on": "detection", "condition": "first_ever", "cooldown": 0},
        {"name": "two", "on": "detection", "condition": "count", "count": 2, "cooldown": 0},
    ]
    config = station_config(home, outputs=notify(hook), alerts=rules)
    job = AlertJob(config, db, clock, home.root)
    job.run_once()
    first = stored.detection(OWL)
    assert job.run_once() == 3  # any, first of the day, first ever (count needs two)
    clock.advance(600)
    # the same recording analysed again, finding the owl and a wren it had missed
    reprocess(db, clock, first, OWL, "Troglodytes troglodytes_Eurasian Wren")
    assert job.run_once() == 0  # neither the owl again, nor the wren, nor a count of two
    clock.advance(600)
    stored.detection(OWL)  # a new recording: alerts as ever ...
    assert job.run_once() == 2  # any, and the count of two in its window (first run's owl +
    # this one: the re-analysis did not count)
    clock.advance(600)
    stored.detection("Troglodytes troglodytes_Eurasian Wren")
    # ... and the wren the re-analysis found is not "first ever" nor "first of the day" any
    # more: the station has seen it (its detections table), it just did not alert on it
    assert job.run_once() == 0
    assert alert_labels(db) == [OWL] * 5


def test_a_rule_may_opt_in_to_reanalysis(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, hook: JsonHook
) -> None:
    rules = [
        {"name": "quiet", "on": "detection", "cooldown": 0},
        {"name": "loud", "on": "detection", "cooldown": 0, "reanalysis": True},
    ]
    config = station_config(home, outputs=notify(hook), alerts=rules)
    job = AlertJob(config, db, clock, home.root)
    job.run_once()
    first = stored.detection(OWL)
    assert job.run_once() == 2
    clock.advance(60)
    reprocess(db, clock, first, OWL)
    assert job.run_once() == 1  # only the rule that asked for re-analyses
    with db.session() as session:
        rules_fired = [
            json.loads(p)["body"]["rule"]
            for p in session.scalars(
                select(Message.payload).where(Message.kind == "alert").order_by(Message.id)
            )
        ]
    assert rules_fired == ["quiet", "loud", "loud"]


def test_first_run_of_a_new_processor_is_not_a_reanalysis(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, hook: JsonHook
) -> None:
    """``reprocess --model X`` for a processor that never ran on the recording is its first
    analysis by X: it alerts like any first run (at most once per label per cooldown)."""
    config = station_config(home, outputs=notify(hook), alerts=[{"name": "any", "on": "detection"}])
    job = AlertJob(config, db, clock, home.root)
    job.run_once()
    first = stored.detection(OWL)  # a run of processor "energy"
    assert job.run_once() == 1
    bats = repo.RunInfo(
        processor="bats",
        model="batdetect2",
        model_version="1.0+0123456789ab",
        started_at=clock.now(),
        duration=0.1,
    )
    found = [Found("Pipistrellus pipistrellus", 0.9, 0.0, 1.0)]
    store_run(db, clock, first, bats, found, required=("energy", "bats"))
    assert job.run_once() == 1
    assert alert_labels(db) == [OWL, "Pipistrellus pipistrellus"]


def test_first_ever_added_later_knows_the_labels_seen_before_it(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, hook: JsonHook
) -> None:
    # the station runs for days with another rule: the alerts job has its state file
    before = station_config(
        home, outputs=notify(hook), alerts=[{"name": "broken", "on": "event", "events": ["x"]}]
    )
    job = AlertJob(before, db, clock, home.root)
    job.run_once()
    stored.detection(OWL)
    clock.advance(3600)
    stored.detection(OWL, score=0.4)
    assert job.run_once() == 0
    assert job.path.exists()
    clock.advance(3 * 86400)
    # then first_ever, first_of_day and not_seen_for rules are added to the station file
    rules = [
        {"name": "new", "on": "detection", "condition": "first_ever"},
        {"name": "new-confident", "on": "detection", "condition": "first_ever", "min_score": 0.8},
        {"name": "day", "on": "detection", "condition": "first_of_day"},
        {"name": "back", "on": "detection", "condition": "not_seen_for", "not_seen_days": 7},
    ]
    after = station_config(home, outputs=notify(hook), alerts=rules)
    job = AlertJob(after, db, clock, home.root)
    stored.detection(OWL)  # seen three days ago: not first ever, but first of the day
    stored.detection("Troglodytes troglodytes_Eurasian Wren")  # never seen: first ever
    assert job.run_once() == 5  # owl: day; wren: new, new-confident, day, back ("first ever")
    with db.session() as session:
        fired = [
            (b["rule"], b["data"]["label"])
            for b in (
                json.loads(p)["body"]
                for p in session.scalars(
                    select(Message.payload).where(Message.kind == "alert").order_by(Message.id)
                )
            )
        ]
    wren = "Troglodytes troglodytes_Eurasian Wren"
    assert fired == [
        ("day", OWL),
        ("new", wren),
        ("new-confident", wren),
        ("day", wren),
        ("back", wren),
    ]
    clock.advance(8 * 86400)
    stored.detection(OWL)  # eight days later: first of the day and back after 8 days
    assert job.run_once() == 2
    assert alert_labels(db)[-2:] == [OWL, OWL]
