"""The :class:`Sensor` protocol and what sensors hand out: blocks of frames with their times.

A sensor is anything with ``describe()``, ``open()``, ``read()``, ``close()`` and ``health()`` (a
structural ``typing.Protocol``, no base class needed). ``describe()`` says what the stream is
(:class:`StreamDescription`: media ``audio``, ``video`` or ``readings``, rate in Hz, shape of one
frame, dtype, chunk container and codec), in the spirit of bluesky's ``describe()``; the recorder
needs nothing else to cut, commit and recover it (decision record 0070). ``read()`` returns the
next :class:`Block`: a numpy array of shape ``(frames, *shape)`` (audio ``(frames, channels)``,
video ``(frames, height, width, 3)``, readings ``(frames, quantities)``), the index of its first
frame in the stream since ``open()`` (the running frame index) and the UTC capture time of that
first frame. A jump in the running frame index means frames were lost (e.g. a full queue); a
block marked ``discontinuity`` follows a loss the index cannot show (e.g. PortAudio's
``input_overflow``). Either way the block must not be joined to the ones before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from fieldstation.config.sensors import FLAC_MAX_SAMPLE_RATE, AudioSensorConfig
from fieldstation.job import ConfigurationError
from fieldstation.sensors.pacing import frame_time

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DTYPES",
    "MEDIA",
    "Block",
    "Media",
    "StreamDescription",
    "DeviceError",
    "Sensor",
    "SensorConfigError",
    "SensorError",
    "SensorHealth",
    "check_file_format",
    "check_flac_rate",
    "config_error",
]

DTYPES: dict[str, str] = {
    "int16": "int16",
    "int24": "int32",
    "int32": "int32",
    "float32": "float32",
}
"""numpy dtype of blocks per sample format. ``int24`` samples travel left-justified in int32
(soundfile's convention: full scale is the int32 range), and are written as 24-bit PCM."""


Media = Literal["audio", "video", "readings"]
MEDIA: tuple[Media, ...] = ("audio", "video", "readings")
"""The kinds of stream a sensor can describe; each has one chunk writer
(:mod:`fieldstation.recording.media`)."""


@dataclass(frozen=True)
class StreamDescription:
    """What a sensor's stream is: everything the recorder needs to cut, write and recover it.

    ``media``: ``audio``, ``video`` or ``readings``. ``rate``: frames per second, Hz (audio:
    sample rate; video: frame rate, constant; readings: samples per second, e.g. 200 for an IMU);
    an integer, so that frame times are exact (``anchor + n / rate``). ``shape``: shape of one
    frame (audio ``(channels,)``, video ``(height, width, 3)``, readings ``(quantities,)``).
    ``dtype``: numpy dtype name of :attr:`Block.data`. ``format``: container of chunk files, also
    their extension (``flac``, ``wav``, ``mkv``, ``arrows``). ``codec``: how frames are coded in
    the container (audio: the libsndfile subtype ``PCM_16``/``PCM_24``/``PCM_32``/``FLOAT``;
    video: ``h264``; readings: ``arrow``). ``fields``/``units``: readings only, the name and unit
    of each quantity (column). ``options``: JSON-ready writer settings of the media (video:
    ``crf``, ``preset``).
    """

    media: Media
    rate: int
    shape: tuple[int, ...]
    dtype: str
    format: str
    codec: str
    fields: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.media not in MEDIA:
            raise ValueError(f"media {self.media!r} is not one of {', '.join(MEDIA)}")
        if int(self.rate) != self.rate or self.rate <= 0:
            raise ValueError(f"rate must be a positive whole number of Hz, not {self.rate!r}")
        if self.media == "readings" and len(self.fields) != (self.shape[-1] if self.shape else 0):
            raise ValueError("readings need one field name per quantity (shape[-1])")

    @property
    def channels(self) -> int:
        """Size of the last axis of a frame (audio channels, 3 for RGB video, quantities)."""
        return int(self.shape[-1]) if self.shape else 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples as lists)."""
        return {
            "media": self.media,
            "rate": int(self.rate),
            "shape": list(self.shape),
            "dtype": self.dtype,
            "format": self.format,
            "codec": self.codec,
            "fields": list(self.fields),
            "units": list(self.units),
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamDescription:
        """Inverse of :meth:`as_dict`; raises ``KeyError``/``TypeError``/``ValueError``."""
        return cls(
            media=data["media"],
            rate=int(data["rate"]),
            shape=tuple(int(n) for n in data["shape"]),
            dtype=str(data["dtype"]),
            format=str(data["format"]),
            codec=str(data["codec"]),
            fields=tuple(data.get("fields") or ()),
            units=tuple(data.get("units") or ()),
            options=dict(data.get("options") or {}),
        )


SUBTYPES: dict[str, str] = {
    "int16": "PCM_16",
    "int24": "PCM_24",
    "int32": "PCM_32",
    "float32": "FLOAT",
}
"""libsndfile subtype (the audio ``codec``) of each audio sample format."""


def audio_description(
    sample_rate: int, channels: int, sample_format: str, format: str = "flac"
) -> StreamDescription:
    """The description of an audio stream: ``sample_format`` one of ``int16``, ``int24``,
    ``int32``, ``float32`` (blocks in :data:`DTYPES`), chunks in ``format`` (flac or wav)."""
    return StreamDescription(
        media="audio",
        rate=int(sample_rate),
        shape=(int(channels),),
        dtype=DTYPES[sample_format],
        format=format,
        codec=SUBTYPES[sample_format],
    )


class SensorError(RuntimeError):
    """A sensor failed."""


class DeviceError(SensorError):
    """The device is gone or stopped delivering samples (end reason ``device_error``).

    The recorder closes the current chunk, records an event and tries to reopen later.
    """


class SensorConfigError(SensorError, ValueError):
    """The sensor's configuration cannot work with its input (say what to change)."""


