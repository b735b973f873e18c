"""Delivery: moves pending outbox rows to their destinations, at least once, one worker per output.

:class:`DeliveryLoop` is the station's one deliverer (an ``flock`` on ``run/outbox.lock`` makes
a second one fail with :class:`OutboxBusyError`) and the owner of one :class:`OutputWorker` per
enabled output (decision 0048, superseding 0041's single loop). :meth:`DeliveryLoop.run` starts
each worker in its own thread, does the shared housekeeping itself (every
``housekeeping_interval``: dead-letter messages older than ``outbox.max_age``, apply the byte
cap, hourly delete old settled messages), and when told to stop, or when a worker fails, stops
every worker, waits for all of them and closes their messengers: no worker outlives its owner
(structured concurrency). So an output that stalls (an HTTP endpoint that accepts and never
answers, a broker that never sends PUBACK) holds up only its own queue.

A worker takes the head of its destination's queue (priority, then id; see
``store.outbox.next_batch``), hands it to the output's messenger and settles every result in one
transaction: ``sent``; ``retry`` with exponential backoff and equal jitter
(:func:`fieldstation.backoff.backoff_delay`, counted from the rows' stored attempts) stored in
``next_attempt_at`` (so it survives restarts); or ``dead`` with the reason. A messenger whose
factory fails is retried with the worker's own :class:`~fieldstation.backoff.Backoff`.

The network gate applies per output: an output whose messenger needs the network (MQTT, HTTP;
``needs_network``, see :mod:`fieldstation.outbox.messenger`) gets no attempt while
``network_up(output)`` is False; a local one (the file messenger) is delivered to regardless.
``network_up`` is typically :meth:`~fieldstation.health.network.NetworkMonitor.is_up_for`,
which judges each output by its own probe target. When the gate opens again after being shut,
the worker calls the messenger's optional ``network_back()`` (MQTT reconnects at once instead
of waiting out paho's reconnect backoff).

Liveness (decision 0048's amendment): the supervisor judges the outbox job by the owner's
touches of its stop event (decision 0064), and the workers run on their own event. So each
worker records what its current turn is (``busy`` since the start of its batch, or ``waiting``
between passes; :attr:`OutputWorker.turn`, monotonic seconds of the injected clock), and the
owner checks every worker each turn: one busy in a single batch for longer than its
``stuck_after`` is stuck. The owner then logs an ERROR naming the output, records an
``output_stuck`` event, and stops touching ``stop`` (it still notices it) while any worker is
stuck, so after the job's thread liveness limit the supervisor marks the outbox job ``hung``
and the watchdog starves: systemd restarts the station, the only cure for a thread blocked in
a call. An output that moves again is logged and recorded (``output_moving``), and the owner
touches ``stop`` again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from fieldstation.backoff import Backoff, backoff_delay
from fieldstation.clock import Clock
from fieldstation.config import StationConfig
from fieldstation.config.outputs import OutputConfig
from fieldstation.home import StationHome
from fieldstation.job import StopEvent
from fieldstation.outbox.messenger import Messenger, OutgoingMessage, Result, needs_network
from fieldstation.store import Database
from fieldstation.store import outbox as store
from fieldstation.store.events import EventBacklog, Severity
from fieldstation.store.models import Event

__all__ = [
    "DeliveryLoop",
    "OutboxBusyError",
    "OutputWorker",
    "default_stuck_after",
    "stuck_outputs",
]

log = logging.getLogger(__name__)

Progress = Callable[[str, dict[str, Any]], None]
NetworkUp = Callable[[OutputConfig], bool]
_PURGE_INTERVAL = 3600.0
"""Seconds between deletions of old settled messages."""
BUSY = "busy"
WAITING = "waiting"
"""What a worker's current turn is (:attr:`OutputWorker.turn`)."""
_TIMEOUT_FIELDS = ("timeout", "connect_timeout", "ack_timeout")
STUCK_FACTOR = 4.0
STUCK_MIN = 60.0
STUCK_MAX = 300.0
"""Default ``stuck_after`` of an output: ``STUCK_FACTOR`` x the sum of its timeouts (HTTP
``timeout``; MQTT ``connect_timeout`` + ``ack_timeout``), within [``STUCK_MIN``,
``STUCK_MAX``] seconds: well under the outbox job's thread liveness limit (900 s)."""


