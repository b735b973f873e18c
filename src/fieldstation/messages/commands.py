"""Fleet commands (hub -> station): the signed command envelope, its arguments per command,
the key handling, and the topic. The answers travel the other way as ordinary outbox messages
of kind ``command_result`` (:class:`~fieldstation.messages.bodies.CommandResultBody`).

Wire form (JSON, UTF-8) published at QoS 1 to ``{prefix}/{station}/cmd`` (:func:`command_topic`)
or handed out by the hub's HTTP command endpoint::

    {"schema": 1, "id": "<uuid4 hex>", "station": "hedge-07", "command": "restart",
     "args": {"job": "processor:birds"}, "issued_at": "2026-12-07T08:00:00+00:00",
     "expires_at": "2026-12-08T08:00:00+00:00", "key_id": "hub-2026",
     "signature": "<base64 Ed25519 signature>"}

The signature is Ed25519 (RFC 8032, through ``cryptography``) over :func:`signed_bytes`: the
canonical JSON of every field but ``signature`` (keys sorted, no spaces, UTF-8). The station
holds the hub's public key(s) by ``key_id``; :func:`verify_command` refuses a command that is
not valid JSON, names another station, is not signed by a known key, is expired or issued in
the future beyond ``skew``, or has arguments that fail the command's model. Replays (an id seen
before) are refused by the station's command store, not here (this module keeps no state).

Secrets never travel in a command: ``set_config`` carries a station file whose secrets are
``env:``/``file:`` references (the station's own validation refuses anything else, as
``fieldstation validate`` does).

Usage::

    key = generate_private_key()                      # or load_private_key(path)
    command = sign_command(key, key_id="hub", station="hedge-07", command="ping", args={},
                           issued_at=now, ttl=86400.0)
    raw = command.to_json()
    verified = verify_command(raw, public_keys={"hub": key.public_key()},
                              station_id="hedge-07", now=now)   # raises CommandRefusedError
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:  # cryptography is imported by the functions that sign, verify or load keys,
    # so an output that only needs command_topic does not load it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "ARGS_MODELS",
    "COMMANDS",
    "COMMAND_SCHEMA_VERSION",
    "Command",
    "CommandName",
    "CommandRefusedError",
    "JobArgs",
    "NoArgs",
    "PinArgs",
    "ReprocessArgs",
    "SetConfigArgs",
    "UploadArgs",
    "command_digest",
    "command_topic",
    "generate_private_key",
    "load_private_key",
    "load_public_key",
    "public_key_text",
    "sign_command",
    "signed_bytes",
    "verify_command",
    "write_private_key",
]

COMMAND_SCHEMA_VERSION = 1
"""Version of the command envelope this release writes and reads."""

CommandName = Literal[
    "set_config", "start", "stop", "restart", "reprocess", "ping", "upload", "pin", "unpin"
]
COMMANDS: tuple[str, ...] = (
    "set_config",
    "start",
    "stop",
    "restart",
    "reprocess",
    "ping",
    "upload",
    "pin",
    "unpin",
)
"""Every command a station understands (issue 17)."""


class CommandRefusedError(ValueError):
    """A command the station refuses; ``reason`` is one line, sent back in the
    ``command_result`` (state ``refused``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArgs(_Args):
    """``ping``: no arguments."""


class SetConfigArgs(_Args):
    """``set_config``: a whole station file (TOML text) and its sha256 (hex of the UTF-8 text,
    checked by the station before anything else)."""

    config: str = Field(min_length=1, max_length=1_000_000, description="Station file, TOML.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of ``config`` (UTF-8).")


class JobArgs(_Args):
    """``start`` / ``stop`` / ``restart``: a job name as ``fieldstation status`` lists it
    (``recorder:mic``, ``processor:birds``, ``outbox``, ...)."""

    job: str = Field(min_length=1, max_length=200)


class ReprocessArgs(_Args):
    """``reprocess``: run processor ``model`` again on recordings since ``since`` (an age such
    as ``2d``, as ``fieldstation reprocess --since`` takes; None: every stored recording)."""

    model: str = Field(min_length=1, max_length=200)
    since: str | None = Field(default=None, max_length=50)


class UploadArgs(_Args):
    """``upload``: one recording (by station row id) or the station's log bundle."""

    recording_id: int | None = Field(default=None, ge=1)
    log_bundle: bool = False


class PinArgs(_Args):
    """``pin`` / ``unpin``: a recording by station row id (retention never deletes a pinned one)."""

    recording_id: int = Field(ge=1)


ARGS_MODELS: dict[str, type[_Args]] = {
    "set_config": SetConfigArgs,
    "start": JobArgs,
    "stop": JobArgs,
    "restart": JobArgs,
    "reprocess": ReprocessArgs,
    "ping": NoArgs,
    "upload": UploadArgs,
    "pin": PinArgs,
    "unpin": PinArgs,
}
"""Command -> its arguments' model."""


class Command(BaseModel):
    """One signed command (see the module docstring for the wire form). ``args`` is the
    plain dict as signed; :meth:`parsed_args` validates it against the command's model."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: int = Field(default=COMMAND_SCHEMA_VERSION, alias="schema", ge=1)
    id: str = Field(min_length=1, max_length=200)
    station: str = Field(min_length=1, max_length=200)
    command: CommandName
    args: dict[str, Any] = Field(default_factory=dict)
    issued_at: AwareDatetime
    expires_at: AwareDatetime
    key_id: str = Field(min_length=1, max_length=100)
    signature: str = Field(default="", max_length=200)

    def parsed_args(self) -> _Args:
        """The arguments as their command's model; raises :class:`CommandRefusedError`."""
        try:
            return ARGS_MODELS[self.command].model_validate(self.args)
        except ValidationError as error:
            raise CommandRefusedError(f"{self.command} args: {_first_error(error)}") from error

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict (times as ISO 8601 with offset)."""
        data = self.model_dump(mode="json", by_alias=True)
        data["issued_at"] = self.issued_at.isoformat()
        data["expires_at"] = self.expires_at.isoformat()
        return data

    def to_json(self) -> bytes:
        """The command as compact JSON (UTF-8)."""
        return json.dumps(self.wire(), separators=(",", ":"), ensure_ascii=False).encode()


def _first_error(error: ValidationError) -> str:
    item = error.errors()[0]
    location = ".".join(str(part) for part in item["loc"]) or "(root)"
    return f"{location}: {item['msg']}"


def signed_bytes(data: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: ``data`` without ``signature``, as canonical JSON (keys
    sorted, separators ``,`` and ``:``, non-ASCII kept, UTF-8)."""
    unsigned = {key: value for key, value in data.items() if key != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def command_digest(data: Mapping[str, Any]) -> str:
    """sha256 (hex) of a command exactly as received: :func:`signed_bytes` of ``data``, a dot,
    and its ``signature``. A station refusing a command it could not verify sends this digest
    (``details.digest``), so the hub applies the refusal only to the command it really sent
    (a forged copy carrying a genuine id has another digest)."""
    import hashlib

    signature = data.get("signature")
    tail = signature.encode() if isinstance(signature, str) else b""
    return hashlib.sha256(signed_bytes(data) + b"." + tail).hexdigest()


def command_topic(prefix: str, station: str) -> str:
    """``{prefix}/{station}/cmd``: where the hub publishes a station's commands (only the hub's
    identity may publish there: ``fieldstation hub broker-config`` writes that ACL)."""
    return f"{prefix}/{station}/cmd"


def sign_command(
    key: Ed25519PrivateKey,
    *,
    key_id: str,
    station: str,
    command: str,
    args: Mapping[str, Any],
    issued_at: datetime,
    ttl: float,
    command_id: str | None = None,
) -> Command:
    """A new command for ``station``, valid ``ttl`` seconds from ``issued_at`` (aware, UTC),
    signed with ``key``. Raises :class:`CommandRefusedError` for an unknown command or
    arguments that fail its model (the hub checks before it queues)."""
    if command not in ARGS_MODELS:
        raise CommandRefusedError(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
    unsigned = Command(
        id=command_id or uuid.uuid4().hex,
        station=station,
        command=command,  # type: ignore[arg-type]
        args=dict(args),
        issued_at=issued_at,
        expires_at=issued_at + timedelta(seconds=ttl),
        key_id=key_id,
    )
    unsigned.parsed_args()
    signature = key.sign(signed_bytes(unsigned.wire()))
    return unsigned.model_copy(update={"signature": base64.b64encode(signature).decode()})


def verify_command(
    raw: bytes | str,
    *,
    public_keys: Mapping[str, Ed25519PublicKey],
    station_id: str,
    now: datetime,
    skew: float = 300.0,
) -> Command:
    """Parse and check one command; returns it, or raises :class:`CommandRefusedError` with
    the reason: not JSON, a field that fails the envelope, another station's id, an unknown
    ``key_id``, a bad signature, ``now`` past ``expires_at``, ``issued_at`` more than ``skew``
    seconds ahead of ``now``, or arguments that fail the command's model."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CommandRefusedError(f"not JSON: {error}") from error
    if not isinstance(data, dict):
        raise CommandRefusedError(f"not a JSON object but {type(data).__name__}")
    if data.get("schema") != COMMAND_SCHEMA_VERSION:
        raise CommandRefusedError(
            f"unknown command schema {data.get('schema')!r} (this release knows "
            f"{COMMAND_SCHEMA_VERSION})"
        )
    try:
        command = Command.model_validate(data)
    except ValidationError as error:
        raise CommandRefusedError(_first_error(error)) from error
    if command.station != station_id:
        raise CommandRefusedError(f"addressed to station {command.station!r}, not {station_id!r}")
    from cryptography.exceptions import InvalidSignature

    key = public_keys.get(command.key_id)
    if key is None:
        raise CommandRefusedError(f"unknown key_id {command.key_id!r}: not signed by the hub")
    try:
        signature = base64.b64decode(command.signature, validate=True)
        key.verify(signature, signed_bytes(data))
    except (InvalidSignature, ValueError) as error:
        raise CommandRefusedError("bad signature: not signed by the hub's key") from error
    if now >= command.expires_at:
        raise CommandRefusedError(f"expired at {command.expires_at.isoformat()}")
    if (command.issued_at - now).total_seconds() > skew:
        raise CommandRefusedError(
            f"issued at {command.issued_at.isoformat()}, more than {skew:g} s ahead of the "
            "station's clock"
        )
    command.parsed_args()
    return command


def generate_private_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key (the hub's command signing key)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def write_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600 (created so; an existing file is
    refused with :class:`FileExistsError`)."""
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb", opener=lambda p, flags: os.open(p, flags, 0o600)) as f:
        f.write(pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path``; raises ``ValueError`` naming the path
    when it holds another kind of key or no key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public half as one line, ``ed25519:<base64 of the 32 raw bytes>`` (what a station
    file's ``[commands] hub_keys`` holds)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + base64.b64encode(raw).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    """Parse ``ed25519:<base64>`` (:func:`public_key_text`) or a PEM public key; raises
    ``ValueError`` saying which form was expected."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = text.strip()
    if text.startswith("ed25519:"):
        try:
            raw = base64.b64decode(text.removeprefix("ed25519:"), validate=True)
            return Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as error:
            raise ValueError(
                "not an Ed25519 public key: expected 'ed25519:' and the base64 of 32 bytes"
            ) from error
    if text.startswith("-----BEGIN PUBLIC KEY-----"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("a PEM public key, but not Ed25519")
        return key
    raise ValueError("expected 'ed25519:<base64>' or a PEM public key")
