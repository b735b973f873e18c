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

from fieldstation.messages import EventBody, to_wire
from fieldstation.store.models import Event
from fieldstation.store.outbox import enqueue

if TYPE_CHECKING:
    from fieldstation.store.db import Database

__all__ = ["EventBacklog", "Severity", "record_event", "recent_events"]

log = logging.getLogger(__name__)

_REFUSALS = (OperationalError, OSError)
"""Errors of a database that cannot take writes now (disk or database full, I/O, locked)."""

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
    body = to_wire(
        EventBody(
            event=kind,
            severity=severity,
            source=source,
            message=message,
            data=data or {},
            event_id=event.id,
        )
    )
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
    database full, I/O error, locked) or ``OSError``. An event that fails for another reason
    (a bug, e.g. ``data`` that is not JSON) would fail again whatever the disk does: it is
    dropped (counted in :attr:`failed`, logged once) and the events around it are written.
    Never raises for an event that cannot be written. Every :meth:`record` first writes what
    is pending; call :meth:`flush` to retry without a new event. Thread-safe.
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
        self.failed = 0
        """Events dropped because they cannot be stored at all (not a refusal)."""
        self._pending: deque[_Pending] = deque(maxlen=max(1, limit))
        self._lock = threading.Lock()
        self._refused = False
        self._rejected: _Pending | None = None

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
        for later (the database refused the write) or dropped (it cannot be stored). The
        event keeps its time ``now``."""
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
            self._rejected = None
            return self._write() and self._rejected is not event

    def flush(self) -> bool:
        """Write pending events; True when none is left pending. Never raises for an event
        that cannot be written."""
        with self._lock:
            return self._write()

    def _write(self) -> bool:
        """Write every pending event, oldest first, in one transaction; True when none is
        left pending."""
        if not self._pending:
            return True
        try:
            with self.db.session() as session:
                for event in self._pending:
                    self._add(session, event)
        except _REFUSALS as error:
            self._refuse(error)
            return False
        except Exception:  # some event cannot be stored: one transaction each finds it
            return self._write_each()
        self._taken_again(len(self._pending))
        self._pending.clear()
        return True

    def _write_each(self) -> bool:
        """Write pending events one transaction each, dropping those that cannot be stored;
        False (the rest kept) at the first refusal."""
        written = 0
        while self._pending:
            event = self._pending[0]
            try:
                with self.db.session() as session:
                    self._add(session, event)
                written += 1
            except _REFUSALS as error:
                self._refuse(error)
                return False
            except Exception as error:
                self.failed += 1
                self._rejected = event
                first = str(error).splitlines()[0][:200] if str(error) else ""
                log.error(
                    "event %s %r dropped, it cannot be stored (%d so far): %s: %s",
                    event.kind,
                    event.message,
                    self.failed,
                    type(error).__name__,
                    first,
                )
            self._pending.popleft()
        self._taken_again(written)
        return True

    def _add(self, session: Session, event: _Pending) -> None:
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

    def _refuse(self, error: BaseException) -> None:
        if not self._refused:
            log.warning(
                "events kept in memory (%d) until the database takes writes again: %s",
                len(self._pending),
                str(error).splitlines()[0][:200],
            )
        self._refused = True

    def _taken_again(self, written: int) -> None:
        if self._refused:
            log.info("database takes writes again: %d kept event(s) written", written)
        self._refused = False
