"""The alerts job: reads what the station stored since its last pass, runs the rules, and
writes each firing as an ``alert`` message (priority 0) into the outbox.

Each pass, on the injected clock:

1. loads ``state/alerts.json`` (cursors: the last detection, event and reading id seen; the
   rules' memory, :class:`~fieldstation.alerts.rules.AlertState`). With no file, the cursors
   start at the current end of the data (history does not fire);
2. evaluates the new rows in id order (at most :data:`BATCH` of each per pass). A detection
   rule with no memory of a label yet (a rule added later, a state file lost) asks the
   detections table for the label's newest earlier detection, so ``first_ever``,
   ``first_of_day`` and ``not_seen_for`` know the station's past. A detection of a
   re-analysis (:func:`~fieldstation.store.processing.is_reanalysis`: ``reprocess`` ran its
   processor again on its recording) fires only rules with ``reanalysis = true``;
3. enqueues each firing in one transaction, with the stable message id
   ``alert-<sha256(station, rule, fact)>``; an id already in the outbox is skipped, so a pass
   repeated after a crash (messages committed, state not yet saved) writes nothing twice;
4. saves the state atomically.

Delivery is the outbox's: at-least-once, stored backoff, dead letters; an alert written while
offline is sent when the network returns.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field
from sqlalchemy import func, select

from fieldstation.alerts.rules import (
    AlertState,
    DetectionFact,
    EventFact,
    Firing,
    ReadingFact,
    RuleEngine,
)
from fieldstation.alerts.state import load_state, save_state, state_path
from fieldstation.clock import Clock
from fieldstation.config.alerts import DetectionRule
from fieldstation.config.jobs import JobConfig, JobPlugin
from fieldstation.config.units import Seconds

__all__ = [
    "BATCH",
    "AlertJob",
    "AlertsJobConfig",
    "alert_message_id",
    "newest_before",
    "plugin",
]

log = logging.getLogger(__name__)

BATCH = 5000
"""Rows of each kind (detections, events, readings) evaluated per pass at most."""
ALERT_PRIORITY = 0
"""Outbox priority of alerts: as urgent as events."""


TITLE_MAX = 250
"""Longest alert title the message schema takes (``AlertBody.title``): longer ones (a long
label and a long station name) are cut with an ellipsis, never refused."""


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AlertsJobConfig(JobConfig):
    """The alerts job (started by itself when the station file has ``[[alerts]]``)."""

    interval: Seconds = Field(
        default=10.0, gt=0, le=3600, description="Seconds between passes over new data."
    )


def alert_message_id(station: str, rule: str, ref: str) -> str:
    """The stable outbox id of one firing (``alert-`` + 40 hex digits; fits the 64-char id)."""
    digest = hashlib.sha256(f"{station}\n{rule}\n{ref}".encode()).hexdigest()
    return f"alert-{digest[:40]}"


@dataclass
class _Cursors:
    detection: int = 0
    event: int = 0
    reading: int = 0


class AlertJob:
    """Runs the station's ``[[alerts]]`` rules over new data (see the module docstring).

    ``station``: the station config; ``db``: its database; ``home_root``: the station home
    (``state/alerts.json`` lives there); ``clock``: the injected clock.
    """

    def __init__(
        self,
        station: Any,
        db: Any,
        clock: Clock,
        home_root: Path,
        config: AlertsJobConfig | None = None,
    ) -> None:
        self.station = station
        self.db = db
        self.clock = clock
        self.config = config or AlertsJobConfig(name="alerts", kind="alerts")
        self.path = state_path(home_root, "alerts")
        self.home_root = home_root

    # --- one pass ----------------------------------------------------------------------------

    def run_once(self) -> int:
        """One pass; returns the alert messages written."""
        from fieldstation.store.models import Detection, Event, ModelRun, Reading, Recording
        from fieldstation.store.processing import is_reanalysis

        saved = load_state(self.path)
        if saved is None:
            cursors, state = self._start_fresh()
        else:
            cursors = _Cursors(**saved.get("cursors", {}))
            state = AlertState.from_json(saved.get("rules", {}))
        now = self.clock.now()
        firings: list[Firing] = []
        with self.db.session() as session:
            engine = RuleEngine(
                self.station.alerts,
                self.station.station.tz,
                state,
                station=self.station.station.name or self.station.station.id,
                history=lambda rule, fact: newest_before(session, rule, fact),
            )
            rows = session.execute(
                select(
                    Detection,
                    Recording.sensor,
                    Recording.extra,
                    ModelRun.processor,
                    is_reanalysis(ModelRun),
                )
                .join(Recording, Recording.id == Detection.recording_id)
                .join(ModelRun, ModelRun.id == Detection.model_run_id)
                .where(Detection.id > cursors.detection)
                .order_by(Detection.id)
                .limit(BATCH)
            ).all()
            for det, sensor, extra, processor, reanalysis in rows:
                thumbs = (extra or {}).get("thumbnails", {})
                fact = DetectionFact(
                    id=det.id,
                    label=det.label,
                    score=det.score,
                    detected_at=_utc(det.detected_at),
                    sensor=sensor,
                    recording_id=det.recording_id,
                    processor=processor,
                    attachment=next(iter(thumbs.values()), None) if thumbs else None,
                    reanalysis=bool(reanalysis),
                )
                firings += engine.evaluate(fact, now)
                cursors.detection = det.id
            for event in session.scalars(
                select(Event).where(Event.id > cursors.event).order_by(Event.id).limit(BATCH)
            ):
                firings += engine.evaluate(
                    EventFact(
                        id=event.id,
                        kind=event.kind,
                        severity=event.severity,
                        source=event.source,
                        message=event.message,
                        created_at=event.created_at,
                    ),
                    now,
                )
                cursors.event = event.id
            for reading in session.scalars(
                select(Reading)
                .where(Reading.id > cursors.reading)
                .order_by(Reading.id)
                .limit(BATCH)
            ):
                firings += engine.evaluate(
                    ReadingFact(
                        id=reading.id,
                        sensor=reading.sensor,
                        quantity=reading.quantity,
                        unit=reading.unit,
                        value=reading.value,
                        measured_at=reading.measured_at,
                    ),
                    now,
                )
                cursors.reading = reading.id
            written = self._enqueue(session, firings, now)
        self._save(cursors, engine.state)
        return written

    def _enqueue(self, session: Any, firings: list[Firing], now: Any) -> int:
        from fieldstation.messages import AlertBody, to_wire
        from fieldstation.store.models import Message
        from fieldstation.store.outbox import enqueue

        station_id = self.station.station.id
        default = self.station.destinations_for("alert")
        written = 0
        for firing in firings:
            message_id = alert_message_id(station_id, firing.rule, firing.ref)
            if session.scalar(select(Message.id).where(Message.message_id == message_id)):
                continue  # written by a pass that crashed before it saved its state
            destinations = list(firing.outputs) if firing.outputs is not None else default
            body = to_wire(
                AlertBody(
                    rule=firing.rule,
                    title=_fit(firing.title, TITLE_MAX),
                    message=firing.body,
                    severity=firing.severity,
                    occurred_at=firing.occurred_at,
                    ref=firing.ref,
                    data=firing.data,
                    attachment=firing.attachment,
                )
            )
            if enqueue(
                session,
                kind="alert",
                body=body,
                destinations=destinations,
                now=now,
                station_id=station_id,
                priority=ALERT_PRIORITY,
                message_id=message_id,
            ):
                written += 1
                log.info("alert %s: %s", firing.rule, firing.title)
        return written

    def _start_fresh(self) -> tuple[_Cursors, AlertState]:
        """Cursors at the current end of the data and an empty memory (the rules ask the
        detections table for what they have not seen yet: :func:`newest_before`)."""
        from fieldstation.store.models import Detection, Event, Reading

        with self.db.session() as session:
            cursors = _Cursors(
                detection=session.scalar(select(func.max(Detection.id))) or 0,
                event=session.scalar(select(func.max(Event.id))) or 0,
                reading=session.scalar(select(func.max(Reading.id))) or 0,
            )
        return cursors, AlertState()

    def _save(self, cursors: _Cursors, state: AlertState) -> None:
        save_state(
            self.path,
            {
                "cursors": {
                    "detection": cursors.detection,
                    "event": cursors.event,
                    "reading": cursors.reading,
                },
                "rules": state.to_json(),
            },
        )

    # --- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """A pass every ``interval`` seconds until ``stop`` is set; a failed pass is logged
        and tried again at the next turn."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("alerts pass failed; trying again in %g s", self.config.interval)
            if self.clock.wait(stop, self.config.interval):
                break


