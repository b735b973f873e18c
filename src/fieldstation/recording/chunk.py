"""Writing one chunk into ``spool/``: the audio file and its sidecar, flushed and fsynced.

A chunk in progress is two files in ``spool/``: ``<stem>.<ext>`` (the audio, written with
soundfile) and ``<stem>.json`` (the sidecar: the :class:`ChunkSpec`, then, once the audio is
closed, its frames, end reason, size and SHA-256). The sidecar is replaced atomically (write,
fsync, rename, fsync folder), so after a crash recovery knows what every spool file was meant
to be (decision record 0022).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldstation.home import fsync_dir
from fieldstation.recording.metadata import ChunkSpec, append_guano

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ChunkWriter",
    "FinishedChunk",
    "read_sidecar",
    "sha256_file",
    "write_json_atomic",
]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON: temp file, fsync, rename, fsync folder."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: no half-written temp file stays behind
        raise
    fsync_dir(path.parent)


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar at ``path``; raises ``ValueError`` (incl. JSON errors) or ``OSError``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "spec" not in data:
        raise ValueError(f"{path} is not a chunk sidecar")
    return data


def sha256_file(path: Path) -> str:
    """SHA-256 (hex) of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FinishedChunk:
    """A closed, fsynced chunk file in ``spool/`` ready to commit."""

    spec: ChunkSpec
    audio: Path
    sidecar: Path
    frames: int
    end_reason: str
    bytes: int
    sha256: str
    extra: dict[str, Any]


class ChunkWriter:
    """Writes one chunk to ``spool/<stem>.<ext>``; :meth:`finish` closes, fsyncs and describes it.

    Raises ``OSError`` (disk full, permissions) or ``soundfile.LibsndfileError`` (on a full
    disk libsndfile says only "System error": :func:`~fieldstation.recording.disk.is_disk_full`
    tells). When the chunk cannot even be created, nothing of it is left in ``spool/``.
    """

    def __init__(
        self, spool: Path, spec: ChunkSpec, *, audio: Path | None = None, sidecar: bool = True
    ) -> None:
        import soundfile as sf

        self.spec = spec
        stem = Path(spec.relpath()).stem
        self.audio = audio or spool / f"{stem}.{spec.format}"
        self.sidecar = spool / f"{stem}.json"
        self.frames = 0
        self._use_sidecar = sidecar
        if sidecar:
            write_json_atomic(self.sidecar, {"spec": spec.embedded(), "audio": self.audio.name})
        try:
            self._file = sf.SoundFile(
                str(self.audio),
                "w",
                samplerate=spec.sample_rate,
                channels=spec.channels,
                subtype=spec.subtype,
                format=spec.format.upper(),
            )
        except Exception:
            self.audio.unlink(missing_ok=True)
            if sidecar:
                self.sidecar.unlink(missing_ok=True)
            raise
        if spec.format == "flac":
            # Vorbis comments must be set before the first samples (libsndfile).
            self._file.title = f"{spec.station} {spec.sensor} {spec.started_at.isoformat()}"
            self._file.artist = spec.station
            self._file.date = spec.started_at.isoformat()
            self._file.software = f"fieldstation {spec.version}"
            self._file.comment = json.dumps(spec.embedded(), separators=(",", ":"))

    def write(self, data: np.ndarray) -> None:
        """Append frames (``(frames, channels)``, the sensor's dtype)."""
        self._file.write(data)
        self.frames += len(data)

    def finish(self, end_reason: str, extra: dict[str, Any] | None = None) -> FinishedChunk:
        """Close the audio, add WAV metadata, fsync, hash and record it all in the sidecar."""
        self._file.close()
        if self.spec.format == "wav":
            append_guano(self.audio, self.spec, self.frames, end_reason)
        with open(self.audio, "rb+") as f:
            os.fsync(f.fileno())
        finished = FinishedChunk(
            spec=self.spec,
            audio=self.audio,
            sidecar=self.sidecar,
            frames=self.frames,
            end_reason=end_reason,
            bytes=self.audio.stat().st_size,
            sha256=sha256_file(self.audio),
            extra=dict(extra or {}),
        )
        if self._use_sidecar:
            write_json_atomic(self.sidecar, sidecar_closed(finished))
        return finished

    def discard(self) -> None:
        """Close and delete the chunk (``keep_partial = false``, or nothing was written)."""
        with contextlib.suppress(Exception):
            self._file.close()
        self.audio.unlink(missing_ok=True)
        if self._use_sidecar:
            self.sidecar.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Close the file and leave it in ``spool/`` for start-up recovery."""
        with contextlib.suppress(Exception):
            self._file.close()


def sidecar_closed(chunk: FinishedChunk) -> dict[str, Any]:
    """The sidecar of a closed chunk."""
    return {
        "spec": chunk.spec.embedded(),
        "audio": chunk.audio.name,
        "closed": True,
        "frames": chunk.frames,
        "end_reason": chunk.end_reason,
        "bytes": chunk.bytes,
        "sha256": chunk.sha256,
        "extra": chunk.extra,
    }
