"""Client of the control API (:mod:`.control`): httpx over the station's Unix socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["ControlClient", "ControlError", "StationNotRunningError"]


class StationNotRunningError(ConnectionError):
    """Nothing answers on the control socket: the station is not running."""


class ControlError(RuntimeError):
    """The station answered with an error (e.g. an unknown job); ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class ControlClient:
    """Talks to a running station through ``socket`` (``home.control_socket``)."""

    def __init__(self, socket: Path, timeout: float = 40.0) -> None:
        self.socket = socket
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)),
            base_url="http://station",
            timeout=timeout,
        )

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        if not self.socket.exists():
            raise StationNotRunningError(
                f"station not running: no control socket {self.socket} "
                "(start it with `fieldstation run`)"
            )
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.TransportError as error:
            raise StationNotRunningError(
                f"station not answering on {self.socket}: {error} (is it running?)"
            ) from error
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text}
        if response.status_code >= 400:
            raise ControlError(response.status_code, str(body.get("error", body)))
        return body  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        """The station status (see ``Station.status``)."""
        return self._request("GET", "/status")

    def modules(self) -> dict[str, Any]:
        """``{"pid": PID, "modules": [name, ...]}``: what the supervisor's process imported."""
        return self._request("GET", "/modules")

    def start(self, job: str) -> dict[str, Any]:
        """Start ``job``; returns its snapshot. Raises :class:`ControlError` (404 unknown)."""
        return self._request("POST", f"/jobs/{quote(job, safe='')}/start")

    def stop(self, job: str) -> dict[str, Any]:
        """Stop ``job`` (it stays stopped until started)."""
        return self._request("POST", f"/jobs/{quote(job, safe='')}/stop")

    def restart(self, job: str) -> dict[str, Any]:
        """Stop and start ``job``."""
        return self._request("POST", f"/jobs/{quote(job, safe='')}/restart")

    def logs(self, job: str = "station", lines: int = 50) -> list[str]:
        """The last ``lines`` lines of ``job``'s log."""
        body = self._request("GET", "/logs", params={"job": job, "lines": lines})
        return list(body.get("lines", []))

    def mark_event(
        self, message: str, kind: str = "marker", data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store an event (``POST /events``); returns it (``id``, ``kind``, ``created_at``)."""
        body = {"message": message, "kind": kind, "data": data or {}}
        return self._request("POST", "/events", json=body)

    def shutdown(self, reason: str = "api", poweroff: bool = False) -> dict[str, Any]:
        """Stop the whole station (``POST /shutdown``); with ``poweroff`` it runs
        ``field.button.poweroff_command`` once stopped. Returns before the station stops."""
        return self._request("POST", "/shutdown", json={"reason": reason, "poweroff": poweroff})

    def wifi_setup(self) -> dict[str, Any]:
        """Start Wi-Fi provisioning (``POST /wifi/setup``); :class:`ControlError` 409 when it is
        not enabled."""
        return self._request("POST", "/wifi/setup", json={})
