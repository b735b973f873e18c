"""Fleet alerts: a pure evaluation of the stations' state at an instant, and the loop that
opens, closes and notifies them.

:func:`evaluate` (``stations``, ``now``, :class:`AlertRules`) -> the conditions that hold, one
:class:`Condition` per (station, kind, subject). No I/O, no clock: tested on chosen instants.

Kinds:

- ``offline``: the retained status says ``offline`` (the station's LWT or its clean stop) for
  longer than ``offline_after``;
- ``heartbeat_missing``: not offline, but no heartbeat for ``missing_after`` heartbeat
  intervals (the interval the newest heartbeat announced), e.g. a hung station whose MQTT
  session is alive, or a station that posts over HTTP (no LWT);
- ``silent``: heartbeats arrive (not missing, not offline) but no recording has been received
  for ``silent_after``. Heartbeats do not carry the station's schedule, so this is the
  "no recording for N while heartbeats arrive" rule: set ``silent_after`` longer than the
  longest pause of the stations' schedules (0 turns the rule off);
- ``disk_low``: the newest heartbeat's disk usage at or above ``disk_percent``, or its free
  bytes below ``disk_free``;
- ``job_failed``: a job of the newest heartbeat in state ``failed``, ``config_error`` or
  ``hung`` (subject: the job's name).

:func:`apply_conditions` writes them: a condition without an open alert opens one (at most
one open alert per station, kind and subject: a partial unique index, so two hub processes
evaluating at once open it once); an open alert whose condition no longer holds is closed.
Whoever opened or closed a row notifies it (:class:`Notifier`, Apprise URLs).
:class:`AlertLoop` runs it every ``interval`` on an injected :class:`~fieldstation.clock.Clock`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from sqlalchemy import select, update

from fieldstation.clock import Clock
from fieldstation.config.base import StrictModel
from fieldstation.config.units import Bytes, Seconds
from fieldstation.hub.db import HubDatabase
from fieldstation.hub.models import Alert, Station

__all__ = [
    "ALERT_KINDS",
    "AlertChanges",
    "AlertLoop",
    "AlertRules",
    "AlertsConfig",
    "Condition",
    "Notifier",
    "StationState",
    "acknowledge",
    "apply_conditions",
    "evaluate",
    "station_state",
    "station_states",
]

log = logging.getLogger(__name__)

ALERT_KINDS = ("offline", "heartbeat_missing", "silent", "disk_low", "job_failed")
FAILED_JOB_STATES = frozenset({"failed", "config_error", "hung"})


class AlertRules(StrictModel):
    """Thresholds of the fleet alerts."""

    offline_after: Seconds = Field(
        default=300.0, ge=0, description="Offline (LWT) for longer than this opens 'offline'."
    )
    missing_after: float = Field(
        default=3.0,
        gt=1,
        description="'heartbeat_missing' after this many announced heartbeat intervals "
        "without a heartbeat.",
    )
    silent_after: Seconds = Field(
        default=3600.0,
        ge=0,
        description="'silent': heartbeats arrive but no recording for this long (0: off). "
        "Longer than the longest pause of the stations' schedules.",
    )
    disk_percent: float = Field(
        default=90.0, gt=0, le=100, description="'disk_low' at or above this disk use (%)."
    )
    disk_free: Bytes | None = Field(
        default=None, description="'disk_low' also below this many bytes free (None: off)."
    )


class AlertsConfig(StrictModel):
    """The hub's alert loop: rules, evaluation period, notification targets."""

    enabled: bool = Field(default=True, description="Evaluate alerts in this hub process.")
    interval: Seconds = Field(default=30.0, gt=0, description="Seconds between evaluations.")
    rules: AlertRules = Field(default_factory=AlertRules, description="Thresholds.")
    notify: list[str] = Field(
        default_factory=list,
        description="Apprise URLs (ntfy://, mailto://, slack://, tgram://, json://...) told "
        "of each alert opened and closed; 'env:NAME' or 'file:PATH' reads a URL holding a "
        "secret from the environment or a private file.",
    )


@dataclass(frozen=True)
class StationState:
    """What the rules look at of one station (a ``stations`` row). Times aware UTC."""

    id: str
    first_seen_at: datetime
    online: bool | None = None
    status_changed_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    heartbeat_interval: float | None = None
    last_recording_at: datetime | None = None
    disk_percent: float | None = None
    disk_free: int | None = None
    jobs: Sequence[dict[str, Any]] = field(default_factory=tuple)


