"""Recording upload throughput on loopback: the station's client vs ``curl``, same file, same hub.

A real ``fieldstation hub run`` process (SQLite fleet database, disk storage, HTTP on a free
loopback port) receives a ``--mb`` MB file (random bytes) ``--repeats`` times from each of:

- the station's :class:`fieldstation.upload.client.TusClient` (``HEAD`` → 404, ``POST``,
  ``PATCH`` of the whole file, streamed from disk in 1 MiB blocks; the hub checks the sha256
  and stores the file): what the ``upload`` job does per file;
- ``curl -X POST`` creating the upload, then ``curl -T FILE -X PATCH`` of the same file: the
  same endpoint and the same work on the hub, with curl's C sender instead of ours.

One untimed upload by each first (the hub's token cache, the file in the page cache).

Each upload has a new id. Prints one JSON object: MB/s of each (median of the repeats,
interleaved; MB = 10^6 bytes), the ratio station/curl and whether it meets the target
(>= 0.8); and the sender's CPU seconds per GB (our process, curl's), the figure that does not
depend on what else runs on the machine (the hub's Python HTTP server bounds both rates).

    python3 bench/upload.py [--mb 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from fieldstation.hub.db import open_hub_database
from fieldstation.hub.tokens import add_token
from fieldstation.testing.broker import free_port
from fieldstation.upload.client import TusClient, UploadFile

TARGET_RATIO = 0.8


def metadata(values: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def start_hub(folder: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """A ``hub run`` process; (process, upload endpoint URL, station token)."""
    database = f"sqlite:///{folder / 'hub.db'}"
    db = open_hub_database(database)
    token = add_token(db, "bench")
    db.dispose()
    port = free_port()
    config = folder / "hub.toml"
    config.write_text(
        f'home = "{folder}"\ndatabase = "{database}"\n[http]\nport = {port}\ndashboard = false\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "fieldstation.cli", "hub", "run", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except httpx.TransportError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the hub did not start") from None
            time.sleep(0.1)
    return process, f"http://127.0.0.1:{port}/uploads", token


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def station_upload(url: str, token: str, path: Path, size: int, sha256: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one upload by the station's client."""
    client = TusClient(url, token, "bench")
    file = UploadFile(path, str(uuid.uuid4()), size, sha256, {"filename": "bench.wav"})
    try:
        started, cpu_started = time.perf_counter(), cpu(resource.RUSAGE_SELF)
        client.send(file)
        return time.perf_counter() - started, cpu(resource.RUSAGE_SELF) - cpu_started
    finally:
        client.close()


def curl_upload(url: str, token: str, path: Path, size: int, sha256: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of curl) of one upload by curl: a ``POST`` creating it,
    then a ``PATCH`` of the whole file (two curl runs, both timed)."""
    upload_id = str(uuid.uuid4())
    auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
    meta = metadata({"station": "bench", "upload_id": upload_id, "sha256": sha256})
    create = ["curl", "-sS", "-f", "-o", "/dev/null", "-X", "POST"]
    for name, value in {**auth, "Upload-Length": str(size), "Upload-Metadata": meta}.items():
        create += ["-H", f"{name}: {value}"]
    create.append(url)
    send = ["curl", "-sS", "-f", "-o", "/dev/null", "-X", "PATCH", "-T", str(path)]
    for name, value in {
        **auth,
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": "0",
        "Expect": "",
    }.items():
        send += ["-H", f"{name}: {value}"]
    send.append(f"{url}/bench/{upload_id}")
    started, cpu_started = time.perf_counter(), cpu(resource.RUSAGE_CHILDREN)
    subprocess.run(create, check=True)
    subprocess.run(send, check=True)
    elapsed = time.perf_counter() - started
    spent = cpu(resource.RUSAGE_CHILDREN) - cpu_started
    head = httpx.head(f"{url}/bench/{upload_id}", headers=auth)
    assert head.headers.get("fieldstation-stored") == sha256, "curl's upload was not stored"
    return elapsed, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="file size, MB (10^6 bytes)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    size = args.mb * 1_000_000
    with tempfile.TemporaryDirectory(prefix="fieldstation-bench-upload-") as tmp:
        folder = Path(tmp)
        path = folder / "recording.wav"
        digest = hashlib.sha256()
        with path.open("wb") as handle:
            left = size
            while left:
                block = os.urandom(min(left, 1 << 20))
                handle.write(block)
                digest.update(block)
                left -= len(block)
        sha256 = digest.hexdigest()
        process, url, token = start_hub(folder)
        try:
            # warm-up, untimed: the hub's token cache, imports, the page cache of the file
            station_upload(url, token, path, size, sha256)
            curl_upload(url, token, path, size, sha256)
            station: list[tuple[float, float]] = []
            curl: list[tuple[float, float]] = []
            for k in range(args.repeats):  # interleaved, alternating who goes first
                first, second = (station, curl) if k % 2 == 0 else (curl, station)
                for runs in (first, second):
                    upload = station_upload if runs is station else curl_upload
                    runs.append(upload(url, token, path, size, sha256))
        finally:
            process.terminate()
            process.wait(30)
    station_s, curl_s = [s for s, _ in station], [s for s, _ in curl]
    station_rate = size / 1e6 / statistics.median(station_s)
    curl_rate = size / 1e6 / statistics.median(curl_s)
    ratio = station_rate / curl_rate
    print(
        json.dumps(
            {
                "file_mb": args.mb,
                "repeats": args.repeats,
                "station_mb_per_s": round(station_rate, 1),
                "curl_mb_per_s": round(curl_rate, 1),
                "station_seconds": [round(s, 3) for s in station_s],
                "curl_seconds": [round(s, 3) for s in curl_s],
                "station_cpu_s_per_gb": round(
                    statistics.median(c for _, c in station) / size * 1e9, 3
                ),
                "curl_cpu_s_per_gb": round(statistics.median(c for _, c in curl) / size * 1e9, 3),
                "ratio": round(ratio, 3),
                "target_ratio": TARGET_RATIO,
                "met": ratio >= TARGET_RATIO,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
