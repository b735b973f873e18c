"""Fixtures of the export tests: a station database with rows, a PostgreSQL database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.store import Database
from fieldstation.store.deployments import start_deployment
from fieldstation.store.models import Reading
from fieldstation.testing import rows


class Data:
    """Recordings with detections, and readings, written straight into the database."""

    def __init__(self, db: Database, clock: VirtualClock) -> None:
        self.db, self.clock = db, clock
        with db.session() as session:
            self.deployment_id = start_deployment(
                session,
                station_id="default",
                config_hash="x" * 64,
                config={},
                version="test",
                now=clock.now(),
            ).id

    def recording(self, *labels: str, path: str | None = None) -> int:
        """A recording (now) with one 1 s detection per label, 2 s apart, 2-8 kHz."""
        when = self.clock.now()
        with self.db.session() as session:
            extra: dict[str, Any] = {"path": path} if path else {}
            rec = rows.add_recording(
                session, deployment_id=self.deployment_id, started_at=when, **extra
            )
            run = rows.add_model_run(session, rec.id, started_at=when, processor="birdnet")
            for i, label in enumerate(labels):
                det = rows.add_detection(
                    session,
                    run,
                    label=label,
                    score=0.5 + i / 100,
                    detected_at=when + timedelta(seconds=2 * i),
                    start=2.0 * i,
                )
                det.low_hz, det.high_hz = 2000.0, 8000.0
            return rec.id

    def detections_on(
        self, recording_id: int, *labels: str, start: float = 30.0, processor: str = "birdnet"
    ) -> None:
        """A new run of ``processor`` on the recording (of ``birdnet``, which made the
        recording's first run: a re-analysis) finding ``labels``."""
        with self.db.session() as session:
            run = rows.add_model_run(
                session, recording_id, started_at=self.clock.now(), processor=processor
            )
            for i, label in enumerate(labels):
                rows.add_detection(
                    session,
                    run,
                    label=label,
                    score=0.7,
                    detected_at=self.clock.now(),
                    start=start + i,
                )

    def readings(self, n: int) -> None:
        with self.db.session() as session:
            for i in range(n):
                session.add(
                    Reading(
                        deployment_id=self.deployment_id,
                        sensor="bme",
                        quantity="temperature",
                        unit="Cel",
                        measured_at=self.clock.now() + timedelta(minutes=i),
                        value=10.0 + i,
                    )
                )


@pytest.fixture
def data(db: Database, clock: VirtualClock) -> Data:
    return Data(db, clock)