@dataclass(frozen=True)
class Condition:
    """A condition that holds: opens (or keeps open) the alert (station, kind, subject)."""

    station: str
    kind: str
    detail: str
    subject: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.station, self.kind, self.subject)


def _age(now: datetime, then: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds >= 7200:
        return f"{seconds // 3600} h"
    if seconds >= 120:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def evaluate(stations: Iterable[StationState], now: datetime, rules: AlertRules) -> list[Condition]:
    """The conditions holding at ``now`` (see the module docstring for each kind)."""
    found: list[Condition] = []
    for s in stations:
        offline = s.online is False
        if (
            offline
            and s.status_changed_at is not None
            and now - s.status_changed_at > timedelta(seconds=rules.offline_after)
        ):
            found.append(
                Condition(s.id, "offline", f"offline for {_age(now, s.status_changed_at)}")
            )
        missing = False
        if not offline and s.last_heartbeat_at is not None and s.heartbeat_interval:
            allowed = timedelta(seconds=rules.missing_after * s.heartbeat_interval)
            if now - s.last_heartbeat_at > allowed:
                missing = True
                found.append(
                    Condition(
                        s.id,
                        "heartbeat_missing",
                        f"no heartbeat for {_age(now, s.last_heartbeat_at)} "
                        f"(every {s.heartbeat_interval:g} s expected)",
                    )
                )
        if (
            rules.silent_after > 0
            and not offline
            and not missing
            and s.last_heartbeat_at is not None
        ):
            since = s.last_recording_at or s.first_seen_at
            if now - since > timedelta(seconds=rules.silent_after):
                what = "no recording" if s.last_recording_at is None else "no new recording"
                found.append(
                    Condition(
                        s.id,
                        "silent",
                        f"heartbeats arrive but {what} for {_age(now, since)}",
                    )
                )
        low = s.disk_percent is not None and s.disk_percent >= rules.disk_percent
        if rules.disk_free is not None and s.disk_free is not None:
            low = low or s.disk_free < int(rules.disk_free)
        if low:
            used = "?" if s.disk_percent is None else f"{s.disk_percent:.0f} %"
            free = "?" if s.disk_free is None else f"{s.disk_free / 1e9:.2f} GB"
            found.append(Condition(s.id, "disk_low", f"disk {used} used, {free} free"))
        for job in s.jobs or ():
            state = str(job.get("state"))
            if state in FAILED_JOB_STATES:
                reason = job.get("problem") or job.get("reason") or ""
                found.append(
                    Condition(
                        s.id,
                        "job_failed",
                        f"job {job.get('name')} {state}" + (f": {reason}" if reason else ""),
                        subject=str(job.get("name"))[:200],
                    )
                )
    return found


def station_state(row: Any) -> StationState:
    """The :class:`StationState` of a ``stations`` row (ORM object or Core row)."""
    return StationState(
        id=row.id,
        first_seen_at=row.first_seen_at,
        online=row.online,
        status_changed_at=row.status_changed_at,
        last_heartbeat_at=row.last_heartbeat_at,
        heartbeat_interval=row.heartbeat_interval,
        last_recording_at=row.last_recording_at,
        disk_percent=row.disk_percent,
        disk_free=row.disk_free,
        jobs=tuple(row.jobs or ()),
    )


def station_states(db: HubDatabase) -> list[StationState]:
    """Every station's :class:`StationState`, read in one query."""
    with db.session() as session:
        rows = session.execute(select(*Station.__table__.c)).all()
    return [station_state(r) for r in rows]


@dataclass
class AlertChanges:
    """What one :func:`apply_conditions` did: alerts ``opened`` and ``closed`` (as dicts:
    id, station, kind, subject, detail, opened_at, closed_at)."""

    opened: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)


def _alert_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "station": row.station,
        "kind": row.kind,
        "subject": row.subject,
        "detail": row.detail,
        "opened_at": row.opened_at,
        "closed_at": row.closed_at,
    }


