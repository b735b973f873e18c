"""Secrets in station files: references to the environment or a private file, never literals.

A secret field holds ``"env:NAME"`` or ``"file:PATH"``. The reference is checked when the file is
validated; the value is read only by :meth:`Secret.reveal`, at the moment of use, and never
appears in ``repr``, ``str``, logs or JSON dumps of the config.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

__all__ = ["Secret", "SecretError", "SecretRef"]


class SecretError(ValueError):
    """A secret reference cannot be resolved (variable unset, file missing or too open)."""


class Secret:
    """A reference to a secret (``env:NAME`` or ``file:PATH``); the value is read on demand."""

    __slots__ = ("_source", "_target")

    def __init__(self, reference: str) -> None:
        source, sep, target = reference.partition(":")
        if not sep or source not in ("env", "file") or not target.strip():
            raise ValueError(
                "a secret must be given as 'env:VARIABLE' or 'file:/path/to/file' (mode 0600), "
                "never written into the station file"
            )
        self._source = source
        self._target = target.strip()

    @property
    def reference(self) -> str:
        """The reference as written (``env:NAME`` or ``file:PATH``); safe to show."""
        return f"{self._source}:{self._target}"

    def reveal(self) -> str:
        """Return the secret value.

        Raises :class:`SecretError` when the variable is unset, the file is missing, or the
        file can be read by group or others (it must be mode 0600 or stricter).
        """
        if self._source == "env":
            value = os.environ.get(self._target)
            if value is None:
                raise SecretError(f"environment variable {self._target} is not set")
            return value
        path = Path(self._target).expanduser()
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise SecretError(f"secret file {path} does not exist") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretError(
                f"secret file {path} must not be readable by others: chmod 600 {path}"
            )
        return path.read_text().strip()

    def __repr__(self) -> str:
        return f"Secret({self.reference!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.reference == self.reference

    def __hash__(self) -> int:
        return hash(self.reference)


def _to_secret(value: Any) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError("a secret must be a string 'env:NAME' or 'file:PATH'")
    return Secret(value)


SecretRef = Annotated[
    Secret,
    PlainValidator(_to_secret),
    PlainSerializer(lambda s: s.reference, return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^(env|file):.+$"}),
]
"""Pydantic field type for a secret reference."""
