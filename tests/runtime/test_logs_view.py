"""``fieldstation logs JOB``: the job's own file and the station log's lines about it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fieldstation.cli.app import app

T = "2026-12-07 01:5"
SUP = "INFO MainProcess fieldstation.runtime.supervisor:"
STA = "INFO MainProcess fieldstation.runtime.station:"
STATION = f"""\
{T}8:58,867 {SUP} job recorder:mic started (pid 29045)
{T}8:58,900 {SUP} job processor:energy started (pid 29046)
{T}8:59,336 {STA} recorder:mic: slot open until 2026-12-08T00:00:00+00:00
{T}9:01,231 {STA} recorder:mic: chunk committed, recording 1 (96000 frames) data/mic/a.flac
{T}9:01,296 {STA} processor:energy: recording 1 processed, 2 detection(s)
{T}9:02,000 {STA} recorder:mic2: chunk committed, recording 2 (96000 frames) data/mic2/b.flac
"""
OWN = f"""\
{T}8:58,995 INFO MainProcess fieldstation.runtime.jobs: job recorder:mic starting (pid 29045)
{T}9:01,500 WARNING MainProcess fieldstation.recording.job: sensor mic: something
Traceback (most recent call last):
  File "x.py", line 1
"""


def test_a_job_log_shows_its_own_lines_and_the_station_lines_about_it(tmp_path: Path) -> None:
    logs = tmp_path / "home" / "logs"
    logs.mkdir(parents=True)
    (logs / "station.log").write_text(STATION)
    (logs / "recorder-mic.log").write_text(OWN)
    result = CliRunner().invoke(app, ["logs", "recorder:mic", "--home", str(tmp_path / "home")])
    assert result.exit_code == 0, result.output
    shown = result.output.splitlines()
    assert [line[11:23] for line in shown if line[:4] == "2026"] == [
        "01:58:58,867",  # the supervisor starts it (station.log)
        "01:58:58,995",  # the job itself says it starts (its own file)
        "01:58:59,336",  # its slot opens
        "01:59:01,231",  # its chunk
        "01:59:01,500",  # its own warning, with the traceback lines after it
    ]
    assert shown[-2:] == ["Traceback (most recent call last):", '  File "x.py", line 1']
    assert "processor:energy" not in result.output and "mic2" not in result.output
    short = CliRunner().invoke(
        app, ["logs", "recorder:mic", "--home", str(tmp_path / "home"), "-n", "1"]
    )
    assert "01:59:01,500" in short.output and "01:59:01,231" not in short.output
    assert short.output.rstrip().endswith('  File "x.py", line 1')  # the record, whole
