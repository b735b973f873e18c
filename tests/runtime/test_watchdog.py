"""systemd notify under a real station: READY=1, WATCHDOG=1 while the loop turns, STOPPING=1.

A failed job does not starve the watchdog (decision 0061): systemd would restart the whole
station, interrupting the healthy jobs, and mend nothing. It is named in ``STATUS=``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fieldstation.runtime.jobs import ProcessJobSpec
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
