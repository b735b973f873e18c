"""What a chunk file says about itself, and where it goes.

Every chunk carries its provenance inside the file (each media in its container's own way:
:mod:`fieldstation.recording.media`); for audio: Vorbis comments for FLAC (libsndfile
strings: ``title``, ``artist`` = station, ``date`` = start time, ``comment`` = the JSON of
:meth:`ChunkSpec.embedded`) and a GUANO ``guan`` RIFF chunk for WAV (https://guano-md.org,
version 1.0: standard keys plus a ``FieldStation|`` namespace). Start-up recovery reads it back
to rebuild the row of a data file whose row was never written.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fieldstation.sensors.base import StreamDescription, audio_description

__all__ = [
    "GUANO_NAMESPACE",
    "ChunkSpec",
    "MetadataError",
    "append_guano",
    "data_relpath",
    "read_embedded",
    "read_guano",
    "utc_stamp",
]

GUANO_NAMESPACE = "FieldStation"


class MetadataError(ValueError):
    """A file carries no readable fieldstation metadata."""


def utc_stamp(when: datetime) -> str:
    """``20260601T000000.000000Z``: a UTC time to the microsecond, safe in file names."""
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


@dataclass(frozen=True)
class ChunkSpec:
    """Everything known about a chunk when it starts (times aware UTC): where it sits in its
    session, what the stream is (``stream``, whatever the media) and the station's provenance."""

    station: str
    sensor: str
    session_id: str
    chunk_index: int
    start_frame: int
    started_at: datetime
    stream: StreamDescription
    deployment_id: int
    config_hash: str
    version: str
    latitude: float
    longitude: float
    elevation: float
    capture_id: str | None = None
    """Id of the session of several streams this chunk belongs to (``[[sessions]]``), shared
    by every stream of the session in the same slot; None outside a session."""
    capture_anchor: datetime | None = None
    """Anchor (UTC) of that session: the slot start, the same for every stream of it."""
    capture_session: str | None = None
    """Name of that session in ``[[sessions]]``."""

    @property
    def media(self) -> str:
        """``audio``, ``video`` or ``readings``."""
        return self.stream.media

    @property
    def rate(self) -> int:
        """Frames per second of the stream, Hz."""
        return self.stream.rate

    @property
    def sample_rate(self) -> int:
        """The rate (Hz) under its audio name."""
        return self.stream.rate

    @property
    def channels(self) -> int:
        """Size of the last axis of a frame (audio channels)."""
        return self.stream.channels

    @property
    def format(self) -> str:
        """Container of the chunk file, also its extension."""
        return self.stream.format

    @property
    def subtype(self) -> str:
        """Audio: the libsndfile subtype (PCM_16, PCM_24, PCM_32, FLOAT)."""
        return self.stream.codec

    def relpath(self) -> str:
        """Path of the committed file relative to the station home (see :func:`data_relpath`)."""
        return data_relpath(self.station, self.sensor, self.started_at, self.format)

    def embedded(self) -> dict[str, Any]:
        """JSON-ready metadata written into the file (the stream's fields at the top level)."""
        data = {k: v for k, v in asdict(self).items() if k != "stream"}
        data.update(self.stream.as_dict())
        data["started_at"] = self.started_at.isoformat()
        if self.capture_anchor is not None:
            data["capture_anchor"] = self.capture_anchor.isoformat()
        data["fieldstation"] = data.pop("version")
        return data

    @classmethod
    def from_embedded(cls, data: dict[str, Any]) -> ChunkSpec:
        """Inverse of :meth:`embedded`, also for audio files written before streams had a
        media (keys ``sample_rate``, ``channels``, ``sample_format``, ``format``); raises
        :class:`MetadataError` on missing or wrong keys."""
        try:
            fields = dict(data)
            if "media" not in fields:  # an audio chunk of fieldstation before 0.3
                stream = audio_description(
                    int(fields["sample_rate"]),
                    int(fields["channels"]),
                    str(fields["sample_format"]),
                    str(fields["format"]),
                )
            else:
                stream = StreamDescription.from_dict(fields)
            fields["stream"] = stream
            fields["version"] = fields.pop("fieldstation")
            fields["started_at"] = datetime.fromisoformat(fields["started_at"])
            if fields.get("capture_anchor"):
                fields["capture_anchor"] = datetime.fromisoformat(fields["capture_anchor"])
            names = cls.__dataclass_fields__
            return cls(**{k: v for k, v in fields.items() if k in names})
        except (KeyError, TypeError, ValueError) as error:
            raise MetadataError(f"incomplete fieldstation metadata: {error}") from None


