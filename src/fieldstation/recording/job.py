"""The recorder job: records a sensor during its schedule slots into gapless chunks.

``run_recorder(ctx, sensor_name)`` runs until ``ctx.stop`` is set. In each slot it opens the
sensor and records one *session*: a contiguous stream anchored at the capture time of its first
frame. Chunk *n* of a session holds exactly frames ``[n*N, (n+1)*N)`` (``N = round(chunk *
rate)``) and starts at ``anchor + n*N / rate`` (UTC, microseconds), so chunks
concatenate to the captured stream with no gap or overlap. A slot that ends exactly where the
next one starts continues the same session.

End reasons: ``complete`` (full chunk, or the last chunk when a replay ends), ``window_end``
(cut by the slot end), ``stopped``/``shutdown`` (``ctx.stop_reason``; with ``keep_partial =
false`` the partial chunk is discarded), ``device_error`` (the sensor failed, or lost frames:
a jump in the frame index or a block marked ``discontinuity`` after an input overflow),
``disk_low`` (free space fell below half of ``min_free`` mid-chunk), ``suspended`` (a
``[[suspenders]]`` entry paused the recorder: low battery, heat) and ``clock_step`` (the wall
clock stepped; no session starts while the clock is untrusted:
:mod:`fieldstation.power.gate`). No chunk starts while free space is below ``min_free``: an
event ``disk_low`` is recorded and the recorder checks again every ``DISK_POLL`` seconds.

A full disk (ENOSPC, EDQUOT, SQLite's "database or disk is full") anywhere (writing a chunk,
closing it, committing it, recovering the spool) is the same pause, never a crash (decision
0026): the chunk in progress is left in ``spool/``, recording pauses until
``DiskGuard.resume_free`` bytes are free, then the spool is recovered (the cut chunk committed
with end reason ``disk_low``, salvaged up to its last decodable frame) and recording resumes.
Events the full database refuses are kept in memory and written once it takes writes again.

A live sensor with a ``warmup`` (an audio device: 2 s) is opened that many seconds before its
slot and the frames captured before the slot start are dropped, so a session starts at the slot
start to the frame however long the device takes to deliver; between slots closer than that it
stays open.

Progress reports: ``("slot", {"start", "end"})`` once the sensor is open for a slot (its
warmup included),
``("chunk", {"recording_id", "path", "frames"})``, ``("waiting", {"next_slot": iso or None})``
whenever no chunk is due: between slots (``next_slot`` = the next slot start), while the disk is
low or full, or a failed device waits to be reopened (``next_slot`` = when the recorder tries
again, and ``reason``: why it is not recording).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from fieldstation import __version__
from fieldstation.backoff import Backoff
from fieldstation.config.sensors import SensorConfig, warmup_of
from fieldstation.config.station import StationConfig, config_hash
from fieldstation.job import JobContext
from fieldstation.power.gate import RecorderGate
from fieldstation.recording.chunk import ChunkWriter, FinishedChunk
from fieldstation.recording.commit import commit_chunk
from fieldstation.recording.disk import DiskGuard, DiskUsageFn, is_disk_full
from fieldstation.recording.media import prepare
from fieldstation.recording.metadata import ChunkSpec
from fieldstation.recording.recovery import recover_spool
from fieldstation.recording.tap import LiveTap
from fieldstation.sensors import Block, DeviceError, Sensor, build_sensor
from fieldstation.sensors.pacing import frame_time
from fieldstation.sensors.readings.config import is_slow
from fieldstation.store.events import EventBacklog
from fieldstation.store.readings import latest_position

__all__ = [
    "ContinuousSlot",
    "RecorderError",
    "SlotFn",
    "SlotLike",
    "run_recorder",
    "schedule_slots",
]

log = logging.getLogger(__name__)

IDLE_POLL = 3600.0
"""Seconds between re-checks of the schedule when it has no next slot."""
DISK_POLL = 1.0
"""Seconds between free-space checks while recording is paused for a low or full disk."""
DEVICE_BACKOFF = (1.0, 60.0)
"""First and largest base wait (seconds) before reopening a failed sensor: doubles with each
failure, scaled by equal jitter (:class:`fieldstation.backoff.Backoff`)."""
POSITION_POLL = 60.0
"""Seconds between two look-ups of the latest GPS fix for the chunks' embedded position."""
DEVICE_EVENT_REPEAT = 3600.0
"""Seconds before the same device error is recorded as an event again (it is logged always)."""


