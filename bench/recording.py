"""Recording speed and timing: sample loss, write rate, CPU cost, slot start jitter.

Prints one JSON object with two parts:

- ``fast``: the synthetic sensor at 384 kHz, mono, int16 records one simulated hour in 60 s
  chunks as fast as possible (a VirtualClock: pacing waits take no time) through the real
  recorder (chunk files, fsync, atomic rename, rows, outbox). ``samples_lost`` compares the
  frames committed with one hour of frames and checks the chunks are contiguous (must be 0);
  ``mb_per_s`` is file bytes written per wall second; ``cpu_s_per_audio_hour`` is the process
  CPU time (user + system) for that hour of audio.
- ``paced``: 48 kHz in real time (SystemClock), ``--slots`` slots of 1 s every 1.5 s;
  ``jitter_ms`` is the anchor of each session (capture time of its first frame) minus the slot
  start, p50/p99/max in milliseconds (target p99 <= 10 ms). A slot holds the frames from its
  anchor to its end, so ``frames_per_slot`` is 48,000 minus the start latency in frames.

    python3 bench/recording.py [--format flac|wav] [--slots 20] [--skip-paced]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from common import context, station
from sqlalchemy import select

from fieldstation.clock import SystemClock, VirtualClock
from fieldstation.job import JobContext
from fieldstation.recording.job import ContinuousSlot, run_recorder
from fieldstation.store.models import Recording


def rows(ctx: JobContext) -> list[Recording]:
    with ctx.db.session() as session:
        return list(session.scalars(select(Recording).order_by(Recording.id)))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fast(root: Path, fmt: str) -> dict[str, Any]:
    rate, hour = 384_000, 3600
    sensor = {
        "name": "ultra",
        "kind": "synthetic",
        "sample_rate": rate,
        "frequency": "40kHz",
        "chunk": "60s",
        "format": fmt,
        "min_free": "1MB",
    }
    config = station(root / "fast", sensor)
    clock = VirtualClock(datetime(2026, 6, 1, tzinfo=UTC))
    t0 = clock.now()

    def progress(what: str, details: dict[str, Any]) -> None:
        if what == "waiting":
            ctx.stop.set()

    ctx = context(config, clock, progress)
    end = t0 + timedelta(seconds=hour)
    slots = lambda now: ContinuousSlot(t0, end) if now < end else None  # noqa: E731
    cpu, wall = cpu_seconds(), time.perf_counter()
    run_recorder(ctx, "ultra", slots=slots)
    wall = time.perf_counter() - wall
    cpu = cpu_seconds() - cpu
    recs = rows(ctx)
    contiguous = all(
        b.start_frame == a.start_frame + a.frames for a, b in zip(recs, recs[1:], strict=False)
    )
    frames = sum(r.frames for r in recs)
    written = sum(r.bytes for r in recs)
    return {
        "sample_rate": rate,
        "format": fmt,
        "audio_seconds": hour,
        "chunks": len(recs),
        "samples_expected": rate * hour,
        "samples_lost": rate * hour - frames + (0 if contiguous else 1),
        "contiguous": contiguous,
        "bytes_written": written,
        "wall_s": round(wall, 2),
        "mb_per_s": round(written / 1e6 / wall, 1),
        "realtime_factor": round(hour / wall, 1),
        "cpu_s_per_audio_hour": round(cpu * 3600 / hour, 2),
    }


def paced(root: Path, fmt: str, n_slots: int) -> dict[str, Any]:
    sensor = {
        "name": "mic",
        "kind": "synthetic",
        "sample_rate": 48000,
        "chunk": "1s",
        "format": fmt,
        "block": "0.02s",
        "min_free": "1MB",
    }
    config = station(root / "paced", sensor)
    clock = SystemClock()
    first = clock.now() + timedelta(seconds=1)
    starts = [first + timedelta(seconds=1.5 * k) for k in range(n_slots)]

    def slots(now: datetime) -> ContinuousSlot | None:
        for start in starts:
            if start + timedelta(seconds=1) > now:
                return ContinuousSlot(start, start + timedelta(seconds=1))
        return None

    def progress(what: str, details: dict[str, Any]) -> None:
        if what == "waiting" and details["next_slot"] is None:
            ctx.stop.set()

    ctx = context(config, clock, progress)
    run_recorder(ctx, "mic", slots=slots)
    recs = [r for r in rows(ctx) if r.chunk_index == 0]
    jitter = np.array(
        [(r.started_at - s).total_seconds() * 1000 for r, s in zip(recs, starts, strict=False)]
    )
    return {
        "sample_rate": 48000,
        "slots": n_slots,
        "sessions": len(recs),
        "frames_per_slot": {"min": min(r.frames for r in recs), "max": max(r.frames for r in recs)},
        "jitter_ms": {
            "p50": round(float(np.percentile(jitter, 50)), 3),
            "p99": round(float(np.percentile(jitter, 99)), 3),
            "max": round(float(jitter.max()), 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", choices=("flac", "wav"), default="flac")
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--skip-paced", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fieldstation-bench-") as tmp:
        result: dict[str, Any] = {"fast": fast(Path(tmp), args.format)}
        if not args.skip_paced:
            result["paced"] = paced(Path(tmp), args.format, args.slots)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
