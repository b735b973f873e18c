"""The PortAudio input behind the ``audio`` sensor plugin (imports sounddevice lazily)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from fieldstation.clock import Clock, SystemClock
from fieldstation.sensors.audio import AudioConfig, callback_frames
from fieldstation.sensors.base import (
    DTYPES,
    Block,
    DeviceError,
    SensorHealth,
    StreamDescription,
    audio_description,
)

__all__ = ["AudioSensor", "find_input_device"]

log = logging.getLogger(__name__)
_WARN_EVERY = 10.0  # seconds between overflow warnings in the log


def find_input_device(sd: Any, device: str | int | None) -> int | None:
    """Index of the input device named by ``device`` (index, or case-insensitive substring of
    the name); None for the default input. Raises :class:`DeviceError` listing the inputs."""
    if device is None:
        return None
    devices = list(sd.query_devices())
    inputs = [(i, d["name"]) for i, d in enumerate(devices) if d["max_input_channels"] > 0]
    if isinstance(device, int):
        if any(i == device for i, _ in inputs):
            return device
    else:
        exact = [i for i, name in inputs if name.lower() == device.lower()]
        partial = [i for i, name in inputs if device.lower() in name.lower()]
        if exact or partial:
            return (exact or partial)[0]
    listing = ", ".join(f"{i}: {name}" for i, name in inputs) or "none"
    raise DeviceError(f"no audio input device {device!r} (inputs: {listing})")


class AudioSensor:
    """A sounddevice ``InputStream`` feeding a bounded queue (see :mod:`.audio`).

    ``sample_rate`` (Hz), ``channels`` and ``dtype`` (numpy dtype of the blocks, from
    ``config.sample_format``) are the stream's. Capture times come from PortAudio's ADC time of
    each buffer, placed on ``clock`` (default the system clock).
    """

    def __init__(self, config: AudioConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.sample_rate = config.sample_rate
        self.channels = config.channels
        self.dtype = DTYPES[config.sample_format]
        self._queue: queue.Queue[tuple[int, np.ndarray, datetime, bool]] = queue.Queue(
            maxsize=config.queue_blocks
        )
        self._stream: Any = None
        self._lock = threading.Lock()
        self._cb_frame = 0
        self._frames = 0
        self._overflows = 0
        self._input_overflows = 0
        self._lost = 0
        self._break = False  # the next queued buffer follows a loss of unknown size
        self._error: str | None = None
        self._last_warning = float("-inf")
        self.blocksize = (
            callback_frames(config.sample_rate, float(config.chunk))
            if config.blocksize == "auto"
            else int(config.blocksize)
        )
        """Frames per PortAudio callback (0: PortAudio chooses)."""
        # imported now, at the recorder's start, not in its first slot (issue 22); without
        # PortAudio here open() says so
        with contextlib.suppress(ImportError, OSError):
            import sounddevice  # noqa: F401

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's input callback (on its own thread): queue a copy of ``indata``.

        ``indata``: array ``(frames, channels)`` of ``dtype``; ``time_info``: PortAudio times
        in seconds (``inputBufferAdcTime`` of the first frame, ``currentTime``), giving the
        capture time ``clock.now() - (currentTime - inputBufferAdcTime)`` (one buffer's length
        when that lag is not within 0..1 s); ``status``: PortAudio flags. The running frame
        index advances by ``frames`` whether the buffer is queued or not. A full queue drops
        and counts the buffer; an ``input_overflow`` flag is counted and marks the next queued
        buffer as a discontinuity (with a fixed ``blocksize`` the flagged buffer is dropped).
        Never raises (PortAudio would abort the stream).
        """
        now = self.clock.now()
        try:
            lag = float(time_info.currentTime) - float(time_info.inputBufferAdcTime)
        except (AttributeError, TypeError, ValueError):
            lag = 0.0
        if not 0 < lag < 1:
            lag = frames / self.sample_rate
        captured = now - timedelta(seconds=lag)
        start = self._cb_frame
        self._cb_frame += frames
        with self._lock:
            if status and status.input_overflow:
                # PortAudio discarded input: frames are gone at a place the frame index cannot
                # show, so the next queued buffer starts a new session (decision record 0023)
                self._overflows += 1
                self._input_overflows += 1
                self._break = True
                if self.blocksize:
                    # with a fixed block size the loss may lie inside this very buffer
                    # (PortAudio docs), so its samples cannot be placed in time: drop it
                    self._lost += frames
                    return
            try:
                self._queue.put_nowait((start, indata.copy(), captured, self._break))
            except queue.Full:
                self._overflows += 1
                self._lost += frames
            else:
                self._break = False

    def open(self) -> None:
        """Open and start the input stream; the running frame index restarts at 0 and the
        queue and the error are cleared (the counters in ``health()`` keep running).

        Raises :class:`DeviceError` when the device is not found (the message lists the inputs)
        or PortAudio refuses the settings (rate, channels, format, latency).
        """
        import sounddevice as sd  # heavy (+22 MiB): only where a real device is used

        self.close()
        self._queue = queue.Queue(maxsize=self.config.queue_blocks)
        self._cb_frame = self._frames = 0
        self._break = False
        self._error = None
        device = find_input_device(sd, self.config.device)
        try:
            self._stream = sd.InputStream(
                samplerate=self.sample_rate,
                channels=self.channels,
                dtype=self.dtype,
                blocksize=self.blocksize,
                device=device,
                latency=self.config.latency,
                callback=self._callback,
            )
            self._stream.start()
        except Exception as error:  # PortAudioError, ValueError from bad settings
            self._stream = None
            self._error = str(error)
            raise DeviceError(
                f"cannot open audio input {self.config.device!r} at {self.sample_rate} Hz, "
                f"{self.channels} channel(s), {self.dtype}: {error}"
            ) from error

    def _warn_overflows(self) -> None:
        """Log the overflow and loss totals, at most every ``_WARN_EVERY`` seconds."""
        now = self.clock.monotonic()
        if self._overflows and now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            log.warning(
                "audio input %s: %d overflow(s), %d frame(s) lost so far",
                self.config.name,
                self._overflows,
                self._lost,
            )

    def read(self) -> Block | None:
        """The next captured buffer as a :class:`Block` (``(frames, channels)`` of ``dtype``,
        its running frame index, its capture time, ``discontinuity`` after an input
        overflow), waiting up to ``timeout`` seconds for it; never None (a device does not
        end). Logs a warning about overflows at most every 10 s.

        Raises :class:`DeviceError` when no buffer came for ``timeout`` seconds (the device or
        audio server died; ``health().state`` becomes ``error``), ``RuntimeError`` before
        :meth:`open`.
        """
        if self._stream is None:
            raise RuntimeError("read() before open()")
        try:
            start, data, captured, broken = self._queue.get(timeout=self.config.timeout)
        except queue.Empty:
            active = bool(getattr(self._stream, "active", False))
            self._error = f"no samples for {self.config.timeout:g} s (stream active: {active})"
            raise DeviceError(f"audio input {self.config.name!r}: {self._error}") from None
        self._frames = start + len(data)
        self._warn_overflows()
        return Block(data, start, captured, discontinuity=broken)

    def close(self) -> None:
        """Abort and close the stream (idempotent); buffers still queued are dropped. Errors
        of a device already gone are logged, not raised."""
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as error:  # the device may already be gone
                log.warning("closing audio input %s: %s", self.config.name, error)

    def describe(self) -> StreamDescription:
        """An audio stream at ``sample_rate`` Hz, ``channels`` wide, chunks in ``config.format``."""
        return audio_description(
            self.sample_rate, self.channels, self.config.sample_format, self.config.format
        )

    def health(self) -> SensorHealth:
        """State (``open``, ``closed``, or ``error`` after a timeout or a failed open, with the
        message), frames delivered since :meth:`open`, and the running totals: overflows (queue
        full or PortAudio flag), lost frames (dropped buffers) and, in ``details``,
        ``input_overflows`` (PortAudio flags alone)."""
        with self._lock:
            overflows, lost, flagged = self._overflows, self._lost, self._input_overflows
        state = "error" if self._error else ("open" if self._stream is not None else "closed")
        return SensorHealth(
            state=state,
            frames=self._frames,
            overflows=overflows,
            lost_frames=lost,
            error=self._error,
            details={"input_overflows": flagged},
        )
