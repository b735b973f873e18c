"""Message schemas shared by station and hub: the envelope, one versioned body model per kind,
the presence (status) payload, and :func:`parse_message`.

The wire format is described in ``docs/messages.md``; this package is its executable form. It
imports nothing of fieldstation above ``config`` (it sits under every layer).

Usage::

    envelope = parse_message(raw_bytes)      # raises MessageError (a ValueError) with a reason
    envelope.kind, envelope.station, envelope.body  # body: a model of BODY_MODELS[kind]
    data = build_envelope(kind="event", station="hedge-07", body={...}, message_id=..., ...)
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
)

from fieldstation.messages.bodies import (
    AlertBody,
    Body,
    CommandResultBody,
    DetectionBody,
    DetectionItem,
    EventBody,
    HeartbeatBody,
    HeartbeatMetrics,
    ReadingsBody,
    RecordingBody,
    SummaryBody,
    SummaryLabel,
    SummaryReading,
)
from fieldstation.messages.wire import to_wire

__all__ = [
    "BODY_MODELS",
    "AlertBody",
    "KINDS",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "STATUS_VALUES",
    "Body",
    "CommandResultBody",
    "DetectionBody",
    "DetectionItem",
    "Envelope",
    "EventBody",
    "HeartbeatBody",
    "HeartbeatMetrics",
    "MalformedMessageError",
    "MessageError",
    "ReadingsBody",
    "RecordingBody",
    "SummaryBody",
    "SummaryLabel",
    "SummaryReading",
    "UnknownKindError",
    "UnknownSchemaError",
    "build_envelope",
    "parse_message",
    "parse_status",
    "to_wire",
]

SCHEMA_VERSION = 1
"""The envelope version stations write (``store.outbox.SCHEMA_VERSION`` must equal it)."""

BODY_MODELS: dict[int, dict[str, type[Body]]] = {
    1: {
        "recording": RecordingBody,
        "detection": DetectionBody,
        "heartbeat": HeartbeatBody,
        "summary": SummaryBody,
        "event": EventBody,
        "readings": ReadingsBody,
        "alert": AlertBody,
        "command_result": CommandResultBody,
    }
}
"""Schema version -> kind -> body model. A new version adds a new inner dict."""

SCHEMA_VERSIONS = frozenset(BODY_MODELS)
"""Envelope versions this release understands."""

KINDS = frozenset(BODY_MODELS[SCHEMA_VERSION])
"""Message kinds of the current schema (the MQTT ``status`` topic is not a message kind)."""

STATUS_VALUES = ("online", "offline")
"""Payloads of ``{prefix}/{station}/status`` (retained; ``offline`` is also the last will)."""


class MessageError(ValueError):
    """A message this release cannot accept; ``reason`` says why (stored with dead letters)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownSchemaError(MessageError):
    """The envelope's ``schema`` is a version this release does not know."""


class UnknownKindError(MessageError):
    """The envelope's ``kind`` is not a kind of its schema version."""


class MalformedMessageError(MessageError):
    """Not JSON, not an object, or an envelope or body that fails its model."""


