"""A small JSON state file in the station home, written atomically (``state/<name>.json``).

Used for what a job must remember between passes that is not station data: the alert rules'
memory and cursors, the export targets' cursors (decision record 0131). Written to a temporary
file, fsynced, renamed over the old one and the folder fsynced, so a power cut leaves the old
state or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from fieldstation.home import fsync_dir

__all__ = ["StateFileError", "load_state", "save_state", "state_path"]


class StateFileError(RuntimeError):
    """A state file exists but is not a JSON object: move it away (the job then starts
    from the current end of the data) or repair it."""


def state_path(home_root: Path, name: str) -> Path:
    """``<home>/state/<name>.json``."""
    return home_root / "state" / f"{name}.json"


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, or None when there is no file. Raises :class:`StateFileError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise StateFileError(
            f"{path} is not JSON ({error}); move it away to start afresh"
        ) from None
    if not isinstance(data, dict):
        raise StateFileError(f"{path} does not hold a JSON object; move it away to start afresh")
    return data


def save_state(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically and durably (mode 0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # a name of its own per writer: two jobs saving at once never write into one file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True, separators=(",", ":"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
