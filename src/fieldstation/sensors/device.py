"""The PortAudio input behind the ``audio`` sensor plugin (imports sounddevice lazily)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import deque
from datetime import UTC, datetime, timedelta
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
SETTLE_SPAN = 1.0
"""Seconds of frames, in two buffers or more, whose PortAudio input lag is plausible and whose
frame-0 times agree (within :data:`SETTLE_TOLERANCE`) before a new stream's first buffer is
stamped (decision 0148). While an overstated lag decays its estimate moves about as fast as
time, far more than the tolerance over this span."""
SETTLE_TOLERANCE = 0.01
"""Seconds within which the settling buffers' frame-0 times must agree (PulseAudio's reported
lag jitters by a buffer, ~9 ms)."""
SETTLE_LIMIT = 5.0
"""Seconds of a new stream's frames held at most while its reported lag has not settled; then
they are stamped with the latest (least early) estimate and a warning is logged."""
SAME_CLOCK = 1.0
"""Seconds: PortAudio's ``currentTime`` this close to the sensor clock's time at the callback
is on the same clock (the wall clock: ALSA's status time stamps), and is used as it is."""
_OFFSET_WINDOW = 64  # callbacks over which PortAudio's clock is placed on the sensor's
_LAG_MARGIN = 0.01  # seconds of a callback's lateness beyond the stream latency and its buffer


_CLUSTER = 0.001  # seconds: the width of agreement among settling estimates


def _densest(times: list[datetime]) -> datetime:
    """The time with the most others within :data:`_CLUSTER` seconds: PulseAudio's reported
    lag is right for most buffers and early by up to a buffer (or clamped at 0) for the rest,
    so neither the median nor an envelope of the estimates is (decision 0148)."""
    seconds = np.array([(t - times[0]).total_seconds() for t in times])
    near = (np.abs(seconds[:, None] - seconds[None, :]) <= _CLUSTER).sum(axis=1)
    return times[int(np.argmax(near))]


# (start frame, samples, wall time at the callback, reported lag or None, discontinuity)
_Item = tuple[int, np.ndarray, datetime, float | None, bool]


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
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=config.queue_blocks)
        self._origin: datetime | None = None  # wall time of frame 0 (None: not settled)
        self._pending: list[_Item] = []  # a new stream's buffers held until it settles
        self._ready: deque[Block] = deque()
        self._offsets: deque[float] = deque(maxlen=_OFFSET_WINDOW)
        self._same_clock = False  # PortAudio's times are on the sensor clock (this stream)
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
            callback_frames(
                config.sample_rate,
                float(config.chunk),
                config.channels * np.dtype(self.dtype).itemsize,
            )
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
        in seconds (``inputBufferAdcTime`` of the first frame, ``currentTime``); their
        difference, the reported lag, is queued with ``clock.now()`` and turned into a capture
        time by :meth:`read` (None when PortAudio gave none); ``status``: PortAudio flags. The
        running frame index advances by ``frames`` whether the buffer is queued or not. A full
        queue drops and counts the buffer; an ``input_overflow`` flag is counted and marks the
        next queued buffer as a discontinuity (with a fixed ``blocksize`` the flagged buffer is
        dropped). Never raises (PortAudio would abort the stream).
        """
        now = self.clock.now()
        lag: float | None
        try:
            current = float(time_info.currentTime)
            adc = float(time_info.inputBufferAdcTime)
        except (AttributeError, TypeError, ValueError):
            current = adc = 0.0
        if current > 0 and current - adc >= 0:
            lag = current - adc
            offset = now.timestamp() - current
            if self._same_clock or abs(offset) < SAME_CLOCK:
                self._same_clock = True  # for the stream: a callback held up 1 s is no hint
                # PortAudio's times are on the wall clock ours reads (ALSA's status time
                # stamps, CLOCK_REALTIME): taken as they are, so this callback's own delay
                # after PortAudio read its clock (0.1-0.3 ms idle, milliseconds under load)
                # does not make the stamp late
                now = datetime.fromtimestamp(current, UTC)
            else:
                # another clock (monotonic, or a virtual clock of ours): placed on ours by the
                # smallest offset of recent callbacks (a callback held up between PortAudio's
                # reading and ours only makes it larger)
                self._offsets.append(offset)
                now -= timedelta(seconds=offset - min(self._offsets))
        else:
            # no times (some host APIs give 0 for both: a current time of 0 is no time) or a
            # negative lag: nothing to trust, the buffer is placed by its delivery (one
            # buffer's length before now). A lag of exactly 0 is PulseAudio's, and true
            # (decision 0148)
            lag = None
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
                self._queue.put_nowait((start, indata.copy(), now, lag, self._break))
            except queue.Full:
                self._overflows += 1
                self._lost += frames
            else:
                self._break = False

    def _max_lag(self, frames: int) -> float:
        """The longest plausible lag of a ``frames`` buffer while a stream settles, seconds:
        the buffer itself and a late callback's margin (1 s when the stream reports no
        latency). PulseAudio's overstated lags were within the stream's reported latency
        (0.2 s with 100 ms buffers), so that latency is no bound."""
        latency = getattr(self._stream, "latency", None)
        if not isinstance(latency, (int, float)):
            return 1.0
        return frames / self.sample_rate + _LAG_MARGIN

    def _frame0(self, item: _Item) -> tuple[datetime, bool]:
        """Wall time of the stream's frame 0 by ``item``'s reported lag, and whether that lag
        is plausible (0 <= lag <= :meth:`_max_lag`); without a lag, one buffer's length."""
        start, data, now, lag, _ = item
        plausible = lag is not None and 0 <= lag <= self._max_lag(len(data))
        seconds = lag if lag is not None and 0 <= lag < 1 else len(data) / self.sample_rate
        return now - timedelta(seconds=seconds + start / self.sample_rate), plausible

    def _stamp(self, item: _Item, origin: datetime) -> Block:
        start, data, _, _, broken = item
        at = origin + timedelta(microseconds=round(start * 1_000_000 / self.sample_rate))
        return Block(data, start, at, discontinuity=broken)

    def _release(self, origin: datetime) -> None:
        """Stamp the held buffers from ``origin`` (frame 0's wall time) and make them ready."""
        self._origin = origin
        self._ready.extend(self._stamp(item, origin) for item in self._pending)
        self._pending = []

    def _settle_now(self, why: str) -> None:
        """Release held buffers before they settled: frame 0's time by the latest plausible
        lag among them, else by delivery (no frame is captured after its callback ran: an
        upper bound, late by the true input latency), as an overstated lag makes times early."""
        trusted = [at for at, plausible in map(self._frame0, self._pending) if plausible]
        delivered = min(
            now - timedelta(seconds=(start + len(data)) / self.sample_rate)
            for start, data, now, _, _ in self._pending
        )
        log.warning(
            "audio input %s: input lag did not settle (%s); capture times may be off by the "
            "input latency",
            self.config.name,
            why,
        )
        self._release(max(trusted) if trusted else delivered)

    def _place(self, item: _Item) -> None:
        """Give ``item`` its capture time, or hold it while a new stream settles.

        A stream's first buffers are held until :data:`SETTLE_SPAN` seconds of them in a row
        report a plausible lag and agree on frame 0's time (no wait when the stream reports
        no latency), then stamped from the densest of those times (:func:`_densest`): through
        PulseAudio, PortAudio's ADC time overstates the lag by up to 0.5 s for the first
        second or two of a stream, with no frame missing (decision 0148). After an input
        overflow the stream settles anew.
        """
        at, plausible = self._frame0(item)
        broken = item[4]
        if self._origin is not None and not broken:
            if plausible:
                self._origin = at
            self._ready.append(self._stamp(item, self._origin))
            return
        if broken and self._pending:
            self._settle_now("input overflow")
        if broken and self._origin is not None:
            self._origin = None
        self._pending.append(item)
        if not isinstance(getattr(self._stream, "latency", None), (int, float)):
            self._release(at)  # no reported latency (not PortAudio): nothing to settle
            return
        if all(held[3] is None for held in self._pending):
            # the device reports no input times at all: nothing will settle, so no wait
            self._release(at)
            return
        window: list[_Item] = []
        for held_item in reversed(self._pending):
            window.append(held_item)
            if sum(len(i[1]) for i in window) >= SETTLE_SPAN * self.sample_rate:
                break
        estimates = [self._frame0(i) for i in window]
        times = [t for t, _ in estimates]
        if (
            len(window) >= 2
            and sum(len(i[1]) for i in window) >= SETTLE_SPAN * self.sample_rate
            and all(p for _, p in estimates)
            and (max(times) - min(times)).total_seconds() <= SETTLE_TOLERANCE
        ):
            self._release(_densest(times))
            return
        held = sum(len(i[1]) for i in self._pending) / self.sample_rate
        if held >= SETTLE_LIMIT:
            self._settle_now(f"{held:.1f} s held")

    def open(self) -> None:
        """Open and start the input stream; the running frame index restarts at 0 and the
        queue and the error are cleared (the counters in ``health()`` keep running).

        Raises :class:`DeviceError` when the device is not found (the message lists the inputs)
        or PortAudio refuses the settings (rate, channels, format, latency).
        """
        import sounddevice as sd  # heavy (+22 MiB): only where a real device is used

        self.close()
        self._queue = queue.Queue(maxsize=self.config.queue_blocks)
        self._origin = None
        self._pending = []
        self._ready = deque()
        self._offsets.clear()
        self._same_clock = False
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
        while not self._ready:
            try:
                item = self._queue.get(timeout=self.config.timeout)
            except queue.Empty:
                active = bool(getattr(self._stream, "active", False))
                self._error = f"no samples for {self.config.timeout:g} s (stream active: {active})"
                raise DeviceError(f"audio input {self.config.name!r}: {self._error}") from None
            self._place(item)
        block = self._ready.popleft()
        self._frames = block.start_frame + block.frames
        self._warn_overflows()
        return block

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
