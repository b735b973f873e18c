"""Network monitor (omgrab's): DNS + TCP probes with hysteresis and backoff with jitter.

Targets are the outputs' brokers and endpoints (any output config with ``host``/``port`` or an
``http(s)`` ``url``) plus ``network.targets`` (``host:port``). One probe resolves each target's
host name (DNS) and opens a TCP connection to it; the probe succeeds when at least one target
answers. The state goes ``down`` after ``network.down_after`` consecutive failed probes and back
``up`` after ``network.up_after`` consecutive successes (hysteresis: one lost packet does not
flap the state). While down, probes back off with the station's one backoff rule
(:func:`fieldstation.backoff.backoff_delay`, exponential with "equal jitter"): after the n-th
probe while down, ``base = min(network.backoff_max, network.interval * 2**n)`` and the wait is
drawn uniformly from ``[base/2, base]``. Once a probe succeeds,
the next comes after ``interval`` again so recovery is confirmed quickly. With no target at all
the network counts as up. The outbox calls :meth:`NetworkMonitor.is_up` and makes no attempts on
outputs that need the network while it is False; with :meth:`NetworkMonitor.is_up_for` each
output waits on its own target, which has the same hysteresis (``down_after`` / ``up_after`` of
its own probes). Local outputs (the file messenger) never wait. State changes of the whole
network are recorded as events (``network_down`` / ``network_up``); those of single targets are
logged.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fieldstation.backoff import backoff_delay
from fieldstation.clock import Clock
from fieldstation.config import StationConfig
from fieldstation.store import Database

__all__ = ["NetworkMonitor", "ProbeResult", "Target", "TargetError", "target_of", "targets_of"]

log = logging.getLogger(__name__)


class TargetError(ValueError):
    """A network target is not ``host:port``."""


@dataclass(frozen=True)
class Target:
    """A TCP endpoint to probe."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Target:
        """``host:port`` or ``[v6addr]:port``; raises :class:`TargetError`."""
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise TargetError(
                f"network target {text!r} is not 'host:port' (e.g. 'example.org:443')"
            )
        return cls(host.strip("[]"), int(port))


@dataclass(frozen=True)
class ProbeResult:
    """One probe: did any target answer, and per target the error (None = reachable)."""

    ok: bool
    errors: dict[str, str | None]


def target_of(output: Any) -> Target | None:
    """The probe target of one output config: its ``host``/``port`` (default 1883) or the
    host and port of its ``http(s)`` ``url``; None for an output with neither (a file)."""
    host = getattr(output, "host", None)
    url = getattr(output, "url", None)
    if isinstance(host, str) and host:
        return Target(host, int(getattr(output, "port", None) or 1883))
    if isinstance(url, str) and url:
        parts = urlsplit(url)
        if parts.hostname:
            default = 443 if parts.scheme == "https" else 80
            return Target(parts.hostname, parts.port or default)
    return None


def targets_of(config: StationConfig) -> list[Target]:
    """Targets from enabled outputs (``host``/``port`` or ``url``) and ``network.targets``."""
    found = [t for o in config.outputs if o.enabled and (t := target_of(o)) is not None]
    found.extend(Target.parse(t) for t in config.network.targets)
    return list(dict.fromkeys(found))


@dataclass
class _Hysteresis:
    """Consecutive failures and successes of one target and its own up/down state."""

    up: bool = True
    failures: int = 0
    successes: int = 0