class Envelope(BaseModel):
    """One message: ``schema`` (version), ``id`` (stable message id: de-duplicate on it),
    ``kind``, ``station`` (sender's ``station.id``), ``created_at`` (aware, UTC, when written)
    and ``body`` (the model of ``BODY_MODELS[schema][kind]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_version: int = Field(alias="schema", ge=1)
    id: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=50)
    station: str = Field(min_length=1, max_length=200)
    created_at: AwareDatetime
    body: SerializeAsAny[Body]

    def to_json(self) -> bytes:
        """The envelope as compact JSON (UTF-8), field names as on the wire."""
        return self.model_dump_json(by_alias=True).encode()


class _RawEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_version: int = Field(alias="schema")
    id: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=50)
    station: str = Field(min_length=1, max_length=200)
    created_at: AwareDatetime
    body: dict[str, Any]


def _first_error(error: ValidationError, where: str) -> str:
    problems = []
    for item in error.errors()[:3]:
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        problems.append(f"{where}{location}: {item['msg']}")
    more = error.error_count() - len(problems)
    return "; ".join(problems) + (f" (+{more} more)" if more > 0 else "")


def parse_message(raw: bytes | str) -> Envelope:
    """Parse and validate one envelope (JSON, UTF-8) and its body.

    Raises :class:`MalformedMessageError` (not JSON, not an object, a missing or wrong field),
    :class:`UnknownSchemaError` (``schema`` not in :data:`SCHEMA_VERSIONS`) or
    :class:`UnknownKindError`; each has a ``reason`` naming the field at fault.
    """
    try:
        return _parse_message(raw)
    except RecursionError as error:  # a body nested thousands deep: refused, never a crash
        raise MalformedMessageError("JSON nested too deep") from error


def _parse_message(raw: bytes | str) -> Envelope:
    fast = _parse_fast(raw)
    if fast is not None:
        return fast
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedMessageError(f"not JSON: {error}") from error
    if not isinstance(data, dict):
        raise MalformedMessageError(f"not a JSON object but {type(data).__name__}")
    version = data.get("schema")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MalformedMessageError(f"schema: must be an integer version, got {version!r}")
    if version not in SCHEMA_VERSIONS:
        known = ", ".join(str(v) for v in sorted(SCHEMA_VERSIONS))
        raise UnknownSchemaError(
            f"unknown schema version {version} (this release knows {known}): upgrade the hub "
            "before the stations"
        )
    try:
        envelope = _RawEnvelope.model_validate(data)
    except ValidationError as error:
        raise MalformedMessageError(_first_error(error, "")) from error
    models = BODY_MODELS[version]
    model = models.get(envelope.kind)
    if model is None:
        raise UnknownKindError(
            f"unknown kind {envelope.kind!r} in schema {version} (known: "
            f"{', '.join(sorted(models))})"
        )
    try:
        body = model.model_validate(envelope.body)
    except ValidationError as error:
        raise MalformedMessageError(
            f"{envelope.kind} body: " + _first_error(error, "body.")
        ) from error
    return Envelope(
        schema_version=version,
        id=envelope.id,
        kind=envelope.kind,
        station=envelope.station,
        created_at=envelope.created_at,
        body=body,
    )


_FAST: Any = None


def _fast_adapter() -> Any:
    """One validator of every envelope of :data:`SCHEMA_VERSION`, its body model chosen by
    ``kind``, that reads the raw JSON in one pass (pydantic's ``validate_json``)."""
    global _FAST
    if _FAST is None:
        from typing import Annotated, Union

        from pydantic import StrictInt, TypeAdapter, create_model

        variants = [
            create_model(
                f"_Fast{model.__name__}",
                __config__=ConfigDict(extra="forbid"),
                schema_version=(StrictInt, Field(alias="schema")),
                id=(str, Field(min_length=1, max_length=200)),
                kind=(Literal[kind], ...),  # type: ignore[valid-type,arg-type]
                station=(str, Field(min_length=1, max_length=200)),
                created_at=(AwareDatetime, ...),
                body=(model, ...),
            )
            for kind, model in BODY_MODELS[SCHEMA_VERSION].items()
        ]
        union: Any = Annotated[Union[tuple(variants)], Field(discriminator="kind")]  # noqa: UP007
        _FAST = TypeAdapter(union)
    return _FAST


def _parse_fast(raw: bytes | str) -> Envelope | None:
    """The envelope of a good message of the current schema, validated in one pass; None for
    anything else, which the step-by-step parse then refuses with its precise reason (the
    fast path accepts only what that parse accepts: the same models, lax rules alike)."""
    try:
        fast = _fast_adapter().validate_json(raw)
    except (ValidationError, ValueError):
        return None
    if fast.schema_version != SCHEMA_VERSION:
        return None
    return Envelope(
        schema_version=fast.schema_version,
        id=fast.id,
        kind=fast.kind,
        station=fast.station,
        created_at=fast.created_at,
        body=fast.body,
    )


def build_envelope(
    *,
    kind: str,
    station: str,
    body: Body | dict[str, Any],
    message_id: str,
    created_at: datetime,
) -> Envelope:
    """An envelope of the current schema, its body validated by the model of ``kind``.

    Raises :class:`UnknownKindError` or :class:`MalformedMessageError` (a body that fails)."""
    model = BODY_MODELS[SCHEMA_VERSION].get(kind)
    if model is None:
        raise UnknownKindError(f"unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    if not isinstance(body, model):
        try:
            body = model.model_validate(body if isinstance(body, dict) else body.model_dump())
        except ValidationError as error:
            raise MalformedMessageError(f"{kind} body: " + _first_error(error, "body.")) from error
    try:
        return Envelope(
            schema_version=SCHEMA_VERSION,
            id=message_id,
            kind=kind,
            station=station,
            created_at=created_at,
            body=body,
        )
    except ValidationError as error:
        raise MalformedMessageError(_first_error(error, "")) from error


def parse_status(raw: bytes | str) -> Literal["online", "offline"]:
    """The payload of a ``status`` topic: ``online`` or ``offline`` (plain text, retained).

    Raises :class:`MalformedMessageError` for anything else."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    value = text.strip()
    if value == "online":
        return "online"
    if value == "offline":
        return "offline"
    raise MalformedMessageError(f"status payload must be 'online' or 'offline', got {text[:50]!r}")
