"""Station footprint: memory (RSS and PSS) and CPU of all station processes over a window.

Runs ``fieldstation run -c CONFIG --for ...`` as a subprocess in a fresh home for each scenario,
waits ``--warmup`` seconds, then samples every process of the station (supervisor, fork
server, jobs) every ``--every`` seconds for ``--seconds`` seconds. Prints one
JSON object with the targets and whether each is met. Targets: issue 22's PSS <= 80 MiB idle
for the embedded default and <= 0.2 % of one core while no slot is open over 600 s (``--long``;
the default window is shorter, for quick runs, and the output says which was used); issue 7's
total RSS <= 110 MiB kept beside. Each process's memory is broken down from
``/proc/PID/smaps_rollup``: PSS, private (its own pages) and shared (pages it shares, mostly
the fork server's preloaded modules, copy-on-write).

- ``rss``: resident memory summed over processes (counts pages shared between the fork server
  and its children once per process: an over-estimate);
- ``pss``: proportional set size (psutil ``memory_full_info().pss``): each shared page split
  between the processes sharing it, so the sum is the station's real share of RAM;
- ``private``: the processes' private pages summed (their own, copied on write or allocated
  after the fork): steadier than ``pss`` from run to run, which also moves with the file pages
  (libpython, extension modules) that other processes on the machine happen to map;
- ``cpu_percent``: CPU seconds (user + system) used by all station processes during the
  window / wall seconds x 100 (percent of ONE core).

Scenarios: ``default`` (the embedded default: synthetic 48 kHz, energy detector, file output),
``energy48k`` (real bird audio resampled to 48 kHz, replayed in a loop, energy detector),
``idle`` (the default station with a schedule whose window is never open now).

    python3 bench/footprint.py [--seconds 60 | --long] [--warmup 15] [--scenario default ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from fieldstation.config import template_text

MIB = 1024 * 1024
SAMPLES = Path(
    os.environ.get("FIELDSTATION_SAMPLES", Path("~/.cache/fieldstation/samples").expanduser())
)


def _station(home: Path) -> dict[str, Any]:
    data = tomllib.loads(template_text())
    data["station"]["home"] = str(home)
    return data


def scenario_default(home: Path) -> dict[str, Any]:
    return _station(home)


def scenario_energy48k(home: Path) -> dict[str, Any]:
    import numpy as np
    import soundfile as sf
    from scipy.signal import resample_poly

    source = SAMPLES / "birds" / "birds_10s.wav"
    audio, rate = sf.read(source, dtype="float32")
    if audio.ndim > 1:
        audio = audio[:, 0]
    resampled = resample_poly(audio, 48000, rate).astype(np.float32)
    target = home.parent / "birds_48k.wav"
    sf.write(target, np.clip(resampled, -1, 1), 48000, subtype="PCM_16")
    data = _station(home)
    data["sensors"] = [
        {
            "name": "mic",
            "kind": "replay",
            "files": [str(target)],
            "loop": True,
            "sample_rate": "48kHz",
            "format": "flac",
            "chunk": "10s",
            "schedule": "always",
            "min_free": "200MB",
        }
    ]
    return data


def scenario_idle(home: Path) -> dict[str, Any]:
    data = _station(home)
    data["station"]["timezone"] = "UTC"
    now_utc = datetime.now(UTC)
    start = (now_utc + timedelta(hours=6)).strftime("%H:%M")
    end = (now_utc + timedelta(hours=7)).strftime("%H:%M")
    data["schedules"]["later"] = {"windows": [{"start": start, "end": end}]}
    data["sensors"][0]["schedule"] = "later"
    return data


SCENARIOS = {"default": scenario_default, "energy48k": scenario_energy48k, "idle": scenario_idle}


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _label(proc: psutil.Process, root: psutil.Process) -> str:
    """supervisor, fork server, resource tracker, or the job (its process title)."""
    if proc.pid == root.pid:
        return "supervisor"
    line = " ".join(proc.cmdline())
    if "resource_tracker" in line:
        return "resource tracker"
    try:
        children = proc.children()
    except psutil.Error:
        children = []
    if proc.ppid() == root.pid and children:
        return "fork server"
    return "job"


SMAPS_FIELDS = (
    "Rss",
    "Pss",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Swap",
)


def smaps_rollup(pid: int) -> dict[str, int]:
    """The memory of process ``pid`` from ``/proc/PID/smaps_rollup`` (Linux 4.14+), bytes:
    ``rss``, ``pss``, ``private`` (clean + dirty: pages no other process maps), ``shared``
    (clean + dirty: pages mapped by others too, e.g. the fork server's, copied on write),
    ``swap``. Raises ``OSError`` when the process is gone."""
    values = dict.fromkeys(SMAPS_FIELDS, 0)
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) * 1024
    return {
        "rss": values["Rss"],
        "pss": values["Pss"],
        "private": values["Private_Clean"] + values["Private_Dirty"],
        "shared": values["Shared_Clean"] + values["Shared_Dirty"],
        "swap": values["Swap"],
    }


def _job_name(proc: psutil.Process) -> str:
    """A job's name from its process title (``fieldstation: recorder:mic``), else its cmdline."""
    try:
        line = " ".join(proc.cmdline())
    except psutil.Error:
        return "?"
    return line.removeprefix("fieldstation: ")[:60]


def measure(name: str, seconds: float, warmup: float, every: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"footprint-{name}-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        data = SCENARIOS[name](home)
        config = home / "station.toml"
        config.write_text(tomli_w.dumps(data))
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fieldstation.cli",
                "run",
                "-c",
                str(config),
                "--for",
                f"{warmup + seconds + 5:.0f}s",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        root = psutil.Process(run.pid)
        time.sleep(warmup)
        cpu_start: dict[int, float] = {}
        cpu_last: dict[int, float] = {}
        rss: list[int] = []
        pss: list[int] = []
        private: list[int] = []
        processes: dict[int, str] = {}
        memory: dict[int, list[dict[str, int]]] = {}
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            total_rss = total_pss = total_private = 0
            for proc in _tree(root):
                try:
                    with proc.oneshot():
                        info = proc.memory_full_info()
                        times = proc.cpu_times()
                        label = _label(proc, root)
                    rollup = smaps_rollup(proc.pid)
                except (psutil.Error, OSError):
                    continue
                memory.setdefault(proc.pid, []).append(rollup)
                used = times.user + times.system
                cpu_start.setdefault(proc.pid, used)
                cpu_last[proc.pid] = used
                processes[proc.pid] = label if label != "job" else _job_name(proc)
                total_rss += info.rss
                total_pss += getattr(info, "pss", info.rss)
                total_private += rollup["private"]
            rss.append(total_rss)
            pss.append(total_pss)
            private.append(total_private)
            time.sleep(every)
        wall = time.monotonic() - started
        per_process_cpu = {pid: cpu_last[pid] - cpu_start[pid] for pid in cpu_last}
        run.send_signal(15)
        exit_code = run.wait(60)
        recordings = len(list((home / "data").rglob("*.flac")))
    cpu = sum(per_process_cpu.values())
    return {
        "scenario": name,
        "seconds": round(wall, 1),
        "processes": len(processes),
        "rss_mib": {"mean": round(sum(rss) / len(rss) / MIB, 1), "max": round(max(rss) / MIB, 1)},
        "pss_mib": {"mean": round(sum(pss) / len(pss) / MIB, 1), "max": round(max(pss) / MIB, 1)},
        "private_mib": {
            "mean": round(sum(private) / len(private) / MIB, 1),
            "max": round(max(private) / MIB, 1),
        },
        "cpu_percent_of_one_core": round(100 * cpu / wall, 3),
        "memory_by_process_mib": {
            f"{pid} {processes[pid]}": {
                key: round(sum(s[key] for s in samples) / len(samples) / MIB, 1)
                for key in ("pss", "private", "shared", "rss")
            }
            for pid, samples in sorted(memory.items())
        },
        "cpu_percent_by_process": {
            f"{pid} {processes[pid]}": round(100 * used / wall, 3)
            for pid, used in sorted(per_process_cpu.items())
        },
        "recordings": recordings,
        "exit_code": exit_code,
    }


LONG_WINDOW_S = 600.0
"""The window of issue 22's idle figures: long enough to hold heartbeats and a retention run."""
TARGETS = {"pss_mib": 80, "idle_cpu_percent": 0.2, "total_rss_mib": 110}
"""Issue 22: PSS ≤ 80 MiB idle for the embedded default (side by side with acoupi's 264-268
MiB), idle CPU ≤ 0.2 % of a core over 600 s; issue 7's total RSS ≤ 110 MiB kept beside."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument(
        "--long",
        action="store_true",
        help=f"a {LONG_WINDOW_S:.0f} s window (issue 22's: heartbeats and retention inside)",
    )
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    seconds = max(args.seconds, LONG_WINDOW_S) if args.long else args.seconds
    results = [
        measure(name, seconds, args.warmup, args.every) for name in args.scenario or list(SCENARIOS)
    ]
    idle = next((r for r in results if r["scenario"] == "idle"), None)
    default = next((r for r in results if r["scenario"] == "default"), None)
    print(
        json.dumps(
            {
                "benchmark": "footprint",
                "window_seconds": seconds,
                "window": "long (>= 600 s: heartbeats and retention included)"
                if seconds >= LONG_WINDOW_S
                else f"short ({seconds:.0f} s; --long for issue 22's 600 s window)",
                "targets": TARGETS,
                "load_average": os.getloadavg(),
                "cpu_count": os.cpu_count(),
                "results": results,
                # PSS splits each shared page between the processes sharing it: the
                # station's real share of RAM. RSS summed over processes counts every page
                # the fork server shares with its jobs once per process (issue 7's figure).
                "met": {
                    "pss_mib_idle": None
                    if idle is None
                    else idle["pss_mib"]["mean"] <= TARGETS["pss_mib"],
                    "pss_mib_default": None
                    if default is None
                    else default["pss_mib"]["mean"] <= TARGETS["pss_mib"],
                    "idle_cpu_percent": None
                    if idle is None
                    else idle["cpu_percent_of_one_core"] <= TARGETS["idle_cpu_percent"],
                    "idle_cpu_over_600s": seconds >= LONG_WINDOW_S,
                    "total_rss_mib": all(
                        r["rss_mib"]["max"] <= TARGETS["total_rss_mib"] for r in results
                    ),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
