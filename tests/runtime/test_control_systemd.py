"""Control API over the Unix socket, status file, sd_notify and generated systemd units."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fieldstation.runtime import systemd
from fieldstation.runtime.client import ControlClient, ControlError, StationNotRunningError
from fieldstation.runtime.control import ControlServer
from fieldstation.runtime.status import atomic_write_json, read_status
from fieldstation.runtime.supervisor import UnknownJobError


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def status(self) -> dict[str, Any]:
        return {"station": "s1", "jobs": [{"name": "recorder:mic", "state": "running"}]}

    def _job(self, action: str, name: str) -> dict[str, Any]:
        if name != "recorder:mic":
            raise UnknownJobError(f"no job named {name!r}; jobs: recorder:mic")
        self.calls.append((action, name))
        return {"name": name, "state": {"stop": "stopped"}.get(action, "running")}

    def start_job(self, name: str) -> dict[str, Any]:
        return self._job("start", name)

    def stop_job(self, name: str) -> dict[str, Any]:
        return self._job("stop", name)

    def restart_job(self, name: str) -> dict[str, Any]:
        return self._job("restart", name)

    def logs(self, job: str, lines: int) -> list[str]:
        return [f"{job} line {i}" for i in range(lines)]


def test_control_api_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    api = FakeApi()
    server = ControlServer(path, api).start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with ControlClient(path) as client:
            assert client.status()["station"] == "s1"
            assert client.stop("recorder:mic")["state"] == "stopped"
            assert client.start("recorder:mic")["state"] == "running"
            assert client.restart("recorder:mic")["name"] == "recorder:mic"
            assert client.logs("processor:energy", 3) == [
                "processor:energy line 0",
                "processor:energy line 1",
                "processor:energy line 2",
            ]
            with pytest.raises(ControlError, match="no job named 'nope'") as error:
                client.stop("nope")
            assert error.value.status == 404
    finally:
        server.close()
    assert api.calls == [
        ("stop", "recorder:mic"),
        ("start", "recorder:mic"),
        ("restart", "recorder:mic"),
    ]
    assert not path.exists()
    with pytest.raises(StationNotRunningError, match="not running"):
        ControlClient(path).status()


def test_stale_socket_is_replaced_and_dead_socket_reported(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # a socket file nobody listens on (a runtime killed by SIGKILL)
    with pytest.raises(StationNotRunningError, match="not answering"):
        ControlClient(path).status()
    server = ControlServer(path, FakeApi()).start()
    try:
        assert ControlClient(path).status()["station"] == "s1"
    finally:
        server.close()


def test_status_file_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "run" / "status.json"
    atomic_write_json(path, {"n": 1})
    atomic_write_json(path, {"n": 2, "nested": {"a": [1, 2]}})
    assert read_status(path) == {"n": 2, "nested": {"a": [1, 2]}}
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]  # no temp file left
    path.write_text("{broken")
    assert read_status(path) is None


def test_notify_sends_datagrams_to_notify_socket(tmp_path: Path) -> None:
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(address))
        assert systemd.notify("READY=1\nSTATUS=ok", env={"NOTIFY_SOCKET": str(address)})
        assert receiver.recv(1024) == b"READY=1\nSTATUS=ok"
    assert not systemd.notify("READY=1", env={})
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "6", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval({}) is None


@pytest.mark.parametrize("user", [True, False])
def test_generated_unit(tmp_path: Path, user: bool) -> None:
    config = tmp_path / "station.toml"
    config.write_text("")
    home = tmp_path / "home"
    text = systemd.render_unit(
        station_id="s1", config_path=config, home=home, user=user, executable=["/bin/true"]
    )
    assert "Type=notify" in text and "WatchdogSec=" in text and "Restart=on-failure" in text
    assert f"ReadWritePaths={home}" in text and "DeviceAllow=char-alsa rw" in text
    assert ("WantedBy=default.target" in text) == user
    # a private /tmp would hide a home (or config) kept under /tmp from the service
    units = {
        (config_at, home_at): systemd.render_unit(
            station_id="s1", config_path=Path(config_at), home=Path(home_at), user=user
        )
        for config_at, home_at in [
            ("/etc/fs/station.toml", "/srv/fs"),
            ("/etc/fs/station.toml", "/tmp/fs"),
            ("/var/tmp/station.toml", "/srv/fs"),
        ]
    }
    assert ["PrivateTmp=yes" in unit for unit in units.values()] == [True, False, False]
    done = systemd.install_unit(
        text,
        station_id="s1",
        home_systemd=home / "systemd",
        user=user,
        target_dir=tmp_path / "units",
        enable=False,
    )
    assert done.copies == [home / "systemd" / done.unit, tmp_path / "units" / done.unit]
    assert all(p.read_text() == text for p in done.copies)
    assert not done.enabled and any("enable --now" in t for t in done.todo)
    assert any("enable-linger" in t for t in done.todo) == user
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        home.mkdir(exist_ok=True)
        runtime_dir = tmp_path / "xdg"  # a user manager needs one; no login session here
        runtime_dir.mkdir(mode=0o700)
        result = subprocess.run(
            [analyze, "verify", *(["--user"] if user else []), str(done.copies[1])],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)},
        )
        # verify exits 0 on mere warnings ("Failed to parse ..., ignoring"): read the output
        problems = [
            line for line in (result.stdout + result.stderr).splitlines() if done.unit in line
        ]
        assert result.returncode == 0 and problems == [], result.stdout + result.stderr
    removed = systemd.uninstall_unit(
        station_id="s1",
        home_systemd=home / "systemd",
        user=user,
        target_dir=tmp_path / "units",
        disable=False,  # never touch the host's systemd from a test
    )
    assert sorted(removed) == sorted(done.copies)


def test_status_json_shape_is_json(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "s.json", {"when": Path("/x")})
    assert json.loads((tmp_path / "s.json").read_text()) == {"when": "/x"}


def test_system_status_forgets_processes_that_are_gone() -> None:
    import subprocess as sp

    from fieldstation.runtime import status

    child = sp.Popen(["sleep", "5"])
    try:
        first = status.system_status([os.getpid(), child.pid])
        assert first["memory"]["station_rss_bytes"] > 0
        assert child.pid in status._PROCESSES
    finally:
        child.kill()
        child.wait()
    status.system_status([os.getpid()])
    assert set(status._PROCESSES) == {os.getpid()}
