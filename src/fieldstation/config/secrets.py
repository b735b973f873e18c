"""Secrets in station files: references to the environment or a private file, never literals.

A secret field holds ``"env:NAME"`` or ``"file:PATH"``. The form of the reference is checked when
the file is validated, and ``fieldstation validate`` warns about references it cannot resolve
on this machine (:func:`unresolved_secrets`; the station may run elsewhere, so it is not an
error); the value is read only by :meth:`Secret.reveal`, at the moment of use, and never
appears in ``repr``, ``str``, logs or JSON dumps of the config.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, PlainSerializer, PlainValidator, WithJsonSchema

__all__ = ["Secret", "SecretError", "SecretRef", "env_secrets", "unresolved_secrets"]


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
    def variable(self) -> str | None:
        """The environment variable of an ``env:NAME`` reference; None for ``file:``."""
        return self._target if self._source == "env" else None

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


def _secrets(model: BaseModel) -> list[tuple[str, Secret]]:
    """Every secret in ``model`` (walked through nested models, lists and dicts) with its key
    path (``outputs[1].password``)."""
    found: list[tuple[str, Secret]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Secret):
            found.append((path, value))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), f"{path}.{name}" if path else name)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else str(key))

    walk(model, "")
    return found


def env_secrets(model: BaseModel) -> list[tuple[str, str]]:
    """Every ``env:NAME`` secret in ``model`` as ``(key path, NAME)``, in file order (a
    variable used twice appears twice). Reads no value."""
    return [(path, s.variable) for path, s in _secrets(model) if s.variable is not None]


def unresolved_secrets(model: BaseModel) -> list[tuple[str, str]]:
    """Every secret in ``model`` (walked through nested models and lists) that cannot be
    revealed here, as ``(key path, reason)``, e.g. ``("outputs[1].password", "environment
    variable MQTT_PASSWORD is not set")``. The values are read and dropped, never returned."""
    found: list[tuple[str, str]] = []
    for path, secret in _secrets(model):
        try:
            secret.reveal()
        except SecretError as error:
            found.append((path, str(error)))
    return found
