"""systemd integration: sd_notify, the watchdog, and unit files.

``sd_notify`` (sd_notify(3)): send ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``
as one datagram to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the
abstract namespace). Without ``$NOTIFY_SOCKET`` (not run by systemd) it does nothing.
The watchdog interval is ``$WATCHDOG_USEC`` microseconds; we ping at half of it, as
sd_watchdog_enabled(3) recommends.

Units are ``Type=notify`` services with ``WatchdogSec``, ``Restart=on-failure`` and sandboxing
(systemd.exec(5)) that still lets the station read the audio devices (``DeviceAllow=char-alsa``,
``SupplementaryGroups=audio``) and write its home folder (``ReadWritePaths``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SystemdError",
    "UnitInstall",
    "environment_file_name",
    "install_unit",
    "notify",
    "render_unit",
    "uninstall_unit",
    "unit_dir",
    "unit_name",
    "watchdog_interval",
    "write_environment_file",
]

WATCHDOG_SEC = 60
"""WatchdogSec of generated units (s): a loop stuck this long is restarted by systemd."""


class SystemdError(RuntimeError):
    """A unit could not be installed or removed."""


def notify(message: str, env: dict[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd; False when not under systemd."""
    address = (env if env is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), None if no watchdog."""
    environ = env if env is not None else os.environ
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / 2


def unit_name(station_id: str) -> str:
    """``fieldstation-<station id>.service``."""
    return f"fieldstation-{station_id}.service"


def environment_file_name(station_id: str) -> str:
    """``fieldstation-<station id>.env``: the unit's EnvironmentFile, beside its copy in the
    station home's ``systemd/`` folder."""
    return f"fieldstation-{station_id}.env"


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def write_environment_file(path: Path, values: dict[str, str]) -> Path:
    """Write ``values`` as a systemd ``EnvironmentFile`` at ``path``, mode 0600 from the start
    (created under a temporary name with that mode, fsynced, renamed over ``path``).

    Each line is ``NAME="value"`` with backslash, double quote, ``$`` and backquote escaped by
    a backslash: the double-quoted form systemd.exec(5) reads like a shell (``set -a; . FILE``
    gives the same values). Raises ``ValueError`` for a name that is not a variable name or a
    value holding a newline or NUL (which such a file cannot carry on one line).
    """
    lines = ["# secrets of the station's env: references; written by fieldstation install"]
    for name, value in values.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if "\n" in value or "\0" in value or "\r" in value:
            raise ValueError(f"the value of {name} holds a line break or NUL")
        escaped = re.sub(r'([\\"$`])', r"\\\1", value)
        lines.append(f'{name}="{escaped}"')
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)  # whatever the umask did
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def unit_dir(user: bool) -> Path:
    """Where systemd looks for units: ``~/.config/systemd/user`` or ``/etc/systemd/system``."""
    if user:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path("/etc/systemd/system")


def render_unit(
    *,
    station_id: str,
    config_path: Path,
    home: Path,
    user: bool,
    executable: list[str] | None = None,
    run_as: str | None = None,
    environment_file: Path | None = None,
) -> str:
    """The text of the service unit running ``fieldstation run CONFIG``.

    ``executable``: the command prefix (default: this Python running ``-m fieldstation.cli``).
    ``run_as``: ``User=`` of a system unit (default: the current user).
    ``PrivateTmp=yes`` is left out when the home or the config lies under ``/tmp`` or
    ``/var/tmp``, which it would hide from the service.
    ``environment_file``: the ``EnvironmentFile=`` holding the ``env:`` secrets of the station
    file (:func:`write_environment_file`); None when it references none.
    """
    command = executable or [sys.executable, "-m", "fieldstation.cli"]
    exec_start = shlex.join([*command, "run", "-c", str(config_path.resolve())])
    lines = [
        "[Unit]",
        f"Description=fieldstation station {station_id}",
        "Documentation=file://" + str(home),
        "Wants=network-online.target sound.target",
        "After=network-online.target sound.target",
        "StartLimitIntervalSec=600",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        f"Environment=FIELDSTATION_HOME={home}",
        *([f"EnvironmentFile={environment_file}"] if environment_file else []),
        f"WorkingDirectory={home}",
        f"WatchdogSec={WATCHDOG_SEC}",
        "Restart=on-failure",
        "RestartSec=10",
        # 2: a bad station file; 78 (EX_CONFIG): a damaged database, a home of another id.
        # Neither mends itself, so systemd must not restart the station in a loop.
        "RestartPreventExitStatus=2 78",
        "TimeoutStopSec=30",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        # a private /tmp would hide a home or config kept under /tmp from the service
        *([] if _under_tmp(home, config_path) else ["PrivateTmp=yes"]),
        "ProtectSystem=strict",
        f"ReadWritePaths={home}",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictRealtime=no",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "DeviceAllow=char-alsa rw",
        "DeviceAllow=char-sound rw",
        "DeviceAllow=/dev/i2c-1 rw",
        "DeviceAllow=char-gpiochip rw",  # the field button and LED (gpiozero)
    ]
    if not user:
        lines += [
            "ProtectHome=read-only",
            f"User={run_as or _current_user()}",
            "SupplementaryGroups=audio",  # not gpio: a host without it refuses the unit
        ]
    lines += ["", "[Install]", f"WantedBy={'default.target' if user else 'multi-user.target'}", ""]
    return "\n".join(lines)


