"""Config of the supervisor (restart policy, liveness) and of logging."""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, Field, field_validator

from fieldstation.config.base import BackoffSettings, StrictModel
from fieldstation.config.units import Bytes, Seconds

__all__ = ["LoggingConfig", "RuntimeConfig"]


class RuntimeConfig(BackoffSettings):
    """How the supervisor restarts jobs (``backoff_initial``/``backoff_max``: the delays of
    consecutive restarts, :class:`~fieldstation.config.base.BackoffSettings`) and judges them
    alive."""

    max_restarts: int = Field(
        default=5, ge=1, description="More restarts than this within restart_window: job failed."
    )
    restart_window: Seconds = Field(default=600.0, gt=0, description="Window of the limit.")
    failed_retry: Seconds = Field(
        default=3600.0,
        ge=0,
        description="A failed job is started again after this long, with a fresh restart "
        "budget (a USB microphone plugged back in, a full disk freed); 0: never, it then "
        "waits for `fieldstation start JOB`.",
    )
    liveness_grace: Seconds = Field(
        default=30.0, gt=0, description="Recorder liveness: a chunk due within 2 x chunk + this."
    )
    status_interval: Seconds = Field(default=5.0, gt=0, description="Rewrite run/status.json.")
    stop_timeout: Seconds = Field(default=10.0, gt=0, description="SIGTERM to SIGKILL delay.")
    outbox_poll: Seconds = Field(
        default=5.0,
        gt=0,
        description="How often each output's delivery worker looks for new messages when idle "
        "(each look is a database query per output: shorter means faster delivery and more CPU).",
    )


class LoggingConfig(StrictModel):
    """Console and rotating log files in logs/."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Lowest level logged, on the console and in the files."
    )
    max_bytes: Bytes = Field(
        default=ByteSize(10_000_000),
        description="Rotate a log file at this size (more than 0; files always rotate by size).",
    )
    max_age: Seconds = Field(
        default=86400.0,
        gt=0,
        description="Rotate a log file when its first record is this old (counted across "
        "restarts).",
    )
    backups: int = Field(default=10, ge=0, description="Rotated files kept per log (gzip).")

    @field_validator("max_bytes")
    @classmethod
    def _positive_size(cls, value: ByteSize) -> ByteSize:
        if value <= 0:
            raise ValueError(
                "max_bytes must be more than 0 bytes (e.g. '10MB'): log files always rotate "
                "by size as well as by age"
            )
        return value
