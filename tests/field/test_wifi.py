"""Wi-Fi provisioning against the fake ``nmcli`` (a real executable on the PATH that records
its calls): offline for N minutes -> scan, hotspot, the page on a real uvicorn; a choice on
the page -> hotspot down, join; a wrong password -> the hotspot again with the reason."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fieldstation.clock import VirtualClock
from fieldstation.config.field import WifiConfig
from fieldstation.field.portal import Portal
from fieldstation.field.wifi import Nmcli, NmcliError, Provisioner
from fieldstation.testing.nmcli import FakeNmcli, install

NETWORKS = [
    {"ssid": "Farm", "signal": 72, "security": "WPA2"},
    {"ssid": "Barn: west", "signal": 40, "security": "WPA2"},
    {"ssid": "Cafe", "signal": 55, "security": ""},
]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNmcli:
    fake = install(
        tmp_path / "bin",
        {"networks": NETWORKS, "passwords": {"Farm": "secret123", "Barn: west": "hay-bales"}},
    )
    monkeypatch.setenv("PATH", fake.env()["PATH"])
    return fake


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, message: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


@pytest.fixture
def portal() -> Iterator[Portal]:
    portal = Portal("127.0.0.1", 0, "pond-7")
    yield portal
    portal.stop()


def provisioner(
    clock: VirtualClock, portal: Portal | None = None, **config: Any
) -> tuple[Provisioner, Recorder]:
    events = Recorder()
    wifi = WifiConfig(enabled=True, offline_after=300, hotspot_timeout=900, **config)
    return Provisioner(wifi, clock, Nmcli(), portal=portal, on_event=events), events


def test_nmcli_wrapper_reads_the_fake(fake: FakeNmcli) -> None:
    nmcli = Nmcli()
    assert nmcli.active_ssid() is None
    assert [n.ssid for n in nmcli.scan()] == ["Farm", "Cafe", "Barn: west"]  # by signal
    with pytest.raises(NmcliError, match="Secrets were required"):
        nmcli.connect("Farm", "wrong", 5)
    with pytest.raises(NmcliError, match="No network with SSID 'Nowhere'"):
        nmcli.connect("Nowhere", None, 5)
    nmcli.connect("Barn: west", "hay-bales", 5)
    assert nmcli.active_ssid() == "Barn: west"
    assert fake.calls()[-2] == [
        "device", "wifi", "connect", "Barn: west", "password", "hay-bales", "ifname", "wlan0",
    ]  # fmt: skip


def test_connected_station_never_starts_the_hotspot(fake: FakeNmcli) -> None:
    fake.update(active="Farm")
    clock = VirtualClock()
    prov, events = provisioner(clock)
    for _ in range(8):  # 8 x 60 s > offline_after
        assert prov.step() == "client"
        clock.advance(60)
    assert "hotspot" not in fake.verbs()
    assert prov.snapshot()["connected"] == "Farm"


def test_offline_for_n_minutes_starts_the_hotspot_and_a_page_chooses_the_network(
    fake: FakeNmcli, portal: Portal
) -> None:
    clock = VirtualClock()
    prov, events = provisioner(clock, portal)
    prov.step()  # offline from now
    clock.advance(299)
    assert prov.step() == "client"
    assert fake.verbs() == ["list", "list"]
    clock.advance(1)
    assert prov.step() == "hotspot"
    # scanned before the hotspot (one radio), then the hotspot with the configured names
    assert fake.calls()[-2][:2] == ["-t", "-f"] and "--rescan" in fake.calls()[-2]
    assert fake.calls()[-1] == [
        "device", "wifi", "hotspot", "ifname", "wlan0", "con-name", "fieldstation-hotspot",
        "ssid", "fieldstation-setup", "password", "fieldstation",
    ]  # fmt: skip
    assert fake.state()["hotspot"]["ssid"] == "fieldstation-setup"
    assert events.kinds() == ["wifi_hotspot"]
    assert portal.bound is not None
    base = "http://{}:{}".format(*portal.bound)
    page = httpx.get(base + "/", timeout=30)
    assert page.status_code == 200
    for ssid in ("Farm", "Cafe", "Barn: west"):
        assert f'value="{ssid}"' in page.text
    assert "pond-7" in page.text

    # a wrong password: the hotspot comes back, the page says why
    answer = httpx.post(base + "/connect", data={"ssid": "Farm", "password": "nope"}, timeout=30)
    assert answer.status_code == 202 and "Joining <b>Farm</b>" in answer.text
    assert prov.step() == "hotspot"
    assert fake.verbs()[-4:] == ["down", "connect", "list", "hotspot"]
    assert events.kinds() == ["wifi_hotspot", "wifi_join_failed", "wifi_hotspot"]
    page = httpx.get(base + "/", timeout=30)
    assert "Last try failed" in page.text and "Secrets were required" in page.text

    # the right one (a hidden-network name typed in wins over the radio buttons)
    httpx.post(
        base + "/connect",
        data={"ssid": "Cafe", "other": "Barn: west", "password": "hay-bales"},
        timeout=30,
    )
    assert prov.snapshot()["pending"] == "Barn: west"
    assert prov.step() == "client"
    state = fake.state()
    assert state["active"] == "Barn: west" and state["hotspot"] is None
    assert events.kinds()[-1] == "wifi_joined"
    assert prov.snapshot() | {"networks": []} == {
        "mode": "client",
        "connected": "Barn: west",
        "last_error": None,
        "pending": None,
        "networks": [],
    }
    with pytest.raises(httpx.TransportError):  # the page is gone with the hotspot
        httpx.get(base + "/", timeout=5)
    # connected: no hotspot again however long it runs
    calls = len(fake.calls())
    for _ in range(6):
        clock.advance(60)
        assert prov.step() == "client"
    assert "hotspot" not in fake.verbs()[calls:]


def test_a_request_starts_the_hotspot_at_once_and_an_unused_hotspot_times_out(
    fake: FakeNmcli,
) -> None:
    fake.update(active="Farm")
    clock = VirtualClock()
    prov, events = provisioner(clock)
    assert prov.step() == "client"
    assert prov.request()["wifi"] == "setup requested"
    assert prov.step() == "hotspot"
    clock.advance(899)
    assert prov.step() == "hotspot"
    clock.advance(1)
    assert prov.step() == "client"
    assert fake.state()["hotspot"] is None
    assert events.kinds() == ["wifi_hotspot", "wifi_hotspot_timeout"]
    # still offline (the hotspot took the radio): the next hotspot after offline_after again
    fake.update(active=None)
    clock.advance(299)
    assert prov.step() == "client"
    clock.advance(1)
    assert prov.step() == "hotspot"


def test_a_hotspot_that_fails_to_start_is_retried_after_offline_after(fake: FakeNmcli) -> None:
    fake.update(fail={"hotspot": "Error: Device 'wlan0' not found."})
    clock = VirtualClock()
    prov, events = provisioner(clock)
    prov.request()
    assert prov.step() == "client"
    assert "not found" in prov.snapshot()["last_error"]
    fake.update(fail={})
    clock.advance(299)
    assert prov.step() == "client"
    clock.advance(1)
    assert prov.step() == "hotspot"


def test_run_takes_the_hotspot_down_when_stopped(fake: FakeNmcli) -> None:
    clock = VirtualClock()
    prov, _ = provisioner(clock)
    prov.request()
    stop = threading.Event()
    runner = threading.Thread(target=prov.run, args=(stop,), kwargs={"interval": 0.05})
    runner.start()
    try:
        for _ in range(400):
            if prov.mode == "hotspot":
                break
            threading.Event().wait(0.05)
        assert prov.mode == "hotspot"
    finally:
        stop.set()
        runner.join(30)
    assert fake.state()["hotspot"] is None
    assert fake.verbs()[-1] == "down"


def test_page_refuses_an_empty_choice(fake: FakeNmcli, portal: Portal) -> None:
    clock = VirtualClock()
    prov, _ = provisioner(clock)
    portal.start(prov)
    assert portal.bound is not None
    base = "http://{}:{}".format(*portal.bound)
    assert httpx.post(base + "/connect", data={"password": "x"}, timeout=30).status_code == 400
    assert httpx.post(base + "/connect", data={"other": "x" * 33}, timeout=30).status_code == 400
    assert prov.snapshot()["pending"] is None
    assert httpx.get(base + "/state", timeout=30).json()["mode"] == "client"


def test_a_port_this_user_may_not_use_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Port 80 without CAP_NET_BIND_SERVICE never fixes itself: the wifi job must stop in
    ``config_error``, not be restarted into the same refusal with the hotspot flapping."""
    import errno
    import socket

    from fieldstation.job import ConfigurationError

    def refused(self: socket.socket, address: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refused)
    with pytest.raises(ConfigurationError, match=r"field\.wifi\.port 80: permission refused"):
        Portal("127.0.0.1", 80, "pond-7").start(None)
