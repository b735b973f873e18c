"""Noise played into a PulseAudio virtual microphone, and the CPU time of other processes.

Shared by ``bench/recording.py`` (the station's venv) and ``bench/acoupi_recording.py`` (acoupi's
venv): standard library only, besides :mod:`fieldstation.testing.pulse`, so that either
interpreter can import it.
"""

from __future__ import annotations

import array
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["NoiseFeed", "daemon_pid", "process_cpu_seconds"]

_FEEDER = """\
import sys
block = open(sys.argv[1], "rb").read()
out = sys.stdout.buffer
try:
    while True:
        out.write(block)
except (BrokenPipeError, KeyboardInterrupt):
    pass
"""


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat``), None when it
    is gone or unknown."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return ticks / os.sysconf("SC_CLK_TCK")


def daemon_pid(mic: Any) -> int | None:
    """PID of ``mic``'s PulseAudio daemon (a :class:`PulseVirtualMic`), from its PID file."""
    try:
        return int((Path(mic.dir) / "pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class NoiseFeed:
    """Gaussian noise (standard deviation ``level`` of int16 full scale 32767; one second of
    it, looped) played into ``mic``'s sink ``vmic`` at ``rate`` Hz, mono ``s16le``, by
    ``pacat`` reading from a small Python feeder: the virtual mic then carries real, varying
    samples (not the null sink's silence). Start it inside the mic's ``with`` block (the
    environment then points PulseAudio clients at the private daemon). Both are child
    processes: their CPU is not the recording process's (``RUSAGE_SELF``); :meth:`cpu_seconds`
    reports it apart."""

    def __init__(self, mic: Any, rate: int, level: float = 1000.0, latency_ms: int = 200) -> None:
        self.mic = mic
        self.rate = rate
        self.level = level
        self.latency_ms = latency_ms
        self._feeder: subprocess.Popen[bytes] | None = None
        self._player: subprocess.Popen[bytes] | None = None

    def describe(self) -> str:
        return (
            f"pacat --raw --rate={self.rate} --channels=1 --format=s16le "
            f"--latency-msec={self.latency_ms} -d vmic, fed a looped second of gaussian noise "
            f"(sd {self.level:g} of 32767)"
        )

    def start(self) -> NoiseFeed:
        """Write the noise file into the daemon's folder and start playing it (returns at
        once; :meth:`stop` ends it)."""
        noise = random.Random(0)
        samples = array.array(
            "h",
            (max(-32768, min(32767, round(noise.gauss(0, self.level)))) for _ in range(self.rate)),
        )
        if sys.byteorder != "little":
            samples.byteswap()
        raw = Path(self.mic.dir) / "noise.s16le"
        raw.write_bytes(samples.tobytes())
        self._feeder = subprocess.Popen(
            [sys.executable, "-c", _FEEDER, str(raw)], stdout=subprocess.PIPE
        )
        assert self._feeder.stdout is not None
        self._player = subprocess.Popen(
            [
                "pacat",
                "--playback",
                "--raw",
                f"--rate={self.rate}",
                "--channels=1",
                "--format=s16le",
                f"--latency-msec={self.latency_ms}",
                "-d",
                "vmic",
            ],
            stdin=self._feeder.stdout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._feeder.stdout.close()  # pacat holds the pipe now: the feeder sees it close
        return self

    def cpu_seconds(self) -> float | None:
        """CPU seconds of the feeder and ``pacat`` so far (None before :meth:`start`)."""
        pids = [p.pid for p in (self._feeder, self._player) if p is not None]
        values = [process_cpu_seconds(pid) for pid in pids]
        return sum(v for v in values if v is not None) if values else None

    def stop(self) -> None:
        """Stop ``pacat`` and the feeder (idempotent)."""
        for process in (self._player, self._feeder):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._player = self._feeder = None

    def __enter__(self) -> NoiseFeed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
