"""Log files rotate by size and by age, old files are gzip-compressed, a count is kept."""

from __future__ import annotations

import gzip
import logging
import os
import time
from pathlib import Path

from fieldstation.runtime.logs import RotatingCompressedHandler


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"rot-{id(handler)}")
    logger.propagate = False
    logger.addHandler(handler)
    return logger


def test_rotates_by_size_compresses_and_keeps_count(tmp_path: Path) -> None:
    handler = RotatingCompressedHandler(
        tmp_path / "job.log", max_bytes=2000, max_age=3600, backups=3
    )
    logger = _logger(handler)
    for i in range(400):
        logger.warning("line %04d %s", i, "x" * 40)
    handler.close()
    rotated = sorted(p.name for p in tmp_path.glob("job.log.*"))
    assert rotated == ["job.log.1.gz", "job.log.2.gz", "job.log.3.gz"]
    with gzip.open(tmp_path / "job.log.1.gz", "rt") as f:
        newest_rotated = f.read()
    assert "line" in newest_rotated
    assert (tmp_path / "job.log").stat().st_size <= 2000
    assert "line 0399" in (tmp_path / "job.log").read_text()


def test_rotates_by_age(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    handler = RotatingCompressedHandler(path, max_bytes=10**9, max_age=60, backups=2)
    logger = _logger(handler)
    logger.warning("old day")
    handler._opened_at = time.time() - 61  # the file was opened more than max_age ago
    logger.warning("new day")
    handler.close()
    with gzip.open(tmp_path / "job.log.1.gz", "rt") as f:
        assert "old day" in f.read()
    assert "new day" in path.read_text()
    assert "old day" not in path.read_text()
    assert os.path.getsize(path) > 0
