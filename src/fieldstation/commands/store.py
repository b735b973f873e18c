"""Repository functions of the ``commands`` table and the answers (``command_result``).

Every function works in the caller's transaction: a command's row and its answer (an outbox
message) are committed together, so the hub hears of every state the station reached, even
across outages (the outbox delivers at least once), and a command stored is applied at most
once (its id is unique; decision record 0140).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldstation.messages import CommandResultBody, to_wire
from fieldstation.messages.commands import Command
from fieldstation.store.models import CommandRow
from fieldstation.store.outbox import enqueue

__all__ = [
    "FINAL_STATES",
    "State",
    "accepted_commands",
    "enqueue_answer",
    "finish",
    "get_command",
    "insert_command",
    "refuse_interrupted",
    "start",
]

State = Literal["accepted", "running", "done", "refused"]
FINAL_STATES = frozenset({"done", "refused"})
"""States a command never leaves."""


def enqueue_answer(
    session: Session,
    *,
    station_id: str,
    destinations: Sequence[str],
    command_id: str,
    command: str,
    state: str,
    reason: str | None,
    details: dict[str, Any],
    config_hash: str | None,
    now: datetime,
) -> None:
    """Enqueue one ``command_result`` message (validated by its body model) for
    ``destinations``; ``command`` longer than the body allows is cut, an unreadable one is
    ``'?'``."""
    body = CommandResultBody(
        command_id=command_id[:200] or "?",
        command=(command or "?")[:50],
        state=state,  # type: ignore[arg-type]
        reason=reason,
        details=details,
        config_hash_in_force=config_hash,
        at=now,
    )
    enqueue(
        session,
        kind="command_result",
        body=to_wire(body),
        destinations=destinations,
        now=now,
        station_id=station_id,
    )


def insert_command(
    session: Session, command: Command, *, source: str, now: datetime
) -> tuple[CommandRow, bool]:
    """Store a verified command in state ``accepted``; returns ``(row, True)``, or the row
    already stored under its id and False (a replay: the caller refuses it)."""
    existing = _get(session, command.id)
    if existing is not None:
        return existing, False
    row = CommandRow(
        id=command.id,
        command=command.command,
        args=dict(command.args),
        source=source[:80],
        state="accepted",
        details={},
        issued_at=command.issued_at,
        expires_at=command.expires_at,
        received_at=now,
    )
    session.add(row)
    session.flush()  # a concurrent copy of the id fails here (IntegrityError), not later
    return row, True


def get_command(session: Session, command_id: str) -> CommandRow | None:
    """The stored command with id ``command_id``, or None."""
    return session.scalars(select(CommandRow).where(CommandRow.id == command_id)).first()


_get = get_command


def accepted_commands(session: Session, limit: int = 100) -> list[CommandRow]:
    """Commands waiting to run, oldest first."""
    query = (
        select(CommandRow)
        .where(CommandRow.state == "accepted")
        .order_by(CommandRow.pk)
        .limit(limit)
    )
    return list(session.scalars(query))


def start(session: Session, command_id: str, *, now: datetime) -> bool:
    """Move an ``accepted`` command to ``running``; False when it is not accepted (already
    taken): the caller must not run it."""
    row = _get(session, command_id)
    if row is None or row.state != "accepted":
        return False
    row.state = "running"
    row.started_at = now
    return True


def finish(
    session: Session,
    command_id: str,
    *,
    state: str,
    reason: str | None,
    details: dict[str, Any],
    now: datetime,
) -> bool:
    """Record a state reached (``done``/``refused`` end it; another state only updates
    reason and details); False, and nothing changed, when the command has ended already or
    is not stored."""
    row = _get(session, command_id)
    if row is None or row.state in FINAL_STATES:
        return False
    if state in FINAL_STATES:
        row.state = state
        row.finished_at = now
    row.reason = reason
    row.details = dict(details)
    return True


def refuse_interrupted(session: Session, *, now: datetime) -> list[CommandRow]:
    """Commands left ``running`` by a stop (a crash, a power cut): refused, never run again
    (at most once). Returns them, so the caller answers each."""
    rows = list(session.scalars(select(CommandRow).where(CommandRow.state == "running")))
    for row in rows:
        row.state = "refused"
        row.finished_at = now
        row.reason = "interrupted by a stop of the station; not run again (at most once)"
    return rows
