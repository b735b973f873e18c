"""Disk guard: no chunk starts while the disk holding the station home is short of space."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DiskGuard", "DiskUsageFn"]

DiskUsageFn = Callable[[Path], Any]
"""``shutil.disk_usage``-like: returns an object with ``.free`` (bytes)."""


class DiskGuard:
    """Answers whether a chunk may start (``free >= min_free``) or must stop at once.

    ``hard_floor`` (bytes, default ``min_free // 2``): below it a chunk in progress is closed
    with end reason ``disk_low`` instead of running until its end.
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
        self._disk_usage = disk_usage

    def free(self) -> int:
        """Free bytes on the disk of ``path``."""
        return int(self._disk_usage(self.path).free)

    def may_start(self) -> bool:
        """True when a new chunk may start."""
        return self.free() >= self.min_free

    def must_stop(self) -> bool:
        """True when the chunk in progress must close now."""
        return self.free() < self.hard_floor
