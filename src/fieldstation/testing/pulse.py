"""A private PulseAudio daemon with a null-sink virtual microphone, for tests and
examples on machines without a sound card.

``with PulseVirtualMic(runtime_dir, rate=48000) as mic:`` starts ``pulseaudio`` with its own
runtime folder, a null sink ``vmic`` and ``vmic.monitor`` as the default source, and points
this process's PulseAudio clients (``PULSE_SERVER``, ``PULSE_RUNTIME_PATH``) at it; PortAudio
(``sounddevice``, device ``pulse`` or ``default``) then records whatever ``mic.play(path)``
plays into the sink. ``stop()`` kills the daemon by its PID file and restores the environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

__all__ = ["PulseUnavailableError", "PulseVirtualMic", "pulse_available"]

_BINARIES = ("pulseaudio", "pactl", "paplay")
_ENV = ("PULSE_SERVER", "PULSE_RUNTIME_PATH")


class PulseUnavailableError(RuntimeError):
    """PulseAudio binaries are missing or the daemon did not come up."""


def pulse_available() -> str | None:
    """None when the PulseAudio binaries are installed, else the reason they are not."""
    missing = [b for b in _BINARIES if shutil.which(b) is None]
    if missing:
        return (
            f"PulseAudio binaries not installed ({', '.join(missing)}); "
            "apt-get install pulseaudio pulseaudio-utils"
        )
    return None


class PulseVirtualMic:
    """A PulseAudio daemon in ``runtime_dir`` with a mono ``s16le`` null sink at ``rate`` Hz."""

    def __init__(self, runtime_dir: Path, rate: int = 48000, channels: int = 1) -> None:
        self.dir = Path(runtime_dir)
        self.rate = rate
        self.channels = channels
        self.server = f"unix:{self.dir / 'native'}"
        self._saved: dict[str, str | None] = {}
        self._pid: int | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PULSE_RUNTIME_PATH"] = str(self.dir)
        env["PULSE_SERVER"] = self.server
        env.setdefault("HOME", str(self.dir))
        return env

    def start(self, timeout: float = 10.0) -> PulseVirtualMic:
        """Start the daemon, wait until it answers, make ``vmic.monitor`` the default source.

        Raises :class:`PulseUnavailableError` when the binaries are missing or it fails.
        """
        reason = pulse_available()
        if reason:
            raise PulseUnavailableError(reason)
        self.dir.mkdir(parents=True, exist_ok=True)
        env = self._env()
        command = [
            "pulseaudio",
            "--daemonize=yes",
            "--exit-idle-time=-1",
            "-n",
            "--use-pid-file=yes",
            "--system=false",
            f"--load=module-native-protocol-unix socket={self.dir / 'native'} auth-anonymous=1",
            f"--load=module-null-sink sink_name=vmic rate={self.rate} "
            f"channels={self.channels} format=s16le",
            "--load=module-always-sink",
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise PulseUnavailableError(f"pulseaudio did not start: {result.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while True:
            probe = subprocess.run(
                ["pactl", "set-default-source", "vmic.monitor"],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise PulseUnavailableError(f"pulseaudio not answering: {probe.stderr.strip()}")
            time.sleep(0.05)
        pid_file = self.dir / "pid"
        if pid_file.exists():
            self._pid = int(pid_file.read_text().split()[0])
        for key in _ENV:
            self._saved[key] = os.environ.get(key)
        os.environ.update({k: env[k] for k in _ENV})
        if "sounddevice" in sys.modules:  # PortAudio enumerates devices once: rescan them
            sounddevice = sys.modules["sounddevice"]
            sounddevice._terminate()
            sounddevice._initialize()
        return self

    def play(self, path: Path, latency_ms: int = 20, timeout: float = 120.0) -> None:
        """Play ``path`` into the virtual mic with ``paplay`` and wait until it has played.

        Raises ``subprocess.CalledProcessError`` when paplay fails.
        """
        subprocess.run(
            ["paplay", f"--latency-msec={latency_ms}", "-d", "vmic", str(path)],
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start_playing(self, path: Path, latency_ms: int = 200) -> subprocess.Popen[bytes]:
        """Start ``paplay`` on ``path`` into the virtual mic and return at once (the caller
        waits for or kills the returned process)."""
        return subprocess.Popen(
            ["paplay", f"--latency-msec={latency_ms}", "-d", "vmic", str(path)],
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Kill the daemon (by its PID file) and restore the environment (idempotent)."""
        pid = self._pid
        if pid is None and (self.dir / "pid").exists():
            try:
                pid = int((self.dir / "pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(100):
                    os.kill(pid, 0)
                    time.sleep(0.02)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._pid = None
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = {}

    def __enter__(self) -> PulseVirtualMic:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
