"""The command executor: runs the accepted commands one at a time, oldest first, and answers
each (``done`` or ``refused`` with a reason) through the outbox.

A command is taken (``accepted`` -> ``running``) in its own transaction before it runs, so a
stop in the middle leaves it ``running`` and the next start refuses it
(:func:`~fieldstation.commands.store.refuse_interrupted`): applied at most once.

What each command does:

- ``ping``: done, with the uptime (seconds), version and config hash in force.
- ``start`` / ``stop`` / ``restart``: the supervisor's job command (as ``fieldstation
  start/stop/restart``); done once the supervisor took it. ``stop`` of a job that carries the
  command channel (:data:`KEEP_RUNNING`) is refused: the station would stop hearing commands.
- ``pin`` / ``unpin``: :func:`fieldstation.store.retention.set_pinned`.
- ``reprocess``: :func:`fieldstation.processing.reprocess.reprocess` in a child process (the
  supervisor keeps numpy and the models out); done with its counts.
- ``set_config``: ``fieldstation.commands.config_apply.apply_remote_config(station, args,
  answer)``, which answers by itself, a refusal at once, ``done`` or a rollback at the end of
  its trial (:data:`LATER`: the command stays ``running`` until then); ``upload``:
  ``fieldstation.upload.queue.request_upload``. Both are imported when used; on a station
  without them: refused, "not supported by this station".
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from fieldstation import __version__
from fieldstation.clock import Clock
from fieldstation.commands import store
from fieldstation.config.units import parse_since
from fieldstation.messages.commands import (
    ARGS_MODELS,
    CommandRefusedError,
    JobArgs,
    PinArgs,
    ReprocessArgs,
    SetConfigArgs,
    UploadArgs,
)
from fieldstation.store.db import Database
from fieldstation.store.events import record_event
from fieldstation.store.models import CommandRow

__all__ = ["KEEP_RUNNING", "LATER", "Answer", "CommandExecutor", "StationControl"]

log = logging.getLogger(__name__)

KEEP_RUNNING = frozenset({"commands", "outbox", "network"})
"""Jobs a ``stop`` command may not stop: without them no further command would arrive or be
answered (a remote command must never brick the station). ``restart`` is allowed."""

NOT_SUPPORTED = "not supported by this station"

LATER: dict[str, Any] = {}
"""What a handler returns when it answers later by itself (from another thread): the command
stays ``running`` until then (a stop meanwhile: refused as interrupted at the next start)."""

Answer = Callable[..., None]
"""``answer(state, reason, details, config_hash=None)``: record a state of the command
(``accepted``, ``done``, ``refused``) and enqueue its ``command_result``; ``config_hash``
None: the station's hash in force."""


class StationControl(Protocol):
    """What the executor needs of the running station (:class:`~fieldstation.runtime.station.
    Station` has it): its config and hash in force, its start time, and the job commands."""

    config: Any
    config_hash: str
    started_at: float

    def start_job(self, name: str) -> dict[str, Any]: ...

    def stop_job(self, name: str) -> dict[str, Any]: ...

    def restart_job(self, name: str) -> dict[str, Any]: ...


Runner = Callable[..., Any]
"""Runs ``function(*args)`` somewhere (a child process in the station; a direct call in tests)."""


