"""Reprocessing a station's stored recordings with one of its processors: the one function
that ``fieldstation reprocess`` and the fleet command ``reprocess`` both use.

Each recording's new ModelRun, detections and outbox messages are committed together (earlier
runs are kept: one ModelRun per run). Recordings the processor has not done yet are left to
its worker: a run stored without a claim would count as done and strand them in ``recorded``.
Loads the model (numpy and more): the station's supervisor runs it in a child process
(:func:`reprocess_in_child`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fieldstation.config import StationConfig
    from fieldstation.home import StationHome

__all__ = ["ReprocessOutcome", "UnknownProcessorError", "reprocess", "reprocess_in_child"]


class UnknownProcessorError(ValueError):
    """No processor of the station has that name or uses that model."""


@dataclass
class ReprocessOutcome:
    """What one reprocessing did: recordings ``stored`` (a new run) and ``failed`` (with
    ``errors``: recording id -> reason), and ``waiting`` recordings left to the worker."""

    processor: str
    stored: int = 0
    failed: int = 0
    waiting: int = 0
    errors: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (a command's ``details``); at most 20 errors."""
        errors = {str(k): v for k, v in list(self.errors.items())[:20]}
        return {
            "processor": self.processor,
            "stored": self.stored,
            "failed": self.failed,
            "waiting": self.waiting,
            "errors": errors,
        }


def reprocess(
    config: StationConfig,
    home: StationHome,
    model: str,
    *,
    since: datetime | None = None,
    on_total: Callable[[int], None] | None = None,
    on_row: Callable[[int, str, str | None], None] | None = None,
) -> ReprocessOutcome:
    """Run the processor named ``model`` (or the first using that model plugin) again on the
    station's processed or failed recordings started at or after ``since`` (aware UTC; None:
    all). ``on_total(n)`` is called once with the number of recordings, ``on_row(recording_id,
    outcome, error)`` after each. Raises :class:`UnknownProcessorError` (naming the station's
    processors) and :class:`~fieldstation.processing.model.ModelUnavailableError`."""
    from fieldstation.clock import SystemClock
    from fieldstation.job import JobContext
    from fieldstation.processing.model import model_media
    from fieldstation.processing.worker import ProcessorWorker, build_model
    from fieldstation.store import open_database
    from fieldstation.store import processing as repo
    from fieldstation.store.deployments import current_deployment

    chosen = [p for p in config.processors if model in (p.name, p.model)]
    if not chosen:
        names = ", ".join(p.name for p in config.processors) or "none"
        raise UnknownProcessorError(f"no processor named (or using model) {model!r}: {names}")
    processor = chosen[0]
    station = config.station
    detector = build_model(
        processor, home=home.root, position=(station.latitude, station.longitude)
    )
    media = model_media(detector)
    outcome = ReprocessOutcome(processor.name)
    db = open_database(home.database)
    try:
        run_key = f"reprocess:{datetime.now(UTC).isoformat()}"
        with db.session() as session:
            rows = repo.reprocessable(
                session,
                processor=processor.name,
                sensors=processor.sensors,
                since=since,
                media=media,
            )
            outcome.waiting = repo.count_pending(
                session, processor=processor.name, sensors=processor.sensors, media=media
            )
            deployment = current_deployment(session)
            session.expunge_all()
        if on_total is not None:
            on_total(len(rows))
        ctx = JobContext(config, home, deployment.id if deployment else 0, SystemClock())
        ctx.__dict__["db"] = db  # share the open database (cached_property slot)
        worker = ProcessorWorker(ctx, processor.name, detector)  # the worker's own step
        for row in rows:
            result = worker.rerun(row, run_key)
            if result.outcome == "failed":
                outcome.failed += 1
                outcome.errors[row.id] = str(result.error)
            elif result.outcome == "processed":
                outcome.stored += 1
            if on_row is not None:
                on_row(row.id, result.outcome, None if result.error is None else str(result.error))
    finally:
        db.dispose()
    return outcome


def reprocess_in_child(data: dict[str, Any], model: str, since: str | None) -> dict[str, Any]:
    """:func:`reprocess` for a child process: the station file as :func:`config_data`, the
    model, ``since`` as ISO 8601 or None; returns :meth:`ReprocessOutcome.as_dict`."""
    from fieldstation.config import parse_config
    from fieldstation.home import StationHome

    config = parse_config(data)
    after = None if since is None else datetime.fromisoformat(since)
    return reprocess(config, StationHome(config.home_path()), model, since=after).as_dict()
