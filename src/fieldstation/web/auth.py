"""Operators' login, the session key and CSRF tokens of the web page (decision record 0091).

- Who may read: anyone who can reach a loopback-bound page (the person on the station, or
  through an SSH tunnel); on any other address, only a logged-in operator.
- Who may act (start/stop jobs): a logged-in operator, when ``web.operators_control_jobs``.
- Login: the password checked against ``web.password_hash`` (argon2, argon2-cffi), or the
  token ``web.token`` (compared in constant time). Both are secret references, read at the
  moment of the check.
- Session: Starlette's signed cookie (``SessionMiddleware``, itsdangerous), signed with a key
  kept in the station home (``web.key``, 0600, made on first use), so a restart keeps logins
  and two stations never share one. ``SameSite=Strict``.
- CSRF: every session holds a random token; every POST form carries it in a hidden ``csrf``
  field; a POST without the session's token is refused (403).
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from fieldstation.config.secrets import SecretError
from fieldstation.config.web import WebConfig

_ONE_CHECK_AT_A_TIME = threading.Lock()
"""Password checks run one at a time: 40 parallel log-in attempts (Starlette's thread pool)
would otherwise take 2.5 GiB and every core from the recorders of a small station."""

__all__ = [
    "CSRF_FIELD",
    "LoginError",
    "check_login",
    "csrf_ok",
    "csrf_token",
    "hash_password",
    "is_operator",
    "session_key",
]

CSRF_FIELD = "csrf"
"""Name of the hidden form field (and session entry) holding the CSRF token."""

OPERATOR = "operator"
"""Session entry set once an operator logged in (value: the login time, ISO text)."""

KEY_FILE = "web.key"
"""The session-signing key's file in the station home."""


class LoginError(Exception):
    """A login refused: wrong password or token, or no way to log in configured."""


def session_key(home_root: Path) -> str:
    """The station's session-signing key (``<home>/web.key``, 0600), made on first use.

    Two processes making it at once agree: the key is written to a private temporary file and
    linked into place (``link`` fails if another won; the winner's key is read back).
    """
    path = home_root / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    tmp = home_root / f".{KEY_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path.read_text().strip()


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (argon2-cffi's defaults), for ``web.password_hash``."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def check_login(config: WebConfig, secret: str) -> None:
    """Accept ``secret`` when it is the operators' password or token; else raise
    :class:`LoginError` (the same message for both, so a guess learns nothing)."""
    if not secret or not config.login_possible:
        raise LoginError("wrong password or token")
    if config.token is not None:
        with contextlib.suppress(SecretError):
            token = config.token.reveal()
            if len(token) >= 16 and hmac.compare_digest(token.encode(), secret.encode()):
                return
    if config.password_hash is not None:
        from argon2 import PasswordHasher
        from argon2.exceptions import InvalidHashError, VerificationError

        try:
            with _ONE_CHECK_AT_A_TIME:  # argon2 takes 64 MiB and every core per check
                PasswordHasher().verify(config.password_hash.reveal(), secret)
            return
        except (VerificationError, InvalidHashError, SecretError):
            pass
    raise LoginError("wrong password or token")


def csrf_token(session: dict[str, Any]) -> str:
    """The session's CSRF token, made on first use."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def csrf_ok(session: dict[str, Any], sent: str | None) -> bool:
    """Whether ``sent`` (the form's ``csrf`` field) is the session's token."""
    expected = session.get(CSRF_FIELD)
    if not isinstance(expected, str) or not expected or not sent:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())


def is_operator(session: dict[str, Any]) -> bool:
    """Whether the session belongs to a logged-in operator."""
    return bool(session.get(OPERATOR))
