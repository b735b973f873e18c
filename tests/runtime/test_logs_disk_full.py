"""A log file that cannot be written (disk full) costs log lines, never a traceback on the
console or an exception in the station; writing resumes when the file can be written again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldstation.runtime.logs import RotatingCompressedHandler


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("fieldstation.tests.logs_disk_full")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def test_a_full_disk_loses_lines_silently_and_writing_resumes(
    tmp_path: Path, logger: logging.Logger, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logs" / "recorder-mic.log"
    path.parent.mkdir()
    path.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    handler = RotatingCompressedHandler(path, max_bytes=1 << 20, max_age=3600, backups=2)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    for n in range(60):
        logger.warning("record %d", n)
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # the stdlib printed "--- Logging error ---" 60 times
    assert handler.lost == 60 == handler.lost_total
    path.unlink()  # space is back: the next record reopens the file
    logger.warning("after the disk was freed")
    lines = path.read_text().splitlines()
    assert lines == [
        "WARNING 60 log record(s) could not be written (disk full?) and are missing here",
        "WARNING after the disk was freed",
    ]
    assert handler.lost == 0 and handler.lost_total == 60
    assert capfd.readouterr().err == ""