def _utc(when: datetime) -> datetime:
    """A stored time as aware UTC (SQLite gives naive UTC)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def newest_before(session: Any, rule: DetectionRule, fact: DetectionFact) -> datetime | None:
    """The newest ``detected_at`` (aware UTC) of the detections stored before ``fact`` (lower
    id, any run) of ``fact.label`` that ``rule`` matches (its sensors, score >= its
    min_score), or None when the station never had one: the rule's memory of a label it has
    not seen yet (:class:`~fieldstation.alerts.rules.RuleEngine` ``history``)."""
    from fieldstation.store.models import Detection, Recording

    query = select(func.max(Detection.detected_at)).where(
        Detection.label == fact.label,
        Detection.score >= rule.min_score,
        Detection.id < fact.id,
    )
    if rule.sensors is not None:
        query = query.join(Recording, Recording.id == Detection.recording_id).where(
            Recording.sensor.in_(rule.sensors)
        )
    newest = session.scalar(query)
    return _utc(newest) if newest is not None else None


def _create(
    config: AlertsJobConfig, *, station: Any, db: Any, clock: Clock, home: Any, **_: Any
) -> AlertJob:
    return AlertJob(station, db, clock, home.root, config)


plugin = JobPlugin(
    config_model=AlertsJobConfig,
    factory=_create,
    description="Alert rules ([[alerts]]) over new detections, events and readings.",
    liveness=900.0,
)