def default_stuck_after(output: OutputConfig) -> float:
    """Seconds one batch of ``output`` may take before its worker counts as stuck (see
    :data:`STUCK_FACTOR`)."""
    timeouts = sum(float(getattr(output, name, 0.0) or 0.0) for name in _TIMEOUT_FIELDS)
    return min(STUCK_MAX, max(STUCK_MIN, STUCK_FACTOR * timeouts))


STUCK_EVENT = "output_stuck"
MOVING_EVENT = "output_moving"
"""Event kinds: a worker became stuck / its output moves again (data ``destination``)."""


def stuck_outputs(session: Session, scan: int = 1000) -> dict[str, datetime]:
    """Outputs stuck as of the events: {destination: when it was found stuck}, for each whose
    newest ``output_stuck`` event (among the newest ``scan`` of both kinds) has no
    ``output_moving`` after it. Read by ``outbox status``."""
    events = session.scalars(
        select(Event)
        .where(Event.kind.in_((STUCK_EVENT, MOVING_EVENT)))
        .order_by(Event.id.desc())
        .limit(scan)
    ).all()
    stuck: dict[str, datetime] = {}
    seen: set[str] = set()
    for event in events:  # newest first: the first event of a destination decides
        name = str((event.data or {}).get("destination", ""))
        if name and name not in seen:
            seen.add(name)
            if event.kind == STUCK_EVENT:
                stuck[name] = event.created_at
    return stuck


class OutboxBusyError(RuntimeError):
    """Another delivery loop already runs for this station home (it holds run/outbox.lock)."""


