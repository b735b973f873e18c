"""Fleet commands on the hub: sign and queue them, hand them out, follow their answers.

A command (:mod:`fieldstation.messages.commands`) is signed with the hub's Ed25519 key when it
is queued and stored whole (``commands.wire``), so every copy the station receives is the same
bytes. Its ``state`` (:data:`fieldstation.hub.models.COMMAND_STATES`) only moves forward:

- ``queued``: signed, waiting for its station (which may be offline for days);
- ``delivered``: handed to the broker (:class:`fieldstation.hub.publisher.CommandPublisher`,
  when the station's retained status is ``online``) or to the station's HTTP poll
  (``GET /commands``); handed again until the station accepts it (it keeps command ids, so a
  second copy is refused as a replay, never applied twice);
- ``expired``: not accepted before ``expires_at`` (the station refuses it after that too);
- ``accepted``, ``done``, ``refused``: the station's ``command_result`` answers
  (:func:`apply_results`, called by ingest in the transaction that stores the message), with
  the reason, details and the station's config hash in force. ``done`` and ``refused`` are
  final: a redelivered ``accepted`` after ``done`` changes nothing.

Secrets never travel in a command: :func:`set_config_args` refuses a station file whose secret
fields are not ``env:`` / ``file:`` references (the station's own validation refuses them too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import desc, or_, select, update
from sqlalchemy.orm import Session

from fieldstation.hub.db import HubDatabase
from fieldstation.hub.models import COMMAND_STATES, HubCommand, Station
from fieldstation.messages.bodies import CommandResultBody
from fieldstation.messages.commands import (
    command_digest,
    generate_private_key,
    load_private_key,
    public_key_text,
    sign_command,
    write_private_key,
)

__all__ = [
    "CommandSigner",
    "apply_results",
    "claim_for_publishing",
    "expire_commands",
    "keygen",
    "list_commands",
    "pending_for_http",
    "queue_command",
    "set_config_args",
]

log = logging.getLogger(__name__)

OPEN_STATES = ("queued", "delivered")
"""States of a command still to be handed to its station."""
FINAL_STATES = ("done", "refused")
SECRET_KEYS = frozenset({"password", "password_hash", "token", "secret_urls"})
"""Keys of a station file that hold secrets (always ``env:`` / ``file:`` references)."""


def _rank(state: str) -> int:
    return COMMAND_STATES.index(state) if state in COMMAND_STATES else -1


def keygen(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The signing key at ``path``: made (PKCS#8 PEM, mode 0600) when absent. Returns the key
    and whether it was made now (an existing key is kept: stations trust it)."""
    if path.exists():
        return load_private_key(path), False
    key = generate_private_key()
    write_private_key(key, path)
    return key, True


@dataclass(frozen=True)
class CommandSigner:
    """The hub's signing key, the name stations know it by, and the commands' lifetime
    (``ttl``, seconds)."""

    key: Ed25519PrivateKey
    key_id: str = "hub"
    ttl: float = 86400.0

    @classmethod
    def load(cls, path: Path, *, key_id: str = "hub", ttl: float = 86400.0) -> CommandSigner:
        """The key in ``path``; raises ``FileNotFoundError`` saying to run ``hub keygen``, or
        ``ValueError`` for a file that is not an Ed25519 key."""
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no command signing key: make one with 'fieldstation hub keygen'"
            )
        return cls(load_private_key(path), key_id, ttl)

    @property
    def public_line(self) -> str:
        """``ed25519:<base64>``, what a station's ``[commands] hub_keys`` holds."""
        return public_key_text(self.key)


