"""Exports of detections, recordings, readings and model runs: CSV, Parquet, Raven selection
tables and SQL databases, incremental per target (:func:`run_export`; ``fieldstation export``; the
``export`` job)."""

from fieldstation.export.run import ExportError, ExportResult, run_export

__all__ = ["ExportError", "ExportResult", "run_export"]
