"""HTTP messenger (httpx): JSON batches with an Idempotency-Key."""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from fieldstation.config.outputs import OutputConfig
from fieldstation.config.plugins import Plugin
from fieldstation.config.secrets import SecretError, SecretRef
from fieldstation.config.units import Seconds
from fieldstation.outbox.messenger import OutgoingMessage, Result, certificate_problem

__all__ = [
    "CommandPollError",
    "HttpMessenger",
    "HttpOutputConfig",
    "idempotency_key",
    "plugin",
    "poll_commands",
    "retry_after_seconds",
]

log = logging.getLogger(__name__)

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
    commands_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The hub's command endpoint, polled with GET ?station=ID and this output's "
        "token every commands.poll_interval when [commands] is enabled (docs/commands.md).",
    )
    verify: bool = Field(default=True, description="Verify the server's TLS certificate.")
    ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) the endpoint's certificate must chain to, e.g. a private "
        "CA; default: the system's CA store. Needs verify = true.",
    )

    @model_validator(mode="after")
    def _ca_file_needs_verify(self) -> HttpOutputConfig:
        if self.ca_file is not None and not self.verify:
            raise ValueError(
                "ca_file is set but verify = false turns certificate checks off; remove "
                "verify = false to trust the CA in ca_file"
            )
        return self


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


MAX_REDIRECTS = 5
"""307/308 redirects followed per attempt before giving up (retry)."""
BODY_KEEPING_REDIRECTS = frozenset({307, 308})
"""Redirects that keep the method and body of a POST (RFC 9110 §15.4.8, §15.4.9)."""


class HttpMessenger:
    """POSTs each batch as one JSON request with an ``Idempotency-Key`` header.

    2xx: every message sent. 307/308: the POST is repeated, body and headers included, at the
    ``Location`` (up to :data:`MAX_REDIRECTS`; the bearer token goes only to the same origin,
    as httpx's own redirect handling decides). 301/302/303: ``retry`` with a reason saying
    where the server points: clients turn such a redirected POST into a GET without the body
    (RFC 9110 §15.4.2-4), so following it would report a batch delivered that never was; it is
    a misconfigured ``url``, fixed by pointing it at the new location. Timeout, connection
    error, 5xx, 408, 425, 429 and any other non-4xx status: ``retry`` (with the server's
    ``Retry-After``, seconds or an HTTP-date, when given); a TLS certificate the station does
    not trust is a ``retry`` whose reason starts "certificate not trusted" and names ``ca_file``
    (the CA bundle, PEM, that ``https`` endpoints signed by a private CA need). A 4xx other
    than 408/425/429:
    ``reject`` of the whole batch with the status and the start of the server's answer as the
    reason. ``clock`` (default: the system clock) dates a ``Retry-After`` given as an HTTP-date
    when the response has no ``Date`` header.
    """

    needs_network: ClassVar[bool] = True

    def __init__(self, config: HttpOutputConfig, *, station_id: str, clock: Any = None) -> None:
        import httpx

        self.config = config
        self.station_id = station_id
        self.clock = clock
        self._httpx = httpx
        # redirects are followed here, not by httpx: it would turn a 301/302/303 POST into a
        # GET and a 2xx to that GET would mark a batch sent that the server never received
        self._client = httpx.Client(
            timeout=config.timeout, verify=_verify(config), follow_redirects=False
        )

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        if not batch:
            return []
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key(batch),
        }
        if self.config.token is not None:
            try:  # read at every send: a rotated token file takes effect without a restart
                token = self.config.token.reveal()
            except SecretError as error:
                log.error(
                    "output %r: token unavailable, the batch stays pending: %s",
                    self.config.name,
                    error,
                )
                return [Result.retry(f"token unavailable: {error}")] * len(batch)
            headers["Authorization"] = f"Bearer {token}"
        httpx = self._httpx
        try:
            response = self._client.post(
                self.config.url, content=batch_body(self.station_id, batch), headers=headers
            )
            hops = 0
            while response.status_code in BODY_KEEPING_REDIRECTS and response.next_request:
                if hops == MAX_REDIRECTS:
                    return [
                        Result.retry(
                            f"HTTP {response.status_code}: more than {MAX_REDIRECTS} redirects "
                            f"from {self.config.url} (last to {response.headers.get('Location')})"
                        )
                    ] * len(batch)
                hops += 1
                response.close()
                response = self._client.send(response.next_request)
        except httpx.TimeoutException as error:
            return [Result.retry(f"timeout after {self.config.timeout:g} s: {error!r}")] * len(
                batch
            )
        except httpx.TransportError as error:
            certificate = certificate_problem(
                error, server=self.config.url, output=self.config.name, ca_file=self.config.ca_file
            )
            if certificate is not None:
                return [Result.retry(certificate)] * len(batch)
            return [Result.retry(f"connection error: {error!r}")] * len(batch)
        return [self._result(response)] * len(batch)

    def _result(self, response: Any) -> Result:
        status = response.status_code
        if 200 <= status < 300:
            return Result.sent()
        if 300 <= status < 400:
            location = response.headers.get("Location")
            if location is None:
                return Result.retry(f"HTTP {status} without a Location from {self.config.url}")
            return Result.retry(
                f"HTTP {status} redirect to {location}: a POST redirected by {status} would "
                "lose its body (only 307/308 keep it), so nothing is sent there; set the "
                "output's url to the new location (or make the server answer 307/308)"
            )
        reason = f"HTTP {status}: {response.text[:500].strip()}"
        if 400 <= status < 500 and status not in RETRY_STATUSES:
            return Result.reject(reason)
        return Result.retry(reason, self._retry_after(response))

    def _retry_after(self, response: Any) -> float | None:
        now = _http_date(response.headers.get("Date"))
        if now is None:
            now = self.clock.now() if self.clock is not None else datetime.now(UTC)
        return retry_after_seconds(response.headers.get("Retry-After"), now)

    def close(self) -> None:
        self._client.close()


