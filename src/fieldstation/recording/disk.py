"""Disk guard: no chunk starts while the disk holding the station home is short of space, and
a full disk (ENOSPC, EDQUOT) anywhere in the recorder is recognised as such (decision 0026)."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fieldstation.home import HomeError
from fieldstation.job import ConfigurationError
from fieldstation.sensors import SensorError

__all__ = ["FULL_MARGIN", "DiskGuard", "DiskUsageFn", "HomeVanishedError", "is_disk_full"]

DiskUsageFn = Callable[[Path], Any]
"""``shutil.disk_usage``-like: returns an object with ``.free`` (bytes)."""

FULL_MARGIN = 1 << 20
"""Bytes: after a write failed for want of space, recording resumes only once at least this
much (and ``min_free``) is free, and libsndfile's errno-less write errors count as a full
disk while less than this is free (:func:`is_disk_full`)."""

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13  # SQLITE_FULL, https://www.sqlite.org/rescode.html#full
_SF_SYSTEM_ERROR = "System error"  # libsndfile SF_ERR_SYSTEM (code 2): a failed system call
_SF_FLAC_INIT = "problem with initialization of the flac"  # the FLAC encoder's first write


class HomeVanishedError(HomeError):
    """The free space of the station home cannot be read (``statvfs`` failed): the card was
    removed or the home deleted. Not a full disk: the recorder stops with this error."""


def _chain(error: BaseException) -> list[BaseException]:
    """``error``, its causes/contexts and SQLAlchemy's wrapped ``orig``, each once."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        orig = getattr(item, "orig", None)
        todo += [
            item.__cause__,
            item.__context__,
            orig if isinstance(orig, BaseException) else None,
        ]
    return seen


def _is_failed_write(error: BaseException) -> bool:
    """True for a ``soundfile.LibsndfileError`` whose public ``error_string`` is one libsndfile
    gives a write that failed in the system: "System error." (a failed system call, ENOSPC
    among them) or, from the FLAC encoder that could not write its stream header, "problem
    with initialization of the flac decoder" (sic)."""
    try:
        import soundfile
    except ImportError:  # no soundfile: nothing here can have come from libsndfile
        return False
    if not isinstance(error, soundfile.LibsndfileError):
        return False
    try:
        text = error.error_string
    except Exception:
        return False
    return text.startswith(_SF_SYSTEM_ERROR) or _SF_FLAC_INIT in text


def is_disk_full(error: BaseException, free: Callable[[], int] | None = None) -> bool:
    """True when ``error`` means the disk (or the user's quota) is full.

    Recognised anywhere in the exception chain: ``OSError`` with errno ``ENOSPC``/``EDQUOT``;
    SQLite's ``SQLITE_FULL`` ("database or disk is full", also wrapped by SQLAlchemy). The one
    ambiguous case: libsndfile reports ENOSPC only as a ``soundfile.LibsndfileError`` with the
    ``error_string`` "System error." (or, for FLAC, "problem with initialization of the flac
    decoder", the encoder failing to write its header), which counts when ``free()`` (bytes
    free on the disk, if given) is below :data:`FULL_MARGIN`, and never when the chain holds a
    :class:`~fieldstation.job.ConfigurationError` or a
    :class:`~fieldstation.sensors.SensorError` (a replay file libsndfile cannot read is not a
    full disk). A ``ConfigurationError`` itself is never a full disk (it must stop the job).
    When ``free()`` raises (e.g. :class:`HomeVanishedError`) the error is not a full disk.
    Never raises.
    """
    if isinstance(error, ConfigurationError):
        return False
    chain = _chain(error)
    for item in chain:
        if isinstance(item, OSError) and item.errno in _FULL_ERRNOS:
            return True
        if getattr(item, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if "database or disk is full" in str(item):
            return True
    if free is None or any(isinstance(i, ConfigurationError | SensorError) for i in chain):
        return False
    if not any(_is_failed_write(item) for item in chain):
        return False
    try:
        return free() < FULL_MARGIN
    except Exception:
        return False


class DiskGuard:
    """Answers whether a chunk may start (``free >= min_free``) or must stop at once.

    ``hard_floor`` (bytes, default ``min_free // 2``): below it a chunk in progress is closed
    with end reason ``disk_low`` instead of running until its end. ``resume_free`` (bytes): the
    free space needed to resume after a write failed for want of space,
    ``max(min_free, FULL_MARGIN)``.
    """

    def __init__(
        self,
        path: Path,
        min_free: int,
        disk_usage: DiskUsageFn = shutil.disk_usage,
        hard_floor: int | None = None,
    ) -> None:
        self.path = path
        self.min_free = int(min_free)
        self.hard_floor = self.min_free // 2 if hard_floor is None else int(hard_floor)
        self.resume_free = max(self.min_free, FULL_MARGIN)
        self._disk_usage = disk_usage

    def free(self) -> int:
        """Free bytes on the disk of ``path``.

        Raises :class:`HomeVanishedError` when they cannot be read (``statvfs`` failed: the
        home is gone), never reported as a full disk."""
        try:
            return int(self._disk_usage(self.path).free)
        except OSError as error:
            raise HomeVanishedError(
                f"cannot read the free space of {self.path} ({error}): the station home is "
                "gone (card removed or unmounted?); mount it again, then start the station"
            ) from error

    def may_start(self, after_full: bool = False, free: int | None = None) -> bool:
        """True when a new chunk may start: ``min_free`` bytes free, or, ``after_full`` (a
        write failed for want of space), ``resume_free``. ``free``: the bytes free if just
        read (else :meth:`free` is asked). Raises :class:`HomeVanishedError`."""
        free = self.free() if free is None else free
        return free >= (self.resume_free if after_full else self.min_free)

    def must_stop(self) -> bool:
        """True when the chunk in progress must close now. Raises :class:`HomeVanishedError`."""
        return self.free() < self.hard_floor
