"""Readings chunks (fast scalar streams, e.g. an IMU at 100-400 Hz): Arrow IPC stream files.

A chunk is an Arrow IPC *stream* (``.arrows``, https://arrow.apache.org/docs/format/Columnar.html
#ipc-streaming-format) written with pyarrow: a schema message, then one record batch per
:meth:`ReadingsWriter.write` (one column per quantity, in the stream's dtype, one row per frame),
then, on close, an empty batch whose custom metadata holds the end reason, then the
end-of-stream marker. The schema metadata key ``fieldstation`` holds the JSON of
:meth:`~fieldstation.recording.metadata.ChunkSpec.embedded` (and ``units`` is also set on each
column's field metadata), so a chunk is self-describing.

The IPC stream format has no footer and no index: every batch is complete on its own once its
bytes are written, so a file cut by a crash (SIGKILL, power loss) reads up to its last whole
batch, which is what :meth:`ReadingsFormat.salvage` keeps. Arrow IPC carries no checksum:
damage inside a batch body that keeps the structure valid cannot be detected (a truncation can).

Times are not stored per row: frame ``i`` of a chunk was captured at ``started_at + i / rate``
(sample counts, like audio).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldstation.recording.media import write_salvaged
from fieldstation.recording.metadata import ChunkSpec, MetadataError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

__all__ = ["FORMAT", "METADATA_KEY", "ReadingsFormat", "ReadingsWriter", "read_chunk"]

log = logging.getLogger(__name__)

METADATA_KEY = b"fieldstation"
"""Schema metadata key of the chunk's :class:`ChunkSpec` JSON."""
END_REASON_KEY = b"end_reason"
"""Custom metadata key of the closing (empty) batch: the chunk's end reason."""


def schema_of(spec: ChunkSpec) -> pa.Schema:
    """The Arrow schema of ``spec``'s chunks: one column per field of the stream (its dtype),
    its unit in the field metadata, the spec JSON in the schema metadata."""
    import pyarrow as pa

    stream = spec.stream
    dtype = pa.from_numpy_dtype(stream.dtype)
    units = list(stream.units) + [""] * (len(stream.fields) - len(stream.units))
    fields = [
        pa.field(name, dtype, nullable=False, metadata={b"unit": unit.encode()})
        for name, unit in zip(stream.fields, units, strict=True)
    ]
    meta = json.dumps(spec.embedded(), separators=(",", ":")).encode()
    return pa.schema(fields, metadata={METADATA_KEY: meta})


class ReadingsWriter:
    """Writes one readings chunk (see :class:`~fieldstation.recording.media.MediaWriter`).

    Each :meth:`write` is one record batch written through to the OS (an unbuffered
    ``pyarrow.OSFile``), so a process killed between writes leaves whole batches only.
    Raises ``OSError`` (pyarrow's ``ArrowIOError`` is one) when the file cannot be written."""

    def __init__(self, path: Path, spec: ChunkSpec) -> None:
        import pyarrow as pa

        self.path = path
        self.spec = spec
        self.frames = 0
        self._schema = schema_of(spec)
        self._width = len(spec.stream.fields)
        self._sink: Any = None
        try:
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self._schema)
        except Exception:
            if self._sink is not None:
                with contextlib.suppress(Exception):
                    self._sink.close()
            path.unlink(missing_ok=True)
            raise

    def _batch(self, data: np.ndarray) -> pa.RecordBatch:
        import numpy as np
        import pyarrow as pa

        array = np.asarray(data, dtype=self.spec.stream.dtype).reshape(len(data), self._width)
        columns = [pa.array(np.ascontiguousarray(array[:, i])) for i in range(self._width)]
        return pa.RecordBatch.from_arrays(columns, schema=self._schema)

    def write(self, data: np.ndarray) -> None:
        """Append frames ``(frames, quantities)`` as one record batch."""
        if len(data) == 0:
            return
        self._writer.write_batch(self._batch(data))
        self.frames += len(data)

    def close(self, end_reason: str) -> None:
        """Write an empty batch carrying ``end_reason``, the end-of-stream marker, close."""
        import pyarrow as pa

        empty = pa.RecordBatch.from_pylist([], schema=self._schema)
        self._writer.write_batch(empty, custom_metadata={END_REASON_KEY: end_reason.encode()})
        self._writer.close()
        self._sink.close()

    def abort(self) -> None:
        """Close the file as it is (no end marker); never raises."""
        with contextlib.suppress(Exception):
            self._sink.close()