class OutputWorker:
    """Delivers the queue of one output (destination); owned and run by :class:`DeliveryLoop`.

    ``output``: the output's config; ``messenger``: an already built messenger (tests, custom
    wiring), else the output's plugin builds it on first use; ``network_up``, ``rng``,
    ``report`` and ``poll_interval`` as for :class:`DeliveryLoop`. One thread calls a worker
    (its :meth:`run`, or the owner's :meth:`DeliveryLoop.run_once`); workers share nothing but
    the database, where each settles only its own destination's rows. ``stuck_after``:
    seconds one batch may take before the owner counts the worker stuck (default
    :func:`default_stuck_after`).
    """

    def __init__(
        self,
        output: OutputConfig,
        *,
        config: StationConfig,
        db: Database,
        clock: Clock,
        home: StationHome,
        network_up: NetworkUp | None = None,
        messenger: Messenger | None = None,
        rng: random.Random | None = None,
        report: Progress | None = None,
        poll_interval: float = 1.0,
        stuck_after: float | None = None,
        commands: Any = None,
    ) -> None:
        self.output = output
        self.commands = commands
        """The station's command inbox, handed to the messenger's factory (MQTT subscribes)."""
        self.name = output.name
        self.config = config
        self.db = db
        self.clock = clock
        self.home = home
        self.network_up = network_up
        self.rng = rng or random.Random()
        self._report = report
        self.poll_interval = poll_interval
        self._messenger = messenger
        outbox = config.outbox
        self._factory_backoff = Backoff(
            outbox.backoff_initial, outbox.backoff_max, jitter=self.rng.random
        )
        self._unavailable_until: float | None = None
        self._unavailable_error = ""
        self._gate_was_up: bool | None = None
        self.next_due: datetime | None = None
        """When this output's queue head is next due, as of the last pass (None: nothing)."""
        self.stuck_after = default_stuck_after(output) if stuck_after is None else stuck_after
        self.turn: tuple[str, float] = (WAITING, clock.monotonic())
        """(``busy`` | ``waiting``, since monotonic seconds): busy from the start of each batch,
        waiting between passes. One attribute, swapped whole (read by the owner's thread)."""
        self.wake = threading.Event()
        """Set by :meth:`nudge`: the wait between passes ends at once (new messages)."""
        self._nudgeable = False  # True while run() waits on ``wake`` (linked to its stop)

    def nudge(self) -> None:
        """New messages were committed: make the next pass now, not after ``poll_interval``
        (a pass already running is followed by another at once). Safe from any thread."""
        self.wake.set()

    def busy_for(self, now: float) -> float | None:
        """Seconds the worker has been busy in its current batch at monotonic ``now``; None
        while it waits between passes."""
        what, since = self.turn
        return now - since if what == BUSY else None

    @property
    def messenger(self) -> Messenger | None:
        """The output's messenger once built (None before the first batch, after a failed
        factory call and after :meth:`close`)."""
        return self._messenger

    # one pass --------------------------------------------------------------------------------
    def run_once(self, stop: threading.Event | None = None) -> int:
        """Batches until nothing is due, a batch is not fully sent, the gate shuts or ``stop``.

        Returns the number of messages delivered (acknowledged) in this pass.
        """
        self.next_due = None
        delivered = 0
        while not (stop is not None and stop.is_set()) and self.reachable():
            sent, more = self._deliver_batch()
            delivered += sent
            if not more:
                break
        return delivered

    def reachable(self) -> bool:
        """False when the output needs the network and ``network_up(output)`` says it is down.

        When the gate opens after being shut, the messenger's optional ``network_back()`` is
        called first (MQTT reconnects at once).
        """
        if self.network_up is None:
            return True
        if not needs_network(self._messenger if self._messenger is not None else self.output):
            return True
        up = bool(self.network_up(self.output))
        if up and self._gate_was_up is False and self._messenger is not None:
            back = getattr(self._messenger, "network_back", None)
            if back is not None:
                try:
                    back()
                except Exception:  # a failed nudge only leaves the messenger's own retry
                    log.exception("output %r: network_back() failed", self.name)
        self._gate_was_up = up
        return up

    # running ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set, then make one final pass (messages committed during
        shutdown go out now). Waits on the clock between passes: until the queue head is due,
        at most ``poll_interval`` (messages written by other processes). A database error of
        one pass (``OperationalError``, e.g. locked past the busy timeout) is logged and the
        pass retried after ``poll_interval``; other errors propagate to the owner."""
        self.turn = (BUSY, self.clock.monotonic())
        linked = getattr(stop, "linked", None)  # a StopEvent: setting it sets ``wake`` too
        if isinstance(linked, list) and self.wake not in linked:
            linked.append(self.wake)
            self._nudgeable = True
        while not stop.is_set():
            self.wake.clear()  # before the pass: a nudge during it makes another pass at once
            try:
                delivered = self.run_once(stop)
            except OperationalError as error:
                log.warning(
                    "output %r: outbox pass failed, retrying in %.0f s: %s",
                    self.name,
                    self.poll_interval,
                    error,
                )
                self._wait(stop, self.poll_interval)
                continue
            if delivered or stop.is_set():
                continue
            due = self.next_due
            self._progress(
                "idle", {"destination": self.name, "next_due": due.isoformat() if due else None}
            )
            wait = self.poll_interval
            if due is not None:
                wait = min(wait, max(0.0, (due - self.clock.now()).total_seconds()))
            self._wait(stop, max(wait, 0.01))
        self._final_pass()

    def _wait(self, stop: threading.Event, seconds: float) -> None:
        """Wait ``seconds`` between passes; a :meth:`nudge` (or the stop) ends it at once when
        ``stop`` is a :class:`~fieldstation.job.StopEvent` (whose ``set`` sets ``wake``)."""
        self.turn = (WAITING, self.clock.monotonic())
        try:
            if self._nudgeable:
                self.clock.wait(self.wake, seconds)
            else:
                self.clock.wait(stop, seconds)
        finally:
            self.turn = (BUSY, self.clock.monotonic())

    def _final_pass(self) -> None:
        """One last pass when stopping; failures only leave messages pending for the next
        start (nothing is lost); an output that needs the network is skipped while it is down."""
        try:
            delivered = self.run_once(None)
        except Exception as error:  # noqa: BLE001 - the messages stay pending either way
            log.info("output %r: final outbox pass at stop did not finish: %s", self.name, error)
        else:
            if delivered:
                log.info(
                    "output %r: final outbox pass at stop delivered %d message(s)",
                    self.name,
                    delivered,
                )

    def close(self) -> None:
        """Close the messenger (MQTT says ``offline``); the worker is not used again."""
        messenger, self._messenger = self._messenger, None
        if messenger is not None:
            messenger.close()

    # one batch -------------------------------------------------------------------------------
    def _messenger_or_none(self) -> Messenger | None:
        """The output's messenger, built on first use; None while its factory keeps failing
        (retried after the worker's own backoff)."""
        if self._messenger is not None:
            return self._messenger
        mono = self.clock.monotonic()
        if self._unavailable_until is not None and mono < self._unavailable_until:
            return None
        from fieldstation.config.plugins import load_plugin

        try:
            plugin = load_plugin("messengers", self.output.kind)
            messenger = plugin.factory(
                self.output,
                station_id=self.config.station.id,
                home=self.home,
                clock=self.clock,
                batch_size=self.config.outbox.batch_size,
                commands=self.commands,
            )
        except Exception as error:
            delay = self._factory_backoff.next_delay()
            self._unavailable_until = mono + delay
            self._unavailable_error = repr(error)
            log.error("output %r is unavailable (retry in %.0f s): %s", self.name, delay, error)
            return None
        self._factory_backoff.reset()
        self._unavailable_until = None
        self._messenger = messenger
        return messenger

    def _deliver_batch(self) -> tuple[int, bool]:
        """Send the due head of the queue. Returns (sent, worth another batch now)."""
        self.turn = (BUSY, self.clock.monotonic())  # a new turn: the owner times each batch
        messenger = self._messenger_or_none()
        now = self.clock.now()
        with self.db.session() as session:
            rows, next_due = store.next_batch(
                session, self.name, now=now, limit=self.config.outbox.batch_size
            )
        if not rows:
            self._note_due(next_due)
            return 0, False
        batch = [
            OutgoingMessage(
                r.delivery_id, r.message_id, r.kind, r.priority, r.payload, r.created_at, r.attempts
            )
            for r in rows
        ]
        if messenger is None:  # the factory failed: say why on the messages it holds back
            results = [Result.retry(f"output unavailable: {self._unavailable_error}")] * len(batch)
        else:
            results = self._send(messenger, batch)
        sent, retried, dead = self._settle(batch, results)
        self._progress(
            "delivered", {"destination": self.name, "sent": sent, "retry": retried, "dead": dead}
        )
        return sent, retried == 0

    def _note_due(self, due: datetime | None) -> None:
        if due is not None and (self.next_due is None or due < self.next_due):
            self.next_due = due

    def _send(self, messenger: Messenger, batch: Sequence[OutgoingMessage]) -> list[Result]:
        try:
            results = list(messenger.send(batch))
        except Exception as error:
            log.exception("messenger of output %r raised; the batch will be retried", self.name)
            return [Result.retry(f"messenger raised {error!r}")] * len(batch)
        if len(results) != len(batch):
            problem = f"messenger returned {len(results)} results for {len(batch)} messages"
            log.error("output %r: %s", self.name, problem)
            return [Result.retry(problem)] * len(batch)
        return results

    def _settle(
        self, batch: Sequence[OutgoingMessage], results: Sequence[Result]
    ) -> tuple[int, int, int]:
        now = self.clock.now()
        pairs = list(zip(batch, results, strict=True))
        sent = [m.delivery_id for m, r in pairs if r.outcome == "sent"]
        retry = [(m, r) for m, r in pairs if r.outcome == "retry"]
        reject = [(m, r) for m, r in pairs if r.outcome == "reject"]
        outbox = self.config.outbox
        with self.db.session() as session:
            store.mark_sent(session, sent, now=now)
            if retry:
                attempts = max(m.attempts for m, _ in retry) + 1
                delay = backoff_delay(
                    attempts, outbox.backoff_initial, outbox.backoff_max, self.rng.random()
                )
                hinted = [r.retry_after for _, r in retry if r.retry_after is not None]
                if hinted:
                    delay = max(delay, min(max(hinted), outbox.backoff_max))
                due = now + timedelta(seconds=delay)
                error = retry[0][1].error or "retry"
                store.mark_retry(
                    session, [m.delivery_id for m, _ in retry], next_attempt_at=due, error=error
                )
                self._note_due(due)
                log.info(
                    "output %r: %d messages to retry in %.1f s: %s",
                    self.name,
                    len(retry),
                    delay,
                    error,
                )
            by_reason: dict[str, list[int]] = {}
            for message, result in reject:
                by_reason.setdefault(result.error or "rejected", []).append(message.delivery_id)
            for reason, ids in by_reason.items():
                store.mark_dead(session, ids, reason=reason)
                log.warning("output %r: %d messages dead-lettered: %s", self.name, len(ids), reason)
        return len(sent), len(retry), len(reject)

    def _progress(self, what: str, details: dict[str, Any]) -> None:
        if self._report is not None:
            self._report(what, details)


class DeliveryLoop:
    """The station's deliverer: owns one :class:`OutputWorker` per enabled output (see the
    module docstring).

    ``config``: the station; ``db``: its database; ``clock``: all waits and times;
    ``home``: the station home (lock file, file outputs); ``network_up(output)``: when given
    and it returns False, no attempt is made on that output if it needs the network (e.g.
    ``NetworkMonitor.is_up_for``). ``messengers`` replaces the plugin-built messenger of
    the named outputs (tests, custom wiring); ``rng`` draws the jitter; ``progress`` receives
    ``("delivered", {destination, sent, retry, dead})`` per batch and ``("idle",
    {"destination", "next_due": iso or None})`` when a worker waits (called from the workers'
    threads, one call at a time); ``poll_interval`` is how often (seconds) an idle worker looks
    for messages written by other processes; every ``housekeeping_interval`` seconds the owner
    dead-letters expired messages and applies the byte cap, and hourly it deletes messages
    settled (sent or dropped everywhere) more than ``keep_settled`` seconds ago.
    ``stuck_after``: seconds one batch of a worker may take before it counts as stuck (None:
    each output's :func:`default_stuck_after`); while a worker is stuck, :meth:`run` stops
    touching its stop event (see the module docstring) and :attr:`stuck` names it.
    ``commands``: the station's :class:`~fieldstation.commands.inbox.CommandInbox` (None: no
    fleet commands), given to each messenger's factory (the MQTT output subscribes to the
    station's command topic).
    """

    def __init__(
        self,
        config: StationConfig,
        db: Database,
        clock: Clock,
        home: StationHome,
        network_up: NetworkUp | None = None,
        *,
        messengers: Mapping[str, Messenger] | None = None,
        rng: random.Random | None = None,
        progress: Progress | None = None,
        poll_interval: float = 1.0,
        housekeeping_interval: float = 10.0,
        keep_settled: float = 7 * 86400.0,
        stuck_after: float | None = None,
        commands: Any = None,
    ) -> None:
        self.config = config
        self.db = db
        self.clock = clock
        self.home = home
        self.network_up = network_up
        self.rng = rng or random.Random()
        self.progress = progress
        self.poll_interval = poll_interval
        self.housekeeping_interval = housekeeping_interval
        self.keep_settled = keep_settled
        self._progress_lock = threading.Lock()
        self._events = EventBacklog(
            db,
            station_id=config.station.id,
            destinations=config.destinations_for("event"),
        )
        self._last_purge: float | None = None
        self._last_housekeeping: float | None = None
        self._lock_fd: int | None = None
        injected = dict(messengers or {})
        self.workers: dict[str, OutputWorker] = {
            output.name: OutputWorker(
                output,
                config=config,
                db=db,
                clock=clock,
                home=home,
                network_up=network_up,
                messenger=injected.get(output.name),
                rng=self.rng,
                report=self._report,
                poll_interval=poll_interval,
                stuck_after=stuck_after,
                commands=commands,
            )
            for output in config.outputs
            if output.enabled
        }
        """One worker per enabled output, by output name."""
        self._closing = [m for n, m in injected.items() if n not in self.workers]
        self.next_due: datetime | None = None
        """Earliest time a pending message becomes due, as of the last :meth:`run_once`."""
        self.stuck: dict[str, float] = {}
        """Outputs whose worker is stuck, with the monotonic time its stuck batch began."""

    # lifecycle -------------------------------------------------------------------------------
    def _acquire(self) -> None:
        if self._lock_fd is not None:
            return
        path = self.home.run / "outbox.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutboxBusyError(
                f"another delivery loop (pid {holder}) holds {path}; run one per station"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def close(self) -> None:
        """Close every worker's messenger (MQTT says ``offline``) and release the lock."""
        for name, worker in self.workers.items():
            try:
                worker.close()
            except Exception:  # closing must go on for the others
                log.exception("closing the messenger of output %r failed", name)
        for messenger in self._closing:
            messenger.close()
        self._closing = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> DeliveryLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # running ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; then stop the workers, wait for them, close.

        Each worker runs :meth:`OutputWorker.run` in its own thread (named
        ``outbox-<output>``) and makes its own final pass. This thread does the housekeeping
        (an ``OperationalError`` there is logged and retried at the next turn). When a worker
        fails with an unexpected error, the others are stopped and awaited too, and the error
        is raised here (the supervisor restarts the job). :class:`OutboxBusyError` propagates.
        While a worker is stuck (busy in one batch longer than its ``stuck_after``), this thread
        keeps turning but no longer touches ``stop`` (it reads the flag without counting as a
        turn), so the supervisor judges the job hung (decisions 0048, 0064).
        """
        try:
            self._acquire()
            halt = StopEvent()  # stops the workers and ends their waits (wake is linked)
            failures: list[BaseException] = []
            threads = [
                threading.Thread(
                    target=self._guarded,
                    args=(worker, halt, failures),
                    name=f"outbox-{name}",
                    # joined below like any child; daemon only so that a worker stuck in a
                    # request (up to its timeout) never holds up the exit of a process whose
                    # supervisor already gave up waiting (its thread jobs are daemons too)
                    daemon=True,
                )
                for name, worker in self.workers.items()
            ]
            self._end_stuck_episodes()
            try:  # before the first batch: nothing expired or over the cap goes out
                self._housekeeping()
            except OperationalError as error:
                log.warning("outbox housekeeping failed, retrying later: %s", error)
            for thread in threads:
                thread.start()
            turn = min(self.poll_interval, self.housekeeping_interval)
            try:
                while not halt.is_set():
                    try:
                        self._housekeeping()
                    except OperationalError as error:
                        log.warning("outbox housekeeping failed, retrying later: %s", error)
                    if self._check_workers():
                        # a worker is stuck: no touch of ``stop``, so the job stops turning
                        # for the supervisor; plain Event.is_set reads the flag untouched
                        if threading.Event.is_set(stop):
                            break
                        self.clock.wait(halt, turn)
                    elif self.clock.wait(stop, turn):
                        break
            finally:
                halt.set()
                for thread in threads:
                    thread.join()
            if failures:
                raise failures[0]
        finally:
            self.close()

    def nudge(self) -> None:
        """New messages were committed (a chunk, detections, readings): every output's
        worker makes its next pass now instead of after ``poll_interval``; the poll remains
        the fallback for messages nobody announced. Safe from any thread."""
        for worker in self.workers.values():
            worker.nudge()

    def _check_workers(self) -> bool:
        """Note workers that became stuck or move again (log, event, progress); True while any
        worker is stuck."""
        now = self.clock.monotonic()
        for name, worker in self.workers.items():
            busy = worker.busy_for(now)
            if busy is not None and busy > worker.stuck_after:
                if name not in self.stuck:
                    self.stuck[name] = now - busy
                    message = (
                        f"output {name!r} is stuck: busy in one delivery for {busy:.0f} s "
                        f"(limit {worker.stuck_after:.0f} s); the outbox job stops turning, so "
                        "the supervisor marks it hung and the station is restarted"
                    )
                    log.error("%s", message)
                    data = {"busy_s": round(busy, 1), "limit_s": worker.stuck_after}
                    self._event(STUCK_EVENT, message, "error", name, data)
                    self._report("stuck", {"destination": name, "busy_s": busy})
            elif name in self.stuck:
                took = now - self.stuck.pop(name)
                message = f"output {name!r} moves again after {took:.0f} s in one delivery"
                log.warning("%s", message)
                self._event(MOVING_EVENT, message, "info", name, {"busy_s": round(took, 1)})
                self._report("moving", {"destination": name, "busy_s": took})
        return bool(self.stuck)

    def _end_stuck_episodes(self) -> None:
        """A new loop starts each output's worker afresh: outputs that an earlier loop (an
        earlier process) left stuck get an ``output_moving`` event, so ``outbox status`` no
        longer shows them stuck."""
        try:
            with self.db.session() as session:
                left = stuck_outputs(session)
        except OperationalError as error:
            log.warning("could not read the outbox's stuck outputs: %s", error)
            return
        for name, since in sorted(left.items()):
            message = f"output {name!r} restarted after it was stuck (found stuck at {since})"
            log.warning("%s", message)
            self._event(MOVING_EVENT, message, "info", name, {"restarted": True})

    def _event(
        self, kind: str, message: str, severity: Severity, name: str, data: dict[str, Any]
    ) -> None:
        """Record an outbox event (row + message to every enabled output) through the loop's
        :class:`~fieldstation.store.events.EventBacklog`: kept in memory while the database
        refuses writes, written at the next event or housekeeping pass."""
        self._events.record(
            kind=kind,
            source="outbox",
            message=message,
            now=self.clock.now(),
            severity=severity,
            data={"destination": name, **data},
        )

    def _guarded(
        self, worker: OutputWorker, halt: threading.Event, failures: list[BaseException]
    ) -> None:
        """Run one worker; an unexpected error stops its siblings and is kept for the owner."""
        try:
            worker.run(halt)
        except BaseException as error:  # handed to the owner, which raises it
            log.exception("delivery worker of output %r failed", worker.name)
            failures.append(error)
            halt.set()

    def run_once(self) -> int:
        """One pass in the calling thread: housekeeping, then each worker's
        :meth:`OutputWorker.run_once` in turn (until nothing is due or a batch fails).

        Returns the number of messages delivered (acknowledged) in this pass.
        """
        self._acquire()
        self._housekeeping()
        delivered = 0
        due: list[datetime] = []
        for worker in self.workers.values():
            delivered += worker.run_once()
            if worker.next_due is not None:
                due.append(worker.next_due)
        self.next_due = min(due, default=None)
        return delivered

    def _housekeeping(self) -> None:
        mono = self.clock.monotonic()
        if (
            self._last_housekeeping is not None
            and mono - self._last_housekeeping < self.housekeeping_interval
        ):
            return
        self._last_housekeeping = mono
        self._events.flush()
        outbox = self.config.outbox
        with self.db.session() as session:
            expired = store.expire(session, now=self.clock.now(), max_age=outbox.max_age)
            dropped = store.enforce_cap(session, store.OutboxCap.of(outbox))
        if self._last_purge is None or mono - self._last_purge >= _PURGE_INTERVAL:
            self._last_purge = mono
            before = self.clock.now() - timedelta(seconds=self.keep_settled)
            with self.db.session() as session:
                purged = store.purge_settled(session, before=before)
            if purged:
                log.info("outbox: %d settled messages older than %s deleted", purged, before)
        if expired:
            log.warning("outbox: %d deliveries older than max_age dead-lettered", expired)
        if dropped:
            log.warning("outbox: byte cap: %d low-priority messages dropped", dropped)

    def _report(self, what: str, details: dict[str, Any]) -> None:
        if self.progress is not None:
            with self._progress_lock:
                self.progress(what, details)
