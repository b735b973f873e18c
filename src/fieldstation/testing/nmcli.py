"""A fake ``nmcli`` (NetworkManager's command line) for tests and demos of Wi-Fi provisioning.

:func:`install` writes an executable ``nmcli`` into a folder (put it first on ``PATH``) that
runs :func:`main` with a JSON state file. The state starts as the given *scenario* and the
fake changes it as NetworkManager would; every call's arguments are appended to its
``calls``. Scenario keys (all optional)::

    {"interface": "wlan0",
     "networks": [{"ssid": "Farm", "signal": 72, "security": "WPA2"}],
     "passwords": {"Farm": "secret123"},   # what 'device wifi connect' accepts
     "active": "Farm",                      # connected network (client mode), or null
     "hotspot": null,                       # {"ssid", "con_name", "password"} while up
     "fail": {"hotspot": "Error: ..."}}     # make a verb fail with that message (exit 1)

Commands understood (``dev``/``con`` abbreviations too): ``-t -f FIELDS device wifi
[list] [--rescan yes|no] [ifname X]`` (fields ACTIVE, SSID, SIGNAL, SECURITY, escaped as
nmcli does), ``device wifi hotspot [ifname X] [con-name N] [ssid S] [password P]``,
``device wifi connect SSID [password P] [ifname X]``, ``connection down [id] NAME``. Exit
statuses and messages follow nmcli's (10: not found, 4: activation failed, 2: bad usage).
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FakeNmcli", "install", "main"]


@dataclass
class FakeNmcli:
    """An installed fake: ``bin_dir`` holds ``nmcli``; ``state_file`` its JSON state."""

    bin_dir: Path
    state_file: Path

    @property
    def executable(self) -> Path:
        return self.bin_dir / "nmcli"

    def state(self) -> dict[str, Any]:
        """The current state (scenario as changed by the calls so far)."""
        with open(self.state_file) as file:
            fcntl.flock(file, fcntl.LOCK_SH)  # not half-written by a running call
            return dict(json.load(file))

    def calls(self) -> list[list[str]]:
        """Every call's arguments (without ``nmcli``), oldest first."""
        return [list(c) for c in self.state().get("calls", [])]

    def verbs(self) -> list[str]:
        """Each call as its verb: ``list``, ``hotspot``, ``connect``, ``down``."""
        return [_verb(_strip_options(c)[1]) for c in self.calls()]

    def update(self, **changes: Any) -> None:
        """Change the scenario (e.g. ``update(active=None)``: the network went away)."""
        with _locked(self.state_file) as state:
            state.update(changes)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with :attr:`bin_dir` first on ``PATH``."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env


def install(bin_dir: Path, scenario: dict[str, Any] | None = None) -> FakeNmcli:
    """Write ``bin_dir/nmcli`` (run with this interpreter) and its state file; returns it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_file = bin_dir / "nmcli-state.json"
    state: dict[str, Any] = {
        "interface": "wlan0",
        "networks": [],
        "passwords": {},
        "active": None,
        "hotspot": None,
    }
    state.update(scenario or {})
    state["calls"] = []
    state_file.write_text(json.dumps(state, indent=1))
    script = bin_dir / "nmcli"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from fieldstation.testing.nmcli import main\n"
        f"sys.exit(main(sys.argv[1:], {str(state_file)!r}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return FakeNmcli(bin_dir, state_file)


class _locked:
    """The state file, read under an exclusive lock and written back on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> dict[str, Any]:
        self._file = open(self.path, "r+")  # noqa: SIM115 - closed in __exit__
        fcntl.flock(self._file, fcntl.LOCK_EX)
        self.state: dict[str, Any] = json.load(self._file)
        return self.state

    def __exit__(self, *exc: object) -> None:
        self._file.seek(0)
        self._file.truncate()
        json.dump(self.state, self._file, indent=1)
        self._file.flush()
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _strip_options(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Global options (``-t``, ``-f FIELDS``, ``--rescan`` after the verb stays) and the rest."""
    options: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in ("-f", "--fields", "-e", "--escape", "-m", "--mode") and rest:
            options[flag.lstrip("-")[0]] = rest.pop(0)
        else:
            options[flag.lstrip("-")[0]] = ""
    words = {"dev": "device", "d": "device", "con": "connection", "c": "connection"}
    if rest:
        rest[0] = words.get(rest[0], rest[0])
    return options, rest


def _verb(rest: Sequence[str]) -> str:
    if rest[:2] == ["device", "wifi"]:
        verb = rest[2] if len(rest) > 2 else "list"
        return verb if verb in ("list", "hotspot", "connect", "rescan") else "list"
    if rest[:2] == ["connection", "down"]:
        return "down"
    return " ".join(rest[:2])


def _pairs(words: Sequence[str]) -> dict[str, str]:
    return {words[i]: words[i + 1] for i in range(0, len(words) - 1, 2)}


def main(argv: Sequence[str], state_file: str) -> int:
    """Run one fake ``nmcli`` call against ``state_file``; returns the exit status."""
    with _locked(Path(state_file)) as state:
        state.setdefault("calls", []).append(list(argv))
        options, rest = _strip_options(argv)
        verb = _verb(rest)
        failure = (state.get("fail") or {}).get(verb)
        if failure:
            print(failure, file=sys.stderr)
            return 1
        networks: list[dict[str, Any]] = state.get("networks", [])
        if verb in ("list", "rescan"):
            if verb == "rescan":
                return 0
            fields = (options.get("f") or "SSID,SIGNAL,SECURITY").split(",")
            for net in networks:
                values = {
                    "ACTIVE": "yes" if net["ssid"] == state.get("active") else "no",
                    "SSID": net["ssid"],
                    "SIGNAL": str(net.get("signal", 50)),
                    "SECURITY": net.get("security", "WPA2"),
                }
                print(":".join(_escape(values.get(f.upper(), "")) for f in fields))
            return 0
        interface = state.get("interface", "wlan0")
        if verb == "hotspot":
            args = _pairs(rest[3:])
            state["hotspot"] = {
                "ssid": args.get("ssid", "Hotspot"),
                "con_name": args.get("con-name", "Hotspot"),
                "password": args.get("password"),
            }
            state["active"] = None
            print(f"Device '{args.get('ifname', interface)}' successfully activated with 'fake'.")
            return 0
        if verb == "connect":
            if len(rest) < 4:
                print("Error: SSID or BSSID are missing.", file=sys.stderr)
                return 2
            ssid, args = rest[3], _pairs(rest[4:])
            if not any(n["ssid"] == ssid for n in networks):
                print(f"Error: No network with SSID '{ssid}' found.", file=sys.stderr)
                return 10
            wanted = state.get("passwords", {}).get(ssid)
            if wanted is not None and args.get("password") != wanted:
                print(
                    "Error: Connection activation failed: (7) Secrets were required, but not "
                    "provided.",
                    file=sys.stderr,
                )
                return 4
            state["active"], state["hotspot"] = ssid, None
            print(f"Device '{args.get('ifname', interface)}' successfully activated with 'fake'.")
            return 0
        if verb == "down":
            name = rest[-1]
            hotspot = state.get("hotspot")
            if hotspot and hotspot.get("con_name") == name:
                state["hotspot"] = None
                print(f"Connection '{name}' successfully deactivated.")
                return 0
            print(f"Error: '{name}' is not an active connection.", file=sys.stderr)
            return 10
        print(f"Error: fake nmcli does not understand {' '.join(argv)!r}.", file=sys.stderr)
        return 2
