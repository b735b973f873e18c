"""What a press does, through the running station's control API (:mod:`fieldstation.runtime.
control`): the button never touches the station's jobs or database itself, so it acts the
same whether it runs inside the station or beside it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fieldstation.config.field import Action, ButtonConfig
from fieldstation.field.press import Press

if TYPE_CHECKING:  # httpx (and the click and rich it imports) only where a press acts
    from fieldstation.runtime.client import ControlClient

__all__ = ["PressActions", "RECORDER_PREFIX"]

log = logging.getLogger(__name__)

RECORDER_PREFIX = "recorder:"
ACTIVE = frozenset({"running", "starting", "backoff"})
"""Recorder job states that count as "recording" for ``toggle_recording``."""


class PressActions:
    """Maps each press to its configured action and performs it through ``client()`` (a
    :class:`ControlClient` of the station; a new one per action, closed after it)."""

    def __init__(self, config: ButtonConfig, client: Callable[[], ControlClient]) -> None:
        self.config = config
        self.client = client

    def action_of(self, press: Press) -> Action:
        """The configured action of ``press``'s kind."""
        action: Action = getattr(self.config, press.kind)
        return action

    def __call__(self, press: Press) -> dict[str, Any]:
        """Perform ``press``'s action; returns what the station answered. Raises
        :class:`~fieldstation.runtime.client.StationNotRunningError` or
        :class:`~fieldstation.runtime.client.ControlError`."""
        action = self.action_of(press)
        log.info("button: %s press -> %s", press.kind, action)
        return self.perform(action, press)

    def perform(self, action: Action, press: Press | None = None) -> dict[str, Any]:
        """Perform ``action`` (``press`` adds its kind and length to a marked event)."""
        if action == "none":
            return {"action": "none"}
        with self.client() as client:
            if action == "mark_event":
                data: dict[str, Any] = {"source": "button"}
                if press is not None:
                    data.update(press=press.kind, held_s=round(press.held, 3))
                return client.mark_event("marked with the button", kind="marker", data=data)
            if action == "toggle_recording":
                return self._toggle(client)
            if action == "shutdown":
                return client.shutdown(reason="button", poweroff=bool(self.config.poweroff_command))
            if action == "wifi_setup":
                return client.wifi_setup()
        raise ValueError(f"unknown button action {action!r}")

    @staticmethod
    def _toggle(client: ControlClient) -> dict[str, Any]:
        """Stop every recorder when any is active, else start them all."""
        jobs = [j for j in client.status()["jobs"] if j["name"].startswith(RECORDER_PREFIX)]
        active = any(j["state"] in ACTIVE for j in jobs)
        change = client.stop if active else client.start
        done = [change(j["name"]) for j in jobs]
        return {"recording": not active, "jobs": [j["name"] for j in done]}
