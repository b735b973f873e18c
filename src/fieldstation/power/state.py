"""The suspensions in force, shared with job processes through ``run/power.json``.

Recorders run in their own processes; the ``power`` thread job of the station decides. It
writes the jobs it holds (``{"suspended": {job: reason}, "updated_at": iso}``) to
:func:`state_path` atomically (a temporary file renamed over it), and each recorder reads it
at most every ``poll`` seconds (:class:`SuspensionFile`, a ``stat`` when unchanged). The file
lives in ``run/`` with the status file and the control socket (decision record 0100).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from fieldstation.home import StationHome

__all__ = ["SuspensionFile", "SuspensionSource", "state_path", "write_state"]

log = logging.getLogger(__name__)


def state_path(home: StationHome) -> Path:
    """``run/power.json`` of ``home``."""
    return home.run / "power.json"


def write_state(path: Path, suspended: dict[str, str], now: datetime) -> None:
    """Write the held jobs (job name -> reason) atomically; raises ``OSError`` (a full disk:
    the caller logs it and tries again at its next step)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"updated_at": now.isoformat(), "suspended": dict(sorted(suspended.items()))}
    fd, tmp = tempfile.mkstemp(prefix=".power.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@runtime_checkable
class SuspensionSource(Protocol):
    """Tells a job whether it is paused."""

    def reason(self, job: str) -> str | None:
        """Why ``job`` is paused now, or None when it may run."""
        ...


class SuspensionFile:
    """Reads the state file (:func:`write_state`); re-parsed only when it changed. A missing
    or unreadable file holds nothing (a station without suspenders never writes one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._held: dict[str, str] = {}

    def reason(self, job: str) -> str | None:
        try:
            st = self.path.stat()
        except OSError:
            self._seen, self._held = None, {}
            return None
        key = (st.st_mtime_ns, st.st_ino)
        if key != self._seen:
            try:
                data = json.loads(self.path.read_text())
                self._held = {str(k): str(v) for k, v in dict(data["suspended"]).items()}
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.warning("%s unreadable (%s); nothing held", self.path, error)
                self._held = {}
            self._seen = key
        return self._held.get(job)
