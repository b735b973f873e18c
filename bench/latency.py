"""Chunk end -> detection at an MQTT subscriber: the station's end-to-end latency (issue 22).

A real station (the embedded default: synthetic chirps every second, the energy detector) runs
in this process with an MQTT output to a real Mosquitto on a free port; a subscriber stamps each
``detection`` message on arrival. Latency = arrival - the end of the chunk it came from
(``recording_started_at + chunk``, the time the chunk's last sample was captured): recorder
commit, processor wake-up and analysis, the detection's commit, the delivery worker's wake-up,
PUBLISH, PUBACK and the broker's delivery to the subscriber. Real time, real processes.

    python3 bench/latency.py [--chunks 50] [--chunk 1s] [--outbox-poll 5s]

Prints JSON: p50/p95/p99/max in ms over the chunks, the settings, and the targets of issue 22
(p50 <= 100 ms, p99 <= 300 ms) with whether they are met. The anchor: acoupi sends every 120 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fieldstation.config import parse_config, template_text
from fieldstation.config.units import parse_duration
from fieldstation.runtime.station import Station
from fieldstation.testing.broker import MosquittoBroker

TARGET_P50_MS = 100.0
TARGET_P99_MS = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=50, help="Chunks to measure (>= 50).")
    parser.add_argument("--chunk", default="1s", help="Chunk length.")
    parser.add_argument("--outbox-poll", default="5s", help="The delivery poll (fallback).")
    args = parser.parse_args()
    chunk = parse_duration(args.chunk)
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    arrivals: dict[str, tuple[float, float]] = {}  # recording start -> (arrival, chunk end)
    lock = threading.Condition()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        now = time.time()
        body = json.loads(message.payload)["body"]
        started = datetime.fromisoformat(body["recording_started_at"])
        end = (started + timedelta(seconds=chunk)).timestamp()
        with lock:
            arrivals.setdefault(body["recording_started_at"], (now, end))
            lock.notify_all()

    with (
        tempfile.TemporaryDirectory() as folder,
        MosquittoBroker(Path(folder) / "broker") as broker,
    ):
        data = tomllib.loads(template_text())
        data["station"]["home"] = str(Path(folder) / "home")
        data["sensors"][0].update(sample_rate="16kHz", chunk=args.chunk, schedule=None)
        del data["sensors"][0]["schedule"]
        data["processors"][0].update(high="7kHz")
        data["outputs"] = [
            {"name": "broker", "kind": "mqtt", "host": broker.host, "port": broker.port}
        ]
        data["runtime"]["outbox_poll"] = args.outbox_poll
        config = parse_config(data)
        subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="latency-bench")
        subscriber.on_message = on_message
        subscriber.connect(broker.host, broker.port)
        subscriber.subscribe(f"fieldstation/{config.station.id}/detection", qos=1)
        subscriber.loop_start()
        station = Station(config, control=False)
        stop = threading.Event()
        runner = threading.Thread(target=station.run, args=(stop,))
        started = time.monotonic()
        runner.start()
        try:
            limit = started + 120 + args.chunks * chunk * 3
            with lock:
                while len(arrivals) < args.chunks + 1 and time.monotonic() < limit:
                    lock.wait(1.0)
        finally:
            stop.set()
            runner.join(120)
            subscriber.loop_stop()
            subscriber.disconnect()
    measured = sorted(arrivals.items())[1:]  # the first chunk waits for the processor to start
    latencies = sorted((arrival - end) * 1000 for _, (arrival, end) in measured)

    def quantile(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    p50, p99 = quantile(0.50), quantile(0.99)
    print(
        json.dumps(
            {
                "what": "chunk end -> detection at an MQTT subscriber (real time, real broker)",
                "chunks": len(latencies),
                "chunk_s": chunk,
                "outbox_poll_s": parse_duration(args.outbox_poll),
                "p50_ms": p50,
                "p95_ms": quantile(0.95),
                "p99_ms": p99,
                "max_ms": round(latencies[-1], 1) if latencies else None,
                "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
                "target_p50_ms": TARGET_P50_MS,
                "target_p99_ms": TARGET_P99_MS,
                "met": p50 is not None
                and p99 is not None
                and p50 <= TARGET_P50_MS
                and p99 <= TARGET_P99_MS,
                "load_average": os.getloadavg(),
                "anchor": "acoupi 0.8.0 sends every 120 s (p50 52 s, p99 112 s measured here)",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