class CommandExecutor:
    """Runs accepted commands (see the module docstring).

    ``station``: the :class:`StationControl`; ``runner``: how ``reprocess`` runs (default:
    :func:`~fieldstation.runtime.startup.run_in_child`); ``answer_to`` / ``events_to``: the
    outputs of ``command_result`` / ``event`` messages (default: the station config's).
    """

    def __init__(
        self,
        db: Database,
        station: StationControl,
        clock: Clock,
        *,
        runner: Runner | None = None,
        answer_to: list[str] | None = None,
        events_to: list[str] | None = None,
    ) -> None:
        self.db = db
        self.station = station
        self.clock = clock
        self.runner = runner
        config = station.config
        self.station_id: str = config.station.id
        self.answer_to = (
            answer_to if answer_to is not None else config.destinations_for("command_result")
        )
        self.events_to = events_to if events_to is not None else config.destinations_for("event")

    # --- answers -----------------------------------------------------------------------------

    def answer_for(self, row: CommandRow) -> Answer:
        """The ``answer`` callback of one command: each call enqueues a ``command_result``
        and updates the row (a state after ``done``/``refused`` changes nothing); a refusal
        is also an event ``command_refused``."""
        command_id, command = row.id, row.command

        def answer(
            state: str,
            reason: str | None = None,
            details: dict[str, Any] | None = None,
            config_hash: str | None = None,
        ) -> None:
            details = dict(details or {})
            now = self.clock.now()
            with self.db.session() as session:
                changed = store.finish(
                    session, command_id, state=state, reason=reason, details=details, now=now
                )
                if not changed:
                    log.warning("command %s has ended already; %s not sent", command_id, state)
                    return
                store.enqueue_answer(
                    session,
                    station_id=self.station_id,
                    destinations=self.answer_to,
                    command_id=command_id,
                    command=command,
                    state=state,
                    reason=reason,
                    details=details,
                    config_hash=config_hash or self.station.config_hash,
                    now=now,
                )
                if state == "refused":
                    record_event(
                        session,
                        kind="command_refused",
                        source="commands",
                        message=f"command {command} {command_id} refused: {reason}",
                        now=now,
                        station_id=self.station_id,
                        destinations=self.events_to,
                        severity="warning",
                        data={"command_id": command_id, "command": command, **details},
                    )
            log.info(
                "command %s %s: %s%s", command_id, command, state, f" ({reason})" * bool(reason)
            )

        return answer

    # --- running -----------------------------------------------------------------------------

    def recover(self) -> int:
        """At start: refuse (and answer) the commands a stop left ``running``; returns how many."""
        now = self.clock.now()
        with self.db.session() as session:
            rows = store.refuse_interrupted(session, now=now)
            for row in rows:
                store.enqueue_answer(
                    session,
                    station_id=self.station_id,
                    destinations=self.answer_to,
                    command_id=row.id,
                    command=row.command,
                    state="refused",
                    reason=row.reason,
                    details={"interrupted": True},
                    config_hash=self.station.config_hash,
                    now=now,
                )
        return len(rows)

    def run_pending(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Run every accepted command, oldest first, until none is left or ``should_stop()``;
        returns how many ran."""
        ran = 0
        while not should_stop():
            with self.db.session() as session:
                rows = store.accepted_commands(session, limit=1)
                row = rows[0] if rows else None
                if row is not None:
                    session.expunge(row)
            if row is None:
                return ran
            self.execute(row)
            ran += 1
        return ran

    def execute(self, row: CommandRow) -> None:
        """Take one accepted command and run it; every outcome is answered."""
        now = self.clock.now()
        with self.db.session() as session:
            if not store.start(session, row.id, now=now):
                return  # taken already
        answer = self.answer_for(row)
        if now >= row.expires_at:  # waited past its validity (a long queue, a stopped station)
            answer("refused", f"expired at {row.expires_at.isoformat()} before it ran", {})
            return
        try:
            args = ARGS_MODELS[row.command].model_validate(row.args)
            handler = getattr(self, f"_do_{row.command}")
            details = handler(args, answer)
        except CommandRefusedError as error:
            answer("refused", error.reason, {})
            return
        except Exception as error:  # a command's failure is its answer, not the job's death
            log.exception("command %s %s failed", row.id, row.command)
            answer("refused", f"failed: {type(error).__name__}: {error}", {})
            return
        if details is LATER:
            return
        if details is not None:
            answer("done", None, details)
            return
        with self.db.session() as session:  # a handler that answers itself must end it
            current = store.get_command(session, row.id)
            ended = current is not None and current.state in store.FINAL_STATES
        if not ended:
            answer("refused", f"{row.command}: no outcome was reported", {})

    # --- the commands ------------------------------------------------------------------------

    def _do_ping(self, args: Any, answer: Answer) -> dict[str, Any]:
        return {
            "uptime_s": round(self.clock.monotonic() - self.station.started_at, 3),
            "version": __version__,
            "at": self.clock.now().isoformat(),
        }

    def _job(self, verb: str, args: JobArgs) -> dict[str, Any]:
        from fieldstation.runtime.supervisor import UnknownJobError

        if verb == "stop" and args.job in KEEP_RUNNING:
            raise CommandRefusedError(
                f"job {args.job!r} carries the command channel; a remote stop would cut the "
                "station off (restart it instead)"
            )
        method = getattr(self.station, f"{verb}_job")
        try:
            snapshot = method(args.job)
        except UnknownJobError as error:
            raise CommandRefusedError(str(error)) from None
        return {"job": args.job, "state": snapshot.get("state")}

    def _do_start(self, args: JobArgs, answer: Answer) -> dict[str, Any]:
        return self._job("start", args)

    def _do_stop(self, args: JobArgs, answer: Answer) -> dict[str, Any]:
        return self._job("stop", args)

    def _do_restart(self, args: JobArgs, answer: Answer) -> dict[str, Any]:
        return self._job("restart", args)

    def _pin(self, args: PinArgs, pinned: bool) -> dict[str, Any]:
        from fieldstation.store.retention import RecordingNotFoundError, set_pinned

        try:
            with self.db.session() as session:
                set_pinned(session, args.recording_id, pinned)
        except RecordingNotFoundError as error:
            raise CommandRefusedError(str(error)) from None
        return {"recording_id": args.recording_id, "pinned": pinned}

    def _do_pin(self, args: PinArgs, answer: Answer) -> dict[str, Any]:
        return self._pin(args, True)

    def _do_unpin(self, args: PinArgs, answer: Answer) -> dict[str, Any]:
        return self._pin(args, False)

    def _do_reprocess(self, args: ReprocessArgs, answer: Answer) -> dict[str, Any] | None:
        from fieldstation.config.station import config_data
        from fieldstation.processing.reprocess import reprocess_in_child

        since = None
        if args.since is not None:
            try:
                since = parse_since(args.since, self.clock.now()).isoformat()
            except ValueError as error:
                raise CommandRefusedError(f"reprocess args: {error}") from None
        config = self.station.config
        if not any(args.model in (p.name, p.model) for p in config.processors):
            names = ", ".join(p.name for p in config.processors) or "none"
            raise CommandRefusedError(
                f"no processor named (or using model) {args.model!r}: {names}"
            )
        runner = self.runner
        if runner is None:
            from fieldstation.runtime.startup import run_in_child

            runner = run_in_child
        result: dict[str, Any] = runner(reprocess_in_child, config_data(config), args.model, since)
        if result.get("failed"):
            answer("refused", f"{result['failed']} recording(s) failed", result)
            return None  # answered
        return result

    def _do_set_config(self, args: SetConfigArgs, answer: Answer) -> dict[str, Any]:
        apply = _optional("fieldstation.commands.config_apply", "apply_remote_config")
        apply(self.station, args, answer)
        return LATER

    def _do_upload(self, args: UploadArgs, answer: Answer) -> dict[str, Any]:
        if self.station.config.upload is None:
            raise CommandRefusedError(
                "this station has no [upload] section: no hub to upload to (docs/upload.md)"
            )
        request = _optional("fieldstation.upload.queue", "request_upload")
        upload_id = request(
            self.db,
            recording_id=args.recording_id,
            log_bundle=args.log_bundle,
            now=self.clock.now(),
        )
        return {"upload_id": upload_id}


def _optional(module: str, name: str) -> Any:
    """A function of an optional part of the station, or refused "not supported"."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise CommandRefusedError(NOT_SUPPORTED) from None
