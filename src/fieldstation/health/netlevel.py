"""Network levels (omgrab's): ``offline`` / ``local`` (a network, no internet) / ``internet``,
judged on one interface, and the Wi-Fi link (SSID, signal).

- ``offline``: the interface (``field.network.interface``, else the default route's, from
  ``/proc/net/route``) is absent, down or has no IPv4 address;
- ``internet``: a TCP connection from the interface's address to any of
  ``field.network.internet_targets`` succeeds (bound to that address, so the level is the
  pinned interface's, not whichever route the kernel prefers);
- ``local`` otherwise (an address, maybe a gateway, but the internet does not answer).

The Wi-Fi link comes from NetworkManager (``nmcli -t -f ACTIVE,SSID,SIGNAL device wifi list
--rescan no``: SSID and signal in %) or, without ``nmcli``, from ``/proc/net/wireless`` (signal
only: link quality in % of 70 and level in dBm). Every probe is injectable: tests run on
loopback, a fake ``nmcli`` (:mod:`fieldstation.testing.nmcli`) and a given ``/proc`` file.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from fieldstation.clock import Clock
from fieldstation.config.field import NetLevelConfig

__all__ = [
    "Level",
    "LinkInfo",
    "NetLevel",
    "NetLevelMonitor",
    "WifiLink",
    "classify",
    "default_interface",
    "nmcli_wifi",
    "parse_terse",
    "proc_wireless",
    "read_link",
    "tcp_reachable",
]

log = logging.getLogger(__name__)

Level = Literal["offline", "local", "internet"]


@dataclass(frozen=True)
class LinkInfo:
    """One interface: its name, whether it is up, its IPv4 addresses."""

    interface: str | None
    up: bool
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class WifiLink:
    """The Wi-Fi link: ``ssid`` (None when unknown), ``signal`` (0-100 %), ``dbm`` (when
    known), ``source`` (``nmcli`` or ``proc``)."""

    ssid: str | None
    signal: int | None
    dbm: float | None = None
    source: str = "nmcli"


@dataclass(frozen=True)
class NetLevel:
    """One check: the level, the interface and address judged, the Wi-Fi link (or None)."""

    level: Level
    interface: str | None
    address: str | None
    wifi: WifiLink | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (status and heartbeat)."""
        return {
            "level": self.level,
            "interface": self.interface,
            "address": self.address,
            "wifi": None if self.wifi is None else asdict(self.wifi),
        }


def default_interface(route_file: Path = Path("/proc/net/route")) -> str | None:
    """The interface of the IPv4 default route (destination 0.0.0.0), or None."""
    try:
        lines = route_file.read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return None


def read_link(interface: str | None) -> LinkInfo:
    """Whether ``interface`` (None: the default route's) is up and its IPv4 addresses (psutil)."""
    import psutil

    name = interface or default_interface()
    if name is None:
        return LinkInfo(None, False)
    stats = psutil.net_if_stats().get(name)
    addresses = tuple(
        a.address for a in psutil.net_if_addrs().get(name, []) if a.family == socket.AF_INET
    )
    return LinkInfo(name, bool(stats and stats.isup), addresses)


def tcp_reachable(targets: Sequence[str], source: str | None, timeout: float) -> bool:
    """Whether a TCP connection from ``source`` (an address, None: any) to any ``host:port`` of
    ``targets`` succeeds."""
    from fieldstation.health.network import Target

    for text in targets:
        target = Target.parse(text)
        try:
            with socket.create_connection(
                (target.host, target.port),
                timeout=timeout,
                source_address=(source, 0) if source else None,
            ):
                return True
        except OSError:
            continue
    return False


def classify(link: LinkInfo, internet: bool) -> Level:
    """The level of ``link`` given whether the internet answered (module docstring)."""
    if not link.up or not link.addresses:
        return "offline"
    return "internet" if internet else "local"