COUNTED_DETAILS: dict[str, str] = {"dup": "frames_duplicated", "drop": "frames_dropped"}
"""Running counters a sensor's ``health().details`` may hold (a camera: frames FFmpeg duplicated
or dropped to hold the frame rate); how many happened during a chunk is kept in the row's
``extra`` under the name given here, as omgrab reports dropped frames."""


def _counted(health: Any) -> dict[str, int]:
    details = health.details or {}
    return {key: int(details[key]) for key in COUNTED_DETAILS if key in details}


class RecorderError(RuntimeError):
    """The recorder cannot run (unknown sensor, no schedule engine)."""


class SlotLike(Protocol):
    """A recording slot: ``start`` and ``end`` aware UTC (``fieldstation.schedule.Slot``)."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...


SlotFn = Callable[[datetime], SlotLike | None]
"""``slots(now)``: the slot containing ``now``, else the next one, else None."""


@dataclass(frozen=True)
class ContinuousSlot:
    """A slot from ``start`` to ``end`` (used for continuous recording and in tests)."""

    start: datetime
    end: datetime


def continuous(now: datetime) -> ContinuousSlot:
    """Slot function of continuous recording: one day at a time, each adjacent to the next."""
    return ContinuousSlot(now, now + timedelta(days=1))


def continuous_days(now: datetime) -> ContinuousSlot:
    """Continuous recording in slots of whole UTC days (each adjacent to the next): the slots
    of a session's sensors without a schedule, so that every recorder of the session, whenever
    it starts, finds the same slot (and session id) as the others."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return ContinuousSlot(day, day + timedelta(days=1))


def capture_id_for(station: str, session: str, anchor: datetime) -> str:
    """Id of the session of several streams ``session`` anchored at ``anchor`` (its slot
    start): UUID5 of station, session and anchor, so every recorder of it computes the same."""
    stamp = anchor.astimezone(UTC).isoformat()
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fieldstation:{station}:session:{session}:{stamp}"))


def schedule_slots(config: StationConfig, sensor: SensorConfig) -> SlotFn:
    """The slot function of ``sensor``'s schedule (``fieldstation.schedule.next_slot``).

    A sensor without a schedule records continuously (in a session of several streams: in
    slots of whole UTC days, :func:`continuous_days`). Raises :class:`RecorderError` when the
    sensor names a schedule and no schedule engine is installed.
    """
    if sensor.schedule is None:
        return continuous if config.session_of(sensor.name) is None else continuous_days
    schedule = config.schedule_for(sensor)
    try:
        from fieldstation.schedule import next_slot
    except ImportError:
        windows = [(w.start, w.end) for w in schedule.windows]
        if schedule.duty_cycle is None and windows == [("00:00", "24:00")]:
            return continuous
        raise RecorderError(
            f"sensor {sensor.name!r} uses schedule {sensor.schedule!r} but "
            "fieldstation.schedule.next_slot is not available; omit 'schedule' to record "
            "continuously"
        ) from None
    station = config.station

    def slots(now: datetime) -> SlotLike | None:
        slot: SlotLike | None = next_slot(schedule, station, now)
        return slot

    return slots


class _SessionEnd(Exception):
    def __init__(self, outcome: str) -> None:
        self.outcome = outcome