def data_relpath(station: str, sensor: str, started_at: datetime, ext: str) -> str:
    """``data/<sensor>/<YYYY-MM-DD>/<station>_<sensor>_<UTC stamp>.<ext>`` (UTC date)."""
    day = started_at.astimezone(UTC).strftime("%Y-%m-%d")
    return f"data/{sensor}/{day}/{station}_{sensor}_{utc_stamp(started_at)}.{ext}"


def _guano_text(spec: ChunkSpec, frames: int, end_reason: str) -> str:
    lines = [
        "GUANO|Version: 1.0",
        f"Timestamp: {spec.started_at.isoformat()}",
        f"Loc Position: {spec.latitude} {spec.longitude}",
        f"Loc Elevation: {spec.elevation}",
        f"Samplerate: {spec.sample_rate}",
        f"Length: {frames / spec.sample_rate:.6f}",
        "Make: fieldstation",
        f"Firmware Version: {spec.version}",
        f"{GUANO_NAMESPACE}|Metadata: {json.dumps(spec.embedded(), separators=(',', ':'))}",
        f"{GUANO_NAMESPACE}|End Reason: {end_reason}",
        f"{GUANO_NAMESPACE}|Frames: {frames}",
    ]
    return "\n".join(lines)


def append_guano(path: Path, spec: ChunkSpec, frames: int, end_reason: str) -> None:
    """Append a GUANO ``guan`` chunk to the WAV at ``path`` and fix the RIFF size.

    Raises :class:`MetadataError` when the file is not a RIFF/WAVE file.
    """
    payload = _guano_text(spec, frames, end_reason).encode("utf-8")
    chunk = (
        b"guan" + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")
    )
    with open(path, "r+b") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise MetadataError(f"{path} is not a RIFF/WAVE file")
        end = f.seek(0, os.SEEK_END)
        if end % 2:
            f.write(b"\0")
            end += 1
        f.write(chunk)
        f.seek(4)
        f.write(struct.pack("<I", end + len(chunk) - 8))


def read_guano(path: Path) -> dict[str, str]:
    """The GUANO fields of the WAV at ``path`` (empty when it has none)."""
    fields: dict[str, str] = {}
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return fields
        while True:
            header = f.read(8)
            if len(header) < 8:
                return fields
            cid, size = header[:4], struct.unpack("<I", header[4:])[0]
            if cid == b"guan":
                text = f.read(size).decode("utf-8", errors="replace")
                for line in text.splitlines():
                    key, sep, value = line.partition(":")
                    if sep:
                        fields[key.strip()] = value.strip()
                return fields
            f.seek(size + (size % 2), os.SEEK_CUR)


def read_embedded(path: Path) -> tuple[ChunkSpec, str | None]:
    """The :class:`ChunkSpec` written into a chunk file, and its end reason when the file
    records one (WAV/GUANO does; FLAC comments are written before the end is known).

    Raises :class:`MetadataError` when the file has no fieldstation metadata.
    """
    import soundfile as sf

    if path.suffix.lower() == ".wav":
        fields = read_guano(path)
        raw = fields.get(f"{GUANO_NAMESPACE}|Metadata")
        if raw is None:
            raise MetadataError(f"{path} has no GUANO fieldstation metadata")
        return ChunkSpec.from_embedded(json.loads(raw)), fields.get(f"{GUANO_NAMESPACE}|End Reason")
    try:
        with sf.SoundFile(str(path)) as f:
            comment = f.comment
    except (sf.LibsndfileError, RuntimeError) as error:
        raise MetadataError(f"{path} cannot be read: {error}") from None
    try:
        return ChunkSpec.from_embedded(json.loads(comment)), None
    except json.JSONDecodeError:
        raise MetadataError(f"{path} has no fieldstation metadata comment") from None
