"""The messenger role: what the delivery loop needs from an output (MQTT, HTTP, file, ...).

A messenger is anything with ``send(batch) -> list[Result]`` and ``close()`` (a
:class:`Messenger` Protocol; no base class). It is built by its plugin's factory,
``plugin.factory(config, station_id=..., home=..., clock=..., batch_size=...)`` (a factory
takes ``**context`` and ignores what it does not use). Retrying, backoff, caps and
dead letters are the delivery loop's business, never the messenger's: a messenger makes one
attempt per message and says how it went.

A messenger may declare ``needs_network`` (a class attribute, True when absent): only outputs
that need the network wait while the network monitor says it is down; a local one (the file
messenger: ``needs_network = False``) keeps receiving everything. The output's config model
declares the same ``needs_network`` as a ``ClassVar``, so the loop knows before it builds (and
starts connecting) a messenger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "Messenger",
    "OutgoingMessage",
    "Result",
    "message_topic",
    "needs_network",
    "status_topic",
]

Outcome = Literal["sent", "retry", "reject"]


@dataclass(frozen=True)
class OutgoingMessage:
    """One message to deliver: ``payload`` is the JSON envelope text, sent exactly as stored."""

    delivery_id: int
    message_id: str
    kind: str
    priority: int
    payload: str
    created_at: datetime
    attempts: int = 0
    """Earlier attempts for this destination."""


@dataclass(frozen=True)
class Result:
    """How one message went: ``sent`` (acknowledged by the destination), ``retry`` (a
    transient failure, ``error`` says what; ``retry_after`` seconds when the destination said
    when) or ``reject`` (permanent: dead-lettered with ``error`` as the reason)."""

    outcome: Outcome
    error: str | None = None
    retry_after: float | None = None

    @classmethod
    def sent(cls) -> Result:
        """Acknowledged by the destination (PUBACK, HTTP 2xx, fsync)."""
        return _SENT

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None) -> Result:
        """A transient failure; the loop tries again after a backoff."""
        return cls("retry", error, retry_after)

    @classmethod
    def reject(cls, reason: str) -> Result:
        """A permanent refusal; the loop dead-letters the message with ``reason``."""
        return cls("reject", reason)


_SENT = Result("sent")


@runtime_checkable
class Messenger(Protocol):
    """Delivers batches of messages to one output (optionally declaring ``needs_network``)."""

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        """Try each message once; one :class:`Result` per message, in the batch's order.

        Must not raise for delivery failures (return ``Result.retry``); an exception is
        treated by the loop as ``retry`` for the whole batch.
        """
        ...

    def close(self) -> None:
        """Release connections and files; the messenger is not used again."""
        ...


def needs_network(messenger_or_config: object) -> bool:
    """Whether a messenger (or an output config model) declares it needs the network.

    Reads the ``needs_network`` attribute; True when it is absent (the safe default: an unknown
    output waits while the network is down rather than burning attempts).
    """
    return bool(getattr(messenger_or_config, "needs_network", True))


def message_topic(prefix: str, station_id: str, kind: str) -> str:
    """The one place topic names are built: ``{prefix}/{station}/{kind}``."""
    return f"{prefix}/{station_id}/{kind}"


def status_topic(prefix: str, station_id: str) -> str:
    """The retained presence topic ``{prefix}/{station}/status`` (``online``/``offline``)."""
    return message_topic(prefix, station_id, "status")
