"""Outbox speed: durable enqueue rate and QoS 1 delivery rate to a local Mosquitto.

Prints one JSON object with each figure's settings, target and whether it is met:

- **headline** ``deliver_per_second``: delivery (marked sent only on PUBACK) to a Mosquitto on
  loopback at the **shipped default** ``outbox.batch_size`` (100) unless ``--delivery-batch``
  says otherwise (the output names the batch used); target (issue 6) >= 2,000 msgs/s;
- ``enqueue_per_chunk_per_second``: one fsynced SQLite transaction per message
  (synchronous=FULL), the station's real pattern (a chunk's row and its message commit
  together); no target, reported beside
- ``enqueue_many_per_second``: ``--batch`` messages per transaction (``enqueue_many``, a
  backlog's pattern); target (issue 6) >= 10,000 msgs/s.

A real subscriber, in its own process as it would be in the field, counts the distinct message
ids that arrive. The machine's load average is reported with the rates: on a shared machine
they move with it.

    python3 bench/outbox.py [--messages 20000] [--batch 500] [--delivery-batch N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from fieldstation.clock import SystemClock
from fieldstation.config import parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import open_database
from fieldstation.store.outbox import NewMessage, OutboxCap, enqueue, enqueue_many, status
from fieldstation.testing.broker import MosquittoBroker, Subscriber

BODY = {"label": "Turdus merula", "score": 0.87, "start": 1.5, "end": 4.5}


def _subscribe(port: int, topic: str, expect: int, ready: Any, result: Any) -> None:
    """Child process: subscribe, signal ``ready``, then report distinct ids received."""
    sub = Subscriber("127.0.0.1", port, topic, client_id="bench-subscriber")
    sub.subscribed.wait(10)
    ready.set()
    sub.wait_for(lambda s: len(s.ids) >= expect, 120)
    result.put(len(sub.ids))
    sub.close()


def _enqueue_rates(db: Any, station: str, cap: OutboxCap, n: int, batch: int) -> dict[str, Any]:
    clock = SystemClock()
    single_n = min(n // 10, 1000)
    started = time.perf_counter()
    for i in range(single_n):  # one transaction per message: the per-chunk pattern
        with db.session() as session:
            enqueue(
                session,
                kind="detection",
                body={**BODY, "n": i},
                destinations=["broker"],
                now=clock.now(),
                station_id=station,
                cap=cap,
            )
    single_s = time.perf_counter() - started
    many_n = n - single_n
    started = time.perf_counter()
    for first in range(0, many_n, batch):
        with db.session() as session:
            items = [
                NewMessage("detection", {**BODY, "n": i}, ["broker"])
                for i in range(first, min(many_n, first + batch))
            ]
            enqueue_many(session, items, now=clock.now(), station_id=station, cap=cap)
    many_s = time.perf_counter() - started
    many_rate = round(many_n / many_s)
    return {
        "enqueue_per_chunk_messages": single_n,
        "enqueue_per_chunk_per_second": round(single_n / single_s),
        "enqueue_per_chunk": "one fsynced transaction per message (a chunk commit's pattern)",
        "enqueue_many_batch": batch,
        "enqueue_many_messages": many_n,
        "enqueue_many_seconds": round(many_s, 3),
        "enqueue_many_per_second": many_rate,
        "enqueue_many_target": 10000,
        "enqueue_many_met": many_rate >= 10000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500, help="messages per transaction")
    parser.add_argument(
        "--delivery-batch", type=int, default=None, help="outbox.batch_size (default: shipped)"
    )
    args = parser.parse_args()
    n = args.messages
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, MosquittoBroker(Path(tmp) / "broker") as broker:
        data = tomllib.loads(template_text())
        data["station"]["home"] = str(Path(tmp) / "home")
        data["outputs"] = [
            {"name": "broker", "kind": "mqtt", "host": "127.0.0.1", "port": broker.port}
        ]
        if args.delivery_batch is not None:
            data["outbox"]["batch_size"] = args.delivery_batch
        config = parse_config(data)
        delivery_batch = config.outbox.batch_size
        shipped = parse_config(tomllib.loads(template_text())).outbox.batch_size
        station = config.station.id
        home = StationHome(config.home_path()).ensure()
        db = open_database(home.database)

        clock = SystemClock()
        loop = DeliveryLoop(config, db, clock, home)
        loop.run_once()  # empty outbox: builds and connects the messenger before any timing

        ready, received = spawn.Event(), spawn.Queue()
        topic = f"fieldstation/{station}/detection"
        child = spawn.Process(target=_subscribe, args=(broker.port, topic, n, ready, received))
        child.start()
        ready.wait(30)

        report = {
            "messages": n,
            **_enqueue_rates(db, station, OutboxCap.of(config.outbox), n, args.batch),
        }

        started = time.perf_counter()
        delivered = 0
        while True:
            delivered += loop.run_once()
            with db.session() as session:
                if status(session).total("pending") == 0:
                    break
        deliver_s = time.perf_counter() - started
        with db.session() as session:
            sent = status(session).total("sent")
        distinct = received.get(timeout=130)
        child.join(10)
        loop.close()
        db.dispose()
    rate = round(delivered / deliver_s) if deliver_s else 0
    report |= {
        "benchmark": "outbox",
        "delivery_batch": delivery_batch,
        "delivery_batch_is_shipped_default": delivery_batch == shipped,
        "delivered": delivered,
        "sent_total": sent,
        "deliver_seconds": round(deliver_s, 3),
        "deliver_per_second": rate,
        "deliver_target": 2000,
        "deliver_met": rate >= 2000,
        "subscriber_received_distinct": distinct,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
