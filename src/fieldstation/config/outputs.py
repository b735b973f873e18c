"""Config of the outbox and the bases of messenger plugins (outputs)."""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, Field

from fieldstation.config.base import BackoffSettings, Name, StrictModel
from fieldstation.config.units import Bytes, Seconds

__all__ = ["MESSAGE_KINDS", "MessageKind", "OutboxConfig", "OutputConfig"]

MessageKind = Literal[
    "event", "alert", "heartbeat", "summary", "detection", "recording", "readings"
]
MESSAGE_KINDS: tuple[str, ...] = (
    "event",
    "alert",
    "heartbeat",
    "summary",
    "detection",
    "recording",
    "readings",
)


class OutputConfig(StrictModel):
    """Fields every output (messenger) has; the messenger plugin's config model subclasses this."""

    name: Name = Field(description="Unique output name; names the destination in the outbox.")
    kind: str = Field(
        description="Messenger plugin (entry point in group fieldstation.messengers)."
    )
    enabled: bool = Field(default=True, description="A disabled output receives no messages.")
    kinds: list[MessageKind] | None = Field(
        default=None, description="Message kinds sent to this output; omitted means all."
    )


class OutboxConfig(BackoffSettings):
    """The durable outbox: caps and delivery pacing (``backoff_initial``/``backoff_max``: the
    delays of a destination's consecutive failed attempts,
    :class:`~fieldstation.config.base.BackoffSettings`)."""

    max_bytes: Bytes = Field(
        default=ByteSize(100_000_000),
        description="Byte cap of pending messages over all destinations.",
    )
    when_full: Literal["drop_oldest", "block"] = Field(
        default="drop_oldest",
        description="drop_oldest: drop the oldest pending message of the lowest priority (never "
        "events); block: refuse new messages except events until space frees.",
    )
    max_age: Seconds = Field(
        default=2592000.0, gt=0, description="Pending messages older than this are dead-lettered."
    )
    batch_size: int = Field(default=100, ge=1, le=10000, description="Messages per delivery batch.")
