"""A real small filesystem for full-disk tests: a tmpfs, else a loop-mounted ext4 image.

Tests of what the station does on a full disk fill a real filesystem (ENOSPC from the kernel,
not a mocked error). Mounting needs root; where neither a tmpfs nor a loop device can be
mounted, :func:`small_filesystem` raises :class:`SmallFilesystemUnavailable` with the reason,
which a test turns into a skip.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["FillDiskAt", "SmallFilesystemUnavailable", "fill_disk", "small_filesystem"]


class SmallFilesystemUnavailable(RuntimeError):
    """Neither a tmpfs nor a loop-mounted image can be mounted here (the message says why)."""


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, capture_output=True)


@contextlib.contextmanager
def small_filesystem(mount: Path, size_mb: int = 20) -> Iterator[Path]:
    """Mount a ``size_mb`` MiB filesystem at the existing empty folder ``mount`` (a tmpfs,
    else an ext4 image beside it on a loop device), yield ``mount``, unmount it (lazily) after.

    Raises :class:`SmallFilesystemUnavailable` when neither can be mounted (not root, no loop
    devices).
    """
    tmpfs = _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount))
    if tmpfs.returncode != 0:
        image = mount.with_name(mount.name + ".img")
        with open(image, "wb") as f:
            f.truncate(size_mb * 1024 * 1024)
        made = _run("mkfs.ext4", "-q", "-F", str(image))
        loop = _run("mount", "-o", "loop", str(image), str(mount)) if made.returncode == 0 else made
        if loop.returncode != 0:
            raise SmallFilesystemUnavailable(
                "cannot mount a small filesystem here (tmpfs or loop ext4 need root): "
                f"{tmpfs.stderr.decode().strip()}; {loop.stderr.decode().strip()}"
            )
    try:
        yield mount
    finally:
        _run("umount", "-l", str(mount))


def fill_disk(path: Path) -> int:
    """Append zeros to the file ``path`` until its filesystem is full (ENOSPC or EDQUOT), down
    to the last 512-byte block; returns the bytes added. Raises any other ``OSError``."""
    added = 0
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 4096, 512):
            while True:
                try:
                    added += f.write(b"\0" * size)
                except OSError as error:
                    if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    break
    return added


class FillDiskAt:
    """A sensor wrapper (any media) that fills the disk holding ``filler``
    (:func:`fill_disk`) just before it hands out block ``at`` (counted from 0); everything
    else is the wrapped sensor's (``describe``, ``health``, a slow sensor's
    ``seconds_to_next``, ...)."""

    def __init__(self, inner: Any, at: int, filler: Path) -> None:
        self.inner, self.at, self.filler = inner, at, filler
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read(self) -> Any:
        """The wrapped sensor's next block, the disk filled first when it is block ``at``."""
        if self.reads == self.at:
            fill_disk(self.filler)
        self.reads += 1
        return self.inner.read()