TEMPORARY_DIRECTORIES = (Path("/tmp"), Path("/var/tmp"))
"""What ``PrivateTmp=yes`` replaces by empty directories of the service's own
(systemd.exec(5))."""


def _under_tmp(*paths: Path) -> bool:
    """True when one of ``paths`` lies in a directory that ``PrivateTmp=yes`` would hide."""
    return any(
        path.resolve().is_relative_to(tmp.resolve())
        for path in paths
        for tmp in TEMPORARY_DIRECTORIES
    )


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@dataclass(frozen=True)
class UnitInstall:
    """What :func:`install_unit` did, and what is left for the user to run."""

    unit: str
    copies: list[Path]
    enabled: bool
    todo: list[str]


def _systemctl(user: bool) -> list[str] | None:
    exe = shutil.which("systemctl")
    if exe is None:
        return None
    return [exe, "--user"] if user else [exe]


def _run(command: list[str]) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def install_unit(
    text: str,
    *,
    station_id: str,
    home_systemd: Path,
    user: bool,
    target_dir: Path | None = None,
    enable: bool = True,
) -> UnitInstall:
    """Write the unit into ``home_systemd`` and the systemd folder, enable it if possible.

    Raises :class:`SystemdError` when the systemd folder cannot be written (a system unit
    needs root: run with sudo, or use ``--user``).
    """
    name = unit_name(station_id)
    home_systemd.mkdir(parents=True, exist_ok=True)
    (home_systemd / name).write_text(text)
    folder = target_dir or unit_dir(user)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    except OSError as error:
        raise SystemdError(
            f"cannot write {folder / name}: {error}; run as root, or install a user unit "
            f"with --user (a copy is in {home_systemd / name})"
        ) from error
    scope = ["--user"] if user else []
    todo: list[str] = []
    systemctl = _systemctl(user) if enable else None
    enabled = (
        systemctl is not None
        and _run([*systemctl, "daemon-reload"])
        and _run([*systemctl, "enable", "--now", name])
    )
    if not enabled:
        todo.append(shlex.join(["systemctl", *scope, "daemon-reload"]))
        todo.append(shlex.join(["systemctl", *scope, "enable", "--now", name]))
    if user:
        todo.append(
            f"loginctl enable-linger {_current_user()}  "
            "# keeps the user unit running without a login session"
        )
    return UnitInstall(
        unit=name, copies=[home_systemd / name, folder / name], enabled=enabled, todo=todo
    )


def uninstall_unit(
    *,
    station_id: str,
    home_systemd: Path,
    user: bool,
    target_dir: Path | None = None,
    disable: bool = True,
) -> list[Path]:
    """Disable and stop the unit (when ``disable`` and systemctl works) and delete its files.

    Removes its EnvironmentFile (:func:`environment_file_name`) from ``home_systemd`` too.
    Returns the files removed. Raises :class:`SystemdError` when one cannot be removed.
    """
    name = unit_name(station_id)
    systemctl = _systemctl(user) if disable else None
    if systemctl is not None:
        _run([*systemctl, "disable", "--now", name])
    removed = []
    env_file = home_systemd / environment_file_name(station_id)
    for path in (home_systemd / name, (target_dir or unit_dir(user)) / name, env_file):
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise SystemdError(f"cannot remove {path}: {error} (run as root?)") from error
    if systemctl is not None:
        _run([*systemctl, "daemon-reload"])
    return removed
