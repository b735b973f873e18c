"""systemd notify under a real station: READY=1, WATCHDOG=1 while the loop turns, STOPPING=1.

A failed job does not starve the watchdog (decision 0061): systemd would restart the whole
station, interrupting the healthy jobs, and mend nothing. It is named in ``STATUS=``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fieldstation.runtime.jobs import ProcessJobSpec, ThreadJobSpec
from fieldstation.runtime.liveness import ThreadLiveness
from fieldstation.runtime.station import Station, process_jobs


@pytest.mark.slow
def test_watchdog_fed_while_the_loop_turns_and_failed_jobs_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_station: Any
) -> None:
    address = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(address))
    receiver.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # ping every 0.2 s
    config = make_station(
        tmp_path / "home",
        runtime={"max_restarts": 2, "backoff_initial": "1s", "backoff_max": "1s"},
    )
    crash = ProcessJobSpec("crash", "fieldstation.testing.jobs:crashing")
    station = Station(config, jobs=[*process_jobs(config), crash], control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    received: list[tuple[float, str]] = []

    def collect(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                received.append((time.monotonic(), receiver.recv(4096).decode()))

    try:
        assert station.ready.wait(20)
        collect(1.0)  # crash restarts after ~1 s backoff: healthy until it fails
        supervisor = station.supervisor
        assert supervisor is not None
        deadline = time.monotonic() + 20
        while supervisor.job("crash")["state"] != "failed" and time.monotonic() < deadline:
            collect(0.2)
        assert supervisor.job("crash")["state"] == "failed"
        failed_at = time.monotonic()
        collect(1.5)
    finally:
        stop.set()
        runner.join(30)
    collect(0.5)
    receiver.close()
    messages = [m for _, m in received]
    assert messages[0].startswith("READY=1")
    pings = [t for t, m in received if m.startswith("WATCHDOG=1")]
    assert pings and pings[0] < failed_at
    after = [m for t, m in received if m.startswith("WATCHDOG=1") and t > failed_at + 0.3]
    assert len(after) >= 3  # the other jobs keep running, and so does the watchdog
    assert all("failed: crash" in m for m in after)
    assert messages[-1] == "STOPPING=1"


def test_a_hung_thread_job_starves_the_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_station: Any
) -> None:
    """A thread job whose loop stops turning (a real blocked read) cannot be killed inside the
    process: the watchdog stops being fed, so systemd restarts the station (decision 0064);
    STATUS= names it. When it turns again, the pings resume."""
    address = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(address))
    receiver.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # ping every 0.2 s
    config = make_station(tmp_path / "home")
    read_end, write_end = os.pipe()

    def stuck(stop: threading.Event) -> None:
        os.read(read_end, 1)  # blocks until the test writes
        stop.wait()

    spec = ThreadJobSpec("stuck", stuck, liveness=ThreadLiveness(timeout=1.0))
    station = Station(config, jobs=[*process_jobs(config), spec], control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=station.run, args=(stop,))
    runner.start()
    received: list[tuple[float, str]] = []

    def collect(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                received.append((time.monotonic(), receiver.recv(4096).decode()))

    try:
        assert station.ready.wait(20)
        supervisor = station.supervisor
        assert supervisor is not None
        deadline = time.monotonic() + 20
        while supervisor.job("stuck")["state"] != "hung" and time.monotonic() < deadline:
            collect(0.2)
        assert supervisor.job("stuck")["state"] == "hung"
        hung_at = time.monotonic()
        collect(1.5)
        unstuck_at = time.monotonic()  # the thread cannot turn before this: nothing fed meanwhile
        os.write(write_end, b"x")
        deadline = time.monotonic() + 20
        while supervisor.job("stuck")["state"] != "running" and time.monotonic() < deadline:
            collect(0.2)
        back_at = time.monotonic()
        collect(1.0)
    finally:
        stop.set()
        runner.join(30)
        os.close(read_end)
        os.close(write_end)
    receiver.close()
    assert [t for t, m in received if m.startswith("WATCHDOG=1") and t < hung_at]
    starved = [m for t, m in received if hung_at + 0.3 < t < unstuck_at]
    assert starved and not any(m.startswith("WATCHDOG=1") for m in starved)
    assert any("hung: stuck" in m for m in starved)
    assert [m for t, m in received if m.startswith("WATCHDOG=1") and t > back_at + 0.3]