class SensorConfigurationError(SensorConfigError, ConfigurationError):
    """A sensor configuration error the supervisor must not retry: the recorder job running
    the sensor stops with its message (exit 78) instead of being restarted. Raised (through
    :func:`config_error`) for what no retry can fix: a replay file missing, a FIFO,
    undecodable under ``mismatched = "error"``, every file empty."""


def config_error(message: str) -> SensorConfigurationError:
    """A :class:`SensorConfigurationError` with ``message`` (name the key and the fix)."""
    return SensorConfigurationError(message)


@dataclass(frozen=True)
class Block:
    """Consecutive frames from a sensor.

    ``data``: array ``(frames, *shape)`` in the sensor's dtype (:class:`StreamDescription`);
    ``start_frame``: index of the first frame in the stream since ``open()``; ``captured_at``:
    aware UTC time of that frame; ``discontinuity``: True when an unknown number of frames
    were lost right before this block (the device flagged an input overflow), so its frames do
    not continue the earlier blocks even though ``start_frame`` does; ``captured_at`` is then
    its own (the device's) time.
    """

    data: np.ndarray
    start_frame: int
    captured_at: datetime
    discontinuity: bool = False

    @property
    def frames(self) -> int:
        """Number of frames in the block."""
        return int(self.data.shape[0])

    def since(self, start: datetime, rate: int) -> Block | None:
        """The frames of this block captured at or after ``start`` (aware UTC) in a stream
        of ``rate`` Hz: this block when its first frame is not earlier, None when its last
        is, else its tail (``start_frame`` and ``captured_at`` advanced by the frames cut,
        the time rounded to the microsecond). Frame *k* was captured at ``captured_at + k /
        rate``; the first frame kept is the first at or after ``start``, so it is at most
        one frame period (1 / ``rate`` s) later."""
        early = (start - self.captured_at) // timedelta(microseconds=1)
        if early <= 0:
            return self
        cut = -(-early * rate // 1_000_000)  # frames captured before start, rounded up
        if cut >= self.frames:
            return None
        return self.skip(cut, rate)

    def skip(self, frames: int, rate: int) -> Block:
        """This block without its first ``frames`` frames (``0 <= frames <= self.frames``) in
        a stream of ``rate`` Hz: ``start_frame`` advanced by ``frames``, ``captured_at`` by
        ``frames / rate`` seconds (:func:`~fieldstation.sensors.pacing.frame_time`, rounded to
        the microsecond); ``discontinuity`` as it was."""
        return Block(
            self.data[frames:],
            self.start_frame + frames,
            frame_time(self.captured_at, frames, rate),
            discontinuity=self.discontinuity,
        )


@dataclass
class SensorHealth:
    """What a sensor reports about itself (``health()``)."""

    state: str = "closed"
    """``closed``, ``open`` or ``error``."""
    frames: int = 0
    """Frames delivered since ``open()``."""
    overflows: int = 0
    """Input overflows reported by the device or the bounded queue (frames may be lost)."""
    lost_frames: int = 0
    """Frames known to be lost (dropped because the queue was full)."""
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "state": self.state,
            "frames": self.frames,
            "overflows": self.overflows,
            "lost_frames": self.lost_frames,
            "error": self.error,
            **self.details,
        }


@runtime_checkable
class Sensor(Protocol):
    """A source of frame blocks (audio device, replayed files, synthetic signal, camera, IMU).

    ``describe()`` is valid after construction (replay may read it from its files) and does
    not change while the sensor exists.
    """

    def describe(self) -> StreamDescription:
        """What the stream is (media, rate, frame shape, dtype, container, codec)."""
        ...

    def open(self) -> None:
        """Start the stream; the running frame index restarts at 0. Raises :class:`SensorError`."""
        ...

    def read(self) -> Block | None:
        """The next block (waiting for it, paced by the sensor's clock); None when the input
        has ended for good (a replay without loop). Raises :class:`DeviceError`."""
        ...

    def close(self) -> None:
        """Stop the stream (idempotent)."""
        ...

    def health(self) -> SensorHealth:
        """Counters and state of the sensor."""
        ...


def check_file_format(config: AudioSensorConfig) -> None:
    """Raise ``ValueError`` when ``config.format`` cannot store ``config.sample_format`` or
    ``config.sample_rate``.

    FLAC stores 16 and 24-bit integer PCM only (libsndfile subtypes PCM_16, PCM_24), at
    :data:`~fieldstation.config.sensors.FLAC_MAX_SAMPLE_RATE` Hz at most.
    """
    if config.format != "flac":
        return
    if config.sample_format not in ("int16", "int24"):
        raise ValueError(
            f"FLAC cannot store sample_format {config.sample_format!r}: "
            "use format = 'wav' or sample_format = 'int16' / 'int24'"
        )
    check_flac_rate(config.sample_rate)


def check_flac_rate(sample_rate: int, where: str = "sample_rate") -> None:
    """Raise ``ValueError`` when FLAC cannot store ``sample_rate`` (Hz)."""
    if sample_rate > FLAC_MAX_SAMPLE_RATE:
        raise ValueError(
            f"{where} {sample_rate} Hz is above FLAC's limit of {FLAC_MAX_SAMPLE_RATE} Hz: "
            "use format = 'wav' for this rate"
        )
