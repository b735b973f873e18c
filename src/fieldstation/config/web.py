"""Config of the station's own web page (``[web]``): where it listens and who may act.

Bound to loopback by default (a person on the station, or through an SSH tunnel). On any other
address the page requires a login: an argon2 password hash or a token, each given as a secret
reference (``env:NAME`` / ``file:PATH``, :mod:`fieldstation.config.secrets`); without one, the
station file is refused, naming ``web.host``. Decision record 0091.

The page answers only requests whose ``Host`` header names it (:attr:`WebConfig.trusted_hosts`:
``localhost``, ``127.0.0.1``, ``[::1]``, ``web.host`` and ``web.allowed_hosts``), so a web
site that rebinds its DNS name to 127.0.0.1 (DNS rebinding) cannot read a loopback page from
a visitor's browser.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re

from pydantic import Field, field_validator, model_validator

from fieldstation.config.base import StrictModel
from fieldstation.config.secrets import SecretRef
from fieldstation.config.units import Seconds

__all__ = ["LOCAL_HOSTS", "WebConfig", "host_pattern", "is_loopback"]

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
"""Host header values the page always answers to (IPv6 addresses in brackets, as browsers
send them)."""
_NAME = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$")
_WILDCARD_BIND = ("0.0.0.0", "::")


def host_pattern(text: str) -> str:
    """One ``allowed_hosts`` entry as the ``Host`` check compares it: lower case, an IPv6
    address in brackets. ``*`` (any host), a name, ``*.`` + a name (its subdomains), an IPv4
    or IPv6 address; no port, no scheme. Raises ValueError saying which form is expected."""
    value = text.strip().lower()
    if value == "*":
        return value
    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        address = None
    if address is not None:
        return f"[{address}]" if address.version == 6 else str(address)
    if _NAME.match(value) is None:
        raise ValueError(
            f"{text!r} is not a host name or address: give it as the browser's address bar "
            "shows it without scheme or port ('hedge-07.local', '192.168.4.1', "
            "'*.example.org'), or '*' for any host"
        )
    return value


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
    allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Host names and addresses the page is reached by, besides localhost, "
        "127.0.0.1, [::1] and web.host ('hedge-07.local', '192.168.4.1', '*.example.org'; "
        "'*': any). A request whose Host header names another is refused (400): this "
        "stops DNS rebinding. Listening on every address (0.0.0.0, ::) with none given: "
        "any host.",
    )
    spectrogram_cache: int = Field(
        default=200_000_000,
        ge=0,
        description="Bytes of rendered spectrogram PNGs kept under cache/spectrograms/ (the "
        "least recently used are removed beyond it).",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return [host_pattern(host) for host in value]

    @property
    def trusted_hosts(self) -> list[str]:
        """Host header values the page answers to (for Starlette's TrustedHostMiddleware):
        :data:`LOCAL_HOSTS`, ``host`` (unless it is a listen-on-everything address) and
        ``allowed_hosts``; ``["*"]`` (no check) when listening on every address with no
        ``allowed_hosts``."""
        if self.host in _WILDCARD_BIND and not self.allowed_hosts:
            return ["*"]
        found = list(LOCAL_HOSTS)
        if self.host not in _WILDCARD_BIND:
            # a host that is no form a browser sends is left to allowed_hosts
            with contextlib.suppress(ValueError):
                found.append(host_pattern(self.host))
        return list(dict.fromkeys(found + self.allowed_hosts))

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
