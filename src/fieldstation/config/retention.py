"""Config of retention rules (semantics live in :mod:`fieldstation.retention`)."""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, Field, model_validator

from fieldstation.config.base import StrictModel
from fieldstation.config.units import Bytes, Seconds

__all__ = ["RetentionConfig", "RetentionPolicy"]


class RetentionPolicy(StrictModel):
    """What to keep of one sensor's recordings once they are processed."""

    keep: Literal["all", "detections", "days"] = Field(
        default="all",
        description="all: keep everything (quota still applies); detections: keep recordings "
        "with detections, delete the rest once processed; days: delete after 'days'.",
    )
    labels: list[str] | None = Field(
        default=None,
        description="With keep='detections': only detections of these labels count "
        "(default: any label).",
    )
    min_score: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="With keep='detections': only detections scoring at least this count.",
    )
    days: float | None = Field(default=None, gt=0, description="With keep='days': age limit, days.")

    @model_validator(mode="after")
    def _days(self) -> RetentionPolicy:
        if self.keep == "days" and self.days is None:
            raise ValueError("keep='days' needs 'days'")
        if self.keep != "days" and self.days is not None:
            raise ValueError(f"'days' applies only to keep='days' (keep is {self.keep!r})")
        if self.keep != "detections" and (self.labels is not None or self.min_score > 0):
            raise ValueError(
                f"'labels' and 'min_score' apply only to keep='detections' (keep is {self.keep!r})"
            )
        return self


class RetentionConfig(StrictModel):
    """Disk management: per-sensor policies and quotas."""

    interval: Seconds = Field(
        default=600.0,
        gt=0,
        description="How often retention runs (it also runs early when free space drops "
        "below min_free).",
    )
    max_bytes: Bytes | None = Field(
        default=None,
        description="Quota for the recordings whose file is present (bytes as recorded); the "
        "oldest deletable recordings are deleted to keep it.",
    )
    min_free: Bytes = Field(
        default=ByteSize(1_000_000_000),
        description="Free space to keep on the disk of the station home; oldest deletable "
        "recordings are deleted to keep it.",
    )
    best_per_label: int = Field(
        default=0, ge=0, description="Never delete the N best-scored recordings of each label."
    )
    protect_unsent: bool = Field(
        default=True,
        description="Never delete a recording whose notice is not yet delivered to an output.",
    )
    readings_max_age: Seconds | None = Field(
        default=365 * 86400.0,
        gt=0,
        description="Values of slow sensors (the readings table) older than this are deleted "
        "(default one year, e.g. '90d').",
    )
    default: RetentionPolicy = Field(
        default_factory=RetentionPolicy,
        description="Policy of every sensor without its own entry in 'sensors'.",
    )
    sensors: dict[str, RetentionPolicy] = Field(
        default_factory=dict, description="Per-sensor policy, overriding 'default'."
    )
