"""Disk guard: no chunk starts while the disk holding the station home is short of space, and
a full disk (ENOSPC, EDQUOT) anywhere in the recorder is recognised as such (decision 0026)."""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["FULL_MARGIN", "DiskGuard", "DiskUsageFn", "is_disk_full"]

DiskUsageFn = Callable[[Path], Any]
"""``shutil.disk_usage``-like: returns an object with ``.free`` (bytes)."""

FULL_MARGIN = 1 << 20
"""Bytes: after a write failed for want of space, recording resumes only once at least this
much (and ``min_free``) is free, and an error without an errno (libsndfile's "System error")
counts as a full disk while less than this is free."""

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13  # SQLITE_FULL, https://www.sqlite.org/rescode.html#full


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


def is_disk_full(error: BaseException, free: Callable[[], int] | None = None) -> bool:
    """True when ``error`` means the disk (or the user's quota) is full.

    Recognised anywhere in the exception chain: ``OSError`` with errno ``ENOSPC``/``EDQUOT``;
    SQLite's ``SQLITE_FULL`` ("database or disk is full", also wrapped by SQLAlchemy). An
    ``OSError``, ``RuntimeError`` or ``soundfile.LibsndfileError`` without an errno (libsndfile
    reports ENOSPC as "System error") counts when ``free()`` (bytes free on the disk, if given)
    is below :data:`FULL_MARGIN`. Never raises.
    """
    ambiguous = False
    for item in _chain(error):
        if isinstance(item, OSError) and item.errno in _FULL_ERRNOS:
            return True
        if getattr(item, "sqlite_errorcode", None) == _SQLITE_FULL:
            return True
        if "database or disk is full" in str(item):
            return True
        if isinstance(item, OSError | RuntimeError) and getattr(item, "errno", None) is None:
            ambiguous = True  # soundfile.LibsndfileError is a RuntimeError
    if ambiguous and free is not None:
        try:
            return free() < FULL_MARGIN
        except Exception:
            return False
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
        """Free bytes on the disk of ``path`` (0 when it cannot be asked)."""
        try:
            return int(self._disk_usage(self.path).free)
        except OSError:
            return 0

    def may_start(self) -> bool:
        """True when a new chunk may start."""
        return self.free() >= self.min_free

    def must_stop(self) -> bool:
        """True when the chunk in progress must close now."""
        return self.free() < self.hard_floor
