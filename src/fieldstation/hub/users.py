"""Dashboard users: names, argon2id password hashes (argon2-cffi), roles.

Roles (:data:`fieldstation.hub.models.ROLES`), weakest first: ``viewer`` reads every page,
``operator`` also acknowledges alerts, ``admin`` also manages users.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select

from fieldstation.hub.db import HubDatabase
from fieldstation.hub.models import ROLES, User

__all__ = ["UserError", "add_user", "authenticate", "role_allows"]

NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")
MIN_PASSWORD = 8
"""Shortest password accepted, characters."""


class UserError(ValueError):
    """A user that cannot be added: bad name, role or password, or the name is taken."""


def role_allows(role: str | None, needed: str) -> bool:
    """True when ``role`` is ``needed`` or stronger (viewer < operator < admin)."""
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


def add_user(db: HubDatabase, name: str, password: str, role: str) -> None:
    """Add user ``name`` with ``role``; only the argon2id hash of ``password`` is stored.
    Raises :class:`UserError` (name not ``[A-Za-z0-9_.@-]``, unknown role, password shorter
    than :data:`MIN_PASSWORD`, name taken)."""
    from argon2 import PasswordHasher

    if not NAME.match(name):
        raise UserError(f"user name {name!r}: use letters, digits and _ . @ - (1-100)")
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")
    with db.session() as session:
        if session.scalar(select(User.id).where(User.name == name)) is not None:
            raise UserError(f"user {name!r} exists already")
        session.add(
            User(
                name=name,
                password_hash=PasswordHasher().hash(password),
                role=role,
                created_at=datetime.now(UTC),
                disabled=False,
            )
        )


def authenticate(db: HubDatabase, name: str, password: str) -> str | None:
    """The role of ``name`` when ``password`` is right and the user is enabled, else None
    (a wrong name costs one argon2 verification too, so timing does not tell names apart)."""
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = PasswordHasher()
    with db.session() as session:
        user = session.scalar(select(User).where(User.name == name))
    stored = user.password_hash if user is not None and not user.disabled else _DUMMY
    try:
        hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    return user.role if user is not None and not user.disabled else None


_DUMMY = (
    "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHRzb21lc2FsdA$"
    "Jm1iq3Dl0m1ZkzCkzQ2s8bZ9F0vV9wXq0H2lHPM+Jc0"
)
"""A well-formed hash no password matches, verified for unknown names."""
