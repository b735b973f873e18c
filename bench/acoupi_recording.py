"""acoupi 0.8.0's CPU per audio hour recording 384 kHz mono from a real (PulseAudio) device.

The side-by-side anchor of ``bench/recording.py --real-device-cpu`` (issue 22): the same
private PulseAudio daemon with a 384 kHz virtual microphone (``fieldstation.testing.pulse``),
fed the same noise (``bench/pulse_feed.py``), recorded for the same wall time by acoupi's own
recording task (``acoupi.tasks.generate_recording_task``) around acoupi's own recorder
(``acoupi.components.PyAudioRecorder``, device ``pulse``, int16, WAV files) and acoupi's
``SqliteStore``: each call records one file of ``--duration`` seconds (acoupi's default program
template: 3 s, ``chunksize`` 8192 frames per read), adds its GUANO metadata and stores its row.
The task is called back to back, as acoupi's scheduler would with an interval equal to the
duration (continuous recording); acoupi's Celery worker and beat, which call it, are not
running (their own CPU is not counted). Each file is deleted after its frames are counted
(acoupi's file management task would move it later), so the disk does not fill.

Measured like ours: this process's CPU (``RUSAGE_SELF``, user + system, every thread:
PortAudio's included) over the loop, per hour of audio in the files; the PulseAudio daemon's
and the feed's CPU apart (``/proc/PID/stat``); frames recorded against wall time (the gaps
between files: acoupi opens PortAudio and the stream anew for every file); recordings that
failed (acoupi reads with ``exception_on_overflow=True``: an overflow fails the file); the load
average before and after; the RMS level of the first file's first second (int16 units: the
feed's noise arrived, about 1000, not silence). Prints one JSON object.

acoupi is not a dependency of fieldstation: it lives in its own venv, outside the repository.
Setup (once)::

    apt-get install -y portaudio19-dev          # PyAudio compiles against PortAudio's headers
    python3 -m venv /work/acoupi-venv
    /work/acoupi-venv/bin/pip install acoupi==0.8.0

Run, from the repository root (``src`` on the path for ``fieldstation.testing.pulse`` only,
which needs nothing beyond the standard library)::

    PYTHONPATH=src /work/acoupi-venv/bin/python bench/acoupi_recording.py --seconds 180
    PYTHONPATH=src /work/acoupi-venv/bin/python bench/acoupi_recording.py --seconds 180 \\
        --duration 60      # one-minute files, like the station's chunks
"""

from __future__ import annotations

import argparse
import array
import json
import math
import os
import resource
import tempfile
import time
import wave
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pulse_feed import NoiseFeed, daemon_pid, process_cpu_seconds

from fieldstation.testing.pulse import PulseVirtualMic, pulse_available

RATE = 384_000


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(root: Path, seconds: float, duration: float, chunksize: int) -> dict[str, Any]:
    """Run acoupi's recording task back to back for ``seconds`` of wall time (the last file
    started before then is finished) with ``duration``-second files read ``chunksize`` frames
    at a time, against the virtual microphone."""
    reason = pulse_available()
    if reason is not None:
        return {"skipped": reason}
    with PulseVirtualMic(root / "pulse", rate=RATE) as mic, NoiseFeed(mic, RATE) as feed:
        # imported once the daemon runs (PyAudio enumerates the devices at each PyAudio())
        from acoupi.components import PyAudioRecorder, SqliteStore
        from acoupi.tasks import generate_recording_task

        pulse_pid = daemon_pid(mic)
        recorder = PyAudioRecorder(
            duration=duration,
            samplerate=RATE,
            audio_channels=1,
            device_name="pulse",
            chunksize=chunksize,
            audio_dir=root / "audio",
        )
        store = SqliteStore(root / "metadata.db")
        task = generate_recording_task(recorder=recorder, store=store)
        frames = files = 0
        first: Path | None = None
        failures: list[str] = []
        load_before = os.getloadavg()
        cpu0, pulse0, feed0 = cpu_seconds(), process_cpu_seconds(pulse_pid), feed.cpu_seconds()
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            try:
                recording = task()
            except Exception as error:  # acoupi's worker logs a failed task and goes on
                failures.append(f"{type(error).__name__}: {error}")
                continue
            if recording is None or recording.path is None:
                failures.append("no recording")
                continue
            with wave.open(str(recording.path), "rb") as wav:
                frames += wav.getnframes()
            files += 1
            if first is None:
                first = recording.path  # kept: its level is read after the loop
            else:
                recording.path.unlink()
        wall = time.perf_counter() - start
        cpu = cpu_seconds() - cpu0
        pulse1, feed1 = process_cpu_seconds(pulse_pid), feed.cpu_seconds()
        load_after = os.getloadavg()
    audio_s = frames / RATE
    level = None
    if first is not None:
        with wave.open(str(first), "rb") as wav:
            samples = array.array("h", wav.readframes(RATE))  # its first second
        level = round(math.sqrt(sum(x * x for x in samples) / len(samples)), 1) if samples else 0.0

    def per_hour(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or not audio_s else round((b - a) * 3600 / audio_s, 1)

    return {
        "clock": "system (real time)",
        "recorder": f"acoupi {version('acoupi')} PyAudioRecorder (PyAudio {version('PyAudio')}) "
        "in acoupi's recording task (GUANO metadata, SqliteStore row), called back to back",
        "sensor": "PortAudio input from a PulseAudio virtual microphone (null sink monitor, "
        "384 kHz s16le), device 'pulse'",
        "feed": feed.describe(),
        "sample_rate": RATE,
        "format": "wav (acoupi writes WAV only)",
        "file_duration_s": duration,
        "chunksize_frames": chunksize,
        "frames_per_buffer": 2048,  # acoupi's stream.open, whatever chunksize is
        "wall_s": round(wall, 1),
        "files": files,
        "failed_recordings": len(failures),
        "failures": failures[:5],
        "frames_recorded": frames,
        "signal_rms_first_file": level,
        "frames_of_wall_time": round(RATE * wall),
        "gap_fraction": round(1 - audio_s / wall, 4) if wall else None,
        "cpu_s": round(cpu, 2),
        "cpu_s_per_audio_hour": per_hour(0.0, cpu),
        "pulseaudio_cpu_s_per_audio_hour": per_hour(pulse0, pulse1),
        "feed_cpu_s_per_audio_hour": per_hour(feed0, feed1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180, help="wall time to record for")
    parser.add_argument(
        "--duration", type=float, default=3, help="seconds per file (acoupi's default: 3)"
    )
    parser.add_argument(
        "--chunksize", type=int, default=8192, help="frames per read (acoupi's default: 8192)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acoupi-bench-") as tmp:
        result = {
            "benchmark": "acoupi_recording",
            "acoupi": measure(Path(tmp), args.seconds, args.duration, args.chunksize),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
