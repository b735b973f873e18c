"""Retention: which recording files are kept on disk, by per-sensor rules and disk quotas.

See ``docs/retention.md`` for the rules and :class:`RetentionJob` for the order of work.
"""

from fieldstation.retention.job import DiskUsage, RetentionJob, RetentionReport

__all__ = ["DiskUsage", "RetentionJob", "RetentionReport"]
