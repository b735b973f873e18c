"""Logging setup: rich console output and rotated, compressed log files in ``logs/``.

Each process writes its own file (``logs/<job>.log``) so no two processes rotate one file.
A file is rotated when it exceeds ``max_bytes`` or is older than ``max_age`` (Beemon's rules);
rotated files are gzip-compressed (``<name>.log.1.gz`` newest) and ``backups`` of them are kept.
Compression uses the ``namer``/``rotator`` hooks documented for ``logging.handlers``.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

from fieldstation.config.runtime import LoggingConfig

__all__ = ["RotatingCompressedHandler", "setup_logging"]

QUIET_LOGGERS = ("alembic", "httpx", "httpcore", "paho")
"""Libraries whose INFO lines (migration steps, every request) are noise in a station log."""

_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def _gzip_namer(name: str) -> str:
    return name + ".gz"


def _gzip_rotator(source: str, dest: str) -> None:
    with open(source, "rb") as src, gzip.open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(source)


class RotatingCompressedHandler(RotatingFileHandler):
    """A file handler rotating by size (bytes) and by age (seconds), gzip-compressing old files."""

    def __init__(self, path: Path, *, max_bytes: int, max_age: float, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.max_age = max_age
        self.namer = _gzip_namer
        self.rotator = _gzip_rotator
        self._opened_at = self._file_birth(path)

    @staticmethod
    def _file_birth(path: Path) -> float:
        try:
            return path.stat().st_mtime if path.stat().st_size == 0 else path.stat().st_ctime
        except OSError:
            return time.time()

    def shouldRollover(self, record: logging.LogRecord) -> int:  # noqa: N802 - stdlib name
        if time.time() - self._opened_at >= self.max_age and self.stream and self.stream.tell() > 0:
            return 1
        return super().shouldRollover(record)

    def doRollover(self) -> None:  # noqa: N802 - stdlib name
        super().doRollover()
        self._opened_at = time.time()


def setup_logging(
    config: LoggingConfig,
    logs_dir: Path | None,
    *,
    name: str = "station",
    console: bool = True,
) -> None:
    """Configure the root logger for this process.

    ``logs_dir``: where ``<name>.log`` goes (None: no file). ``console``: rich output on stderr.
    Replaces handlers set by an earlier call (safe to call again in a forked child).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(config.level)
    for chatty in QUIET_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    if console:
        from rich.logging import RichHandler

        root.addHandler(RichHandler(show_path=False, rich_tracebacks=False, markup=False))
    if logs_dir is not None:
        handler = RotatingCompressedHandler(
            logs_dir / f"{name.replace(':', '-')}.log",
            max_bytes=int(config.max_bytes),
            max_age=config.max_age,
            backups=config.backups,
        )
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