def apply_conditions(
    db: HubDatabase, conditions: Sequence[Condition], now: datetime
) -> AlertChanges:
    """Open an alert for each condition without one, close each open alert whose condition
    is gone (one transaction). Safe with several hub processes: the partial unique index
    ``ux_alerts_open`` admits one open alert per key, and a close is an
    ``UPDATE ... WHERE closed_at IS NULL``, so each change is made (and notified) once."""
    from sqlalchemy.dialects import postgresql, sqlite

    changes = AlertChanges()
    table: Any = Alert.__table__
    wanted = {c.key: c for c in conditions}
    with db.session() as session:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        open_rows = session.execute(
            select(Alert.id, Alert.station, Alert.kind, Alert.subject).where(
                Alert.closed_at.is_(None)
            )
        ).all()
        open_keys = {(r.station, r.kind, r.subject): r.id for r in open_rows}
        for key, condition in wanted.items():
            if key in open_keys:
                continue
            statement = (
                dialect.insert(table)
                .values(
                    station=condition.station,
                    kind=condition.kind,
                    subject=condition.subject,
                    detail=condition.detail,
                    opened_at=now,
                )
                .on_conflict_do_nothing(
                    index_elements=["station", "kind", "subject"],
                    index_where=table.c.closed_at.is_(None),
                )
                .returning(*table.c)
            )
            row = session.execute(statement).first()
            if row is not None:
                changes.opened.append(_alert_dict(row))
        gone = [alert_id for key, alert_id in open_keys.items() if key not in wanted]
        if gone:
            rows = session.execute(
                update(table)
                .where(table.c.id.in_(gone), table.c.closed_at.is_(None))
                .values(closed_at=now)
                .returning(*table.c)
            ).all()
            changes.closed.extend(_alert_dict(r) for r in rows)
    return changes


def acknowledge(db: HubDatabase, alert_id: int, user: str, now: datetime) -> bool:
    """Acknowledge alert ``alert_id`` as ``user``; False when there is no such unacknowledged
    alert (already acknowledged, or unknown)."""
    with db.session() as session:
        result = session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.acknowledged_at.is_(None))
            .values(acknowledged_at=now, acknowledged_by=user)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def _resolve(url: str) -> str:
    from fieldstation.config.secrets import Secret

    if url.startswith(("env:", "file:")):
        return Secret(url).reveal().strip()
    return url


class Notifier:
    """Tells Apprise URLs of opened and closed alerts (one notification per change).
    Raises :class:`fieldstation.config.secrets.SecretError` for a URL reference that cannot be
    read, ValueError for a URL Apprise does not know."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.enabled = bool(urls)
        if not urls:
            return
        import apprise

        self._apprise = apprise.Apprise()
        for url in urls:
            resolved = _resolve(url)
            if not self._apprise.add(resolved):
                shown = url if url.startswith(("env:", "file:")) else url.split("://", 1)[0]
                raise ValueError(f"alerts.notify: Apprise does not understand {shown!r}")

    def notify(self, changes: AlertChanges) -> int:
        """Send one notification per change; returns how many were delivered."""
        if not self.enabled:
            return 0
        import apprise

        sent = 0
        for alert, verb, kind in [
            *((a, "opened", apprise.NotifyType.FAILURE) for a in changes.opened),
            *((a, "closed", apprise.NotifyType.SUCCESS) for a in changes.closed),
        ]:
            title = f"[fieldstation] {alert['station']}: {alert['kind']} {verb}"
            if self._apprise.notify(title=title, body=alert["detail"], notify_type=kind):
                sent += 1
            else:
                log.warning("alert notification not delivered: %s", title)
        return sent


class AlertLoop:
    """Evaluates, applies and notifies every ``config.interval`` until ``stop`` is set."""

    def __init__(
        self, db: HubDatabase, config: AlertsConfig, clock: Clock, notifier: Notifier
    ) -> None:
        self.db, self.config, self.clock, self.notifier = db, config, clock, notifier
        self.passes = 0

    def run_once(self) -> AlertChanges:
        """One evaluation at ``clock.now()``: apply, notify, return the changes."""
        now = self.clock.now()
        conditions = evaluate(station_states(self.db), now, self.config.rules)
        changes = apply_conditions(self.db, conditions, now)
        self.notifier.notify(changes)
        self.passes += 1
        return changes

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception as error:  # the database may be away: try again next period
                log.error("alert evaluation failed: %s", error)
            self.clock.wait(stop, self.config.interval)
