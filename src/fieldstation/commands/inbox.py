"""The command inbox: every command that reaches the station (MQTT, HTTP polling) comes
through :meth:`CommandInbox.receive`, which verifies it, stores it and answers it.

- Verified and new: a ``commands`` row in state ``accepted`` and an ``accepted`` answer, one
  transaction; the executor is woken.
- Verified but its id is stored already (a replay, or a second copy: the broker's persistent
  session and the hub's re-publish may both deliver it): refused, "already received at ...",
  with ``details`` ``{"replay": true, "state": <its state>}``; it is not run again. Such a
  copy is **answered at most once per ``replay_quiet`` seconds per id, and not while the
  previous answer of this inbox for that id is still unsent** (the hub learns nothing new from
  a second answer waiting behind the first): a hub (or a replaying intruder) sending copies
  cannot grow the outbox.
- Not verified (not JSON, another station, unknown key, bad signature, expired, issued too far
  ahead, bad arguments): refused with :func:`~fieldstation.messages.commands.verify_command`'s
  reason; no row (its id is not trusted, so it can block no genuine command). **At most one
  such refusal per source per ``unverified_quiet`` seconds is answered and recorded as an
  event**; the others are only counted, and the next event says how many were passed over
  (``data.suppressed``): forged messages cannot grow the database.

Every refusal answered is also an event (kind ``command_refused``, warning). Thread-safe:
called from paho's network thread and the commands job's thread; the database serialises the
writes, a lock the rate limits.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
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
from fieldstation.store.models import Delivery

__all__ = ["REPLAY_QUIET", "UNVERIFIED_QUIET", "AnswerRoute", "CommandInbox"]

log = logging.getLogger(__name__)

REPLAY_QUIET = 600.0
"""Seconds: a copy of a stored command id is answered at most once in this time."""
UNVERIFIED_QUIET = 60.0
"""Seconds: at most one unverified message per source is answered (and an event) in this time."""
MAX_REMEMBERED = 10_000
"""Command ids whose last replay answer is remembered (the oldest are forgotten past this)."""


@dataclass(frozen=True)
class AnswerRoute:
    """Where a station's command answers go: ``command_result`` messages to the outputs
    ``answer_to``, ``command_refused`` events (warning) to ``events_to``, both as
    ``station_id``. Used by the inbox and the executor, inside their own transactions."""

    station_id: str
    answer_to: Sequence[str]
    events_to: Sequence[str]

    def answer(
        self,
        session: Any,
        command_id: str,
        command: str,
        state: str,
        reason: str | None,
        details: dict[str, Any],
        *,
        config_hash: str | None,
        now: datetime,
    ) -> int | None:
        """Enqueue one answer; returns its outbox message's pk (None: no destination)."""
        return enqueue_answer(
            session,
            station_id=self.station_id,
            destinations=self.answer_to,
            command_id=command_id,
            command=command,
            state=state,
            reason=reason,
            details=details,
            config_hash=config_hash,
            now=now,
        )

    def refused_event(
        self, session: Any, message: str, data: dict[str, Any], *, now: datetime
    ) -> None:
        """Record (and enqueue) the ``command_refused`` event ``message`` with ``data``."""
        record_event(
            session,
            kind="command_refused",
            source="commands",
            message=message,
            now=now,
            station_id=self.station_id,
            destinations=self.events_to,
            severity="warning",
            data=data,
        )


