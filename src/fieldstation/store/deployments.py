"""Repository functions for deployments (one per config version in force)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fieldstation.home import HomeError
from fieldstation.store.models import Deployment

__all__ = [
    "StationMismatchError",
    "current_deployment",
    "home_owner",
    "restore_deployment",
    "start_deployment",
]


class StationMismatchError(HomeError):
    """The station home belongs to another station (its deployments carry another id)."""


def start_deployment(
    session: Session,
    *,
    station_id: str,
    config_hash: str,
    config: dict[str, Any],
    version: str,
    now: datetime,
) -> Deployment:
    """Return the open deployment for ``config_hash``, or end the open one and start a new one.

    A restart with the same config continues its deployment; a changed config starts a new one
    (the old one gets ``ended_at = now``). Raises :class:`StationMismatchError` when the
    database's deployments belong to another station id (two stations would share one home).
    """
    owner = home_owner(session)
    if owner is not None and owner != station_id:
        database = session.get_bind().engine.url.database
        where = f"{Path(database).parent} " if database else ""
        raise StationMismatchError(
            f"the station home {where}belongs to station {owner!r}, not {station_id!r}: "
            f"give station {station_id!r} its own home (station.home in its file, or another "
            "FIELDSTATION_HOME)"
        )
    current = current_deployment(session)
    if current is not None and current.config_hash == config_hash:
        return current
    session.execute(update(Deployment).where(Deployment.ended_at.is_(None)).values(ended_at=now))
    deployment = Deployment(
        station_id=station_id,
        config_hash=config_hash,
        config=config,
        fieldstation_version=version,
        started_at=now,
    )
    session.add(deployment)
    session.flush()
    return deployment


def current_deployment(session: Session) -> Deployment | None:
    """The deployment in force (not ended), newest first; None before the first run."""
    query = select(Deployment).where(Deployment.ended_at.is_(None)).order_by(Deployment.id.desc())
    return session.scalars(query.limit(1)).first()


def home_owner(session: Session) -> str | None:
    """The station id of the newest deployment (the station that owns this database), or None
    before the first run."""
    query = select(Deployment.station_id).order_by(Deployment.id.desc()).limit(1)
    return session.scalars(query).first()


def restore_deployment(
    session: Session,
    *,
    deployment_id: int,
    station_id: str,
    config_hash: str,
    version: str,
    started_at: datetime,
) -> bool:
    """Re-create deployment ``deployment_id`` known only from the metadata embedded in its
    recordings (the database was rebuilt): its config is unknown (``{}``) and it is ended
    (``ended_at = started_at``, the start of its oldest file). True when a row was added; an
    existing row is left as it is, an earlier ``started_at`` lowers the restored one's.
    """
    row = session.get(Deployment, deployment_id)
    if row is None:
        session.add(
            Deployment(
                id=deployment_id,
                station_id=station_id,
                config_hash=config_hash,
                config={},
                fieldstation_version=version,
                started_at=started_at,
                ended_at=started_at,
            )
        )
        session.flush()
        return True
    if row.config == {} and started_at < row.started_at:
        row.started_at = row.ended_at = started_at
    return False
