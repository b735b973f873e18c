"""The console log when stderr is not a terminal (systemd's journal, a pipe): one line per
record with an ISO 8601 UTC time, never wrapped at 80 columns or padded with spaces."""

from __future__ import annotations

import re
import subprocess
import sys

LOGGING = """
import logging, sys
from fieldstation.config.runtime import LoggingConfig
from fieldstation.runtime.logs import setup_logging
setup_logging(LoggingConfig(), None, console=True)
log = logging.getLogger("fieldstation.recording.job")
for n in range(int(sys.argv[1])):
    log.info("recorder:mic: chunk committed, recording %d (480000 frames) %s", n, "data/mic/"
             "2026-12-03/default_mic_20261203T080720.700060Z.flac")
print("done", flush=True)
"""

LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO fieldstation\.recording\.job: "
    r"recorder:mic: chunk committed, recording \d+ \(480000 frames\) "
    r"data/mic/2026-12-03/default_mic_20261203T080720\.700060Z\.flac$"
)


def test_a_console_that_is_not_a_terminal_gets_one_plain_line_per_record() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOGGING, "3"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 3, lines
    assert all(LINE.match(line) for line in lines), lines


def test_a_reader_that_goes_away_silences_the_plain_console() -> None:
    """``fieldstation run 2>&1 | head -1``: the rest is dropped, no logging traceback, and the
    program goes on to its end."""
    writer = subprocess.Popen(
        [sys.executable, "-c", LOGGING, "20000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stderr is not None and writer.stdout is not None
    first = writer.stderr.readline()
    writer.stderr.close()  # the reader goes away
    out = writer.stdout.read()
    assert writer.wait(60) == 0
    assert LINE.match(first.rstrip("\n")), first
    assert out == "done\n"
