"""Per-station MQTT credentials and a Mosquitto ACL (``fieldstation hub broker-config``).

:func:`write_broker_config` writes into a folder:

- ``passwd``: Mosquitto's password file (``password_file``), one line per user in
  Mosquitto 2's ``$7$`` format: PBKDF2-HMAC-SHA512 over the password with a 12-byte random
  salt, 101 iterations, 64-byte key, base64 (what ``mosquitto_passwd`` writes);
- ``acl``: Mosquitto's ACL file (``acl_file``): each station may write (publish) only its own
  message topics ``{prefix}/{its id}/{kind}`` (one line per message kind and ``status``: its
  ``cmd`` topic is not among them) and its Home Assistant discovery configs under
  ``{discovery_prefix}/+/{node id}/#``, and read its own topics (its commands included); the
  hub user reads everything under ``{prefix}/#`` (its shared subscription included) and is the
  only user that may write ``{prefix}/+/cmd`` (fleet commands, docs/commands.md). Mosquitto's
  ``deny`` would also stop a station reading its own commands, hence the list of kinds: a
  release with a new message kind needs this file written again (passwords are kept);
- ``credentials/<user>.password`` (mode 0600): each user's password, for the station's
  ``mqtt`` output (``password = "file:..."``) and the hub's ``[mqtt]`` section. An existing
  password file is kept, so running it again for a new station rotates no one.

A station id may not contain ``+``, ``#``, ``/`` or whitespace (it is a topic level and a
user name).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fieldstation.messages import KINDS
from fieldstation.outbox.homeassistant import node_id

__all__ = ["BrokerConfig", "BrokerConfigError", "mosquitto_hash", "write_broker_config"]

STATION_ID = re.compile(r"^[^\s/+#$][^\s/+#]{0,199}$")
ITERATIONS = 101


class BrokerConfigError(ValueError):
    """A station id or user name that cannot be a topic level and a Mosquitto user."""


def mosquitto_hash(password: str, *, salt: bytes | None = None) -> str:
    """The ``$7$`` password hash Mosquitto 2 checks (see the module docstring)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS, 64)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"


@dataclass(frozen=True)
class BrokerConfig:
    """What :func:`write_broker_config` wrote: the two Mosquitto files and each user's
    password file."""

    password_file: Path
    acl_file: Path
    credentials: dict[str, Path]


def _password(folder: Path, user: str) -> Path:
    path = folder / "credentials" / f"{user}.password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")
    return path


def _atomic_write(path: Path, text: str, mode: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_broker_config(
    folder: Path,
    stations: Iterable[str],
    *,
    prefix: str = "fieldstation",
    hub_user: str = "hub",
    discovery_prefix: str = "homeassistant",
) -> BrokerConfig:
    """Write ``passwd``, ``acl`` and the credentials of ``stations`` and ``hub_user`` into
    ``folder`` (created). Raises :class:`BrokerConfigError` for an id that cannot be a topic
    level or user name, or a station named like the hub user."""
    names = sorted(set(stations))
    for name in [*names, hub_user]:
        if not STATION_ID.match(name) or ":" in name:
            raise BrokerConfigError(
                f"{name!r}: a station id or user name may not contain / + # : or spaces "
                "(it is a topic level and a broker user name)"
            )
    if hub_user in names:
        raise BrokerConfigError(f"{hub_user!r} is the hub's user: give the hub another name")
    folder.mkdir(parents=True, exist_ok=True)
    credentials = {user: _password(folder, user) for user in [hub_user, *names]}
    passwd = "".join(
        f"{user}:{mosquitto_hash(path.read_text().strip())}\n" for user, path in credentials.items()
    )
    acl = [
        "# written by fieldstation hub broker-config: a station publishes only under its id",
        f"user {hub_user}",
        f"topic read {prefix}/#",
        f"topic write {prefix}/+/cmd",
        "",
    ]
    for name in names:
        acl += [
            f"user {name}",
            *(f"topic write {prefix}/{name}/{kind}" for kind in sorted({*KINDS, "status"})),
            f"topic read {prefix}/{name}/#",
            # its Home Assistant discovery configs (an mqtt output with home_assistant = true)
            f"topic write {discovery_prefix}/+/{node_id(name)}/#",
            "",
        ]
    password_file, acl_file = folder / "passwd", folder / "acl"
    _atomic_write(password_file, passwd, 0o600)
    _atomic_write(acl_file, "\n".join(acl), 0o644)
    return BrokerConfig(password_file, acl_file, credentials)
