"""The command inbox: every command that reaches the station (MQTT, HTTP polling) comes
through :meth:`CommandInbox.receive`, which verifies it, stores it and answers it.

- Verified and new: a ``commands`` row in state ``accepted`` and an ``accepted`` answer, one
  transaction; the executor is woken.
- Verified but its id is stored already (a replay, or a second copy: the broker's persistent
  session and the hub's re-publish may both deliver it): refused, "already received at ...",
  with ``details`` ``{"replay": true, "state": <its state>}``; it is not run again.
- Not verified (not JSON, another station, unknown key, bad signature, expired, issued too far
  ahead, bad arguments): refused with :func:`~fieldstation.messages.commands.verify_command`'s
  reason; no row (its id is not trusted, so it can block no genuine command), but an event
  ``command_refused``.

Every refusal is also an event (kind ``command_refused``, warning). Thread-safe: called from
paho's network thread and the commands job's thread; the database serialises the writes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError

from fieldstation.clock import Clock
from fieldstation.commands.store import enqueue_answer, insert_command
from fieldstation.messages.commands import (
    CommandRefusedError,
    command_digest,
    load_public_key,
    verify_command,
)
from fieldstation.store.db import Database
from fieldstation.store.events import record_event

__all__ = ["CommandInbox"]

log = logging.getLogger(__name__)


class CommandInbox:
    """Verify, store and answer incoming commands (see the module docstring).

    ``hub_keys``: key id -> ``ed25519:<base64>`` (``[commands] hub_keys``); ``skew``: seconds
    a command's ``issued_at`` may be ahead of ``clock``; ``answer_to`` / ``events_to``: the
    outputs that take ``command_result`` / ``event`` messages; ``config_hash``: the hash in
    force, put in every answer; ``session_expiry``: seconds the broker keeps the MQTT session
    (the command subscription) of a disconnected station (MQTT outputs read it).
    """

    def __init__(
        self,
        db: Database,
        *,
        station_id: str,
        hub_keys: Mapping[str, str],
        clock: Clock,
        answer_to: list[str],
        events_to: list[str],
        config_hash: Callable[[], str | None] = lambda: None,
        skew: float = 300.0,
        session_expiry: float = 7 * 86400.0,
    ) -> None:
        self.db = db
        self.station_id = station_id
        self.public_keys = {key_id: load_public_key(text) for key_id, text in hub_keys.items()}
        self.clock = clock
        self.answer_to = answer_to
        self.events_to = events_to
        self.config_hash = config_hash
        self.skew = skew
        self.session_expiry = session_expiry
        self.arrived = threading.Event()
        """Set when a command was accepted (the executor waits on it)."""

    def receive(self, raw: bytes | str, source: str) -> str:
        """Handle one command as received from ``source`` (``mqtt:<output>``,
        ``http:<output>``); returns ``"accepted"`` or ``"refused"``. Raises only when the
        database refuses the write (the caller then leaves the message unacknowledged)."""
        now = self.clock.now()
        try:
            command = verify_command(
                raw,
                public_keys=self.public_keys,
                station_id=self.station_id,
                now=now,
                skew=self.skew,
            )
        except CommandRefusedError as error:
            command_id, name, digest = _claimed(raw)
            details: dict[str, Any] = {"stage": "verify"}
            if digest is not None:  # the hub applies the refusal only to the command it sent
                details["digest"] = digest
            self._refuse(command_id, name, error.reason, details, source)
            return "refused"
        try:
            with self.db.session() as session:
                row, new = insert_command(session, command, source=source, now=now)
                if new:
                    self._answer(session, command.id, command.command, "accepted", None, {})
                    first = None
                else:
                    first = (row.received_at.isoformat(), row.state)
        except IntegrityError:  # the same id stored by another thread meanwhile
            first = ("the same moment", "accepted")
        if first is not None:
            reason = f"already received at {first[0]}; not applied again"
            details = {"replay": True, "state": first[1]}
            self._refuse(command.id, command.command, reason, details, source)
            return "refused"
        log.info("command %s %s accepted (from %s)", command.id, command.command, source)
        self.arrived.set()
        return "accepted"

    def _answer(
        self,
        session: Any,
        command_id: str,
        command: str,
        state: str,
        reason: str | None,
        details: dict[str, Any],
    ) -> None:
        enqueue_answer(
            session,
            station_id=self.station_id,
            destinations=self.answer_to,
            command_id=command_id,
            command=command,
            state=state,
            reason=reason,
            details=details,
            config_hash=self.config_hash(),
            now=self.clock.now(),
        )

    def _refuse(
        self, command_id: str, command: str, reason: str, details: dict[str, Any], source: str
    ) -> None:
        log.warning("command %s (%s) from %s refused: %s", command_id, command, source, reason)
        with self.db.session() as session:
            self._answer(session, command_id, command, "refused", reason, details)
            record_event(
                session,
                kind="command_refused",
                source="commands",
                message=f"command {command} {command_id} refused: {reason}",
                now=self.clock.now(),
                station_id=self.station_id,
                destinations=self.events_to,
                severity="warning",
                data={"command_id": command_id, "command": command, "from": source, **details},
            )


def _claimed(raw: bytes | str) -> tuple[str, str, str | None]:
    """The id and command a refused message claims (for its answer), or ``"?"``, and its
    :func:`~fieldstation.messages.commands.command_digest` (None when it is not a JSON
    object)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "?", "?", None
    if not isinstance(data, dict):
        return "?", "?", None
    command_id, name = data.get("id"), data.get("command")
    return (
        command_id[:200] if isinstance(command_id, str) and command_id else "?",
        name[:50] if isinstance(name, str) and name else "?",
        command_digest(data),
    )
