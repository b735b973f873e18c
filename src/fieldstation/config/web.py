"""Config of the station's own web page (``[web]``): where it listens and who may act.

Bound to loopback by default (a person on the station, or through an SSH tunnel). On any other
address the page requires a login: an argon2 password hash or a token, each given as a secret
reference (``env:NAME`` / ``file:PATH``, :mod:`fieldstation.config.secrets`); without one, the
station file is refused, naming ``web.host``. Decision record 0091.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, model_validator

from fieldstation.config.base import StrictModel
from fieldstation.config.secrets import SecretRef
from fieldstation.config.units import Seconds

__all__ = ["WebConfig", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address (``127.0.0.0/8``, ``::1``) or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(StrictModel):
    """The web page: status, recordings with spectrograms, detections, schedule."""

    enabled: bool = Field(
        default=False,
        description="Serve the web page as the station's 'web' job (opt-in: one port per "
        "station, decision record 0090).",
    )
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=255,
        description="Address to listen on; loopback by default. Any other address needs "
        "web.password_hash or web.token.",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="TCP port to listen on.")
    password_hash: SecretRef | None = Field(
        default=None,
        description="Operators' password as an argon2 hash (`fieldstation web-password` makes "
        "one), given as 'env:NAME' or 'file:PATH'.",
    )
    token: SecretRef | None = Field(
        default=None,
        description="A token operators may log in with instead of the password ('env:NAME' or "
        "'file:PATH'; at least 16 characters).",
    )
    operators_control_jobs: bool = Field(
        default=True,
        description="Logged-in operators may start and stop jobs from the page; false makes "
        "the page read-only for everyone.",
    )
    session_max_age: Seconds = Field(
        default=43200.0,
        gt=0,
        description="How long a login lasts, seconds (default 12 h).",
    )
    spectrogram_cache: int = Field(
        default=200_000_000,
        ge=0,
        description="Bytes of rendered spectrogram PNGs kept under cache/spectrograms/ (the "
        "least recently used are removed beyond it).",
    )

    @property
    def login_possible(self) -> bool:
        """Whether operators can log in at all (a password hash or a token is configured)."""
        return self.password_hash is not None or self.token is not None

    @model_validator(mode="after")
    def _remote_needs_login(self) -> WebConfig:
        if not is_loopback(self.host) and not self.login_possible:
            raise ValueError(
                f"web.host {self.host!r} is not a loopback address: the page would be open to "
                "the network; set web.password_hash or web.token (a secret reference), or "
                "keep web.host = '127.0.0.1' and use an SSH tunnel"
            )
        return self