def tcp_probe(target: Target, timeout: float) -> str | None:
    """Resolve and connect to ``target``; None when reachable, else the error text."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as error:
        return f"dns: {error}"
    last = "no address"
    for family, kind, proto, _name, address in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                return None
        except OSError as error:
            last = f"tcp: {error}"
    return last


class NetworkMonitor:
    """Tracks whether the network is usable; see the module docstring for the rules.

    ``db`` (default: the station database of ``config``'s home, opened on the first state
    change) receives the state-change events. ``probe`` (default :func:`tcp_probe`) and ``rng``
    are injectable for tests. Thread-safe: ``is_up`` may be called from any thread.
    """

    def __init__(
        self,
        config: StationConfig,
        clock: Clock,
        targets: Sequence[Target | str] | None = None,
        *,
        db: Database | None = None,
        probe: Callable[[Target, float], str | None] = tcp_probe,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        if targets is None:
            self.targets = targets_of(config)
        else:
            self.targets = [t if isinstance(t, Target) else Target.parse(t) for t in targets]
        self._db = db
        self._probe = probe
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._up = True
        self.failures = 0
        """Consecutive failed probes."""
        self.successes = 0
        """Consecutive successful probes."""
        self._backoff_level = 0
        self.changes = 0
        """State changes so far."""
        self._per_target = {t: _Hysteresis() for t in self.targets}

    def is_up(self) -> bool:
        """The current state (True before the first probe: optimistic start)."""
        if not self.config.network.enabled:
            return True
        with self._lock:
            return self._up

    def is_up_for(self, output: Any) -> bool:
        """The state of ``output``'s own probe target (see :func:`target_of`), or the whole
        network's state (:meth:`is_up`) for an output with no target this monitor probes.

        Whether an output needs the network at all is its messenger's business (the delivery
        loop does not ask for a file output).
        """
        if not self.config.network.enabled:
            return True
        target = target_of(output)
        with self._lock:
            state = self._per_target.get(target) if target is not None else None
            return self._up if state is None else state.up

    def probe_once(self) -> ProbeResult:
        """Probe every target once, update the counters and the state; returns the result."""
        timeout = self.config.network.timeout
        errors = {str(t): self._probe(t, timeout) for t in self.targets}
        ok = not self.targets or any(e is None for e in errors.values())
        changed_to: bool | None = None
        net = self.config.network
        with self._lock:
            for target, state in self._per_target.items():
                if errors.get(str(target)) is None:
                    state.successes, state.failures = state.successes + 1, 0
                    if not state.up and state.successes >= net.up_after:
                        state.up = True
                        log.info("network target %s is up again", target)
                else:
                    state.failures, state.successes = state.failures + 1, 0
                    if state.up and state.failures >= net.down_after:
                        state.up = False
                        log.info("network target %s is down: %s", target, errors[str(target)])
            if ok:
                self.successes, self.failures = self.successes + 1, 0
                if not self._up and self.successes >= self.config.network.up_after:
                    self._up, changed_to = True, True
            else:
                self.failures, self.successes = self.failures + 1, 0
                if self._up and self.failures >= self.config.network.down_after:
                    self._up, changed_to = False, False
            if changed_to is not None:
                self.changes += 1
                self._backoff_level = 0
        if changed_to is not None:
            self._record_change(changed_to, errors)
        return ProbeResult(ok=ok, errors=errors)

    def next_delay(self, last_ok: bool) -> float:
        """Seconds until the next probe: ``interval`` while up or recovering, else exponential
        backoff with equal jitter, uniform in ``[base/2, base]`` (see the module docstring)."""
        net = self.config.network
        with self._lock:
            if self._up or last_ok:
                self._backoff_level = 0
                return net.interval
            self._backoff_level += 1
            level = self._backoff_level
        # the first wait while down is twice the interval: attempt n + 1 of the rule
        maximum = max(net.backoff_max, net.interval)
        return backoff_delay(level + 1, net.interval, maximum, self._rng.random())

    def run(self, stop: threading.Event) -> None:
        """Probe until ``stop`` is set (only waits for it when ``network.enabled`` is false)."""
        if not self.config.network.enabled:
            stop.wait()  # a supervised thread must not end before it is told to
            return
        while not stop.is_set():
            try:
                ok = self.probe_once().ok
            except Exception:
                log.exception("network probe failed")
                ok = False
            if self.clock.wait(stop, self.next_delay(ok)):
                break

    def _record_change(self, up: bool, errors: dict[str, str | None]) -> None:
        kind = "network_up" if up else "network_down"
        counts = self.config.network.up_after if up else self.config.network.down_after
        text = (
            f"network {'up' if up else 'down'} after {counts} "
            f"{'successful' if up else 'failed'} probe(s)"
        )
        log.warning(text) if not up else log.info(text)
        try:
            from fieldstation.store.events import record_event

            db = self._database()
            with db.session() as session:
                record_event(
                    session,
                    kind=kind,
                    source="network",
                    message=text,
                    now=self.clock.now(),
                    station_id=self.config.station.id,
                    destinations=self.config.destinations_for("event"),
                    severity="info" if up else "warning",
                    data={"targets": errors},
                )
        except Exception:
            log.exception("could not record the %s event", kind)

    def _database(self) -> Database:
        if self._db is None:
            from fieldstation.home import StationHome
            from fieldstation.store import open_database

            self._db = open_database(StationHome(self.config.home_path()).database, migrate=False)
        return self._db
