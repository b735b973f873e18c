"""Summaries (acoupi's summariser): per period, detections per label (count, max and mean
score) and the values of slow sensors per sensor and quantity (count, min, max, mean).

Periods are ``heartbeat.summary_interval`` long and aligned to the Unix epoch in UTC (hourly
summaries start on the hour). Progress lives in the database, not in memory: the newest
``summary`` message names the end of its period, so a restart neither skips nor repeats a
period (each message also has the stable id ``summary-<station>-<period start>``).

A period ``[start, end)`` is summarised once ``end`` has passed and every recording that started
before ``end`` is processed; if processing lags, it is summarised anyway one whole interval
after ``end`` (with ``"late": true``) so summaries never stall behind a stuck processor.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from fieldstation.clock import Clock
from fieldstation.config import StationConfig
from fieldstation.store import Database

__all__ = ["MAX_PERIODS_PER_CALL", "Summarizer", "period_floor"]

log = logging.getLogger(__name__)

MAX_PERIODS_PER_CALL = 500
"""Catch-up limit of one :meth:`Summarizer.summarize_once` (the rest follow on the next call)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def period_floor(when: datetime, seconds: float) -> datetime:
    """Start of the epoch-aligned period of length ``seconds`` that contains ``when``."""
    elapsed = (when - _EPOCH).total_seconds()
    return _EPOCH + timedelta(seconds=(elapsed // seconds) * seconds)


class Summarizer:
    """Writes one ``summary`` outbox message per finished period (see the module docstring)."""

    def __init__(self, config: StationConfig, db: Database, clock: Clock) -> None:
        self.config = config
        self.db = db
        self.clock = clock

    @property
    def interval(self) -> float | None:
        """Seconds per period, or None when summaries are off."""
        value = self.config.heartbeat.summary_interval
        return value if value else None

    def summarize_once(self) -> int:
        """Summarise every finished period not yet summarised; returns messages written."""
        from fieldstation.messages import SummaryBody, SummaryLabel, SummaryReading, to_wire
        from fieldstation.store.deployments import current_deployment
        from fieldstation.store.health import (
            detection_stats,
            last_summary_end,
            pending_recordings_before,
            recordings_in_period,
        )
        from fieldstation.store.outbox import OutboxCap, enqueue
        from fieldstation.store.readings import readings_stats

        interval = self.interval
        destinations = self.config.destinations_for("summary")
        if interval is None or not destinations:
            return 0
        now = self.clock.now()
        step = timedelta(seconds=interval)
        written = 0
        with self.db.session() as session:
            start = last_summary_end(session)
            if start is None:
                deployment = current_deployment(session)
                origin = deployment.started_at if deployment is not None else now
                start = period_floor(origin, interval)
            while written < MAX_PERIODS_PER_CALL:
                end = start + step
                if end > now:
                    break
                late = pending_recordings_before(session, end) > 0
                if late and now < end + step:
                    break  # wait for processing to catch up (at most one more period)
                labels = [
                    SummaryLabel(
                        label=label,
                        count=count,
                        max_score=round(high, 6),
                        mean_score=round(mean, 6),
                    )
                    for label, count, high, mean in detection_stats(session, start, end)
                ]
                readings = [
                    SummaryReading(
                        sensor=sensor,
                        quantity=quantity,
                        unit=unit,
                        count=n,
                        min=round(low, 6),
                        max=round(high, 6),
                        mean=round(mean, 6),
                    )
                    for sensor, quantity, unit, n, low, high, mean in readings_stats(
                        session, start, end
                    )
                ]
                n_recordings, seconds = recordings_in_period(session, start, end)
                body = to_wire(
                    SummaryBody(
                        period_start=start,
                        period_end=end,
                        interval=interval,
                        recordings=n_recordings,
                        recorded_s=round(seconds, 3),
                        detections=sum(item.count for item in labels),
                        labels=labels,
                        readings=readings,
                        late=late,
                    )
                )
                enqueue(
                    session,
                    kind="summary",
                    body=body,
                    destinations=destinations,
                    now=now,
                    station_id=self.config.station.id,
                    message_id=f"summary-{self.config.station.id}-{start.isoformat()}",
                    cap=OutboxCap.of(self.config.outbox),
                )
                session.flush()
                written += 1
                start = end
        return written

    def run(self, stop: threading.Event) -> None:
        """Summarise when periods end until ``stop`` is set (checks every min(interval, 60 s))."""
        interval = self.interval
        if interval is None:
            stop.wait()  # summaries are off; a supervised thread must not end before told to
            return
        while not stop.is_set():
            try:
                self.summarize_once()
            except Exception:
                log.exception("summary failed; retrying")
            now = self.clock.now()
            until_end = period_floor(now, interval) + timedelta(seconds=interval) - now
            delay = min(until_end.total_seconds() + 1.0, 60.0)
            if self.clock.wait(stop, max(delay, 1.0)):
                break