class Recorder:
    """One sensor's recorder (build with :func:`run_recorder`)."""

    def __init__(
        self,
        ctx: JobContext,
        config: SensorConfig,
        sensor: Sensor,
        slots: SlotFn,
        disk: DiskGuard,
        until: datetime | None = None,
        max_frames: int | None = None,
        gate: RecorderGate | None = None,
    ) -> None:
        self.ctx = ctx
        self.max_frames = max_frames
        self.recorded = 0  # frames written into chunks since the recorder started
        self.config = config
        self.sensor = sensor
        self.slots = slots
        self.disk = disk
        self.until = until
        self.clock = ctx.clock
        self.source = ctx.name or f"recorder:{config.name}"
        self.stream = sensor.describe()
        prepare(self.stream.media)  # the writer's libraries, before the live stream starts
        self.rate = self.stream.rate
        self.chunk_frames = max(1, round(config.chunk * self.rate))
        self._config_hash = config_hash(ctx.config)
        self._disk_low_reported = False  # one disk_low event until a chunk is committed again
        self._paused = False
        self._full_reason: str | None = None  # set while paused after a write found no space
        self._spool_due = True  # recover this sensor's spool: at start, after a full disk
        self._salvage_reason = "recovered"
        self.events = EventBacklog(
            ctx.db,
            station_id=ctx.config.station.id,
            destinations=ctx.config.destinations_for("event"),
        )
        self.gate = gate or RecorderGate.of(ctx, config.name, self.events)
        self._done_until: datetime | None = None
        self._device_backoff = Backoff(*DEVICE_BACKOFF)
        self._last_device_event: tuple[str, datetime] | None = None
        self._device_reason: str | None = None
        self.writer: ChunkWriter | None = None
        self._fix: tuple[float, float, float | None, datetime] | None = None
        self._fix_checked: float | None = None
        self._overflows_at_open = 0
        self._counts_at_open: dict[str, int] = {}
        self.session_id = ""
        session = ctx.config.session_of(config.name)
        self._capture_session = None if session is None else session.name
        self._capture_id: str | None = None
        self._capture_anchor: datetime | None = None
        self.anchor: datetime | None = None
        self.chunk_index = 0
        self.session_frame = 0
        self.warmup = warmup_of(config)
        """Seconds before a slot starts that the sensor is opened (live sensors' ``warmup``)."""
        self._sensor_open = False
        self._carry: Block | None = None  # frames read past a slot end, kept for the next slot
        self.tap = LiveTap.open(ctx.home, config.name, self.stream)  # live view (decision 0093)

    # --- the outer loop: slots, waiting, disk guard, device back-off ---
    def run(self, stop_when_exhausted: bool = False) -> None:
        """Record slot after slot until ``ctx.stop`` is set (or ``until`` is reached).

        First (and again after a full disk) this sensor's leftovers in ``spool/`` are recovered
        (:func:`~fieldstation.recording.recovery.recover_spool`). Each pass asks
        ``slots(now)``: no slot, or one in the future, means waiting on ``ctx.stop``
        (``IDLE_POLL`` s, or until the slot starts; never past ``until``) with a ``waiting``
        report; a slot already recorded (a faster-than-real-time stream reached its end early)
        is waited out; with free space below ``min_free`` (after a full disk: below
        ``DiskGuard.resume_free``) the recorder re-checks every ``DISK_POLL`` s; otherwise
        :meth:`record_session` records the slot. A full disk is that pause, not an error (module
        docstring). After a ``device_error`` the sensor is reopened after a back-off
        (:class:`~fieldstation.backoff.Backoff` from ``DEVICE_BACKOFF[0]`` to
        ``DEVICE_BACKOFF[1]`` seconds, reset by a session that ends otherwise). When the
        sensor's input has ended for good (a replay without loop): returns if
        ``stop_when_exhausted``, else idles until stopped.

        Raises what the sensor, the chunk writer or the database raise beyond
        :class:`~fieldstation.sensors.DeviceError` and a full disk (e.g. ``OSError``,
        SQLAlchemy errors, a :class:`~fieldstation.job.ConfigurationError` of the sensor even on
        a nearly full disk, :class:`~fieldstation.recording.disk.HomeVanishedError` when the
        free space cannot be read); the open chunk is then left in ``spool/`` for recovery.
        """
        stop = self.ctx.stop
        while not stop.is_set():
            if self._spool_due:
                if self._full_reason is not None and not self._disk_ok():
                    self._pause()
                    continue
                if not self._recover_spool():
                    continue
            now = self.clock.now()
            if self.until is not None and now >= self.until:
                return
            held = self.gate.hold()  # suspended, or the clock is not trusted
            if held is not None:
                self._idle(now + timedelta(seconds=self.gate.poll), self.gate.poll, held)
                continue
            slot = self.slots(now)
            if slot is None or slot.end <= now:
                self._idle(None, IDLE_POLL)
                continue
            opens = slot.start - timedelta(seconds=self.warmup)
            if opens > now:
                self._idle(slot.start, (opens - now).total_seconds())
                continue
            if self._done_until is not None and slot.end <= self._done_until:
                # recorded already (a stream faster than real time reached the end early)
                self._idle(slot.end, (slot.end - now).total_seconds())
                continue
            if not self._disk_ok():
                self._pause()
                continue
            try:
                outcome = self.record_session(slot)
            except Exception as error:
                if not is_disk_full(error, self.disk.free):
                    raise
                outcome = self._disk_full(error)
                self._pause()  # at least one poll before the next try (EDQUOT: free may be high)
            if outcome == "done":
                return
            if outcome == "exhausted":
                if stop_when_exhausted:
                    return
                while not stop.is_set() and not self._past_until():
                    self._idle(None, IDLE_POLL)
            elif outcome == "device_error":
                retry = self._device_backoff.next_delay()
                self._idle(self.clock.now() + timedelta(seconds=retry), retry, self._device_reason)
            else:
                self._device_backoff.reset()
                self._last_device_event = None

    def _recover_spool(self) -> bool:
        """Recover this sensor's spool; False when the disk is full (the recorder pauses)."""
        try:
            recover_spool(
                self.ctx,
                self.config.name,
                salvage_reason=self._salvage_reason,
                events=self.events,
                what="start-up" if self._salvage_reason == "recovered" else "disk-full",
            )
        except Exception as error:
            if not is_disk_full(error, self.disk.free):
                raise
            reason = self._salvage_reason  # what left the chunks there, not this failure
            self._disk_full(error)
            self._salvage_reason = reason
            self._pause()
            return False
        self._spool_due = False
        self._salvage_reason = "recovered"
        return True

    def _disk_full(self, error: BaseException) -> str:
        """A write failed for want of space: pause (``disk_low``) until
        ``DiskGuard.resume_free`` bytes are free, then recover the spool (the cut chunk is
        committed with end reason ``disk_low``). Records one ``disk_low`` event per pause
        (kept in memory while the database is full; the next after a chunk was committed).
        Returns the outcome ``disk_low``."""
        first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        self._spool_due = True
        self._salvage_reason = "disk_low"
        self._paused = True
        if self._full_reason is None:
            self._full_reason = (
                f"disk full: a write failed ({first}); recording resumes when "
                f"{self.disk.resume_free} bytes are free"
            )
        if not self._disk_low_reported:
            self._disk_low_reported = True
            free = self.disk.free()
            self._event(
                "disk_low",
                f"sensor {self.config.name}: disk full ({first}), {free} bytes free; "
                f"recording paused until {self.disk.resume_free} bytes are free",
                "warning",
                {
                    "sensor": self.config.name,
                    "free": free,
                    "min_free": self.disk.min_free,
                    "error": first,
                },
            )
        return "disk_low"

    def _pause(self) -> None:
        """Wait ``DISK_POLL`` s (a ``waiting`` report with the reason) while the disk is low."""
        reason = self._full_reason or (
            f"disk low: free space below min_free {self.disk.min_free} bytes"
        )
        self._idle(self.clock.now() + timedelta(seconds=DISK_POLL), DISK_POLL, reason)

    def _idle(self, until: datetime | None, seconds: float, reason: str | None = None) -> None:
        """Report ``waiting`` (``next_slot``: when the recorder will look again, or None;
        ``reason``: why it is not recording in a slot, e.g. the device error, or absent) and
        wait up to ``seconds`` for ``ctx.stop``. The report tells the supervisor that no chunk
        is due (disk low, device back-off and between slots alike). With an end time
        (``self.until``) the wait never runs past it. A sensor kept open after a slot (the
        next one was near) is closed first."""
        self.close_sensor()
        details: dict[str, Any] = {"next_slot": until.isoformat() if until else None}
        if reason is not None:
            details["reason"] = reason
        self.ctx.progress("waiting", details)
        if self.until is not None:
            seconds = min(seconds, max(0.0, (self.until - self.clock.now()).total_seconds()))
        self.gate.wait(self.ctx.stop, seconds)

    def close_sensor(self) -> None:
        """Close the sensor if it is open (idempotent); frames carried over are dropped."""
        self._carry = None
        if self._sensor_open:
            self._sensor_open = False
            self.sensor.close()

    def _read(self) -> Block | None:
        """The frames carried over from the previous slot, else the sensor's next block."""
        if self._carry is not None:
            block, self._carry = self._carry, None
            return block
        return self.sensor.read()

    def _past_until(self) -> bool:
        return self.until is not None and self.clock.now() >= self.until

    def _event(self, kind: str, message: str, severity: Any, data: dict[str, Any]) -> None:
        """Log and record an event; kept in memory when the database refuses it (full)."""
        log.log(logging.WARNING if severity != "info" else logging.INFO, "%s", message)
        self.events.record(
            kind=kind,
            source=self.source,
            message=message,
            now=self.clock.now(),
            severity=severity,
            data=data,
        )

    def _disk_ok(self) -> bool:
        """True when a chunk may start: ``min_free`` bytes free (after a full disk,
        ``resume_free``). Records one ``disk_low`` event per pause; writes kept events once
        space is back. Raises :class:`~fieldstation.recording.disk.HomeVanishedError` when the
        free space cannot be read (the home is gone)."""
        free = self.disk.free()
        if self.disk.may_start(after_full=self._full_reason is not None, free=free):
            if self._paused:
                log.info("sensor %s: free space back to %d bytes", self.config.name, free)
            self._paused = False
            self._full_reason = None
            if self.events.pending:
                self.events.flush()
            return True
        self._paused = True
        if not self._disk_low_reported:
            self._disk_low_reported = True
            self._event(
                "disk_low",
                f"sensor {self.config.name}: {free} bytes free, below min_free "
                f"{self.disk.min_free}; recording paused until space returns",
                "warning",
                {"sensor": self.config.name, "free": free, "min_free": self.disk.min_free},
            )
        return False

    # --- one session: a contiguous stream cut into chunks ---
    def record_session(self, slot: SlotLike) -> str:
        """Record during ``slot``; returns the outcome: ``window_end``, ``stopped``,
        ``exhausted``, ``device_error``, ``disk_low`` or ``done`` (``max_frames`` recorded).

        With a ``warmup`` (live sensors), the sensor may be opened up to that many seconds
        before ``slot.start``: the frames captured before the slot starts are dropped, so the
        session's first frame is the first captured at or after the slot start
        (:meth:`~fieldstation.sensors.Block.since`; issue 22: a device takes 0.1-0.7 s to
        deliver its first frame). When the slot ends and the next one opens within
        ``warmup`` seconds, the sensor stays open (with the frames already read past the
        slot end) for it."""
        if not self._sensor_open:
            try:
                self.sensor.open()
            except DeviceError as error:
                return self._device_error(error)
            self._sensor_open = True
        # reported once the sensor is open (a warmup before the slot included: the liveness
        # limit allows for it) and for each slot the open sensor goes on into: from now on a
        # chunk is due, and a read that hangs is caught
        self.ctx.progress("slot", {"start": slot.start.isoformat(), "end": slot.end.isoformat()})
        self.anchor = None
        keep_open = False
        self._capture_for(slot)
        slot_end = slot.end
        limit = 0
        expected = 0
        try:
            while True:
                if self.ctx.stop.is_set():
                    self._end_chunk(self.ctx.stop_reason, stopping=True)
                    return "stopped"
                cut = self.gate.cut()  # "suspended" or "clock_step"
                if cut is not None:
                    self._end_chunk(cut)
                    return cut
                carried = self._carry is not None
                try:
                    read = self._read()
                except DeviceError as error:
                    self._end_chunk("device_error")
                    return self._device_error(error)
                if read is None:
                    self._end_chunk("complete", {"source_ended": True})
                    return "exhausted"
                block: Block | None = read
                if self.warmup > 0 and self.anchor is None:
                    block = read.since(slot.start, self.rate)
                if block is None:  # captured while the sensor warmed up, before the slot
                    continue
                if self.tap is not None and not carried:  # a carried block was published
                    self.tap.publish(block)  # never blocks nor raises
                if self.anchor is None or block.start_frame != expected or block.discontinuity:
                    if self.anchor is not None:
                        self._frames_lost(block, block.start_frame - expected)
                    self._new_session(block)
                    limit = self._frames_until(slot_end)
                expected = block.start_frame + block.frames
                data = block.data
                while True:
                    if self.max_frames is not None and self.recorded >= self.max_frames:
                        self._end_chunk("window_end")  # the frames asked for are recorded
                        return "done"
                    if self.session_frame >= limit:
                        following = self.slots(slot_end)
                        if following is not None and following.start <= slot_end < following.end:
                            slot_end = following.end
                            limit = self._frames_until(slot_end)
                            self._capture_for(following)
                            self.ctx.progress(
                                "slot",
                                {"start": following.start.isoformat(), "end": slot_end.isoformat()},
                            )
                            continue
                        self._end_chunk("window_end")
                        self._done_until = slot_end
                        keep_open = self._near(following)
                        if keep_open and len(data):
                            self._carry = block.skip(block.frames - len(data), self.rate)
                        return "window_end"
                    if not len(data):
                        break
                    if self.writer is None:
                        # a block in hand was captured before the stop was seen: it is written
                        # (a partial chunk then ends with the stop reason at the next check)
                        if not self._disk_ok():
                            return "disk_low"
                        self._open_chunk()
                    assert self.writer is not None
                    n = min(
                        len(data),
                        self.chunk_frames - self.writer.frames,
                        limit - self.session_frame,
                    )
                    if self.max_frames is not None:
                        n = min(n, self.max_frames - self.recorded)
                    self.writer.write(data[:n])
                    data = data[n:]
                    self.session_frame += n
                    self.recorded += n
                    if self.writer.frames == self.chunk_frames:
                        self._end_chunk("complete")
                if self.writer is not None and self.disk.must_stop():
                    self._end_chunk("disk_low")
                    self._disk_ok()
                    return "disk_low"
        finally:
            if self.writer is not None:  # an unexpected error: leave it to recovery
                self.writer.abandon()
                self.writer = None
            if not keep_open:
                self.close_sensor()

    def _near(self, slot: SlotLike | None) -> bool:
        """True when ``slot`` opens within ``warmup`` seconds (the sensor stays open for it)."""
        if slot is None or self.warmup <= 0:
            return False
        return (slot.start - self.clock.now()).total_seconds() <= self.warmup

    def _capture_for(self, slot: SlotLike) -> None:
        """Set the session of several streams of ``slot`` (``[[sessions]]``): its id and
        anchor (the slot start), the same in every recorder of the session, whenever each
        started. Chunks opened in a following adjacent slot (the stream goes on) belong to
        that slot's session: the id depends on the slot alone, never on a recorder's past."""
        if self._capture_session is None:
            return
        self._capture_anchor = slot.start
        self._capture_id = capture_id_for(
            self.ctx.config.station.id, self._capture_session, slot.start
        )

    def _new_session(self, block: Block) -> None:
        self.session_id = str(uuid.uuid4())
        self.anchor = block.captured_at
        self.chunk_index = 0
        self.session_frame = 0

    def _frames_until(self, end: datetime) -> int:
        assert self.anchor is not None
        micros = (end - self.anchor) // timedelta(microseconds=1)
        return max(0, micros * self.rate // 1_000_000)

    def _device_error(self, error: DeviceError) -> str:
        """Record a ``device_error`` event for ``error``; returns the outcome ``device_error``.

        A device that keeps failing the same way (a microphone unplugged for days, reopened
        every minute) gives one event per :data:`DEVICE_EVENT_REPEAT` seconds, not one per
        attempt: events are never dropped by the outbox cap, so they must not pile up. The
        log has every attempt."""
        message = f"sensor {self.config.name}: {error}"
        self._device_reason = f"device error: {error}"
        now = self.clock.now()
        last = self._last_device_event
        if (
            last is None
            or last[0] != message
            or (now - last[1]).total_seconds() >= DEVICE_EVENT_REPEAT
        ):
            self._last_device_event = (message, now)
            self._event("device_error", message, "error", {"sensor": self.config.name})
        else:
            log.warning("%s (again; event recorded at %s)", message, last[1].isoformat())
        return "device_error"

    def _frames_lost(self, block: Block, lost: int) -> None:
        """End the chunk (``device_error``) and record a ``frames_lost`` event: ``lost`` frames
        are missing before ``block`` (a jump in the frame index), or an unknown number when the
        block follows an input overflow (``block.discontinuity``). The caller then starts a new
        session anchored at ``block.captured_at`` (decision record 0023)."""
        assert self.anchor is not None
        due = frame_time(self.anchor, self.session_frame, self.rate)
        gap = (block.captured_at - due).total_seconds()  # by the device's clock: an estimate
        extra: dict[str, Any] = {}
        if lost:
            extra["lost_frames_after"] = lost
        if block.discontinuity:
            extra["input_overflow"] = True
        self._end_chunk("device_error", extra)
        if block.discontinuity:
            what = (
                f"input overflow: frames lost at an unknown place ({lost} known, "
                f"{gap:.6f} s by the capture times)"
            )
        else:
            what = f"{lost} frame(s) lost (input overflow)"
        self._event(
            "frames_lost",
            f"sensor {self.config.name}: {what}; a new session starts",
            "warning",
            {
                "sensor": self.config.name,
                "lost_frames": lost,
                "input_overflow": block.discontinuity,
                "gap_seconds": round(gap, 6),
                "health": self.sensor.health().as_dict(),  # running totals of the sensor
            },
        )

    def _position(self) -> tuple[float, float, float]:
        """Where the station is: the latest GPS fix (a ``serial`` GPS sensor's readings, looked
        up at most every :data:`POSITION_POLL` s) when there is one, else the station file's
        coordinates (decimal degrees, metres)."""
        station = self.ctx.config.station
        now = self.clock.monotonic()
        if self._fix_checked is None or now - self._fix_checked >= POSITION_POLL:
            self._fix_checked = now
            try:  # a read (WAL: never waits for writers); must not fail the chunk
                with self.ctx.db.session() as session:
                    self._fix = latest_position(session)
            except SQLAlchemyError as error:
                log.warning("sensor %s: latest GPS fix not read (%s)", self.config.name, error)
        fix = self._fix
        if fix is None:
            return station.latitude, station.longitude, station.elevation
        latitude, longitude, elevation, _ = fix
        return latitude, longitude, station.elevation if elevation is None else elevation

    def _open_chunk(self) -> None:
        assert self.anchor is not None
        station = self.ctx.config.station
        latitude, longitude, elevation = self._position()
        spec = ChunkSpec(
            station=station.id,
            sensor=self.config.name,
            session_id=self.session_id,
            chunk_index=self.chunk_index,
            start_frame=self.session_frame,
            started_at=frame_time(self.anchor, self.session_frame, self.rate),
            stream=self.stream,
            deployment_id=self.ctx.deployment_id,
            config_hash=self._config_hash,
            version=__version__,
            latitude=latitude,
            longitude=longitude,
            elevation=elevation,
            capture_id=self._capture_id,
            capture_anchor=self._capture_anchor,
            capture_session=self._capture_session if self._capture_id else None,
        )
        self.writer = ChunkWriter(self.ctx.home.spool, spec)
        health = self.sensor.health()
        self._overflows_at_open = health.overflows
        self._counts_at_open = _counted(health)

    def _end_chunk(
        self, reason: str, extra: dict[str, Any] | None = None, stopping: bool = False
    ) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            return
        self.chunk_index += 1
        if writer.frames == 0 or (stopping and not self.config.keep_partial):
            writer.discard()
            return
        health = self.sensor.health()
        overflows = health.overflows - self._overflows_at_open
        if overflows:  # flagged by the device during this chunk: kept with the row
            extra = {**(extra or {}), "input_overflows": overflows}
        for key, count in _counted(health).items():  # e.g. frames FFmpeg duplicated, dropped
            during = count - self._counts_at_open.get(key, 0)
            if during > 0:
                extra = {**(extra or {}), COUNTED_DETAILS[key]: during}
        if self.gate.unsynced:
            extra = {**(extra or {}), **self.gate.extra()}
        try:
            finished = writer.finish(reason, extra)
        except BaseException:  # e.g. a full disk: the chunk stays in spool/ for recovery
            writer.abandon()
            raise
        self._commit(finished)

    def _commit(self, finished: FinishedChunk) -> None:
        row = commit_chunk(self.ctx.db, self.ctx.config, self.ctx.home, finished, self.gate.stamp())
        self._disk_low_reported = False  # recording works: the next shortage is a new event
        self.ctx.progress(
            "chunk", {"recording_id": row.id, "path": row.path, "frames": finished.frames}
        )


def run_recorder(
    ctx: JobContext,
    sensor_name: str,
    *,
    slots: SlotFn | None = None,
    sensor: Sensor | None = None,
    disk_usage: DiskUsageFn = shutil.disk_usage,
    stop_when_exhausted: bool = False,
    until: datetime | None = None,
    max_frames: int | None = None,
    gate: RecorderGate | None = None,
) -> None:
    """Record sensor ``sensor_name`` of ``ctx.config`` until ``ctx.stop`` is set (or, with
    ``until``, an aware UTC time, until then: no wait between slots runs past it and the job
    returns once it is reached outside a session; give slots that end by ``until`` so that no
    session outlasts it; or, with ``max_frames``, once that many frames are in committed
    chunks: the last chunk ends ``window_end`` exactly there).

    ``slots`` (default: the sensor's schedule, :func:`schedule_slots`), ``sensor`` (default:
    built from the config with ``ctx.clock``) and ``disk_usage`` (default
    ``shutil.disk_usage``) are injectable for tests, as is ``gate`` (default: by the station
    file's ``[[suspenders]]`` and ``[clock]``, :meth:`RecorderGate.of`). With
    ``stop_when_exhausted`` the job returns when a replay without loop has played everything
    (otherwise it idles until stopped).
    Raises :class:`RecorderError` for an unknown sensor;
    :class:`~fieldstation.sensors.SensorConfigError` when the sensor cannot be built.
    """
    try:
        config = ctx.config.sensor(sensor_name)
    except KeyError:
        names = ", ".join(s.name for s in ctx.config.sensors) or "none"
        raise RecorderError(f"no sensor named {sensor_name!r} (sensors: {names})") from None
    if is_slow(config):
        raise RecorderError(
            f"sensor {sensor_name!r} measures once per period: it is run by the readings job "
            "(fieldstation.recording.rows.run_readings), not the recorder"
        )
    ctx.home.ensure()
    built = sensor if sensor is not None else build_sensor(config, ctx.clock, home=ctx.home.root)
    guard = DiskGuard(ctx.home.root, int(config.min_free), disk_usage)
    chosen = slots or schedule_slots(ctx.config, config)
    recorder = Recorder(
        ctx, config, built, chosen, guard, until=until, max_frames=max_frames, gate=gate
    )
    try:
        recorder.run(stop_when_exhausted=stop_when_exhausted)
    finally:
        recorder.close_sensor()
        if recorder.tap is not None:
            recorder.tap.close()
