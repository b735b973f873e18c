"""``run/status.json``: the station's state, rewritten atomically every ``status_interval``.

Modelled on omgrab's DeviceStatus: jobs, storage, CPU, memory, network, recording, versions.
The file is written to a temporary name in the same folder, fsynced and renamed over the old
one (rename(2) is atomic), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_json", "disk_status", "read_status", "system_status"]


def atomic_write_json(path: Path, data: dict[str, Any], *, fsync: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temp file, fsync, rename).

    ``fsync=False`` skips the flush to the device: a reader still never sees half a file, but
    a power cut may leave the previous version or none. For a file rewritten every few seconds
    (``run/status.json``) that is enough, and spares the SD card and the CPU.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.write("\n")
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status written, or None when there is none (or it cannot be parsed)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def disk_status(
    path: Path, disk_usage: Callable[[Path], Any] = shutil.disk_usage
) -> dict[str, int]:
    """Total, used and free bytes of the file system holding ``path``."""
    usage = disk_usage(path)
    return {"total_bytes": usage.total, "used_bytes": usage.used, "free_bytes": usage.free}


def system_status(pids: list[int]) -> dict[str, Any]:
    """CPU and memory of the host and of the station's processes ``pids`` (psutil).

    ``cpu_percent`` of the processes is measured since the previous call (first call: 0).
    """
    import psutil

    rss = 0
    cpu = 0.0
    for gone in set(_PROCESSES) - set(pids):  # ended jobs: forget them (restarts add pids)
        del _PROCESSES[gone]
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = _process(pid)
            rss += proc.memory_info().rss
            cpu += proc.cpu_percent(None)
    memory = psutil.virtual_memory()
    return {
        "cpu": {
            "count": psutil.cpu_count(),
            "load_1m": os.getloadavg()[0],
            "station_percent": round(cpu, 2),
        },
        "memory": {
            "total_bytes": memory.total,
            "available_bytes": memory.available,
            "station_rss_bytes": rss,
        },
    }


_PROCESSES: dict[int, Any] = {}


def _process(pid: int) -> Any:
    import psutil

    proc = _PROCESSES.get(pid)
    if proc is None or not proc.is_running():
        proc = psutil.Process(pid)
        proc.cpu_percent(None)
        _PROCESSES[pid] = proc
    return proc