class CommandInbox:
    """Verify, store and answer incoming commands (see the module docstring).

    ``hub_keys``: key id -> ``ed25519:<base64>`` (``[commands] hub_keys``); ``skew``: seconds
    a command's ``issued_at`` may be ahead of ``clock``; ``answer_to`` / ``events_to``: the
    outputs that take ``command_result`` / ``event`` messages; ``config_hash``: the hash in
    force, put in every answer; ``session_expiry``: seconds the broker keeps the MQTT session
    (the command subscription) of a disconnected station (MQTT outputs read it);
    ``replay_quiet`` / ``unverified_quiet``: seconds of the rate limits (module docstring;
    :data:`REPLAY_QUIET`, :data:`UNVERIFIED_QUIET`), on ``clock.monotonic()``.
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
        replay_quiet: float = REPLAY_QUIET,
        unverified_quiet: float = UNVERIFIED_QUIET,
    ) -> None:
        self.db = db
        self.station_id = station_id
        self.public_keys = {key_id: load_public_key(text) for key_id, text in hub_keys.items()}
        self.clock = clock
        self.route = AnswerRoute(station_id, answer_to, events_to)
        self.config_hash = config_hash
        self.skew = skew
        self.session_expiry = session_expiry
        self.arrived = threading.Event()
        """Set when a command was accepted (the executor waits on it)."""
        self.replay_quiet = replay_quiet
        self.unverified_quiet = unverified_quiet
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, int | None]] = {}
        """Command id -> (monotonic time, outbox message pk) of this inbox's last answer."""
        self._unverified: dict[str, tuple[float, int]] = {}
        """Source -> (monotonic time of its last answered refusal, refusals passed over since)."""

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
            suppressed = self._unverified_turn(source)
            if suppressed is None:
                log.debug(
                    "command %s from %s refused (not answered: rate limit)", command_id, source
                )
                return "refused"
            self._refuse(command_id, name, error.reason, details, source, suppressed=suppressed)
            return "refused"
        try:
            with self.db.session() as session:
                row, new = insert_command(session, command, source=source, now=now)
                if new:
                    pk = self._answer(session, command.id, command.command, "accepted", None, {})
                    self._remember(command.id, pk)
                    first = None
                else:
                    first = (row.received_at.isoformat(), row.state)
        except IntegrityError:  # the same id stored by another thread meanwhile
            first = ("the same moment", "accepted")
        if first is not None:
            if not self._replay_turn(command.id):
                log.info(
                    "copy of command %s from %s not answered again (answered recently)",
                    command.id,
                    source,
                )
                return "refused"
            reason = f"already received at {first[0]}; not applied again"
            details = {"replay": True, "state": first[1]}
            pk = self._refuse(command.id, command.command, reason, details, source)
            self._remember(command.id, pk)
            return "refused"
        log.info("command %s %s accepted (from %s)", command.id, command.command, source)
        self.arrived.set()
        return "accepted"

    # --- rate limits ---------------------------------------------------------------------------

    def _unverified_turn(self, source: str) -> int | None:
        """None when an unverified message from ``source`` is passed over (one was answered
        less than ``unverified_quiet`` s ago), else how many were passed over before it."""
        now = self.clock.monotonic()
        with self._lock:
            last = self._unverified.get(source)
            if last is not None and now - last[0] < self.unverified_quiet:
                self._unverified[source] = (last[0], last[1] + 1)
                return None
            self._unverified[source] = (now, 0)
            return 0 if last is None else last[1]

    def _replay_turn(self, command_id: str) -> bool:
        """Whether a copy of stored command ``command_id`` is answered: not when this inbox
        answered it less than ``replay_quiet`` s ago or that answer is still unsent."""
        with self._lock:
            last = self._answers.get(command_id)
        if last is None:
            return True
        at, pk = last
        if self.clock.monotonic() - at < self.replay_quiet:
            return False
        if pk is None:
            return True
        with self.db.session() as session:
            unsent = session.scalar(
                select(Delivery.id)
                .where(Delivery.message_pk == pk, Delivery.state == "pending")
                .limit(1)
            )
        return unsent is None

    def _remember(self, command_id: str, pk: int | None) -> None:
        with self._lock:
            self._answers.pop(command_id, None)
            self._answers[command_id] = (self.clock.monotonic(), pk)
            while len(self._answers) > MAX_REMEMBERED:
                del self._answers[next(iter(self._answers))]

    # --- answers -------------------------------------------------------------------------------

    def _answer(
        self,
        session: Any,
        command_id: str,
        command: str,
        state: str,
        reason: str | None,
        details: dict[str, Any],
    ) -> int | None:
        """Enqueue an answer; returns its outbox message's pk (None: no destination)."""
        return self.route.answer(
            session,
            command_id,
            command,
            state,
            reason,
            details,
            config_hash=self.config_hash(),
            now=self.clock.now(),
        )

    def _refuse(
        self,
        command_id: str,
        command: str,
        reason: str,
        details: dict[str, Any],
        source: str,
        *,
        suppressed: int = 0,
    ) -> int | None:
        """Answer a refusal and record its event; returns the answer's outbox message pk.
        ``suppressed``: refusals from ``source`` passed over since its previous event."""
        more = f" ({suppressed} more from {source} not answered)" if suppressed else ""
        log.warning(
            "command %s (%s) from %s refused: %s%s", command_id, command, source, reason, more
        )
        data = {"command_id": command_id, "command": command, "from": source, **details}
        if suppressed:
            data["suppressed"] = suppressed
        with self.db.session() as session:
            pk = self._answer(session, command_id, command, "refused", reason, details)
            self.route.refused_event(
                session,
                f"command {command} {command_id} refused: {reason}{more}",
                data,
                now=self.clock.now(),
            )
        return pk


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
