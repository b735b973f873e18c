"""Logging setup: rich console output and rotated, compressed log files in ``logs/``.

Each process writes its own file (``logs/<job>.log``) so no two processes rotate one file.
A file is rotated when it exceeds ``max_bytes`` or when its first record is older than
``max_age`` (Beemon's rules); rotated files are gzip-compressed (``<name>.log.1.gz`` newest)
and ``backups`` of them are kept. Compression uses the ``namer``/``rotator`` hooks documented
for ``logging.handlers``.

The reader of the console may go away while the station runs (``fieldstation run | head``):
console output then stops and the station goes on. rich's own answer to a broken
pipe is ``SystemExit`` from inside the logging call (``Console.on_broken_pipe``), which would
abort whatever the station was doing, a shutdown included.

The age of a file is counted from the wall time of its first record, kept in a small sidecar
``logs/.<name>.log.origin`` (seconds since the epoch, as text), so it survives restarts: a job
restarted every few minutes appends to the same file and still rotates it after ``max_age``.
(The file's ``st_ctime``, used before, changes with every write and never grew old.)
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path

from fieldstation.config.runtime import LoggingConfig

__all__ = [
    "CONSOLE_FORMAT",
    "OneLineFormatter",
    "PlainConsoleHandler",
    "RotatingCompressedHandler",
    "setup_logging",
]

QUIET_LOGGERS = ("alembic", "httpx", "httpcore", "paho")
"""Libraries whose INFO lines (migration steps, every request) are noise in a station log."""

_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class UTCFormatter(logging.Formatter):
    """Records as ``2026-12-06T20:11:15.123Z INFO name: message``: ISO 8601 time in UTC with
    milliseconds, so lines from stations in several time zones sort and compare as they are."""

    converter = staticmethod(time.gmtime)  # type: ignore[assignment]
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


class OneLineFormatter(UTCFormatter):
    """:class:`UTCFormatter` with every record on one line: the line breaks of a message or a
    traceback are written as the two characters ``\\n`` (as journald's export format escapes
    them), so a reader that takes one line per record (journald, grep, a log shipper) never
    sees a traceback line as a record of its own."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", "\\n")


CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Format of the plain console: ``2026-12-07T05:01:02.123Z INFO fieldstation...: message``."""


class PlainConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The console when stderr is not a terminal (systemd's journal, a pipe, a file): one line
    per record, never wrapped or padded, ISO 8601 UTC times (:class:`OneLineFormatter`). A
    reader that goes away (a broken pipe) silences it, as the command line's console does
    (:mod:`fieldstation.runtime.console`), instead of printing a logging traceback per record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(OneLineFormatter(CONSOLE_FORMAT))

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # EPIPE, EIO: nobody reads any more
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)
            return
        super().handleError(record)


def _gzip_namer(name: str) -> str:
    return name + ".gz"


def _gzip_rotator(source: str, dest: str) -> None:
    try:
        with open(source, "rb") as src, gzip.open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except BaseException:
        with contextlib.suppress(OSError):  # a half-written archive (disk full): the log stays
            os.remove(dest)
        raise
    os.remove(source)


class RotatingCompressedHandler(RotatingFileHandler):
    """A file handler rotating by size (bytes) and by age (seconds), gzip-compressing old files.

    ``max_bytes``: rotate before a record would take the file past this size (must be > 0).
    ``max_age``: rotate before a record when the file's first record is at least this many
    seconds old (0: no rotation by age). ``backups``: compressed files kept. ``clock``: wall
    time in seconds since the epoch (default ``time.time``); the file's origin is stored beside
    it (see the module docstring), so it must be wall time, not a monotonic clock. If the clock
    is found earlier than a stored origin (a clock set back), the origin restarts at the
    current time.

    Writing never raises and prints nothing (decision 0028): a record that cannot be written
    (disk full, file removed, permissions) is counted in :attr:`lost`, the file is closed, and
    the next record reopens it; the first record written after a loss is preceded by a line
    saying how many were lost. (The stdlib's ``handleError`` prints a traceback to stderr for
    each such record, which on a full disk floods the console.)
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age: float,
        backups: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.max_age = max_age
        self.clock = clock
        self.namer = _gzip_namer
        self.rotator = _gzip_rotator
        self.origin_path = path.with_name(f".{path.name}.origin")
        self._origin = self._load_origin(path)
        self.lost = 0
        """Records that could not be written since the last one that was."""
        self.lost_total = 0
        """Records that could not be written since the handler was made."""

    @property
    def origin(self) -> float | None:
        """Wall time (s) of the current file's first record; None while the file is empty."""
        return self._origin

    def _load_origin(self, path: Path) -> float | None:
        try:
            if path.stat().st_size == 0:
                return None
        except OSError:
            return None
        try:
            return float(self.origin_path.read_text(encoding="ascii"))
        except (OSError, ValueError):
            pass
        # A file written before origins were kept: it is at least as old as its last write.
        try:
            origin = path.stat().st_mtime
        except OSError:
            origin = self.clock()
        self._store_origin(origin)
        return origin

    def _store_origin(self, origin: float | None) -> None:
        self._origin = origin
        try:
            if origin is None:
                self.origin_path.unlink(missing_ok=True)
                return
            partial = self.origin_path.with_name(self.origin_path.name + ".tmp")
            partial.write_text(repr(origin), encoding="ascii")
            os.replace(partial, self.origin_path)
        except OSError:  # logging must not fail for want of a sidecar; the age is kept in memory
            pass

    def shouldRollover(self, record: logging.LogRecord) -> int:  # noqa: N802 - stdlib name
        if self._origin is not None and self.max_age > 0:
            now = self.clock()
            if now < self._origin:
                self._store_origin(now)
            elif now - self._origin >= self.max_age:
                return 1
        return super().shouldRollover(record)

    def doRollover(self) -> None:  # noqa: N802 - stdlib name
        super().doRollover()
        self._store_origin(None)

    def emit(self, record: logging.LogRecord) -> None:
        if self.lost:
            lost, self.lost = self.lost, 0
            note = logging.LogRecord(
                record.name,
                logging.WARNING,
                __file__,
                0,
                "%d log record(s) could not be written (disk full?) and are missing here",
                (lost,),
                None,
            )
            super().emit(note)
            if self.lost:  # still failing: handleError's count of the note stands for record
                self.lost = lost + 1
                return
        super().emit(record)  # rotates first when due
        if self._origin is None and not self.lost:
            self._store_origin(self.clock())

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - stdlib name
        """Count the lost record and close the file (reopened by the next record); print
        nothing, raise nothing."""
        self.lost += 1
        self.lost_total += 1
        stream, self.stream = self.stream, None  # type: ignore[assignment]
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