def read_chunk(path: Path) -> tuple[ChunkSpec, Any, str | None, bool]:
    """Read the readings chunk at ``path``: ``(spec, data, end_reason, complete)``.

    ``data`` is an array ``(frames, quantities)`` of the stream's dtype holding every whole
    batch up to the end or the first damage; ``end_reason`` is the one recorded at close
    (None when the file was not closed); ``complete`` is False when reading stopped at damage
    (a truncated batch). Raises :class:`MetadataError` when the schema and its fieldstation
    metadata cannot be read."""
    import pyarrow as pa

    try:
        source = pa.OSFile(str(path), "rb")
    except OSError as error:
        raise MetadataError(f"{path} cannot be opened: {error}") from None
    with source:
        return _read_stream(path, source)


def _read_stream(path: Path, source: Any) -> tuple[ChunkSpec, Any, str | None, bool]:
    import numpy as np
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(source)
    except (pa.ArrowException, OSError) as error:
        raise MetadataError(f"{path} cannot be read as an Arrow IPC stream: {error}") from None
    meta = (reader.schema.metadata or {}).get(METADATA_KEY)
    if meta is None:
        raise MetadataError(f"{path} has no fieldstation metadata in its Arrow schema")
    try:
        spec = ChunkSpec.from_embedded(json.loads(meta))
    except json.JSONDecodeError:
        raise MetadataError(f"{path} has unreadable fieldstation metadata") from None
    width = len(spec.stream.fields)
    parts = [np.zeros((0, width), dtype=spec.stream.dtype)]
    end_reason: str | None = None
    complete = True
    while True:
        try:
            batch, custom = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            break
        except (pa.ArrowException, OSError) as error:
            log.info("reading %s stops at the damage: %s", path, error)
            complete = False
            break
        if custom is not None and END_REASON_KEY in custom:
            end_reason = custom[END_REASON_KEY].decode()
        if batch.num_rows:
            columns = [batch.column(i).to_numpy(zero_copy_only=False) for i in range(width)]
            parts.append(np.stack(columns, axis=1).astype(spec.stream.dtype, copy=False))
    reader.close()
    return spec, np.ascontiguousarray(np.concatenate(parts)), end_reason, complete


@dataclass(frozen=True)
class ReadingsFormat:
    """The readings :class:`~fieldstation.recording.media.MediaFormat`."""

    media: str = "readings"

    def prepare(self) -> None:
        """Convert one value to Arrow and back: pyarrow loads its numpy (and, when installed,
        pandas) bridges on first use, most of a second, which must not happen mid-stream."""
        import numpy as np
        import pyarrow as pa

        batch = pa.RecordBatch.from_arrays([pa.array(np.zeros(1, np.float32))], names=["x"])
        batch.column(0).to_numpy()

    def open(self, path: Path, spec: ChunkSpec) -> ReadingsWriter:
        return ReadingsWriter(path, spec)

    def inspect(self, path: Path) -> tuple[ChunkSpec, str | None, int]:
        """``(spec, end_reason, frames)``: ``end_reason`` as recorded at close, None when the
        file was never closed; ``frames`` counts whole batches. Raises :class:`MetadataError`."""
        spec, data, end_reason, _ = read_chunk(path)
        return spec, end_reason, len(data)

    def salvage(self, damaged: Path, spec: ChunkSpec, out: Path, end_reason: str) -> int:
        """Rewrite every whole batch of ``damaged`` before the first damage to ``out``."""
        try:
            _, data, _, _ = read_chunk(damaged)
        except MetadataError as error:
            log.info("salvage of %s: nothing readable (%s)", damaged, error)
            return 0
        if len(data) == 0:
            return 0
        return write_salvaged(ReadingsWriter(out, spec), out, data, end_reason)


FORMAT = ReadingsFormat()
