"""The station home folder: its layout and the lock that keeps one runtime per station.

Layout (docs/architecture.md): ``station.toml``, ``station.db``, ``spool/``,
``data/<sensor>/<date>/``, ``quarantine/``, ``logs/``, ``run/`` (pid, lock, control socket,
status.json), ``systemd/``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "HOME_MODE",
    "PRIVATE_FILE_MODE",
    "DiskFullError",
    "HomeError",
    "HomeReadOnlyError",
    "StationHome",
    "StationLock",
    "StationLockedError",
    "disk_full",
    "free_space_text",
    "fsync_dir",
    "home_error",
    "make_dirs_durably",
    "move_durably",
    "read_only",
]


HOME_MODE = 0o700
"""Mode of the station home: it holds the outbox, logs and the deployment config (with the
station's coordinates), which are the station user's only."""
PRIVATE_FILE_MODE = 0o600
"""Mode of ``station.db`` (and ``-wal``, ``-shm``), the logs and ``run/status.json``."""


class HomeError(RuntimeError):
    """The station home cannot be used as it is; the message is one line saying what is wrong
    and what to do (no traceback needed)."""


class HomeReadOnlyError(HomeError):
    """The station home cannot be written (a read-only mount, no permission)."""


class DiskFullError(HomeError):
    """The filesystem holding the station home is full."""


def free_space_text(path: Path) -> str:
    """``"12.0 KiB free of 20.0 MiB"`` for the filesystem holding ``path`` (or its nearest
    existing parent); ``"free space unknown"`` when it cannot be read."""
    folder = path
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return "free space unknown"

    def size(n: float) -> str:
        if n < 1024:
            return f"{n:.0f} B"
        for unit in ("KiB", "MiB", "GiB", "TiB"):
            n /= 1024
            if n < 1024 or unit == "TiB":
                break
        return f"{n:.1f} {unit}"

    return f"{size(usage.free)} free of {size(usage.total)}"


def disk_full(path: Path) -> DiskFullError:
    """The error for a full disk under ``path``: where, and how much is free."""
    return DiskFullError(
        f"the disk holding {path} is full ({free_space_text(path)}): free some space there "
        "(old recordings under data/, logs/), then start again"
    )


def read_only(path: Path, reason: str) -> HomeReadOnlyError:
    """The error for a station home (or a file in it, ``path``) that cannot be written."""
    return HomeReadOnlyError(
        f"cannot write {path}: the station home is read-only ({reason}); commands that only "
        "read work (recordings, detections, outbox status, db check); to record or change "
        "anything, mount it read-write"
    )


def home_error(error: OSError, home: Path) -> HomeError | None:
    """The :class:`HomeError` for an ``OSError`` met writing in the home ``home``: a full
    disk (``ENOSPC``, ``EDQUOT``), a read-only one (``EROFS``) or no permission (``EACCES``,
    ``EPERM``: the owner and mode of the file named by the error); None for anything else."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return disk_full(home)
    if error.errno == errno.EROFS:
        return read_only(home, "read-only filesystem")
    if error.errno in (errno.EACCES, errno.EPERM):
        where = Path(error.filename) if error.filename else home
        try:
            st = where.stat()
            owner = f" (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})"
        except OSError:
            owner = ""
        return HomeReadOnlyError(
            f"cannot write {where}: permission denied{owner}; run fieldstation as the "
            "station's user (the owner of its home)"
        )
    return None


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
    def thumbnails(self) -> Path:
        """``thumbnails/<sensor>/<date>/<chunk stem>.<processor>.jpg``: images models made
        of a chunk (the motion model's), deleted with the chunk by retention."""
        return self.root / "thumbnails"

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
        """Create the home and its folders (mode :data:`HOME_MODE`, whatever the umask of the
        command that creates them; idempotent), each new folder's entry fsynced into its
        parent (:func:`make_dirs_durably`); returns self.

        Raises :class:`HomeReadOnlyError` or :class:`DiskFullError` when the home cannot be
        written, else ``OSError``.
        """
        try:
            if not self.root.is_dir():
                for folder in make_dirs_durably(self.root)[-1:]:
                    folder.chmod(HOME_MODE)
            for folder in (self.spool, self.data, self.quarantine, self.logs, self.run):
                if not folder.is_dir():
                    for made in make_dirs_durably(folder):
                        made.chmod(HOME_MODE)
        except OSError as error:
            raise (home_error(error, self.root) or error) from error
        return self

    def make_private(self) -> list[Path]:
        """Take group and other permissions away from the home (:data:`HOME_MODE`), the
        database files, the logs and ``run/status.json`` (:data:`PRIVATE_FILE_MODE`), where
        an older release left them open; returns what was changed. Files of another owner
        are left alone (``chmod`` would fail)."""
        changed: list[Path] = []
        candidates = [self.database, *self.root.glob("station.db-*"), self.status_file]
        if self.logs.is_dir():
            candidates += [p for p in self.logs.iterdir() if p.is_file()]
        for path, mode in [(self.root, HOME_MODE), *((p, PRIVATE_FILE_MODE) for p in candidates)]:
            try:
                st = path.lstat()
                kind = stat.S_ISDIR if mode == HOME_MODE else stat.S_ISREG
                if not kind(st.st_mode) or st.st_uid != os.geteuid():
                    continue
                if st.st_mode & 0o077:
                    path.chmod(stat.S_IMODE(st.st_mode) & mode)
                    changed.append(path)
            except FileNotFoundError:
                continue
        return changed

    def lock(self) -> StationLock:
        """Take the station lock; raises :class:`StationLockedError` naming the holder's PID,
        :class:`HomeReadOnlyError` or :class:`DiskFullError` when the home cannot be
        written."""
        self.ensure()
        try:
            return StationLock(self.lock_file).acquire()
        except OSError as error:
            raise (home_error(error, self.root) or error) from error

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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
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
