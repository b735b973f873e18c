"""A throw-away PostgreSQL server for tests on a machine where none answers.

:class:`PostgresServer` runs Debian's own server binaries (``initdb`` and ``pg_ctl`` from
``/usr/lib/postgresql/<version>/bin``, package ``postgresql``) on a new cluster in a temporary
folder, listening on 127.0.0.1 at a free port with trust authentication for the user
``postgres``, and removes it all when it stops. PostgreSQL refuses to run as root, so as root
the cluster belongs to the system user ``postgres`` (``runuser``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from fieldstation.testing.broker import free_port

__all__ = ["PostgresMissingError", "PostgresServer", "server_binaries"]


class PostgresMissingError(RuntimeError):
    """No PostgreSQL server binaries here (install Debian's ``postgresql``)."""


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (the newest Debian version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> tuple[int, ...]:
    part = Path(path).parts[-3]
    return tuple(int(p) for p in part.split(".") if p.isdigit())


class PostgresServer:
    """A PostgreSQL cluster of its own (see the module docstring); a context manager.

    ``url`` (after :meth:`start`): ``postgresql+psycopg://postgres@127.0.0.1:<port>/postgres``.
    Raises :class:`PostgresMissingError` when the binaries are missing and
    ``subprocess.CalledProcessError`` (with the server's output) when it cannot start."""

    def __init__(self) -> None:
        binaries = server_binaries()
        if binaries is None:
            raise PostgresMissingError(
                "no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql"
            )
        self.binaries = binaries
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="fieldstation-pg-"))
        self.data = self.folder / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        """Create the cluster and start the server; returns when it accepts connections."""
        self._run(
            str(self.binaries / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.binaries / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the cluster."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
