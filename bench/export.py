"""Export speed: 1 million detections from the station database to Parquet.

Prints one JSON object: rows, seconds and rows/s of the first (full) export (wall clock, and
per CPU second of this process: on a loaded machine the second is the steadier number), and the
seconds of a second, incremental export that finds nothing new (the cursor check). The station holds
10,000 recordings with 100 detections each (20 labels, scores, times, frequencies), written
with bulk inserts before the clock starts. Parquet parts are zstd-compressed, one per 50,000
rows; ``bytes`` is the size of the folder.

    python3 bench/export.py [--detections 1000000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from fieldstation.export import run_export
from fieldstation.home import StationHome
from fieldstation.store import open_database
from fieldstation.store.deployments import start_deployment
from fieldstation.store.models import Detection, ModelRun, Recording

PER_RECORDING = 100
LABELS = [f"Species {i:02d}_Common name {i:02d}" for i in range(20)]


def fill(db: object, detections: int) -> None:
    """``detections`` rows over ``detections / PER_RECORDING`` recordings, in bulk."""
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    recordings = max(1, detections // PER_RECORDING)
    with db.session() as session:  # type: ignore[attr-defined]
        deployment = start_deployment(
            session, station_id="bench", config_hash="b" * 64, config={}, version="bench", now=t0
        ).id
        session.execute(
            insert(Recording.__table__),
            [
                {
                    "id": r + 1,
                    "deployment_id": deployment,
                    "sensor": "mic",
                    "path": f"data/mic/2026-06-01/{r:08d}.flac",
                    "session_id": str(uuid.UUID(int=r)),
                    "chunk_index": r,
                    "start_frame": r * 2_880_000,
                    "started_at": t0 + timedelta(seconds=60 * r),
                    "duration": 60.0,
                    "rate": 48000,
                    "channels": 1,
                    "frames": 2_880_000,
                    "bytes": 1_000_000,
                    "sha256": "0" * 64,
                    "format": "flac",
                    "end_reason": "complete",
                    "state": "processed",
                    "file_state": "present",
                    "created_at": t0,
                    "extra": {},
                }
                for r in range(recordings)
            ],
        )
        session.execute(
            insert(ModelRun.__table__),
            [
                {
                    "id": r + 1,
                    "recording_id": r + 1,
                    "processor": "birdnet",
                    "model": "birdnet",
                    "model_version": "2.4",
                    "status": "ok",
                    "started_at": t0,
                    "duration": 1.0,
                    "n_detections": PER_RECORDING,
                }
                for r in range(recordings)
            ],
        )
        batch: list[dict[str, object]] = []
        for n in range(detections):
            r = n // PER_RECORDING
            start = (n % PER_RECORDING) * 0.6
            batch.append(
                {
                    "recording_id": r + 1,
                    "model_run_id": r + 1,
                    "label": LABELS[n % len(LABELS)],
                    "score": 0.1 + (n % 90) / 100,
                    "start": start,
                    "end": start + 3.0,
                    "low_hz": 1000.0,
                    "high_hz": 9000.0,
                    "detected_at": t0 + timedelta(seconds=60 * r + start),
                    "extra": {},
                }
            )
            if len(batch) == 100_000:
                session.execute(insert(Detection.__table__), batch)
                batch = []
        if batch:
            session.execute(insert(Detection.__table__), batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--detections", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = StationHome(Path(tmp) / "home").ensure()
        db = open_database(home.database)
        fill(db, args.detections)
        folder = Path(tmp) / "parquet"
        began, cpu = time.perf_counter(), time.process_time()
        result = run_export(
            db,
            home_root=home.root,
            station="bench",
            what="detections",
            fmt="parquet",
            to=str(folder),
        )
        seconds = time.perf_counter() - began
        cpu_seconds = time.process_time() - cpu
        began = time.perf_counter()
        again = run_export(
            db,
            home_root=home.root,
            station="bench",
            what="detections",
            fmt="parquet",
            to=str(folder),
        )
        incremental = time.perf_counter() - began
        size = sum(p.stat().st_size for p in folder.iterdir())
        db.dispose()
    print(
        json.dumps(
            {
                "benchmark": "export",
                "format": "parquet",
                "rows": result.rows,
                "seconds": round(seconds, 3),
                "rows_per_s": round(result.rows / seconds),
                "cpu_seconds": round(cpu_seconds, 3),
                "rows_per_cpu_s": round(result.rows / cpu_seconds),
                "bytes": size,
                "incremental_rows": again.rows,
                "incremental_seconds": round(incremental, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
