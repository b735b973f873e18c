"""Config of the fleet command channel on the station (``[commands]``).

The hub signs each command with its Ed25519 key; the station holds the public half(s) here, by
key id (public keys, not secrets: they may be committed with the station file). Commands reach
the station through its MQTT outputs (subscribed to ``{prefix}/{station}/cmd``) and, for HTTP
outputs with ``commands_url``, by polling that URL (docs/commands.md, decision record 0140).
"""

from __future__ import annotations

from base64 import b64decode

from pydantic import Field, field_validator, model_validator

from fieldstation.config.base import StrictModel
from fieldstation.config.units import Seconds

__all__ = ["CommandsConfig"]


class CommandsConfig(StrictModel):
    """Fleet commands: whether they are taken, whose signature counts, how often to poll."""

    enabled: bool = Field(
        default=False,
        description="Take fleet commands from the hub (needs hub_keys). Off: the station "
        "neither subscribes to its command topic nor polls.",
    )
    hub_keys: dict[str, str] = Field(
        default_factory=dict,
        description="The hub's public signing keys by key id, each 'ed25519:<base64>' as "
        "`fieldstation hub keygen` prints it (public, not secret).",
    )
    max_skew: Seconds = Field(
        default=300.0,
        ge=0,
        description="How far a command's issued_at may be ahead of the station's clock, "
        "seconds; further ahead it is refused.",
    )
    session_expiry: Seconds = Field(
        default=7 * 86400.0,
        gt=0,
        le=4294967295,
        description="How long the broker keeps the station's MQTT session (its command "
        "subscription and the commands queued for it) while the station is away, seconds.",
    )
    poll_interval: Seconds = Field(
        default=60.0,
        gt=0,
        description="How often HTTP outputs with commands_url ask the hub for commands.",
    )

    keep_configs: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Station files received by set_config kept in <home>/configs/ (newest).",
    )
    rollback_after: Seconds = Field(
        default=120.0,
        gt=0,
        description="Grace period, seconds: a file received by set_config that is not healthy "
        "this long after it was applied is rolled back (docs/commands.md).",
    )

    @field_validator("hub_keys")
    @classmethod
    def _keys_parse(cls, keys: dict[str, str]) -> dict[str, str]:
        for key_id, text in keys.items():
            raw = text.strip().removeprefix("ed25519:")
            try:
                ok = (
                    text.strip().startswith("ed25519:") and len(b64decode(raw, validate=True)) == 32
                )
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(
                    f"hub_keys.{key_id}: not an Ed25519 public key: expected 'ed25519:' and the "
                    "base64 of 32 bytes (the line `fieldstation hub keygen` prints)"
                )
        return keys

    @model_validator(mode="after")
    def _enabled_needs_keys(self) -> CommandsConfig:
        if self.enabled and not self.hub_keys:
            raise ValueError(
                "commands.enabled = true needs commands.hub_keys (the line "
                "`fieldstation hub keygen` prints), or every command would be refused"
            )
        return self
