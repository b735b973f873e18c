"""Run in a child process whose PYTHONPATH holds the installed third-party job package: starts
a real station (supervisor, thread jobs) from the station file argv[1], waits for the
``hello`` job's file, prints the job's supervised state as JSON and stops the station."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from fieldstation.config import load_config
from fieldstation.config.jobs import job_kinds
from fieldstation.runtime.station import Station

config = load_config(sys.argv[1])
station = Station(config, control=False, tick=0.1)
stop = threading.Event()
runner = threading.Thread(target=station.run, args=(stop,))
runner.start()
try:
    if not station.ready.wait(60):
        raise SystemExit("station not ready in 60 s")
    target = Path(config.home_path()) / "hello.txt"
    deadline = time.monotonic() + 60
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the file the job writes: the event waited for
    assert station.supervisor is not None
    job = station.supervisor.job("job:greeter")
    print(
        json.dumps(
            {
                "kinds": list(job_kinds()),
                "state": job["state"],
                "kind": job["kind"],
                "text": target.read_text() if target.exists() else None,
            }
        )
    )
finally:
    stop.set()
    runner.join(60)
