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
  supervisor keeps numpy and the models out), started and left running (:data:`LATER`): the
  executor polls it at each turn of the job's loop (:meth:`CommandExecutor.poll_background`)
  and answers ``done`` with its counts (``refused`` when recordings failed) when it ends, so
  the ``commands`` thread keeps turning its loop (and stays within its liveness limit) through
  a run of hours, and the other commands run meanwhile. A second ``reprocess`` waits
  (``accepted``) until the first ended. A stop ends the child
  (:meth:`CommandExecutor.stop_background`) and refuses the command as interrupted.
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
from fieldstation.commands.inbox import AnswerRoute
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
from fieldstation.store.models import CommandRow

__all__ = [
    "KEEP_RUNNING",
    "LATER",
    "Answer",
    "Background",
    "CommandExecutor",
    "Starter",
    "StationControl",
    "run_now",
]

log = logging.getLogger(__name__)

KEEP_RUNNING = frozenset({"commands", "outbox", "network"})
"""Jobs a ``stop`` command may not stop: without them no further command would arrive or be
answered (a remote command must never brick the station). ``restart`` is allowed."""

NOT_SUPPORTED = "not supported by this station"

LATER: dict[str, Any] = {}
"""What a handler returns when it answers later by itself (from another thread): the command
stays ``running`` until then (a station stop meanwhile: refused as interrupted at the next
start)."""

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


class Background(Protocol):
    """A call running on its own (:class:`~fieldstation.runtime.forkserver.CallInChild`)."""

    def poll(self) -> bool:
        """True once the call ended (never blocks)."""
        ...

    def result(self) -> Any:
        """What the ended call returned; raises what it raised."""
        ...

    def cancel(self) -> None:
        """End the call (a stop of the station)."""
        ...


Starter = Callable[..., Background]
"""``starter(function, *args)`` starts ``function(*args)`` and returns at once (a child
process of the fork server in the station: :func:`~fieldstation.runtime.forkserver.start_call`;
:func:`run_now` or a controllable fake in tests)."""


class _Done:
    """A call that ran already (:func:`run_now`)."""

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._value: Any = None
        self._error: Exception | None = None
        try:
            self._value = function(*args)
        except Exception as error:
            self._error = error

    def poll(self) -> bool:
        return True

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self) -> None:
        pass


def run_now(function: Callable[..., Any], *args: Any) -> Background:
    """A :data:`Starter` that runs ``function(*args)`` in this thread before returning (tests,
    one-shot tools)."""
    return _Done(function, args)


