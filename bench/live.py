"""The live tap's cost: per published block, and the recorder's CPU with and without a viewer.

Prints one JSON object:

- ``publish``: :meth:`LiveTap.publish` of ``--blocks`` 20 ms blocks of 48 kHz mono int16 (960
  frames) with 0 subscribers and with 1 subscriber reading in another thread: microseconds per
  call, p50/p95/max (the anchor, ENRGDAQ's ring buffer + ZMQ bus: p95 5 ms per message);
- ``recorder``: a real recorder (synthetic 48 kHz sensor, 20 ms blocks, FLAC chunks of 10 s,
  real time) for ``--seconds`` s, with 0 viewers and with 1 viewer (a separate process reading
  the tap through a :class:`LiveSubscriber` and computing levels and spectrogram columns, as
  the web page's event stream does): CPU seconds of the recorder's process per second recorded
  (user + system, all its threads, ZeroMQ's I/O thread included) and the viewer's, and the
  blocks the viewer received.

    python3 bench/live.py [--blocks 20000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from common import context, station

from fieldstation.clock import SystemClock
from fieldstation.home import StationHome
from fieldstation.recording.job import ContinuousSlot, run_recorder
from fieldstation.recording.tap import LiveSubscriber, LiveTap
from fieldstation.sensors.base import Block, audio_description

VIEWER = """
import sys, time
from pathlib import Path
from fieldstation.recording.levels import SpectrogramScroll, levels
from fieldstation.recording.tap import LiveSubscriber
home, sensor, seconds = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
scroll, n = None, 0
with LiveSubscriber(home, sensor) as live:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        block = live.receive(0.2)
        if block is None:
            continue
        scroll = scroll or SpectrogramScroll(block.rate)
        levels(block.data)
        scroll.feed(block.data)
        n += 1
print(n)
"""


def stats(samples: list[float]) -> dict[str, float]:
    us = np.array(samples) * 1e6
    return {
        "p50_us": round(float(np.percentile(us, 50)), 1),
        "p95_us": round(float(np.percentile(us, 95)), 1),
        "max_us": round(float(us.max()), 1),
    }


def publish_cost(root: Path, blocks: int) -> dict[str, Any]:
    home = StationHome(root / "publish").ensure()
    tap = LiveTap.open(home, "mic", audio_description(48000, 1, "int16"))
    assert tap is not None
    data = (np.random.default_rng(1).normal(0, 3000, (960, 1))).astype(np.int16)
    t0 = datetime(2026, 6, 1, tzinfo=UTC)

    def run(first: int) -> list[float]:
        times = []
        for k in range(first, first + blocks):
            block = Block(data, k * 960, t0)
            started = time.perf_counter()
            tap.publish(block)
            times.append(time.perf_counter() - started)
        return times

    result: dict[str, Any] = {"block_frames": 960, "rate": 48000, "blocks": blocks}
    result["subscribers_0"] = stats(run(0))
    with LiveSubscriber(home, "mic") as live:
        received = 0
        stop = threading.Event()

        def read() -> None:
            nonlocal received
            while not stop.is_set():
                if live.receive(0.05) is not None:
                    received += 1

        reader = threading.Thread(target=read)
        reader.start()
        while not tap.listening:  # the subscription reaches the tap
            tap.publish(Block(data, 0, t0))
            time.sleep(0.001)
        try:
            result["subscribers_1"] = {**stats(run(blocks)), "received": received}
        finally:
            time.sleep(0.2)
            stop.set()
            reader.join(5)
        result["subscribers_1"]["received"] = received
    tap.close()
    return result


def recorder_cpu(root: Path, seconds: float, viewer: bool) -> dict[str, Any]:
    name = "viewed" if viewer else "alone"
    sensor = {
        "name": "mic",
        "kind": "synthetic",
        "sample_rate": 48000,
        "chunk": "10s",
        "block": "0.02s",
        "min_free": "1MB",
    }
    config = station(root / name, sensor)
    clock = SystemClock()
    ctx = context(config, clock, lambda what, details: None)
    start = clock.now() + timedelta(seconds=1)
    end = start + timedelta(seconds=seconds)
    watcher = None
    if viewer:
        watcher = subprocess.Popen(
            [sys.executable, "-c", VIEWER, str(ctx.home.root), "mic", str(seconds + 3)],
            stdout=subprocess.PIPE,
            text=True,
        )
    me = psutil.Process()
    before = me.cpu_times()
    run_recorder(ctx, "mic", slots=lambda now: ContinuousSlot(start, end), until=end)
    after = me.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    result: dict[str, Any] = {"seconds": seconds, "recorder_cpu_per_s": round(cpu / seconds, 4)}
    if watcher is not None:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        out, _ = watcher.communicate(timeout=seconds + 30)
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (reaped.ru_utime - children.ru_utime) + (reaped.ru_stime - children.ru_stime)
        result["viewer_blocks"] = int(out.strip() or 0)
        result["viewer_cpu_per_s"] = round(used / (seconds + 3), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fieldstation-bench-") as tmp:
        root = Path(tmp)
        result = {
            "publish": publish_cost(root, args.blocks),
            "recorder": {
                "viewers_0": recorder_cpu(root, args.seconds, viewer=False),
                "viewers_1": recorder_cpu(root, args.seconds, viewer=True),
            },
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
