"""Retention speed: one run over 100,000 recording rows (real files) with every rule active.

Prints one JSON object with its target and whether it is met. Target (issue 8): a retention
run over 100,000 recordings finishes in under a few seconds (judged: 5 s). The station holds
100,000 recordings over 60 days, one real file each of ``--file-bytes`` bytes (default 4096:
small, so that 100,000 of them fit on a test machine; ``bytes`` in the row is the file's real
size, so ``max_bytes`` and the bytes freed are true), 20 % with detections of 10 labels,
5 % unprocessed, 1 % pinned, 5 % with an undelivered ``recording`` notice. Rules: keep 30 days,
best 5 per label, protect unsent, ``max_bytes`` = 20 % of the total. Reported: the first run
(mass deletion, with the start-up sweep of the data folder), a second run with nothing left to
delete, and a third when the oldest day of what is left ages out. ``file_seconds`` is the part
spent unlinking files.

    python3 bench/retention.py [--recordings 100000] [--file-bytes 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tomllib
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from fieldstation.clock import VirtualClock
from fieldstation.config import parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.retention import RetentionJob
from fieldstation.store import open_database
from fieldstation.store.deployments import start_deployment
from fieldstation.store.models import Delivery, Detection, Message, ModelRun, Recording
from fieldstation.store.retention import Protection, deletable

Usage = namedtuple("Usage", "total used free")
TARGET_S = 5.0
"""Issue 8's "under a few seconds" for a run over 100,000 recordings, as a number."""


def build(home: StationHome, n: int, now: datetime, size: int) -> dict[str, Any]:
    db = open_database(home.database)
    start = now - timedelta(days=60)
    step = timedelta(days=60) / n
    with db.session() as session:
        dep = start_deployment(
            session, station_id="bench", config_hash="b", config={}, version="b", now=start
        ).id
    recordings, runs, detections, messages, deliveries = [], [], [], [], []
    for i in range(1, n + 1):
        t = start + step * i
        rel = f"data/mic/{t:%Y-%m-%d}/{i:07d}.wav"
        state = "recorded" if i % 20 == 0 else "processed"
        recordings.append(
            dict(
                id=i,
                deployment_id=dep,
                sensor="mic",
                path=rel,
                session_id="s",
                chunk_index=i,
                start_frame=0,
                started_at=t,
                duration=60.0,
                rate=48000,
                channels=1,
                frames=2_880_000,
                bytes=size,
                sha256="0" * 64,
                format="wav",
                end_reason="complete",
                state=state,
                file_state="present",
                pinned=i % 100 == 7,
                attempts=0,
                created_at=t,
                extra={},
            )
        )
        if i % 5 == 1:
            runs.append(
                dict(
                    id=i,
                    recording_id=i,
                    processor="p",
                    model="m",
                    model_version="1",
                    status="ok",
                    started_at=t,
                    duration=0.1,
                    n_detections=1,
                )
            )
            detections.append(
                dict(
                    recording_id=i,
                    model_run_id=i,
                    label=f"label{i % 10}",
                    score=(i * 7919 % 1000) / 1000,
                    start=0.0,
                    end=1.0,
                    detected_at=t,
                    extra={},
                )
            )
        if i % 20 == 3:
            messages.append(
                dict(
                    id=i,
                    message_id=f"m{i}",
                    kind="recording",
                    priority=4,
                    schema_version=1,
                    payload="{}",
                    size=2,
                    created_at=t,
                    recording_id=i,
                )
            )
            deliveries.append(
                dict(
                    message_pk=i,
                    destination="local",
                    priority=4,
                    state="pending",
                    attempts=0,
                    next_attempt_at=t,
                )
            )
    with db.session() as session:
        for model, rows in (
            (Recording, recordings),
            (ModelRun, runs),
            (Detection, detections),
            (Message, messages),
            (Delivery, deliveries),
        ):
            for k in range(0, len(rows), 20_000):
                session.execute(insert(model), rows[k : k + 20_000])
    root = str(home.root)
    for folder in {os.path.dirname(str(row["path"])) for row in recordings}:
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    content = os.urandom(size)
    for row in recordings:
        fd = os.open(os.path.join(root, str(row["path"])), os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.write(fd, content)
        finally:
            os.close(fd)
    db.dispose()
    return {
        "recordings": n,
        "file_bytes": size,
        "detections": len(detections),
        "pending_notices": len(messages),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=100_000)
    parser.add_argument("--file-bytes", type=int, default=4096, help="size of each real file")
    args = parser.parse_args()
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        home = StationHome(Path(tmp) / "home").ensure()
        t0 = time.perf_counter()
        built = build(home, args.recordings, now, args.file_bytes)
        build_s = time.perf_counter() - t0
        data = tomllib.loads(template_text())
        data["station"]["home"] = str(home.root)
        keep_bytes = int(args.recordings * args.file_bytes * 0.2)
        data["retention"] = {
            "min_free": "1GB",
            "max_bytes": keep_bytes,
            "best_per_label": 5,
            "protect_unsent": True,
            "default": {"keep": "days", "days": 30},
        }
        config = parse_config(data)
        db = open_database(home.database)
        clock = VirtualClock(now)
        job = RetentionJob(config, db, home, clock, disk_usage=lambda p: Usage(10**12, 0, 10**12))
        first = job.run_once()
        second = job.run_once()
        with db.session() as session:  # move on until the oldest deletable day ages out
            oldest = session.scalar(
                select(func.min(Recording.started_at)).where(
                    deletable(Protection(protect_unsent=True, best_per_label=5))
                )
            )
        age = (now - oldest).total_seconds() if oldest is not None else 0.0
        clock.advance(max(0.0, 31 * 86400 - age))
        third = job.run_once()
        files_left = sum(len(files) for _, _, files in os.walk(home.data))
        db.dispose()
    print(
        json.dumps(
            {
                "benchmark": "retention",
                "built": built,
                "build_seconds": round(build_s, 2),
                "first_run": {
                    "seconds": first.seconds,
                    "file_seconds": first.file_seconds,
                    "deleted": first.deleted,
                    "unlinked": first.unlinked,
                    "data_bytes_after": first.data_bytes,
                    "max_bytes": keep_bytes,
                    "short_bytes": first.short_bytes,
                },
                "second_run_nothing_to_do": {"seconds": second.seconds, "deleted": second.deleted},
                "third_run_next_day_ages_out": {
                    "seconds": third.seconds,
                    "file_seconds": third.file_seconds,
                    "deleted": third.deleted,
                },
                "files_left": files_left,
                "target": {"first_run_seconds": TARGET_S},
                "met": first.seconds <= TARGET_S,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
