"""Wi-Fi provisioning through NetworkManager: when no known network has been joined for
``field.wifi.offline_after`` seconds (or on request: a long press, ``POST /wifi/setup``), the
station scans, starts a hotspot (``nmcli device wifi hotspot``) and serves a small page
(:mod:`.portal`) where one picks a network and types its password; the station then drops
the hotspot and joins it (``nmcli device wifi connect``). A failed join brings the hotspot
back with the error on the page; a hotspot nobody used for ``hotspot_timeout`` is dropped so
the known networks are tried again.

The scan is taken before the hotspot starts: a Raspberry Pi's single radio does not scan
while it is an access point. :class:`Provisioner` is a state machine stepped on an injected
clock (:meth:`Provisioner.step`), so the whole flow is tested on virtual time against the
fake ``nmcli`` (:mod:`fieldstation.testing.nmcli`).
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fieldstation.clock import Clock
from fieldstation.config.field import WifiConfig
from fieldstation.health.netlevel import parse_terse

__all__ = ["Network", "Nmcli", "NmcliError", "Provisioner", "WifiMode"]

log = logging.getLogger(__name__)

WifiMode = Literal["client", "hotspot"]

STOP_LOOK = 2.0
"""Longest time (s) :meth:`Provisioner.run` waits without looking at its stop event."""


class NmcliError(RuntimeError):
    """``nmcli`` failed; the message is its own (e.g. "Secrets were required")."""


@dataclass(frozen=True)
class Network:
    """A network seen by a scan: SSID, signal (%), security ('' for open)."""

    ssid: str
    signal: int
    security: str


class Nmcli:
    """The ``nmcli`` calls provisioning needs. ``executable``: a name on ``PATH`` or a path."""

    def __init__(self, executable: str = "nmcli", interface: str = "wlan0") -> None:
        self.executable = executable
        self.interface = interface

    def _run(self, *args: str, timeout: float = 30.0) -> str:
        try:
            done = subprocess.run(
                [self.executable, *args], capture_output=True, text=True, timeout=timeout
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise NmcliError(f"nmcli {' '.join(args[:3])}: {error}") from error
        if done.returncode != 0:
            text = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
            raise NmcliError(text)
        return done.stdout

    def active_ssid(self) -> str | None:
        """The network joined now, or None."""
        out = self._run(
            "-t", "-f", "ACTIVE,SSID", "device", "wifi", "list", "--rescan", "no",
            "ifname", self.interface,
        )  # fmt: skip
        for line in out.splitlines():
            fields = parse_terse(line)
            if len(fields) >= 2 and fields[0] == "yes":
                return fields[1] or None
        return None

    def scan(self) -> list[Network]:
        """Networks in range, strongest first, one per SSID (hidden ones left out)."""
        out = self._run(
            "-t", "-f", "SSID,SIGNAL,SECURITY", "device", "wifi", "list", "--rescan", "yes",
            "ifname", self.interface,
        )  # fmt: skip
        best: dict[str, Network] = {}
        for line in out.splitlines():
            fields = parse_terse(line)
            if len(fields) < 3 or not fields[0]:
                continue
            signal = int(fields[1]) if fields[1].isdigit() else 0
            net = Network(fields[0], signal, fields[2])
            if net.ssid not in best or best[net.ssid].signal < signal:
                best[net.ssid] = net
        return sorted(best.values(), key=lambda n: -n.signal)

    def hotspot(self, ssid: str, password: str, connection: str) -> None:
        """Start the access point (NetworkManager shares the connection; the station is
        10.42.0.1)."""
        self._run(
            "device", "wifi", "hotspot", "ifname", self.interface, "con-name", connection,
            "ssid", ssid, "password", password,
        )  # fmt: skip

    def down(self, connection: str) -> None:
        """Take ``connection`` (the hotspot) down."""
        self._run("connection", "down", "id", connection)

    def connect(self, ssid: str, password: str | None, timeout: float) -> None:
        """Join ``ssid`` (NetworkManager keeps it as a known network). Raises
        :class:`NmcliError` (wrong password, not found)."""
        args = ["device", "wifi", "connect", ssid]
        if password:
            args += ["password", password]
        self._run(*args, "ifname", self.interface, timeout=timeout)


class Provisioner:
    """The provisioning state machine (module docstring). ``portal`` (optional) is started
    with the hotspot and stopped after it: anything with ``start(provisioner)`` and
    ``stop()`` (:class:`~.portal.Portal`). ``on_event(kind, message, data)`` records the
    transitions (the station's events). Thread-safe: the page calls :meth:`choose` and
    :meth:`snapshot` from its own thread."""

    def __init__(
        self,
        config: WifiConfig,
        clock: Clock,
        nmcli: Nmcli,
        *,
        portal: Any = None,
        on_event: Callable[[str, str, dict[str, Any]], Any] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.nmcli = nmcli
        self.portal = portal
        self.on_event = on_event
        self.mode: WifiMode = "client"
        self.networks: list[Network] = []
        self.last_error: str | None = None
        self.connected: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._requested = False
        self._choice: tuple[str, str | None] | None = None
        self._offline_since: float | None = None
        self._hotspot_since = 0.0

    # --- from other threads ----------------------------------------------------------------

    def request(self) -> dict[str, Any]:
        """Start provisioning at the next step (a long press, ``POST /wifi/setup``)."""
        with self._lock:
            self._requested = True
        self._wake.set()
        return {"wifi": "setup requested", "mode": self.mode}

    def choose(self, ssid: str, password: str | None) -> None:
        """The page's choice: join ``ssid`` at the next step."""
        with self._lock:
            self._choice = (ssid, password or None)
        self._wake.set()

    def snapshot(self) -> dict[str, Any]:
        """Mode, networks seen, last error, joined network (status and the page)."""
        with self._lock:
            return {
                "mode": self.mode,
                "connected": self.connected,
                "last_error": self.last_error,
                "pending": self._choice[0] if self._choice else None,
                "networks": [n.__dict__ for n in self.networks],
            }

    # --- the owner's thread ----------------------------------------------------------------

    def step(self) -> WifiMode:
        """One look: start, keep or leave the hotspot; returns the mode after it."""
        now = self.clock.monotonic()
        with self._lock:
            requested, self._requested = self._requested, False
            choice, self._choice = self._choice, None
        if self.mode == "client":
            if requested:
                self._start_hotspot("requested")
            else:
                self._watch(now)
        elif choice is not None:
            self._join(*choice)
        elif now - self._hotspot_since >= self.config.hotspot_timeout:
            log.info("wifi: nobody chose a network; trying the known networks again")
            self._leave_hotspot()
            self._event("wifi_hotspot_timeout", "hotspot given up: no network chosen", {})
            self._offline_since = self.clock.monotonic()
        return self.mode

    def _watch(self, now: float) -> None:
        try:
            ssid = self.nmcli.active_ssid()
        except NmcliError as error:
            log.warning("wifi: cannot read the Wi-Fi state: %s", error)
            return
        with self._lock:
            self.connected = ssid
        if ssid is not None:
            self._offline_since = None
            return
        if self._offline_since is None:
            self._offline_since = now
        elif now - self._offline_since >= self.config.offline_after:
            self._start_hotspot("offline")

    def _start_hotspot(self, why: str) -> None:
        try:
            networks = self.nmcli.scan()
        except NmcliError as error:
            log.warning("wifi: scan failed: %s", error)
            networks = []
        try:
            self.nmcli.hotspot(
                self.config.hotspot_ssid,
                self.config.hotspot_password,
                self.config.hotspot_connection,
            )
        except NmcliError as error:
            with self._lock:
                self.last_error = f"hotspot: {error}"
            log.error("wifi: could not start the hotspot: %s", error)
            self._offline_since = self.clock.monotonic()  # try again after offline_after
            return
        with self._lock:
            self.mode, self.networks, self.connected = "hotspot", networks, None
        self._hotspot_since = self.clock.monotonic()
        log.warning("wifi: hotspot %r up (%s)", self.config.hotspot_ssid, why)
        self._event(
            "wifi_hotspot",
            f"Wi-Fi setup hotspot {self.config.hotspot_ssid!r} started ({why})",
            {"reason": why, "networks": len(networks)},
        )
        if self.portal is not None:
            self.portal.start(self)

    def _leave_hotspot(self) -> None:
        if self.portal is not None:
            self.portal.stop()
        try:
            self.nmcli.down(self.config.hotspot_connection)
        except NmcliError as error:
            log.warning("wifi: hotspot down: %s", error)
        with self._lock:
            self.mode = "client"

    def _join(self, ssid: str, password: str | None) -> None:
        self._leave_hotspot()
        try:
            self.nmcli.connect(ssid, password, self.config.connect_timeout)
        except NmcliError as error:
            with self._lock:
                self.last_error = f"{ssid}: {error}"
            log.warning("wifi: could not join %r: %s", ssid, error)
            self._event("wifi_join_failed", f"could not join {ssid!r}: {error}", {"ssid": ssid})
            self._start_hotspot("join failed")
            return
        with self._lock:
            self.last_error, self.connected = None, ssid
        self._offline_since = None
        log.info("wifi: joined %r", ssid)
        self._event("wifi_joined", f"joined Wi-Fi {ssid!r}", {"ssid": ssid})

    def _event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, message, data)
        except Exception:
            log.exception("wifi: event %s not recorded", kind)

    def run(self, stop: threading.Event, interval: float = 10.0) -> None:
        """Step every ``interval`` s (at once on a request or a choice) until ``stop``; the
        hotspot is taken down when stopping."""
        try:
            while not stop.is_set():
                self._wake.clear()
                self.step()
                due = self.clock.monotonic() + interval
                # woken at once by a request or a choice; looks at ``stop`` every STOP_LOOK s
                while not stop.is_set() and not self._wake.is_set():
                    left = due - self.clock.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(min(left, STOP_LOOK))
        finally:
            if self.mode == "hotspot":
                self._leave_hotspot()