def parse_terse(line: str) -> list[str]:
    """Split one line of ``nmcli -t`` output: fields are ``:``-separated, ``\\:`` and ``\\\\``
    are an escaped colon and backslash."""
    fields, current, escaped = [], [], False
    for char in line:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def nmcli_wifi(nmcli: str, interface: str | None, timeout: float = 10.0) -> WifiLink | None:
    """The active Wi-Fi link as NetworkManager sees it; None when not connected. Raises
    ``OSError`` when ``nmcli`` cannot run and ``subprocess.CalledProcessError`` when it fails."""
    argv = [nmcli, "-t", "-f", "ACTIVE,SSID,SIGNAL", "device", "wifi", "list", "--rescan", "no"]
    if interface:
        argv += ["ifname", interface]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True)
    for line in out.stdout.splitlines():
        fields = parse_terse(line)
        if len(fields) >= 3 and fields[0] == "yes":
            signal = int(fields[2]) if fields[2].isdigit() else None
            return WifiLink(fields[1] or None, signal, source="nmcli")
    return None


def proc_wireless(
    interface: str | None, path: Path = Path("/proc/net/wireless")
) -> WifiLink | None:
    """The signal of ``interface`` (None: the first listed) from ``/proc/net/wireless``: link
    quality in % of its usual maximum 70, level in dBm; no SSID. None when not listed."""
    try:
        lines = path.read_text().splitlines()[2:]
    except OSError:
        return None
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) < 3 or (interface is not None and name.strip() != interface):
            continue
        quality = float(fields[1].rstrip("."))
        level = float(fields[2].rstrip("."))
        return WifiLink(None, round(min(100.0, quality * 100 / 70)), level, source="proc")
    return None


class NetLevelMonitor:
    """Checks the level every ``config.interval`` s; :meth:`current` is the last check.

    ``on_change(old, new)`` is called when the level changes (the station records an event).
    ``link``, ``internet`` and ``wifi`` are injectable (defaults: :func:`read_link`,
    :func:`tcp_reachable`, :func:`nmcli_wifi` falling back to :func:`proc_wireless`).
    Thread-safe.
    """

    def __init__(
        self,
        config: NetLevelConfig,
        clock: Clock,
        *,
        on_change: Callable[[NetLevel | None, NetLevel], Any] | None = None,
        link: Callable[[str | None], LinkInfo] = read_link,
        internet: Callable[[Sequence[str], str | None, float], bool] = tcp_reachable,
        wifi: Callable[[str | None], WifiLink | None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.on_change = on_change
        self._link = link
        self._internet = internet
        self._wifi = wifi or self._default_wifi
        self._lock = threading.Lock()
        self._current: NetLevel | None = None
        self._nmcli_missing = False

    def _default_wifi(self, interface: str | None) -> WifiLink | None:
        if not self._nmcli_missing and shutil.which(self.config.nmcli):
            try:
                return nmcli_wifi(self.config.nmcli, interface, self.config.timeout * 3)
            except (OSError, subprocess.SubprocessError) as error:
                log.debug("nmcli: %s; reading /proc/net/wireless", error)
        else:
            self._nmcli_missing = True
        return proc_wireless(interface)

    def check(self) -> NetLevel:
        """One check; updates :meth:`current` and calls ``on_change`` on a change of level."""
        link = self._link(self.config.interface)
        address = link.addresses[0] if link.addresses else None
        reachable = False
        if link.up and address is not None:
            reachable = self._internet(self.config.internet_targets, address, self.config.timeout)
        try:
            wifi = self._wifi(link.interface) if link.interface else None
        except Exception as error:  # the Wi-Fi line is extra; the level stands without it
            log.debug("wifi link unknown: %s", error)
            wifi = None
        found = NetLevel(classify(link, reachable), link.interface, address, wifi)
        with self._lock:
            old, self._current = self._current, found
        if (old is None or old.level != found.level) and self.on_change is not None:
            try:
                self.on_change(old, found)
            except Exception:
                log.exception("network level change not recorded")
        return found

    def current(self) -> NetLevel | None:
        """The last check (None before the first)."""
        with self._lock:
            return self._current

    def as_dict(self) -> dict[str, Any] | None:
        """:meth:`current` JSON-ready, or None."""
        current = self.current()
        return None if current is None else current.as_dict()

    def run(self, stop: threading.Event) -> None:
        """Check every ``config.interval`` s until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.check()
            except Exception:
                log.exception("network level check failed")
            if self.clock.wait(stop, self.config.interval):
                return
