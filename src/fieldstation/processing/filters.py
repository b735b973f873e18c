"""Processing filters (should a recording be analysed?) and output cleaners (which detections
to keep), after acoupi's ``ProcessingFilter`` / ``ModelOutputCleaner`` split.

Both are built from their config models (``config.processing``) as a list of small pure
functions, composed in order, so a new rule is one function and one config field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fieldstation.config.processing import OutputCleaners, ProcessingFilters
from fieldstation.processing.model import Detection

__all__ = [
    "Cleaner",
    "Filter",
    "RecordingFacts",
    "build_cleaner",
    "build_filter",
]


@dataclass(frozen=True)
class RecordingFacts:
    """What filters look at: ``duration`` in seconds, the recording's end reason and sensor."""

    duration: float
    end_reason: str | None = None
    sensor: str | None = None


Filter = Callable[[RecordingFacts], str | None]
"""Returns None to process the recording, or the reason it is skipped."""
Cleaner = Callable[[list[Detection]], list[Detection]]
"""Returns the detections to keep (a new list)."""


def _min_duration(limit: float) -> Filter:
    def check(facts: RecordingFacts) -> str | None:
        if facts.duration < limit:
            return f"shorter ({facts.duration:.3f} s) than filters.min_duration ({limit} s)"
        return None

    return check


def _end_reasons(allowed: Sequence[str]) -> Filter:
    wanted = frozenset(allowed)

    def check(facts: RecordingFacts) -> str | None:
        if facts.end_reason not in wanted:
            return f"end reason {facts.end_reason!r} not in filters.end_reasons"
        return None

    return check


def build_filter(config: ProcessingFilters) -> Filter:
    """One filter applying every rule of ``config`` in order; the first refusal wins."""
    rules: list[Filter] = []
    if config.min_duration > 0:
        rules.append(_min_duration(config.min_duration))
    if config.end_reasons is not None:
        rules.append(_end_reasons(config.end_reasons))

    def check(facts: RecordingFacts) -> str | None:
        for rule in rules:
            reason = rule(facts)
            if reason is not None:
                return reason
        return None

    return check


def _score_floor(min_score: float, thresholds: dict[str, float]) -> Cleaner:
    def clean(detections: list[Detection]) -> list[Detection]:
        return [d for d in detections if d.score >= thresholds.get(d.label, min_score)]

    return clean


def _allow(labels: Sequence[str]) -> Cleaner:
    keep = frozenset(labels)
    return lambda detections: [d for d in detections if d.label in keep]


def _deny(labels: Sequence[str]) -> Cleaner:
    drop = frozenset(labels)
    return lambda detections: [d for d in detections if d.label not in drop]


def build_cleaner(config: OutputCleaners) -> Cleaner:
    """One cleaner applying, in order: per-label thresholds (else ``min_score``), ``allow``,
    ``deny``. Detections keep their order."""
    steps: list[Cleaner] = []
    if config.min_score > 0 or config.thresholds:
        steps.append(_score_floor(config.min_score, dict(config.thresholds)))
    if config.allow is not None:
        steps.append(_allow(config.allow))
    if config.deny:
        steps.append(_deny(config.deny))

    def clean(detections: list[Detection]) -> list[Detection]:
        kept = list(detections)
        for step in steps:
            kept = step(kept)
        return kept

    return clean
