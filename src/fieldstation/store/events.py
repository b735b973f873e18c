"""Repository functions for events: a row in ``events`` plus an outbox message, one transaction.

:class:`EventBacklog` records events for a process that must not stop when the database cannot
be written (a full disk): events that fail are kept in memory, bounded, and written, oldest
first, once the database takes writes again (decision 0027).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from fieldstation.store.models import Event
from fieldstation.store.outbox import enqueue

if TYPE_CHECKING:
    from fieldstation.store.db import Database

__all__ = ["EventBacklog", "Severity", "record_event", "recent_events"]

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "error"]


def record_event(
    session: Session,
    *,
    kind: str,
    source: str,
    message: str,
    now: datetime,
    station_id: str,
    destinations: Sequence[str],
    severity: Severity = "info",
    data: dict[str, Any] | None = None,
) -> Event:
    """Store an event and enqueue it (kind ``event``, top priority) for ``destinations``."""
    event = Event(
        created_at=now,
        kind=kind,
        severity=severity,
        source=source,
        message=message,
        data=data or {},
    )
    session.add(event)
    session.flush()
    body: dict[str, Any] = {
        "event": kind,
        "severity": severity,
        "source": source,
        "message": message,
        "data": data or {},
        "event_id": event.id,
    }
    enqueue(
        session, kind="event", body=body, destinations=destinations, now=now, station_id=station_id
    )
    return event


def recent_events(session: Session, limit: int = 50) -> list[Event]:
    """The newest ``limit`` events, newest first."""
    return list(session.scalars(select(Event).order_by(Event.id.desc()).limit(limit)))


@dataclass(frozen=True)
class _Pending:
    kind: str
    source: str
    message: str
    now: datetime
    severity: Severity
    data: dict[str, Any]


class EventBacklog:
    """Records events through ``db``; keeps those the database refuses and writes them later.

    ``station_id``/``destinations`` as for :func:`record_event`. ``limit``: events kept at most
    while the database refuses writes; beyond it the oldest are dropped (counted in
    :attr:`dropped`, and logged). A refusal is ``sqlalchemy.exc.OperationalError`` (disk or
    database full, I/O error, locked) or ``OSError``; other errors (a bug) are raised and that
    event is not kept. Every
    :meth:`record` first writes what is pending; call :meth:`flush` to retry without a new
    event. Thread-safe.
    """

    def __init__(
        self,
        db: Database,
        *,
        station_id: str,
        destinations: Sequence[str],
        limit: int = 1000,
    ) -> None:
        self.db = db
        self.station_id = station_id
        self.destinations = list(destinations)
        self.dropped = 0
        """Events lost because more than ``limit`` were pending."""
        self._pending: deque[_Pending] = deque(maxlen=max(1, limit))
        self._lock = threading.Lock()
        self._refused = False

    @property
    def pending(self) -> int:
        """Events kept in memory, not yet written."""
        return len(self._pending)

    def record(
        self,
        *,
        kind: str,
        source: str,
        message: str,
        now: datetime,
        severity: Severity = "info",
        data: dict[str, Any] | None = None,
    ) -> bool:
        """Write this event (after any pending ones); True when written now, False when kept
        for later (the database refused the write). The event keeps its time ``now``."""
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self.dropped += 1
                log.warning(
                    "event backlog full: dropped %s event %r (%d dropped so far)",
                    self._pending[0].kind,
                    self._pending[0].message,
                    self.dropped,
                )
            event = _Pending(kind, source, message, now, severity, dict(data or {}))
            self._pending.append(event)
            try:
                return self._write()
            except Exception:  # not a refusal (a bug, e.g. data that is not JSON): not kept
                if self._pending and self._pending[-1] is event:
                    self._pending.pop()
                raise

    def flush(self) -> bool:
        """Write pending events; True when none is left pending. Never raises for a refusal."""
        with self._lock:
            return self._write()

    def _write(self) -> bool:
        if not self._pending:
            return True
        try:
            with self.db.session() as session:
                for event in self._pending:
                    record_event(
                        session,
                        kind=event.kind,
                        source=event.source,
                        message=event.message,
                        now=event.now,
                        station_id=self.station_id,
                        destinations=self.destinations,
                        severity=event.severity,
                        data=event.data,
                    )
        except (OperationalError, OSError) as error:
            if not self._refused:
                log.warning(
                    "events kept in memory (%d) until the database takes writes again: %s",
                    len(self._pending),
                    str(error).splitlines()[0][:200],
                )
            self._refused = True
            return False
        if self._refused:
            log.info("database takes writes again: %d kept event(s) written", len(self._pending))
        self._refused = False
        self._pending.clear()
        return True
