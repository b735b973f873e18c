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
starts connecting) a messenger. A messenger may also have ``network_back()``: its delivery worker
calls it when the network gate opens again after being shut (MQTT reconnects at once).

A TLS certificate the station does not trust is worded the same way by every messenger
(:func:`certificate_problem`): "certificate not trusted", the server, and the ``ca_file`` option
that fixes it.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "Messenger",
    "OutgoingMessage",
    "Result",
    "certificate_problem",
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


_HOSTNAME_MISMATCH = 62
"""OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH (``ssl.SSLCertVerificationError.verify_code``)."""


def certificate_problem(
    error: BaseException | None, *, server: str, output: str, ca_file: Path | None
) -> str | None:
    """Words for a TLS certificate the station refused, found in ``error`` or the exceptions
    it was raised from (``__cause__``/``__context__``); None when there is none.

    ``server``: what was connected to (``host:port`` or the URL); ``output``: the output's
    name; ``ca_file``: its configured CA bundle (None: the system's CA store). A certificate
    no trusted CA signed says "certificate not trusted" and names ``ca_file``; one issued for
    another name says the certificate does not match the host name.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ssl.SSLCertVerificationError):
            detail = error.verify_message or str(error)
            if error.verify_code == _HOSTNAME_MISMATCH:
                return (
                    f"certificate does not match the host name: {server} presented a "
                    f"certificate for another name ({detail}); point output {output!r} at a "
                    "name the certificate is for"
                )
            trusted_by = (
                f"the CA bundle in ca_file ({ca_file})"
                if ca_file is not None
                else "the system's CA store (ca_file is not set)"
            )
            return (
                f"certificate not trusted: {server} presented a certificate that {trusted_by} "
                f"does not vouch for ({detail}); set ca_file on output {output!r} to the CA "
                "bundle (PEM) that signed it"
            )
        error = error.__cause__ or error.__context__
    return None
