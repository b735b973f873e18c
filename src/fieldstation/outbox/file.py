"""File messenger: JSON lines in a rotating file (no server needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ByteSize, Field

from fieldstation.config.outputs import OutputConfig
from fieldstation.config.plugins import Plugin
from fieldstation.config.units import Bytes
from fieldstation.outbox.messenger import OutgoingMessage, Result

__all__ = ["FileMessenger", "FileOutputConfig", "plugin"]


class FileOutputConfig(OutputConfig):
    """Append each message as one JSON line to a file, rotated by size."""

    needs_network: ClassVar[bool] = False
    """A local file: delivered to while the network is down."""

    path: Path = Field(default=Path("outbox.jsonl"), description="File; relative to the home.")
    max_bytes: Bytes = Field(default=ByteSize(50_000_000), description="Rotate at this size.")
    backups: int = Field(default=5, ge=0, description="Rotated files kept.")


class FileMessenger:
    """Appends each message's envelope as one line to ``path``; fsync per batch.

    A batch is reported sent only after ``os.fsync`` returned, so a power cut after ``sent``
    loses nothing. When the file reaches ``max_bytes`` before a batch it is rotated like
    ``logging.handlers.RotatingFileHandler`` (``path.1`` newest … ``path.N`` oldest, N =
    ``backups``; 0 backups: the file is truncated). Errors writing (disk full, permissions)
    are reported as ``retry`` with the OS error.
    """

    needs_network: ClassVar[bool] = False
    """Local: the delivery loop does not wait for the network (see ``outbox.messenger``)."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        if not batch:
            return []
        data = "".join(m.payload + "\n" for m in batch).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and self.path.stat().st_size >= self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as error:
            return [Result.retry(f"writing {self.path}: {error}")] * len(batch)
        return [Result.sent()] * len(batch)

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink()
            return
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        """Nothing is held open between batches."""


def _create(config: FileOutputConfig, *, home: Any = None, **context: object) -> FileMessenger:
    """Build the messenger; a relative ``path`` is resolved against the station home root."""
    path = Path(config.path).expanduser()
    if not path.is_absolute():
        if home is None:
            raise ValueError("file messenger: a relative path needs the station home (home=...)")
        path = Path(getattr(home, "root", home)) / path
    return FileMessenger(path, max_bytes=int(config.max_bytes), backups=config.backups)


plugin = Plugin(config_model=FileOutputConfig, factory=_create, description=__doc__ or "")
