"""Network levels on this machine's loopback (a real listening socket for "internet", a
closed port for "local", a missing interface for "offline"), the Wi-Fi link from the fake
nmcli and from a /proc/net/wireless file."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldstation.clock import VirtualClock
from fieldstation.config.field import NetLevelConfig
from fieldstation.health.netlevel import (
    LinkInfo,
    NetLevel,
    NetLevelMonitor,
    WifiLink,
    classify,
    default_interface,
    nmcli_wifi,
    parse_terse,
    proc_wireless,
    read_link,
)
from fieldstation.testing.nmcli import install


@pytest.fixture
def listener() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def test_classify() -> None:
    assert classify(LinkInfo(None, False), True) == "offline"
    assert classify(LinkInfo("wlan0", True, ()), True) == "offline"
    assert classify(LinkInfo("wlan0", False, ("10.0.0.2",)), True) == "offline"
    assert classify(LinkInfo("wlan0", True, ("10.0.0.2",)), False) == "local"
    assert classify(LinkInfo("wlan0", True, ("10.0.0.2",)), True) == "internet"


def test_levels_on_loopback(listener: str) -> None:
    clock = VirtualClock()
    changes: list[tuple[str | None, str]] = []

    def changed(old: NetLevel | None, new: NetLevel) -> None:
        changes.append((old.level if old else None, new.level))

    config = NetLevelConfig(enabled=True, interface="lo", internet_targets=[listener], timeout=5)
    monitor = NetLevelMonitor(config, clock, on_change=changed, wifi=lambda _i: None)
    found = monitor.check()
    assert (found.level, found.interface, found.address) == ("internet", "lo", "127.0.0.1")
    monitor.check()
    assert changes == [(None, "internet")]  # no event without a change

    closed = NetLevelConfig(enabled=True, interface="lo", internet_targets=[closed_port()])
    monitor.config = closed
    assert monitor.check().level == "local"
    monitor.config = NetLevelConfig(enabled=True, interface="nosuch0")
    assert monitor.check().level == "offline"
    assert changes == [(None, "internet"), ("internet", "local"), ("local", "offline")]
    assert monitor.as_dict() == {
        "level": "offline",
        "interface": "nosuch0",
        "address": None,
        "wifi": None,
    }


def test_read_link_of_loopback_and_default_route(tmp_path: Path) -> None:
    assert read_link("lo") == LinkInfo("lo", True, ("127.0.0.1",))
    route = tmp_path / "route"
    route.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "wlan0\t0000A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\n"
        "wlan0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\n"
    )
    assert default_interface(route) == "wlan0"
    assert default_interface(tmp_path / "absent") is None


def test_terse_fields_unescape_colons() -> None:
    assert parse_terse(r"yes:Barn\: west:40") == ["yes", "Barn: west", "40"]
    assert parse_terse(r"no:back\\slash:7") == ["no", "back\\slash", "7"]
    assert parse_terse("no::0") == ["no", "", "0"]


def test_wifi_link_from_the_fake_nmcli(tmp_path: Path) -> None:
    fake = install(
        tmp_path / "bin",
        {
            "networks": [
                {"ssid": "Farm", "signal": 30},
                {"ssid": "Barn: west", "signal": 64},
            ],
            "active": "Barn: west",
        },
    )
    link = nmcli_wifi(str(fake.executable), "wlan0")
    assert link == WifiLink("Barn: west", 64, source="nmcli")
    assert fake.calls() == [
        ["-t", "-f", "ACTIVE,SSID,SIGNAL", "device", "wifi", "list", "--rescan", "no",
         "ifname", "wlan0"],
    ]  # fmt: skip
    fake.update(active=None)
    assert nmcli_wifi(str(fake.executable), None) is None


def test_monitor_reports_wifi_through_nmcli_and_falls_back_to_proc(
    tmp_path: Path, listener: str
) -> None:
    fake = install(tmp_path / "bin", {"networks": [{"ssid": "Farm", "signal": 81}]})
    fake.update(active="Farm")
    config = NetLevelConfig(
        enabled=True, interface="lo", internet_targets=[listener], nmcli=str(fake.executable)
    )
    monitor = NetLevelMonitor(config, VirtualClock())
    assert monitor.check().wifi == WifiLink("Farm", 81, source="nmcli")
    missing = NetLevelConfig(
        enabled=True, interface="lo", internet_targets=[listener], nmcli=str(tmp_path / "none")
    )
    monitor = NetLevelMonitor(missing, VirtualClock())
    assert monitor.check().wifi is None  # no nmcli, and lo is not in /proc/net/wireless


def test_proc_wireless(tmp_path: Path) -> None:
    proc = tmp_path / "wireless"
    proc.write_text(
        "Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n"
        " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"
        " wlan0: 0000   49.  -61.  -256        0      0      0      0     12        0\n"
    )
    assert proc_wireless("wlan0", proc) == WifiLink(None, 70, -61.0, source="proc")
    assert proc_wireless(None, proc) == WifiLink(None, 70, -61.0, source="proc")
    assert proc_wireless("wlan1", proc) is None
    assert proc_wireless("wlan0", tmp_path / "absent") is None
