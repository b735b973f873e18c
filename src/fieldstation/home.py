"""The station home folder: its layout and the lock that keeps one runtime per station.

Layout (DESIGN.md): ``station.toml``, ``station.db``, ``spool/``, ``data/<sensor>/<date>/``,
``quarantine/``, ``logs/``, ``run/`` (pid, lock, control socket, status.json), ``systemd/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "StationHome",
    "StationLock",
    "StationLockedError",
    "fsync_dir",
    "make_dirs_durably",
    "move_durably",
]


def fsync_dir(path: Path) -> None:
    """fsync the folder ``path`` so a rename or creation in it survives a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durably(path: Path) -> list[Path]:
    """Create the folder ``path`` and any missing parents so that they survive a power cut.

    A new folder's entry lives in its parent, so the parent of every folder created here is
    fsynced after the creation (from the top down, however far up the missing part reaches,
    e.g. ``data/`` then ``data/<sensor>/`` then ``data/<sensor>/<date>/``); folders that
    already exist are left alone. Safe when another process creates the same folders at the
    same time. Returns the folders this call found missing, top first. Raises ``OSError``.
    """
    missing: list[Path] = []
    folder = path
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    missing.reverse()
    for folder in missing:
        try:
            folder.mkdir()
        except FileExistsError:  # created meanwhile by another process: fsync its entry anyway
            if not folder.is_dir():
                raise
        fsync_dir(folder.parent)
    return missing


def move_durably(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` (same filesystem) so that the move survives a power cut.

    Creates ``target``'s folder when needed (:func:`make_dirs_durably`), renames
    (``os.replace``), then fsyncs both folders.
    Raises ``OSError`` (e.g. ``FileNotFoundError`` when ``source`` is gone).
    """
    make_dirs_durably(target.parent)
    os.replace(source, target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


class StationLockedError(RuntimeError):
    """Another process holds the station lock; ``pid`` is that process (None if unknown)."""

    def __init__(self, home: Path, pid: int | None) -> None:
        self.home = home
        self.pid = pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"station home {home} is in use by {holder}; stop it first "
            f"(`fieldstation status` shows it), or use another home"
        )


@dataclass(frozen=True)
class StationHome:
    """Paths of one station home. Nothing is created until :meth:`ensure`."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "station.toml"

    @property
    def database(self) -> Path:
        return self.root / "station.db"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def systemd(self) -> Path:
        return self.root / "systemd"

    @property
    def control_socket(self) -> Path:
        return self.run / "control.sock"

    @property
    def status_file(self) -> Path:
        return self.run / "status.json"

    @property
    def lock_file(self) -> Path:
        return self.run / "station.lock"

    def quarantine_target(self, name: str) -> Path:
        """A free path for a file called ``name`` in ``quarantine/``: ``name`` itself, or
        ``<stem>_<N><suffix>`` with the smallest N not taken."""
        target = self.quarantine / name
        stem, suffix = Path(name).stem, Path(name).suffix
        n = 0
        while target.exists():
            n += 1
            target = self.quarantine / f"{stem}_{n}{suffix}"
        return target

    def ensure(self) -> StationHome:
        """Create the home and its folders (idempotent), each new folder's entry fsynced into
        its parent (:func:`make_dirs_durably`); returns self."""
        for folder in (self.root, self.spool, self.data, self.quarantine, self.logs, self.run):
            if not folder.is_dir():
                make_dirs_durably(folder)
        return self

    def lock(self) -> StationLock:
        """Take the station lock; raises :class:`StationLockedError` naming the holder's PID."""
        self.ensure()
        return StationLock(self.lock_file).acquire()

    def holder_pid(self) -> int | None:
        """PID written in the lock file by the runtime holding it, if any (it may be stale)."""
        try:
            text = self.lock_file.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


class StationLock:
    """An exclusive ``flock`` on ``run/station.lock`` holding the owner's PID.

    The kernel drops the lock when the process dies (even by SIGKILL), so a stale lock never
    blocks a restart. Child processes must not inherit it: the file is opened close-on-exec.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> StationLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = int(text) if text.isdigit() else None
            raise StationLockedError(self.path.parent.parent, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StationLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
