"""Repository functions for deployments (one per config version in force)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fieldstation.store.models import Deployment

__all__ = ["current_deployment", "start_deployment"]


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
    (the old one gets ``ended_at = now``).
    """
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
