"""Writing one chunk into ``spool/``: the media file and its sidecar, flushed and fsynced.

A chunk in progress is two files in ``spool/``: ``<stem>.<ext>`` (the media file, written by
the writer of its media, :mod:`fieldstation.recording.media`) and ``<stem>.json`` (the sidecar:
the :class:`ChunkSpec`, then, once the file is closed, its frames, end reason, size and
SHA-256). The sidecar is replaced atomically (write,
fsync, rename, fsync folder), so after a crash recovery knows what every spool file was meant
to be (decision record 0022).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldstation.home import fsync_dir
from fieldstation.recording.media import media_format
from fieldstation.recording.metadata import ChunkSpec

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

    The file itself is written by the writer of ``spec.media``
    (:func:`~fieldstation.recording.media.media_format`). Raises ``OSError`` or the media
    library's error (on a full disk libsndfile says only "System error":
    :func:`~fieldstation.recording.disk.is_disk_full` tells). When the chunk cannot even be
    created, nothing of it is left in ``spool/``.
    """

    def __init__(
        self, spool: Path, spec: ChunkSpec, *, audio: Path | None = None, sidecar: bool = True
    ) -> None:
        self.spec = spec
        stem = Path(spec.relpath()).stem
        self.audio = audio or spool / f"{stem}.{spec.format}"
        """The media file (named ``audio`` for history: any media)."""
        self.sidecar = spool / f"{stem}.json"
        self._use_sidecar = sidecar
        if sidecar:
            write_json_atomic(self.sidecar, {"spec": spec.embedded(), "audio": self.audio.name})
        try:
            self._writer = media_format(spec.media).open(self.audio, spec)
        except Exception:
            self.audio.unlink(missing_ok=True)
            if sidecar:
                self.sidecar.unlink(missing_ok=True)
            raise

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return self._writer.frames

    def write(self, data: np.ndarray) -> None:
        """Append frames (``(frames, *shape)``, the stream's dtype)."""
        self._writer.write(data)

    def finish(self, end_reason: str, extra: dict[str, Any] | None = None) -> FinishedChunk:
        """Close the file (the media writer completes it), fsync, hash and record it all in
        the sidecar."""
        self._writer.close(end_reason)
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
        self._writer.abort()
        self.audio.unlink(missing_ok=True)
        if self._use_sidecar:
            self.sidecar.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Release the file and leave it in ``spool/`` for start-up recovery."""
        self._writer.abort()


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
