"""Station files received remotely, kept in the station home, and which one is in force
(decision record 0142).

``<home>/configs/`` (mode 0700) holds each file a remote ``set_config`` applied, as received
(``<UTC time>-<sha256 prefix>.toml``, the newest ``keep`` of them), and ``state.json``::

    {"current": "20261207T080000Z-3f2a....toml", "previous": null, "trial": false,
     "base_hash": "<config hash of the station file given to `fieldstation run`>",
     "config_hash": "<config hash of current>"}

``current`` is the file in force (None: the station file given to ``run``); ``previous`` the
one to go back to; ``trial`` is true from the moment a file is applied until it is healthy.
:func:`config_in_force` decides at start-up which file runs:

- the station file given to ``run`` when nothing was applied remotely, or when that file
  changed since (its config hash is not ``base_hash``: an edit on the station wins over an
  older remote one);
- ``previous`` when ``current`` was still on trial (the station stopped, or the power went,
  before the new file was healthy: never start on an unproven file);
- else ``current``.

Every write is atomic (temporary file, fsync, rename, fsync of the folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from fieldstation.config.station import ConfigError, StationConfig, config_hash, load_config
from fieldstation.home import StationHome, fsync_dir

__all__ = ["ConfigState", "KeptConfigs", "config_in_force"]

log = logging.getLogger(__name__)

FOLDER_MODE = 0o700


@dataclass
class ConfigState:
    """``configs/state.json`` (module docstring)."""

    current: str | None = None
    previous: str | None = None
    trial: bool = False
    base_hash: str | None = None
    config_hash: str | None = None


class KeptConfigs:
    """The ``configs/`` folder of a station home. ``keep``: how many received files stay
    (at least 1; the files ``current`` and ``previous`` name are never deleted)."""

    def __init__(self, home: StationHome, keep: int = 5) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, not {keep}")
        self.folder = home.root / "configs"
        self.keep_count = keep

    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    def _ensure(self) -> None:
        if not self.folder.is_dir():
            self.folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
            fsync_dir(self.folder.parent)

    def _write(self, path: Path, data: bytes) -> None:
        self._ensure()
        temporary = path.with_name(f".{path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_dir(self.folder)

    def files(self) -> list[Path]:
        """The kept station files, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("*.toml") if not p.name.startswith("."))

    def store(self, text: str, now: datetime) -> Path:
        """Write ``text`` (a station file, UTF-8) as a new kept file named by ``now`` (UTC)
        and its sha256; returns its path. Raises ``OSError`` (full disk, read-only home)."""
        digest = hashlib.sha256(text.encode()).hexdigest()
        path = self.folder / f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{digest[:16]}.toml"
        self._write(path, text.encode())
        return path

    def prune(self) -> list[Path]:
        """Delete the oldest kept files beyond ``keep`` (never one the state names);
        returns those deleted."""
        state = self.state()
        named = {state.current, state.previous}
        files = self.files()
        deleted = []
        for path in files[: max(0, len(files) - self.keep_count)]:
            if path.name in named:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                deleted.append(path)
        if deleted:
            fsync_dir(self.folder)
        return deleted

    def state(self) -> ConfigState:
        """The state (an empty one when none was written, or when it cannot be read: then
        the station file given to ``run`` is in force)."""
        try:
            data = json.loads(self.state_file.read_text())
            return ConfigState(**{k: data.get(k) for k in ConfigState.__dataclass_fields__})
        except FileNotFoundError:
            return ConfigState()
        except (OSError, ValueError, TypeError) as error:
            log.warning("%s unreadable (%s): the station file given to run is used", self, error)
            return ConfigState()

    def save(self, state: ConfigState) -> None:
        """Write ``state`` atomically."""
        self._write(self.state_file, json.dumps(asdict(state), indent=2).encode() + b"\n")

    def begin_trial(self, path: Path, *, new_hash: str, base_hash: str) -> ConfigState:
        """``path`` (a kept file) goes in force on trial; the file in force now becomes the
        one to go back to."""
        old = self.state()
        same_base = old.base_hash == base_hash
        state = ConfigState(
            current=path.name,
            previous=old.current if same_base and not old.trial else None,
            trial=True,
            base_hash=base_hash,
            config_hash=new_hash,
        )
        if same_base and old.trial:  # a trial replaced by another: go back to the proven one
            state.previous = old.previous
        self.save(state)
        return state

    def confirm(self) -> None:
        """The file on trial is healthy: it stays in force across restarts."""
        state = self.state()
        state.trial = False
        self.save(state)

    def roll_back(self, previous_hash: str | None) -> None:
        """The file on trial was not healthy: the previous one is in force again."""
        state = self.state()
        self.save(
            ConfigState(
                current=state.previous,
                previous=None,
                trial=False,
                base_hash=state.base_hash,
                config_hash=previous_hash if state.previous is not None else None,
            )
        )

    def __str__(self) -> str:
        return str(self.state_file)


def config_in_force(given: StationConfig, keep: int = 5) -> tuple[StationConfig, str]:
    """The station file to run, and where it comes from (one line for the log): ``given``
    (the file passed to ``run``) or a kept remote one (rules in the module docstring).
    A kept file that no longer loads, or names another station or home, is passed over
    with a warning. Never raises for a bad kept file."""
    home = StationHome(given.home_path())
    kept = KeptConfigs(home, keep)
    state = kept.state()
    if state.current is None:
        return given, "the station file given"
    if state.base_hash != config_hash(given):
        return given, "the station file given (changed since the remote one was applied)"
    name = state.current
    if state.trial:
        log.warning("%s was on trial when the station stopped: going back", name)
        kept.roll_back(None)
        if state.previous is None:
            return given, f"the station file given ({state.current} was on trial: rolled back)"
        name = state.previous
    try:
        config = load_config(kept.folder / name)
    except ConfigError as error:
        log.warning("kept station file %s does not load (%s): using the one given", name, error)
        return given, f"the station file given ({name} does not load)"
    if config.station.id != given.station.id or config.home_path() != given.home_path():
        return given, f"the station file given ({name} names another station or home)"
    return config, f"{kept.folder / name} (applied remotely)"
