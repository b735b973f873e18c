"""Per-station bearer tokens of the HTTP ingest, hashed with argon2id (argon2-cffi) in the
``station_tokens`` table; the token itself is shown once, when made, and never stored."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import UTC, datetime

from sqlalchemy import select

from fieldstation.hub.db import HubDatabase
from fieldstation.hub.models import StationToken

__all__ = ["TokenChecker", "add_token", "revoke_tokens"]

CACHE_SECONDS = 60.0
"""How long a verified token is trusted without a new argon2 check (a revoked token stops
working within this time)."""


def add_token(db: HubDatabase, station: str) -> str:
    """Make a new token for ``station`` and store its argon2 hash; returns the token
    (``fsh_`` + 43 URL-safe characters, 256 bits). Raises ValueError for an empty station."""
    from argon2 import PasswordHasher

    if not station.strip():
        raise ValueError("station: give the station's id (its station.id)")
    token = "fsh_" + secrets.token_urlsafe(32)
    with db.session() as session:
        session.add(
            StationToken(
                station=station,
                token_hash=PasswordHasher().hash(token),
                created_at=datetime.now(UTC),
                revoked=False,
            )
        )
    return token


def revoke_tokens(db: HubDatabase, station: str) -> int:
    """Revoke every token of ``station``; returns how many were active. Running hubs stop
    accepting them within :data:`CACHE_SECONDS`."""
    from sqlalchemy import update

    with db.session() as session:
        result = session.execute(
            update(StationToken)
            .where(StationToken.station == station, StationToken.revoked.is_(False))
            .values(revoked=True)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class TokenChecker:
    """``check(station, token) -> bool`` against the stored hashes, with a short cache of
    verified tokens (argon2 is slow on purpose: ~50 ms a check)."""

    def __init__(self, db: HubDatabase) -> None:
        from argon2 import PasswordHasher

        self.db = db
        self._hasher = PasswordHasher()
        self._cache: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def check(self, station: str, token: str) -> bool:
        key = (station, hashlib.sha256(token.encode()).hexdigest())
        now = time.monotonic()
        with self._lock:
            until = self._cache.get(key)
            if until is not None and until > now:
                return True
        with self.db.session() as session:
            hashes = session.scalars(
                select(StationToken.token_hash).where(
                    StationToken.station == station, StationToken.revoked.is_(False)
                )
            ).all()
        from argon2.exceptions import InvalidHashError, VerificationError

        for stored in hashes:
            try:
                self._hasher.verify(stored, token)
            except (VerificationError, InvalidHashError):
                continue
            with self._lock:
                self._cache[key] = now + CACHE_SECONDS
            return True
        return False
