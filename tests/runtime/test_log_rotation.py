"""Log files rotate by size and by age, old files are gzip-compressed, a count is kept."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from fieldstation.config.runtime import LoggingConfig
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


class FakeTime:
    """A wall clock (seconds since the epoch) moved by hand."""

    def __init__(self, now: float = 1_780_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _read_gz(path: Path) -> str:
    with gzip.open(path, "rt") as f:
        return f.read()


def test_rotates_by_age(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    clock = FakeTime()
    handler = RotatingCompressedHandler(path, max_bytes=10**9, max_age=60, backups=2, clock=clock)
    logger = _logger(handler)
    logger.warning("old day")
    clock.now += 59
    logger.warning("same file")
    assert not (tmp_path / "job.log.1.gz").exists()
    clock.now += 2  # the first record is now more than max_age old
    logger.warning("new day")
    handler.close()
    assert "old day" in _read_gz(tmp_path / "job.log.1.gz")
    assert "same file" in _read_gz(tmp_path / "job.log.1.gz")
    assert "new day" in path.read_text()
    assert "old day" not in path.read_text()
    assert os.path.getsize(path) > 0


def test_age_counts_from_the_first_record_across_restarts(tmp_path: Path) -> None:
    """Each restart appends to the file (and updates its ctime): age must still trigger."""
    path = tmp_path / "job.log"
    clock = FakeTime()
    for step, message in enumerate(["first run", "second run", "third run"]):
        handler = RotatingCompressedHandler(
            path, max_bytes=10**9, max_age=3600, backups=2, clock=clock
        )
        logger = _logger(handler)
        logger.warning(message)
        handler.close()
        if step < 2:
            assert not (tmp_path / "job.log.1.gz").exists(), message
        clock.now += 1900  # restarted every ~32 minutes
    # the third record came 3800 s after the first: the file was rotated before it
    rotated = _read_gz(tmp_path / "job.log.1.gz")
    assert "first run" in rotated and "second run" in rotated
    assert path.read_text().count("run") == 1 and "third run" in path.read_text()


def test_rotation_restarts_the_age_and_an_empty_file_has_none(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    clock = FakeTime()
    handler = RotatingCompressedHandler(path, max_bytes=10**9, max_age=60, backups=3, clock=clock)
    logger = _logger(handler)
    logger.warning("a")
    clock.now += 61
    logger.warning("b")  # rotates: "b" is the first record of the new file
    clock.now += 59
    logger.warning("c")
    assert sorted(p.name for p in tmp_path.glob("job.log.*")) == ["job.log.1.gz"]
    clock.now += 2
    logger.warning("d")
    handler.close()
    assert sorted(p.name for p in tmp_path.glob("job.log.*")) == ["job.log.1.gz", "job.log.2.gz"]
    assert "b" in _read_gz(tmp_path / "job.log.1.gz") and "c" in _read_gz(tmp_path / "job.log.1.gz")
    # opening an empty file long after: its age starts at its first record, not at open
    clock.now += 10_000
    empty = tmp_path / "other.log"
    handler = RotatingCompressedHandler(empty, max_bytes=10**9, max_age=60, backups=3, clock=clock)
    logger = _logger(handler)
    clock.now += 30
    logger.warning("x")
    clock.now += 31
    logger.warning("y")
    handler.close()
    assert not list(tmp_path.glob("other.log.*"))


def test_zero_max_bytes_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_bytes"):
        LoggingConfig.model_validate({"max_bytes": 0})
    with pytest.raises(ValidationError, match="more than 0"):
        LoggingConfig.model_validate({"max_bytes": "0MB"})
    assert LoggingConfig.model_validate({"max_bytes": "1kB"}).max_bytes == 1000