def setup_logging(
    config: LoggingConfig,
    logs_dir: Path | None,
    *,
    name: str = "station",
    console: bool = True,
    terminal: bool | None = None,
) -> None:
    """Configure the root logger for this process.

    ``logs_dir``: where ``<name>.log`` goes (None: no file). ``console``: log to stderr too:
    rich output when stderr is a terminal (``terminal``, default ``sys.stderr.isatty()``),
    else :class:`PlainConsoleHandler` (one line per record, ISO 8601 UTC times: what
    journald and pipes want). Replaces handlers set by an earlier call (safe to call again in
    a forked child).
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(config.level)
    for chatty in QUIET_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    if terminal is None:
        terminal = sys.stderr is not None and sys.stderr.isatty()
    if console and not terminal:
        root.addHandler(PlainConsoleHandler())
    elif console:
        from rich.logging import RichHandler

        from fieldstation.runtime.console import TolerantConsole

        root.addHandler(
            RichHandler(
                console=TolerantConsole(stderr=True),
                show_path=False,
                rich_tracebacks=False,
                markup=False,
            )
        )
    if logs_dir is not None:
        handler = RotatingCompressedHandler(
            logs_dir / f"{name.replace(':', '-')}.log",
            max_bytes=int(config.max_bytes),
            max_age=config.max_age,
            backups=config.backups,
        )
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)


_STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}")


def about_job(line: str, job: str) -> bool:
    """True when a line of ``station.log`` is about ``job``: the supervisor's lines on it
    (``job recorder:mic started``) and the progress lines it logs for it (``recorder:mic:
    chunk committed ...``)."""
    return f" {job}: " in line or f" job {job} " in line or line.endswith(f" job {job}")


def _records(lines: list[str]) -> list[str]:
    """Lines joined into records: a line without a time stamp (a traceback) belongs to the
    record before it (lines before the first stamp, the end of a cut record, are dropped)."""
    records: list[str] = []
    for line in lines:
        if _STAMP.match(line):
            records.append(line)
        elif records:
            records[-1] += "\n" + line
        # else: the end of a record cut by the tail: dropped
    return records


def job_log_records(own: list[str], station: list[str], job: str) -> list[str]:
    """The records of ``job``'s view of the logs: its own file's lines (``own``) and the lines
    of ``station.log`` about it (:func:`about_job`), merged in time order (both start with a
    sortable local time stamp)."""
    mine = _records(own)
    theirs = [r for r in _records(station) if about_job(r.partition("\n")[0], job)]
    return sorted(mine + theirs, key=lambda r: r[:23])
