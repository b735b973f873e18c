"""The hub's config (TOML), a strict pydantic model.

Example::

    home = "/var/lib/fieldstation-hub"
    database = "postgresql+psycopg://hub@db.example.org/fleet"   # default: SQLite in home

    [mqtt]                      # omit: no MQTT ingest (HTTP only)
    host = "broker.example.org"
    port = 1883
    prefix = "fieldstation"
    group = "fieldstation-hub"  # shared subscription group: N hub processes split the load
    client_id = "hub-1"         # unique per hub process, stable across its restarts
    tls = true                  # ca_file = "/etc/ssl/private-ca.pem" for a private CA

    [http]
    host = "127.0.0.1"          # loopback unless told otherwise
    port = 8780

    [uploads]                   # recordings stations upload (docs/upload.md)
    storage = "disk"            # or "s3" with [uploads.s3] bucket = "...", endpoint_url = "..."
    [commands]                  # fleet commands (docs/commands.md); defaults shown
    key_id = "hub"              # the name stations know the signing key by (hub_keys)
    ttl = "1d"                  # a command not accepted by then expires
    republish_after = "60s"     # a delivered command not yet accepted is sent again
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from fieldstation.config.base import StrictModel
from fieldstation.config.secrets import SecretRef
from fieldstation.config.units import Seconds
from fieldstation.hub.alerts import AlertsConfig
from fieldstation.hub.uploads import UploadsConfig

__all__ = [
    "DEFAULT_HOME",
    "HubConfig",
    "HubConfigError",
    "HttpIngestConfig",
    "HubCommandsConfig",
    "MqttIngestConfig",
    "load_hub_config",
]

DEFAULT_HOME = Path("~/.fieldstation-hub")


class HubConfigError(ValueError):
    """A hub config file that cannot be used; the message lists every problem (key: fix)."""


class MqttIngestConfig(StrictModel):
    """MQTT 5 ingest on a shared subscription ``$share/{group}/{prefix}/+/+``."""

    host: str = Field(default="127.0.0.1", description="Broker host.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port.")
    prefix: str = Field(
        default="fieldstation",
        pattern=r"^[^#+$][^#+]*$",
        description="Topic prefix the stations publish under.",
    )
    group: str = Field(
        default="fieldstation-hub",
        pattern=r"^[^/#+]+$",
        description="Shared subscription group (every hub process of a fleet).",
    )
    client_id: str | None = Field(
        default=None,
        description="MQTT client id: unique per hub process and the same across its restarts "
        "(the broker keeps its session and unacknowledged messages); default "
        "fieldstation-hub-<hostname>.",
    )
    tls: bool = Field(default=False, description="Connect with TLS (port 8883 usually).")
    ca_file: Path | None = Field(
        default=None,
        description="CA bundle (PEM) the broker's certificate must chain to; default: the "
        "system's CA store. Needs tls = true.",
    )
    username: str | None = None
    password: SecretRef | None = Field(default=None, description="'env:NAME' or 'file:PATH'.")
    keepalive: Seconds = Field(default=30.0, ge=5, description="MQTT keepalive.")
    session_expiry: Seconds = Field(
        default=86400.0,
        gt=0,
        description="How long the broker keeps this hub's session and queued messages while it "
        "is away.",
    )
    batch_size: int = Field(
        default=500, ge=1, le=10000, description="Messages committed in one transaction at most."
    )
    batch_wait: Seconds = Field(
        default=0.05, ge=0, le=5, description="Longest wait to fill a batch before committing."
    )

    @model_validator(mode="after")
    def _ca_file_needs_tls(self) -> MqttIngestConfig:
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is set but tls = false: add tls = true (or remove ca_file)")
        return self

    def effective_client_id(self) -> str:
        """``client_id`` or ``fieldstation-hub-<hostname>``."""
        return self.client_id or f"fieldstation-hub-{socket.gethostname()}"


class HttpIngestConfig(StrictModel):
    """HTTP ingest (``POST {path}``, what a station's ``http`` output sends)."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="Listen address (loopback by default).")
    port: int = Field(default=8780, ge=0, le=65535, description="Listen port (0: any free).")
    path: str = Field(default="/ingest", pattern=r"^/", description="Endpoint path.")
    dashboard: bool = Field(
        default=True, description="Serve the web dashboard (log-in required) on this listener."
    )


class HubCommandsConfig(StrictModel):
    """Fleet commands: the signing key and how queued commands are delivered."""

    key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs commands; default "
        "<home>/command-key.pem (made by 'fieldstation hub keygen').",
    )
    key_id: str = Field(
        default="hub",
        pattern=r"^[A-Za-z0-9_.-]{1,100}$",
        description="Name of the key in the stations' [commands] hub_keys.",
    )
    ttl: Seconds = Field(
        default=86400.0, gt=0, description="A command not accepted within this expires."
    )
    republish_after: Seconds = Field(
        default=60.0,
        gt=0,
        description="A delivered command the station has not accepted is published again after "
        "this (the station keeps ids, so a second copy is never applied twice).",
    )
    interval: Seconds = Field(
        default=1.0, gt=0, le=60, description="How often the publisher looks for commands."
    )

    def key_path(self, home: Path) -> Path:
        """``key_file`` or ``<home>/command-key.pem`` (home expanded)."""
        return self.key_file.expanduser() if self.key_file else home.expanduser() / KEY_FILE


KEY_FILE = "command-key.pem"
"""File name of the signing key in the hub home."""


class HubConfig(StrictModel):
    """A hub: its home folder, fleet database, MQTT ingest (optional) and HTTP ingest."""

    home: Path = Field(default=DEFAULT_HOME, description="Folder of the SQLite database.")
    database: str | None = Field(
        default=None,
        description="SQLAlchemy URL: postgresql+psycopg://user@host/db or sqlite:///path; "
        "default SQLite at <home>/hub.db.",
    )
    mqtt: MqttIngestConfig | None = None
    http: HttpIngestConfig = Field(default_factory=HttpIngestConfig)
    alerts: AlertsConfig = Field(
        default_factory=AlertsConfig, description="Fleet alerts: rules and Apprise targets."
    )
    uploads: UploadsConfig = Field(
        default_factory=UploadsConfig,
        description="Upload endpoint of recordings (resumable) and where files are stored.",
    )
    commands: HubCommandsConfig = Field(
        default_factory=HubCommandsConfig, description="Fleet commands: signing and delivery."
    )

    def database_url(self) -> str:
        """``database`` or ``sqlite:///<home>/hub.db`` (home expanded)."""
        if self.database:
            return self.database
        return f"sqlite:///{self.home.expanduser() / 'hub.db'}"


def load_hub_config(path: Path | None) -> HubConfig:
    """Read a hub TOML file (None: the defaults). Raises :class:`HubConfigError` naming each
    bad key and how to fix it."""
    if path is None:
        return HubConfig()
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise HubConfigError(f"{path}: cannot read the hub config: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise HubConfigError(f"{path}: not valid TOML: {error}") from error
    try:
        return HubConfig.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"]) or "(file)"
            message = item["msg"]
            if item["type"] == "extra_forbidden":
                message = "unknown key: remove it or fix its spelling"
            lines.append(f"  {key}: {message}")
        raise HubConfigError(f"{path}: invalid hub config:\n" + "\n".join(lines)) from error