class CommandExecutor:
    """Runs accepted commands (see the module docstring).

    ``station``: the :class:`StationControl`; ``starter``: how ``reprocess`` is started
    (default: :func:`~fieldstation.runtime.forkserver.start_call`, a child process);
    ``answer_to`` / ``events_to``: the outputs of ``command_result`` / ``event`` messages
    (default: the station config's).
    """

    def __init__(
        self,
        db: Database,
        station: StationControl,
        clock: Clock,
        *,
        starter: Starter | None = None,
        answer_to: list[str] | None = None,
        events_to: list[str] | None = None,
    ) -> None:
        self.db = db
        self.station = station
        self.clock = clock
        self.starter = starter
        self._background: dict[str, tuple[str, Background, Answer]] = {}
        """Command id -> (command, its running call, its answer)."""
        config = station.config
        self.station_id: str = config.station.id
        self.route = AnswerRoute(
            self.station_id,
            answer_to if answer_to is not None else config.destinations_for("command_result"),
            events_to if events_to is not None else config.destinations_for("event"),
        )

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
                self.route.answer(
                    session,
                    command_id,
                    command,
                    state,
                    reason,
                    details,
                    config_hash=config_hash or self.station.config_hash,
                    now=now,
                )
                if state == "refused":
                    self.route.refused_event(
                        session,
                        f"command {command} {command_id} refused: {reason}",
                        {"command_id": command_id, "command": command, **details},
                        now=now,
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
                self.route.answer(
                    session,
                    row.id,
                    row.command,
                    "refused",
                    row.reason,
                    {"interrupted": True},
                    config_hash=self.station.config_hash,
                    now=now,
                )
        return len(rows)

    def run_pending(self, should_stop: Callable[[], bool] = lambda: False) -> int:
        """Answer the background calls that ended (:meth:`poll_background`), then run every
        accepted command, oldest first, until none is left or ``should_stop()``; a command
        whose kind runs in the background already waits. Returns how many ran."""
        ran = 0
        while not should_stop():
            self.poll_background()
            busy = {command for command, _, _ in self._background.values()}
            with self.db.session() as session:
                rows = store.accepted_commands(session, limit=1, exclude=busy)
                row = rows[0] if rows else None
                if row is not None:
                    session.expunge(row)
            if row is None:
                return ran
            self.execute(row)
            ran += 1
        return ran

    @property
    def busy(self) -> bool:
        """True while a command runs in the background (the job then polls it each turn)."""
        return bool(self._background)

    def poll_background(self) -> int:
        """Answer each background call that ended (never blocks); returns how many ended."""
        ended = 0
        for command_id, (command, call, answer) in list(self._background.items()):
            try:
                if not call.poll():
                    continue
                result = call.result()
            except Exception as error:
                log.exception("command %s %s failed", command_id, command)
                answer("refused", f"failed: {type(error).__name__}: {error}", {})
            else:
                getattr(self, f"_end_{command}")(result, answer)
            del self._background[command_id]
            ended += 1
        return ended

    def stop_background(self) -> int:
        """End every background call (the ``commands`` job stops: the station stops, or the
        job restarts) and refuse each command as interrupted; when that answer cannot be
        written (the database going away) the command stays ``running`` and is refused at
        the next start (:meth:`recover`). Returns how many were ended."""
        stopped = 0
        for command_id, (command, call, answer) in list(self._background.items()):
            log.warning("command %s %s cut by a stop of the commands job", command_id, command)
            try:
                call.cancel()
            except Exception:
                log.exception("ending command %s %s failed", command_id, command)
            del self._background[command_id]
            try:
                answer(
                    "refused",
                    "interrupted: the commands job stopped before it ended; send it again",
                    {"interrupted": True},
                )
            except Exception:
                log.exception("command %s %s: refused at the next start", command_id, command)
            stopped += 1
        return stopped

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
            details = handler(args, answer, row.id)
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

    def _do_ping(self, args: Any, answer: Answer, command_id: str) -> dict[str, Any]:
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

    def _do_start(self, args: JobArgs, answer: Answer, command_id: str) -> dict[str, Any]:
        return self._job("start", args)

    def _do_stop(self, args: JobArgs, answer: Answer, command_id: str) -> dict[str, Any]:
        return self._job("stop", args)

    def _do_restart(self, args: JobArgs, answer: Answer, command_id: str) -> dict[str, Any]:
        return self._job("restart", args)

    def _pin(self, args: PinArgs, pinned: bool) -> dict[str, Any]:
        from fieldstation.store.retention import RecordingNotFoundError, set_pinned

        try:
            with self.db.session() as session:
                set_pinned(session, args.recording_id, pinned)
        except RecordingNotFoundError as error:
            raise CommandRefusedError(str(error)) from None
        return {"recording_id": args.recording_id, "pinned": pinned}

    def _do_pin(self, args: PinArgs, answer: Answer, command_id: str) -> dict[str, Any]:
        return self._pin(args, True)

    def _do_unpin(self, args: PinArgs, answer: Answer, command_id: str) -> dict[str, Any]:
        return self._pin(args, False)

    def _do_reprocess(self, args: ReprocessArgs, answer: Answer, command_id: str) -> dict[str, Any]:
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
        starter = self.starter
        if starter is None:
            from fieldstation.runtime.forkserver import start_call

            starter = start_call
        call = starter(reprocess_in_child, config_data(config), args.model, since)
        self._background[command_id] = ("reprocess", call, answer)
        log.info("command %s reprocess started in the background", command_id)
        return LATER

    def _end_reprocess(self, result: dict[str, Any], answer: Answer) -> None:
        if result.get("failed"):
            answer("refused", f"{result['failed']} recording(s) failed", result)
        else:
            answer("done", None, result)

    def _do_set_config(
        self, args: SetConfigArgs, answer: Answer, command_id: str
    ) -> dict[str, Any]:
        apply = _optional("fieldstation.commands.config_apply", "apply_remote_config")
        apply(self.station, args, answer)
        return LATER

    def _do_upload(self, args: UploadArgs, answer: Answer, command_id: str) -> dict[str, Any]:
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
