"""Ending the leases of dead workers: only the named worker's, only unexpired ones."""

from __future__ import annotations

from datetime import timedelta

from fieldstation.clock import VirtualClock
from fieldstation.store import Database
from fieldstation.store import processing as repo
from fieldstation.store.deployments import start_deployment
from fieldstation.store.models import Recording
from fieldstation.testing.rows import add_recording


def test_expire_leases_of_one_worker_then_all(db: Database, clock: VirtualClock) -> None:
    now = clock.now()
    dead, alive = repo.worker_id("energy", 111), repo.worker_id("energy", 1112)
    assert repo.claim_token(dead).startswith("energy@111#")
    with db.session() as session:
        dep = start_deployment(
            session, station_id="s", config_hash="h" * 64, config={}, version="t", now=now
        )
        lease = now + timedelta(minutes=15)
        ids = [
            add_recording(
                session,
                deployment_id=dep.id,
                started_at=now,
                state="processing",
                claimed_by=repo.claim_token(worker),
                lease_expires_at=lease,
            ).id
            for worker in (dead, alive)
        ]
    with db.session() as session:
        assert repo.expire_leases(session, now=now, worker=dead) == 1
    with db.session() as session:
        leases = [session.get(Recording, i).lease_expires_at for i in ids]  # type: ignore[union-attr]
    assert leases == [now, lease]  # "energy@1112" is not "energy@111"
    with db.session() as session:
        assert repo.expire_leases(session, now=now) == 1  # the expired one is not counted again
