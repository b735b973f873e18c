"""glibc malloc settings of the station's processes (issue 22: memory): few arenas, freed heap
returned to the kernel after start-up and when a job goes idle."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from fieldstation.config import parse_config
from fieldstation.runtime import jobs, station
from fieldstation.runtime.forkserver import MALLOC_ARENAS
from fieldstation.runtime.station import Station

from .test_station import fast_station

GLIBC = platform.libc_ver()[0] == "glibc"

ARENAS = textwrap.dedent(
    """
    import ctypes, sys, tempfile, threading
    from fieldstation.runtime.forkserver import give_back_freed_memory
    if sys.argv[1] == "settings":
        give_back_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    barrier = threading.Barrier(8)
    def worker():
        libc.malloc(1000)  # a thread's first malloc picks (or makes) its arena
        barrier.wait()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile() as out:
        f = libc.fopen(out.name.encode(), b"w")
        libc.malloc_info(0, f)
        libc.fclose(f)
        print(open(out.name).read().count("<heap nr="))
    """
)


def _arenas(mode: str) -> int:
    """The malloc arenas of a process whose eight threads each malloc'ed (malloc_info(3))."""
    done = subprocess.run(
        [sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc settings")
def test_the_settings_limit_malloc_arenas() -> None:
    assert _arenas("settings") <= MALLOC_ARENAS
    assert _arenas("defaults") > MALLOC_ARENAS  # the check sees arenas


def test_a_job_returns_its_freed_heap_when_it_goes_idle_at_most_every_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims: list[float] = []
    now = [100.0]
    monkeypatch.setattr(jobs, "trim_freed_memory", lambda: trims.append(now[0]))
    read, write = os.pipe()
    os.set_blocking(write, False)
    from multiprocessing.connection import Connection

    conn = Connection(write, readable=False)
    try:
        report = jobs._Reporter(conn, monotonic=lambda: now[0])
        report("waiting", {})
        report("chunk", {})
        now[0] += jobs.TRIM_EVERY - 1
        report("idle", {})
        now[0] += 1
        report("idle", {})
        report("claimed", {})
        assert trims == [100.0, 100.0 + jobs.TRIM_EVERY]
    finally:
        conn.close()
        os.close(read)


def test_the_supervisor_returns_its_freed_heap_after_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trimmed = threading.Event()
    monkeypatch.setattr(station, "TRIM_AFTER_START", 0.0)
    monkeypatch.setattr(station, "trim_freed_memory", trimmed.set)
    data = fast_station(tmp_path / "home")
    data["runtime"]["status_interval"] = "0.2s"
    running = Station(parse_config(data), jobs=[], threads=False, control=False, tick=0.1)
    stop = threading.Event()
    runner = threading.Thread(target=running.run, args=(stop,))
    runner.start()
    try:
        assert running.ready.wait(30)
        assert trimmed.wait(30)
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
