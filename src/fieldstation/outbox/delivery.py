"""The delivery loop: moves pending outbox rows to their destinations, at least once.

One loop per station (an ``flock`` on ``run/outbox.lock`` makes a second one fail with
:class:`OutboxBusyError`). Each pass: dead-letter messages older than ``outbox.max_age``,
apply the byte cap (``drop_oldest``), then, round-robin over the enabled outputs, take the
head of each destination's queue (priority, then id; see ``store.outbox.next_batch``), hand
it to the output's messenger and settle every result in one transaction: ``sent``; ``retry``
with exponential backoff and jitter stored in ``next_attempt_at`` (so it survives restarts);
or ``dead`` with the reason.

The network gate applies per output: an output whose messenger needs the network (MQTT, HTTP;
``needs_network``, see :mod:`fieldstation.outbox.messenger`) gets no attempt while the network
is down; a local one (the file messenger) is delivered to regardless. ``network_up(output)``
answers per output: a :class:`~fieldstation.health.network.NetworkMonitor`'s ``is_up_for``
judges each by its own probe target (its broker or endpoint), so one unreachable broker does
not hold back a reachable HTTP endpoint.
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

from sqlalchemy.exc import OperationalError

from fieldstation.clock import Clock
from fieldstation.config import StationConfig
from fieldstation.config.outputs import OutputConfig
from fieldstation.home import StationHome
from fieldstation.outbox.messenger import Messenger, OutgoingMessage, Result, needs_network
from fieldstation.store import Database
from fieldstation.store import outbox as store

__all__ = ["DeliveryLoop", "OutboxBusyError", "backoff_delay"]

log = logging.getLogger(__name__)

Progress = Callable[[str, dict[str, Any]], None]
_PURGE_INTERVAL = 3600.0
"""Seconds between deletions of old settled messages."""


class OutboxBusyError(RuntimeError):
    """Another delivery loop already runs for this station home (it holds run/outbox.lock)."""


def backoff_delay(attempts: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failure (attempts >= 1).

    Exponential backoff with "equal jitter" (AWS Architecture Blog, "Exponential Backoff And
    Jitter", 2015): ``base = min(maximum, initial * 2**(attempts-1))``, delay drawn uniformly
    from ``[base/2, base]``, then clamped to ``[initial, maximum]``.
    """
    base = min(maximum, initial * 2 ** min(max(0, attempts - 1), 60))
    return max(initial, min(maximum, rng.uniform(base / 2, base)))