def _verify(config: HttpOutputConfig) -> bool | ssl.SSLContext:
    """httpx's ``verify``: False, True (the system's CA store) or a context trusting the CA
    bundle in ``ca_file``. Raises ValueError naming the output when that file cannot be read
    or holds no certificate (the output is then unavailable, retried with backoff)."""
    if not config.verify or config.ca_file is None:
        return config.verify
    try:
        return ssl.create_default_context(cafile=str(config.ca_file))
    except (OSError, ssl.SSLError) as error:
        raise ValueError(
            f"output {config.name!r}: ca_file {config.ca_file} is not a readable PEM CA "
            f"bundle: {error}"
        ) from error


def _http_date(value: str | None) -> datetime | None:
    """An HTTP-date (RFC 9110 §5.6.7) as aware UTC, or None when absent or unparseable."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3): delay-seconds, or an
    HTTP-date (``email.utils.parsedate_to_datetime``) counted from ``now`` (aware); never
    negative; None when absent or unparseable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    when = _http_date(value)
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())


def _create(
    config: HttpOutputConfig, *, station_id: str, clock: Any = None, **context: object
) -> HttpMessenger:
    """Build the messenger (an httpx client; nothing is sent until the first batch)."""
    return HttpMessenger(config, station_id=station_id, clock=clock)


plugin = Plugin(config_model=HttpOutputConfig, factory=_create, description=__doc__ or "")


class CommandPollError(RuntimeError):
    """The hub's command endpoint did not give a command list (the reason says why)."""


def poll_commands(config: HttpOutputConfig, *, station_id: str) -> list[Any]:
    """The commands the hub holds for ``station_id``: ``GET {commands_url}?station=ID`` with
    the output's bearer token, TLS settings and timeout; the answer must be ``{"commands":
    [command wire dicts]}``. Raises :class:`CommandPollError` (not configured, unreachable, a
    status other than 200, a body of another shape) or the token's ``SecretError``."""
    import httpx

    if config.commands_url is None:
        raise CommandPollError(f"output {config.name!r} has no commands_url")
    headers = {"Accept": "application/json"}
    if config.token is not None:
        headers["Authorization"] = f"Bearer {config.token.reveal()}"
    try:
        response = httpx.get(
            config.commands_url,
            params={"station": station_id},
            headers=headers,
            timeout=config.timeout,
            verify=_verify(config),
        )
    except httpx.HTTPError as error:
        raise CommandPollError(f"{config.commands_url}: {error}") from error
    if response.status_code != 200:
        raise CommandPollError(f"{config.commands_url}: HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError as error:
        raise CommandPollError(f"{config.commands_url}: not JSON") from error
    commands = data.get("commands") if isinstance(data, dict) else None
    if not isinstance(commands, list):
        raise CommandPollError(f"{config.commands_url}: no 'commands' list in the answer")
    return commands
