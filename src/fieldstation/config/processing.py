"""Config bases for processors (a model plugin plus acoupi-style filters and output cleaners)."""

from __future__ import annotations

from pydantic import Field

from fieldstation.config.base import Name, StrictModel
from fieldstation.config.units import Seconds

__all__ = ["OutputCleaners", "ProcessingFilters", "ProcessorConfig"]


class ProcessingFilters(StrictModel):
    """Should a recording be processed at all (acoupi's processing filters)."""

    min_duration: Seconds = Field(
        default=0.0, ge=0, description="Skip recordings shorter than this."
    )
    end_reasons: list[str] | None = Field(
        default=None, description="Only process recordings with one of these end reasons."
    )


class OutputCleaners(StrictModel):
    """Which detections to keep (acoupi's output cleaners)."""

    min_score: float = Field(default=0.0, ge=0, le=1, description="Drop detections scored lower.")
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per-label minimum score, overriding min_score."
    )
    allow: list[str] | None = Field(default=None, description="Keep only these labels.")
    deny: list[str] = Field(default_factory=list, description="Drop these labels.")


class ProcessorConfig(StrictModel):
    """Fields every processor has; the model plugin's config model subclasses this."""

    name: Name = Field(description="Unique processor name; also its job name.")
    model: str = Field(description="Model plugin (entry point in group fieldstation.models).")
    enabled: bool = Field(default=True, description="A disabled processor is not run.")
    sensors: list[str] | None = Field(
        default=None, description="Sensors whose recordings it processes; omitted means all."
    )
    filters: ProcessingFilters = Field(
        default_factory=ProcessingFilters,
        description="Which recordings are processed at all (minimum duration, end reasons).",
    )
    cleaners: OutputCleaners = Field(
        default_factory=OutputCleaners,
        description="Which detections are kept (minimum scores, allowed and denied labels).",
    )
    timeout: Seconds = Field(
        default=600.0, gt=0, description="Liveness: a claimed recording must finish within this."
    )
    max_attempts: int = Field(default=3, ge=1, description="Attempts before a recording fails.")
    lease: Seconds = Field(
        default=900.0, gt=0, description="A claim expires after this; another worker may take it."
    )
    poll_interval: Seconds = Field(
        default=30.0,
        gt=0,
        description="Seconds between looks for new recordings when idle. Under the runtime a "
        "processor is also woken at once when a recorder commits a chunk, so this only bounds "
        "how late it sees work nobody announced (a retry coming due, a recording made by "
        "`fieldstation record`).",
    )