class DeliveryLoop:
    """Delivers the station's outbox to every enabled output (see the module docstring).

    ``config``: the station; ``db``: its database; ``clock``: all waits and times;
    ``home``: the station home (lock file, file outputs); ``network_up(output)``: when given
    and it returns False, no attempt is made on that output if it needs the network (e.g.
    ``NetworkMonitor.is_up_for``). ``messengers`` replaces the plugin-built messenger of
    the named outputs (tests, custom wiring); ``rng`` draws the jitter; ``progress`` receives
    ``("delivered", {destination, sent, retry, dead})`` per batch and ``("idle", {"next_due":
    iso or None})`` when waiting; ``poll_interval`` is how often (seconds) an idle loop looks
    for messages written by other processes; every ``housekeeping_interval`` seconds it
    dead-letters expired messages and applies the byte cap, and hourly it deletes messages
    settled (sent or dropped everywhere) more than ``keep_settled`` seconds ago.
    """

    def __init__(
        self,
        config: StationConfig,
        db: Database,
        clock: Clock,
        home: StationHome,
        network_up: Callable[[OutputConfig], bool] | None = None,
        *,
        messengers: Mapping[str, Messenger] | None = None,
        rng: random.Random | None = None,
        progress: Progress | None = None,
        poll_interval: float = 1.0,
        housekeeping_interval: float = 10.0,
        keep_settled: float = 7 * 86400.0,
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
        self._last_purge: float | None = None
        self._messengers: dict[str, Messenger] = dict(messengers or {})
        self._injected = set(self._messengers)
        self._unavailable: dict[str, tuple[float, int, str]] = {}
        self._lock_fd: int | None = None
        self._last_housekeeping: float | None = None
        self.next_due: datetime | None = None
        """Earliest time a pending message becomes due, as of the last pass (None: none)."""

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
        """Close every messenger (MQTT says ``offline``) and release the lock."""
        for name, messenger in list(self._messengers.items()):
            try:
                messenger.close()
            except Exception:  # closing must go on for the others
                log.exception("closing the messenger of output %r failed", name)
        self._messengers.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> DeliveryLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # running ---------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; then close. Waits on the clock between passes.

        A database error of one pass (``OperationalError``, e.g. locked past the busy timeout)
        is logged and the pass retried after ``poll_interval``; :class:`OutboxBusyError` and
        other errors propagate (the supervisor restarts the job).
        """
        try:
            while not stop.is_set():
                try:
                    delivered = self._pass(stop)
                except OperationalError as error:  # e.g. database locked past the busy timeout
                    log.warning(
                        "outbox pass failed, retrying in %.0f s: %s", self.poll_interval, error
                    )
                    self.clock.wait(stop, self.poll_interval)
                    continue
                if delivered or stop.is_set():
                    continue
                self._report(
                    "idle", {"next_due": self.next_due.isoformat() if self.next_due else None}
                )
                wait = self.poll_interval
                if self.next_due is not None:
                    wait = min(wait, max(0.0, (self.next_due - self.clock.now()).total_seconds()))
                self.clock.wait(stop, max(wait, 0.01))
            self._final_pass()
        finally:
            self.close()

    def _final_pass(self) -> None:
        """One last pass when stopping, so messages committed during shutdown go out now.

        Failures only leave messages pending for the next start (nothing is lost); outputs
        that need the network are skipped while it is down.
        """
        try:
            delivered = self._pass(None)
        except Exception as error:  # noqa: BLE001 - the messages stay pending either way
            log.info("final outbox pass at stop did not finish: %s", error)
        else:
            if delivered:
                log.info("final outbox pass at stop delivered %d message(s)", delivered)

    def run_once(self) -> int:
        """One pass: housekeeping, then batches until nothing is due or a destination fails.

        Returns the number of messages delivered (acknowledged) in this pass.
        """
        return self._pass(None)

    def _pass(self, stop: threading.Event | None) -> int:
        self._acquire()
        self._housekeeping()
        self.next_due = None
        active = {o.name: o for o in self.config.outputs if o.enabled and self._reachable(o)}
        delivered = 0
        while active and not (stop is not None and stop.is_set()):
            for name, output in list(active.items()):
                sent, more = self._deliver_batch(output)
                delivered += sent
                if not more or not self._reachable(output):
                    del active[name]
        return delivered

    def _reachable(self, output: OutputConfig) -> bool:
        """False when ``output`` needs the network and the network (its target) is down."""
        if self.network_up is None:
            return True
        messenger = self._messengers.get(output.name)
        if not needs_network(messenger if messenger is not None else output):
            return True
        return bool(self.network_up(output))

    def _housekeeping(self) -> None:
        mono = self.clock.monotonic()
        if (
            self._last_housekeeping is not None
            and mono - self._last_housekeeping < self.housekeeping_interval
        ):
            return
        self._last_housekeeping = mono
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

    def _messenger(self, output: OutputConfig) -> Messenger | None:
        """The output's messenger, built on first use; None while its factory keeps failing."""
        if output.name in self._messengers:
            return self._messengers[output.name]
        mono = self.clock.monotonic()
        until, failures, _ = self._unavailable.get(output.name, (0.0, 0, ""))
        if mono < until:
            return None
        from fieldstation.config.plugins import load_plugin

        try:
            plugin = load_plugin("messengers", output.kind)
            messenger = plugin.factory(
                output,
                station_id=self.config.station.id,
                home=self.home,
                clock=self.clock,
                batch_size=self.config.outbox.batch_size,
            )
        except Exception as error:
            failures += 1
            delay = backoff_delay(
                failures,
                self.config.outbox.backoff_initial,
                self.config.outbox.backoff_max,
                self.rng,
            )
            self._unavailable[output.name] = (mono + delay, failures, repr(error))
            log.error("output %r is unavailable (retry in %.0f s): %s", output.name, delay, error)
            return None
        self._unavailable.pop(output.name, None)
        self._messengers[output.name] = messenger
        return messenger

    def _deliver_batch(self, output: OutputConfig) -> tuple[int, bool]:
        """Send the due head of ``output``'s queue. Returns (sent, worth another batch now)."""
        messenger = self._messenger(output)
        now = self.clock.now()
        with self.db.session() as session:
            rows, next_due = store.next_batch(
                session, output.name, now=now, limit=self.config.outbox.batch_size
            )
        if not rows:
            if next_due is not None and (self.next_due is None or next_due < self.next_due):
                self.next_due = next_due
            return 0, False
        batch = [
            OutgoingMessage(
                r.delivery_id, r.message_id, r.kind, r.priority, r.payload, r.created_at, r.attempts
            )
            for r in rows
        ]
        if messenger is None:  # the factory failed: say why on the messages it holds back
            _, _, error = self._unavailable[output.name]
            results = [Result.retry(f"output unavailable: {error}")] * len(batch)
        else:
            results = self._send(output.name, messenger, batch)
        sent, retried, dead = self._settle(output.name, batch, results)
        self._report(
            "delivered", {"destination": output.name, "sent": sent, "retry": retried, "dead": dead}
        )
        return sent, retried == 0

    def _send(
        self, name: str, messenger: Messenger, batch: Sequence[OutgoingMessage]
    ) -> list[Result]:
        try:
            results = list(messenger.send(batch))
        except Exception as error:
            log.exception("messenger of output %r raised; the batch will be retried", name)
            return [Result.retry(f"messenger raised {error!r}")] * len(batch)
        if len(results) != len(batch):
            problem = f"messenger returned {len(results)} results for {len(batch)} messages"
            log.error("output %r: %s", name, problem)
            return [Result.retry(problem)] * len(batch)
        return results

    def _settle(
        self, name: str, batch: Sequence[OutgoingMessage], results: Sequence[Result]
    ) -> tuple[int, int, int]:
        now = self.clock.now()
        sent = [m.delivery_id for m, r in zip(batch, results, strict=True) if r.outcome == "sent"]
        retry = [(m, r) for m, r in zip(batch, results, strict=True) if r.outcome == "retry"]
        reject = [(m, r) for m, r in zip(batch, results, strict=True) if r.outcome == "reject"]
        outbox = self.config.outbox
        with self.db.session() as session:
            store.mark_sent(session, sent, now=now)
            if retry:
                attempts = max(m.attempts for m, _ in retry) + 1
                delay = backoff_delay(
                    attempts, outbox.backoff_initial, outbox.backoff_max, self.rng
                )
                hinted = [r.retry_after for _, r in retry if r.retry_after is not None]
                if hinted:
                    delay = max(delay, min(max(hinted), outbox.backoff_max))
                due = now + timedelta(seconds=delay)
                error = retry[0][1].error or "retry"
                store.mark_retry(
                    session, [m.delivery_id for m, _ in retry], next_attempt_at=due, error=error
                )
                if self.next_due is None or due < self.next_due:
                    self.next_due = due
                log.info(
                    "output %r: %d messages to retry in %.1f s: %s", name, len(retry), delay, error
                )
            by_reason: dict[str, list[int]] = {}
            for message, result in reject:
                by_reason.setdefault(result.error or "rejected", []).append(message.delivery_id)
            for reason, ids in by_reason.items():
                store.mark_dead(session, ids, reason=reason)
                log.warning("output %r: %d messages dead-lettered: %s", name, len(ids), reason)
        return len(sent), len(retry), len(reject)

    def _report(self, what: str, details: dict[str, Any]) -> None:
        if self.progress is not None:
            self.progress(what, details)
