"""Apprise messenger: each message becomes one notification to one or more Apprise URLs
(ntfy, e-mail, Slack, Telegram, Pushover, Matrix, JSON/webhooks, ...).

An ``alert`` is sent with its readable title and text, typed by its severity (info, warning,
failure) and with its image attached (a motion thumbnail; targets that take no attachments
ignore it); an ``event`` as "<event> at <station>" and its message; any other kind as its
kind and its body in JSON. Apprise says only whether every URL took the notification: True
is ``sent``; False is ``retry`` with what Apprise logged (the outbox's backoff and dead
letters apply; it cannot tell a permanent refusal from an outage, so nothing is rejected).
One notification goes to every URL, so a message a second URL refused is sent again to the
first on retry: at-least-once, as everywhere in the outbox.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from fieldstation.config.outputs import OutputConfig
from fieldstation.config.plugins import Plugin
from fieldstation.config.secrets import SecretError, SecretRef
from fieldstation.outbox.messenger import OutgoingMessage, Result

__all__ = ["AppriseMessenger", "AppriseOutputConfig", "notification_of", "plugin"]

log = logging.getLogger(__name__)

BODY_CHARS = 4000
"""Longest body text sent for a non-alert message (its JSON is cut there)."""


AppriseKind = Literal[
    "alert", "event", "heartbeat", "summary", "detection", "recording", "readings"
]
"""Message kinds an apprise output may take (the outputs' kinds plus ``alert``)."""


class AppriseOutputConfig(OutputConfig):
    """Send messages as notifications through Apprise URLs."""

    needs_network: ClassVar[bool] = True
    """Waits while the network monitor says the network is down."""

    kinds: list[AppriseKind] | None = Field(  # type: ignore[assignment]
        default=["alert"],
        description="Message kinds sent to this output (default: alerts only; e.g. "
        "['alert', 'event']); null: all.",
    )
    urls: list[str] = Field(
        default_factory=list,
        description="Apprise URLs without secrets, e.g. 'ntfy://ntfy.sh/my-topic', "
        "'json://localhost:8080/hook'.",
    )
    secret_urls: list[SecretRef] = Field(
        default_factory=list,
        description="Apprise URLs holding credentials: 'env:NAME' or 'file:PATH' (one URL).",
    )
    timeout: float = Field(
        default=30.0, gt=0, le=600, description="Seconds each target may take (Apprise cto/rto)."
    )

    @model_validator(mode="after")
    def _some_url(self) -> AppriseOutputConfig:
        if not self.urls and not self.secret_urls:
            raise ValueError("an apprise output needs at least one of 'urls' or 'secret_urls'")
        return self


_TYPES = {"info": "info", "warning": "warning", "error": "failure"}


def notification_of(message: OutgoingMessage, home: Path | None) -> dict[str, Any]:
    """``{"title", "body", "notify_type", "attach"}`` for one outbox message (see the module
    docstring). ``attach``: absolute path of an existing image, or None."""
    envelope = json.loads(message.payload)
    body = envelope.get("body", {})
    station = envelope.get("station", "?")
    if message.kind == "alert":
        attach = None
        if body.get("attachment") and home is not None:
            path = home / body["attachment"]
            attach = str(path) if path.is_file() else None
        return {
            "title": body.get("title", "alert"),
            "body": body.get("message", ""),
            "notify_type": _TYPES.get(body.get("severity", "info"), "info"),
            "attach": attach,
        }
    if message.kind == "event":
        return {
            "title": f"{str(body.get('event', 'event')).replace('_', ' ')} at {station}",
            "body": body.get("message", ""),
            "notify_type": _TYPES.get(body.get("severity", "info"), "info"),
            "attach": None,
        }
    text = json.dumps(body, indent=1, sort_keys=True, default=str)
    return {
        "title": f"{message.kind} from {station}",
        "body": text[:BODY_CHARS],
        "notify_type": "info",
        "attach": None,
    }


class AppriseMessenger:
    """Sends each message of a batch as one Apprise notification (module docstring)."""

    needs_network: ClassVar[bool] = True

    def __init__(self, config: AppriseOutputConfig, *, home: Path | None = None) -> None:
        self.config = config
        self.home = home

    def _apprise(self) -> Any:
        """A fresh Apprise object with every URL (secret ones read now: a rotated file takes
        effect without a restart). Raises ValueError for a URL Apprise does not understand."""
        import apprise

        asset = apprise.AppriseAsset(async_mode=False)
        client = apprise.Apprise(asset=asset)
        urls = list(self.config.urls) + [ref.reveal() for ref in self.config.secret_urls]
        timeout = int(self.config.timeout)
        for number, url in enumerate(urls):
            joined = "&" if "?" in url else "?"
            if not client.add(f"{url}{joined}cto={timeout}&rto={timeout}"):
                shown = url if number < len(self.config.urls) else "a secret_urls entry"
                raise ValueError(
                    f"output {self.config.name!r}: Apprise does not understand {shown}; see "
                    "https://github.com/caronc/apprise/wiki for the URL of each service"
                )
        return client

    def send(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        import apprise

        if not batch:
            return []
        try:
            client = self._apprise()
        except SecretError as error:
            return [Result.retry(f"secret URL unavailable: {error}")] * len(batch)
        results = []
        for message in batch:
            try:
                note = notification_of(message, self.home)
            except (ValueError, KeyError) as error:
                results.append(Result.reject(f"not a message Apprise can show: {error}"))
                continue
            attach = apprise.AppriseAttachment(note["attach"]) if note["attach"] else None
            with apprise.LogCapture(level=logging.WARNING) as captured:
                ok = client.notify(
                    title=note["title"],
                    body=note["body"],
                    notify_type=note["notify_type"],
                    attach=attach,
                )
            if ok:
                results.append(Result.sent())
            else:
                said = " ".join(captured.getvalue().split())[:500] or "no details"
                results.append(Result.retry(f"apprise: not delivered to every URL: {said}"))
        return results

    def close(self) -> None:
        """Nothing to release: a client is built per batch."""


def _create(
    config: AppriseOutputConfig, *, home: Any = None, **context: object
) -> AppriseMessenger:
    """Build the messenger (nothing is sent until the first batch)."""
    root = getattr(home, "root", home)
    return AppriseMessenger(config, home=Path(root) if root is not None else None)


plugin = Plugin(config_model=AppriseOutputConfig, factory=_create, description=__doc__ or "")
