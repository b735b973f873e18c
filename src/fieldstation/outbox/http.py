"""HTTP messenger (httpx): JSON batches with an Idempotency-Key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from fieldstation.config.outputs import OutputConfig
from fieldstation.config.plugins import Plugin
from fieldstation.config.secrets import SecretRef
from fieldstation.config.units import Seconds
from fieldstation.outbox.messenger import OutgoingMessage, Result

__all__ = ["HttpMessenger", "HttpOutputConfig", "idempotency_key", "plugin"]

RETRY_STATUSES = frozenset({408, 425, 429})
"""4xx statuses that mean "try again later" (RFC 9110 §15.5.9, RFC 8470, RFC 6585 §4)."""


class HttpOutputConfig(OutputConfig):
    """POST batches of messages as JSON to an endpoint."""

    needs_network: ClassVar[bool] = True
    """Waits while the network monitor says the network is down."""

    url: str = Field(pattern=r"^https?://", description="Endpoint URL.")
    token: SecretRef | None = Field(
        default=None, description="Bearer token: 'env:NAME' or 'file:PATH'."
    )
    timeout: Seconds = Field(default=30.0, gt=0, description="Request timeout.")
    verify: bool = Field(default=True, description="Verify the server's TLS certificate.")


def idempotency_key(batch: Sequence[OutgoingMessage]) -> str:
    """A key stable for the same batch content: SHA-256 of the message ids, hex (64 chars)."""
    digest = hashlib.sha256()
    for message in batch:
        digest.update(message.message_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def batch_body(station_id: str, batch: Sequence[OutgoingMessage]) -> bytes:
    """The request body: ``{"station": id, "messages": [envelope, ...]}`` (UTF-8 JSON).

    Envelopes are inserted verbatim (they are already JSON), so the server sees exactly the
    stored payloads.
    """
    head = '{"station":' + json.dumps(station_id) + ',"messages":['
    return (head + ",".join(m.payload for m in batch) + "]}").encode()


class HttpMessenger:
    """POSTs each batch as one JSON request with an ``Idempotency-Key`` header.

    2xx: every message sent. Timeout, connection error, 5xx, 408, 425, 429: ``retry`` (with
    the server's ``Retry-After`` seconds when given). Any other status (4xx): ``reject`` of the
    whole batch with the status and the start of the server's answer as the reason.
    """

    needs_network: ClassVar[bool] = True

    def __init__(self, config: HttpOutputConfig, *, station_id: str) -> None:
        import httpx

        self.config = config
        self.station_id = station_id
        self._httpx = httpx
        self._client = httpx.Client(timeout=config.timeout, verify=config.verify)

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        if not batch:
            return []
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key(batch),
        }
        if self.config.token is not None:
            headers["Authorization"] = f"Bearer {self.config.token.reveal()}"
        httpx = self._httpx
        try:
            response = self._client.post(
                self.config.url, content=batch_body(self.station_id, batch), headers=headers
            )
        except httpx.TimeoutException as error:
            return [Result.retry(f"timeout after {self.config.timeout:g} s: {error!r}")] * len(
                batch
            )
        except httpx.TransportError as error:
            return [Result.retry(f"connection error: {error!r}")] * len(batch)
        return [self._result(response)] * len(batch)

    def _result(self, response: Any) -> Result:
        status = response.status_code
        if 200 <= status < 300:
            return Result.sent()
        reason = f"HTTP {status}: {response.text[:500].strip()}"
        if status >= 500 or status in RETRY_STATUSES:
            return Result.retry(reason, _retry_after(response.headers.get("Retry-After")))
        return Result.reject(reason)

    def close(self) -> None:
        self._client.close()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (dates are ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _create(config: HttpOutputConfig, *, station_id: str, **context: object) -> HttpMessenger:
    """Build the messenger (an httpx client; nothing is sent until the first batch)."""
    return HttpMessenger(config, station_id=station_id)


plugin = Plugin(config_model=HttpOutputConfig, factory=_create, description=__doc__ or "")