def set_config_args(text: str) -> dict[str, str]:
    """The ``set_config`` arguments for a station file (TOML ``text``): the text and its
    sha256. Raises ``ValueError`` for text that is not TOML, or a secret field (``password``,
    ``token``, ...) holding a value instead of an ``env:`` / ``file:`` reference (named by its
    key path)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"set_config: the station file is not valid TOML: {error}") from error
    for where, value in _secret_values(data, ""):
        if not (isinstance(value, str) and value.split(":", 1)[0] in ("env", "file")):
            raise ValueError(
                f"set_config: {where} holds a secret in clear: use 'env:NAME' or 'file:PATH' "
                "(secrets never travel in a command)"
            )
    return {"config": text, "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _secret_values(data: Any, where: str) -> Iterable[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{where}.{key}" if where else str(key)
            if key in SECRET_KEYS:
                for item in value if isinstance(value, list) else [value]:
                    yield path, item
            else:
                yield from _secret_values(value, path)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from _secret_values(item, f"{where}[{index}]")


def queue_command(
    db: HubDatabase,
    signer: CommandSigner,
    station: str,
    command: str,
    args: Mapping[str, Any],
    *,
    now: datetime,
    created_by: str,
) -> str:
    """Sign a command for ``station`` (valid ``signer.ttl`` seconds from ``now``) and queue
    it; returns its id. Raises
    :class:`~fieldstation.messages.commands.CommandRefusedError` for an unknown command or
    arguments its model refuses, ``ValueError`` for an empty station id."""
    if not station.strip():
        raise ValueError("station: give the station's id (its station.id)")
    signed = sign_command(
        signer.key,
        key_id=signer.key_id,
        station=station,
        command=command,
        args=args,
        issued_at=now,
        ttl=signer.ttl,
    )
    with db.session() as session:
        session.add(
            HubCommand(
                id=signed.id,
                station=station,
                command=command,
                args=dict(args) if command != "set_config" else _config_summary(args),
                wire=signed.to_json().decode(),
                state="queued",
                created_by=created_by[:100],
                created_at=now,
                expires_at=signed.expires_at,
                deliveries=0,
                updated_at=now,
            )
        )
    return signed.id


def _config_summary(args: Mapping[str, Any]) -> dict[str, Any]:
    """What the commands table shows of a ``set_config`` (the file itself is in ``wire``)."""
    return {"sha256": args.get("sha256"), "bytes": len(str(args.get("config", "")).encode())}


def expire_commands(db: HubDatabase, now: datetime) -> int:
    """Move every queued or delivered command past its ``expires_at`` to ``expired``;
    returns how many."""
    with db.session() as session:
        result = session.execute(
            update(HubCommand)
            .where(HubCommand.state.in_(OPEN_STATES), HubCommand.expires_at <= now)
            .values(state="expired", reason="not accepted before it expired", updated_at=now)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def claim_for_publishing(
    db: HubDatabase,
    *,
    now: datetime,
    republish_after: float,
    limit: int = 100,
) -> list[tuple[str, str, str]]:
    """Commands to publish now, as (id, station, wire JSON), oldest first: for stations whose
    retained status is ``online``, the queued ones and the delivered ones last handed out more
    than ``republish_after`` seconds ago, not expired. Each is marked delivered by a
    conditional UPDATE before it is returned, so two hub processes never both claim one in
    the same round."""
    cutoff = now - timedelta(seconds=republish_after)
    due = or_(
        HubCommand.state == "queued",
        (HubCommand.state == "delivered") & (HubCommand.delivered_at <= cutoff),
    )
    online = select(Station.id).where(Station.online.is_(True))
    claimed: list[tuple[str, str, str]] = []
    with db.session() as session:
        candidates = session.execute(
            select(HubCommand.id, HubCommand.station, HubCommand.wire)
            .where(due, HubCommand.expires_at > now, HubCommand.station.in_(online))
            .order_by(HubCommand.created_at)
            .limit(limit)
        ).all()
        for command_id, station, wire in candidates:
            result = session.execute(
                update(HubCommand)
                .where(HubCommand.id == command_id, due)
                .values(
                    state="delivered",
                    delivered_at=now,
                    deliveries=HubCommand.deliveries + 1,
                    updated_at=now,
                )
            )
            if result.rowcount:  # type: ignore[attr-defined]
                claimed.append((command_id, station, wire))
    return claimed


def pending_for_http(db: HubDatabase, station: str, *, now: datetime) -> list[dict[str, Any]]:
    """The wire dicts of ``station``'s commands not yet accepted and not expired, oldest
    first (``GET /commands``); queued ones become delivered. Every poll gets them again until
    the station accepts them (it keeps ids, so a repeated one is never applied twice)."""
    with db.session() as session:
        rows = session.execute(
            select(HubCommand.id, HubCommand.wire)
            .where(
                HubCommand.station == station,
                HubCommand.state.in_(OPEN_STATES),
                HubCommand.expires_at > now,
            )
            .order_by(HubCommand.created_at)
            .limit(100)
        ).all()
        if rows:
            session.execute(
                update(HubCommand)
                .where(HubCommand.id.in_([r.id for r in rows]), HubCommand.state.in_(OPEN_STATES))
                .values(
                    state="delivered",
                    delivered_at=now,
                    deliveries=HubCommand.deliveries + 1,
                    updated_at=now,
                )
            )
    return [json.loads(r.wire) for r in rows]


def apply_results(
    session: Session, results: Iterable[tuple[str, CommandResultBody]], now: datetime
) -> int:
    """Apply stations' ``command_result`` answers, as (station, body), in ``session`` (the
    ingest transaction). A state only moves forward (queued < delivered < expired < accepted
    < done | refused; done and refused are final); an answer about another station's
    command, or an unknown id, changes nothing. A refusal with ``details["replay"]`` is the
    station refusing a second copy of a command it holds: it counts as ``accepted``.
    Rows are updated in the order of their ids (answers to one command keep their order), so
    two hub processes applying overlapping batches lock rows in the same order and cannot
    deadlock on them. Returns the rows changed."""
    changed = 0
    for station, body in sorted(results, key=lambda result: result[1].command_id):
        state = body.state
        values: dict[str, Any] = {"updated_at": now}
        if state == "refused" and body.details.get("stage") == "verify":
            # refused before it could be verified: is it the command this hub sent, or a copy
            # someone forged with its id (only the hub may publish commands, but a broker
            # without the ACL lets anyone)? The digest of what the station received says.
            wire = session.scalar(
                select(HubCommand.wire).where(
                    HubCommand.id == body.command_id, HubCommand.station == station
                )
            )
            if wire is None or command_digest(json.loads(wire)) != body.details.get("digest"):
                log.warning(
                    "station %s refused a command claiming id %s that this hub did not send "
                    "(%s): the command keeps its state",
                    station,
                    body.command_id,
                    body.reason,
                )
                continue
        if state == "refused" and body.details.get("replay") is True:
            # a second copy (re-published, or redelivered by the broker) refused as a replay:
            # the station holds the command, which is therefore at least accepted
            state = "accepted"
        else:
            if state != "accepted" or body.reason:
                values["reason"] = body.reason
            if body.details:
                values["details"] = body.details
        values["state"] = state
        new_rank = _rank(state)
        lower = [s for s in COMMAND_STATES if _rank(s) < new_rank and s not in FINAL_STATES]
        if body.config_hash_in_force:
            values["config_hash"] = body.config_hash_in_force
        result = session.execute(
            update(HubCommand)
            .where(
                HubCommand.id == body.command_id,
                HubCommand.station == station,
                HubCommand.state.in_(lower),
            )
            .values(**values)
        )
        changed += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return changed


def list_commands(
    db: HubDatabase, station: str | None = None, *, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest ``limit`` commands (of ``station``, or all), newest first, as dicts: id,
    station, command, args, state, reason, details, created_by, created_at, expires_at,
    delivered_at, deliveries, updated_at, config_hash."""
    columns = [c for c in HubCommand.__table__.columns if c.name != "wire"]
    with db.session() as session:
        query = select(*columns).order_by(desc(HubCommand.created_at)).limit(limit)
        if station is not None:
            query = query.where(HubCommand.station == station)
        return [dict(row._mapping) for row in session.execute(query).all()]
