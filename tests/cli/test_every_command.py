"""Every station command run with ``-c FILE`` against a real home: chunks made by
``fieldstation record -c FILE --for 2s`` on the synthetic sensor, then a real station run
(``fieldstation run -c FILE`` as a process, stderr piped) that the live commands talk to and
that ``fieldstation stop -c FILE`` (no job) stops; then the offline commands on what it left.

The console log of that run, written to a pipe, is checked line by line: one record per
line, ISO 8601 UTC times, no wrapping (what journald and log shippers need).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from fieldstation.cli import json_output as schemas
from fieldstation.cli.app import app

from .conftest import CLI, station_commands, station_text, wait_for

pytestmark = pytest.mark.slow

runner = CliRunner()

CONSOLE_LINE = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"[\w.:-]+: \S.*\S$"
)
"""A console record under a pipe: ``2026-12-07T05:01:02.123Z INFO name: message``."""


class Home:
    """The station file, what the live station answered, and its piped console."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.home = home
        self.results: dict[tuple[str, ...], Any] = {}
        self.stderr = ""
        self.returncode: int | None = None


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    """Run ``fieldstation ARGS`` in this process (typer's runner); stderr kept apart."""
    return runner.invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Home:
    root = tmp_path_factory.mktemp("every")
    path = root / "station.toml"
    path.write_text(station_text(root / "home"))
    made = Home(path, root / "home")
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("FIELDSTATION_CONFIG", None)
    recorded = subprocess.run(
        [*CLI, "record", "-c", str(path), "--for", "2s"], capture_output=True, text=True, env=env
    )
    assert recorded.returncode == 0, recorded.stderr
    made.results[("record",)] = recorded
    c = ["-c", str(path)]
    station = subprocess.Popen(
        [*CLI, "run", *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:

        def running() -> Any:
            shown = invoke("status", *c, "--json")
            body = json.loads(shown.stdout) if shown.exit_code == 0 else None
            jobs = {j["name"]: j["state"] for j in (body or {}).get("jobs", [])}
            return body if jobs.get("recorder:mic") == "running" else None

        made.results[("status", "--json")] = wait_for(running, 120, "station running")
        # the first chunk of the run committed and processed: detections to list later
        wait_for(
            lambda: "processor:energy: recording" in station_log(made.home), 120, "a detection"
        )
        for args in (
            ("status",),
            ("stop", "recorder:mic"),
            ("start", "recorder:mic"),
            ("restart", "processor:energy"),
            ("logs", "recorder:mic"),
        ):
            made.results[args] = invoke(*args, *c)
        made.results[("stop",)] = invoke("stop", *c)  # no job: the whole station
        _, made.stderr = station.communicate(timeout=120)
        made.returncode = station.returncode
    finally:
        if station.poll() is None:
            station.kill()
            station.communicate()
    return made


def station_log(home: Path) -> str:
    log = home / "logs" / "station.log"
    return log.read_text() if log.exists() else ""


def test_record_for_2s_made_a_chunk(station: Home) -> None:
    out = station.results[("record",)].stdout
    assert "1 chunk, 32000 frames" in out, out  # 2 s at 16 kHz, exactly


def test_live_commands_with_c_and_stop_with_no_job_stops_the_station(station: Home) -> None:
    status = schemas.StationStatus.model_validate(station.results[("status", "--json")])
    assert status.running and status.station == "cli-test"
    for args in (("status",), ("stop", "recorder:mic"), ("start", "recorder:mic")):
        assert station.results[args].exit_code == 0, (args, station.results[args].output)
    assert "recorder:mic: stop" in station.results[("stop", "recorder:mic")].stdout
    assert station.results[("restart", "processor:energy")].exit_code == 0
    logs = station.results[("logs", "recorder:mic")]
    assert logs.exit_code == 0 and "recorder:mic" in logs.stdout
    whole = station.results[("stop",)]
    assert whole.exit_code == 0, whole.output
    assert "stopping station cli-test" in whole.stdout and "stopped" in whole.stdout
    assert station.returncode == 0, station.stderr[-2000:]
    assert invoke("status", "-c", str(station.path)).exit_code == 1  # not running any more
    assert invoke("stop", "-c", str(station.path)).exit_code == 1


def test_console_log_under_a_pipe_is_one_iso_utc_line_per_record(station: Home) -> None:
    lines = station.stderr.splitlines()
    assert len(lines) >= 8, station.stderr  # start-up, jobs, chunks, stops
    bad = [line for line in lines if not CONSOLE_LINE.match(line)]
    assert bad == [], "\n".join(bad[:10])
    text = station.stderr
    assert " INFO " in text and "chunk committed" in text and "job recorder:mic stopped" in text
    # nothing of rich's terminal layout: no padding, no wrapped file names
    assert all(line == line.rstrip() for line in lines)
    assert not any("[12/" in line for line in lines)


def test_every_station_command_runs_with_c(station: Home) -> None:
    c = ["-c", str(station.path)]
    live = {("run",), ("record",), ("status",), ("start",), ("stop",), ("restart",), ("logs",)}
    xdg = str(station.path.parent / "xdg")  # a user unit goes here, not into this machine
    offline: dict[tuple[str, ...], tuple[list[str], int, str]] = {
        ("validate",): ([], 0, "valid: station 'cli-test'"),
        ("schedule",): (["--days", "1"], 0, "storage estimate"),
        ("recordings",): (["--limit", "0"], 0, "recordings"),
        ("detections",): ([], 0, "detection"),
        ("sessions",): ([], 0, "0 sessions"),
        ("pin",): (["1"], 0, "recording 1 pinned"),
        ("unpin",): (["1"], 0, "recording 1 unpinned"),
        ("reprocess",): (["--model", "energy", "--since", "2d"], 0, "reprocessed"),
        ("outbox", "status"): ([], 0, "outbox of station 'cli-test'"),
        ("outbox", "list"): (["--limit", "3"], 0, "outbox messages"),
        ("outbox", "retry"): ([], 0, "0 dead letters moved back"),
        ("outbox", "purge-dead"): (["--yes"], 0, "0 dead letters deleted"),
        ("db", "check"): ([], 0, "integrity ok"),
        ("export",): (["--to", str(station.path.parent / "export.csv")], 0, "exported"),
        ("live",): (["--seconds", "0.3"], 0, "mic"),
        ("install",): (["--user", "--no-enable"], 0, "fieldstation-cli-test.service"),
        ("uninstall",): (["--user"], 0, "removed"),
        ("db", "recover"): (["--force"], 0, "rebuilt"),  # last: it rebuilds the database
    }
    missing = set(station_commands()) - live - set(offline)
    assert not missing, f"add these commands to this test: {sorted(missing)}"
    for path, (args, code, said) in offline.items():
        result = invoke(*path, *c, *args, env={"XDG_CONFIG_HOME": xdg})
        assert result.exit_code == code, (path, result.output)
        assert said in result.stdout, (path, result.stdout)
        assert "deprecated" not in result.output, path


def test_json_listings_match_their_schemas(station: Home) -> None:
    c = ["-c", str(station.path)]
    documents: dict[tuple[str, ...], type[BaseModel]] = {
        ("recordings",): schemas.RecordingList,
        ("detections",): schemas.DetectionList,
        ("outbox", "status"): schemas.OutboxStatus,
        ("schedule", "--days", "2"): schemas.ScheduleList,
        ("status",): schemas.StationStatus,
    }
    for args, model in documents.items():
        result = invoke(*args, *c, "--json")
        assert result.exit_code == (1 if args == ("status",) else 0), result.output
        data = json.loads(result.stdout)
        jsonschema.validate(data, model.model_json_schema(by_alias=True))
        document = model.model_validate(data)
        assert data["schema"] == 1
        if args == ("recordings",):
            assert isinstance(document, schemas.RecordingList)
            assert document.recordings and {r.sensor for r in document.recordings} == {"mic"}
        if args == ("detections",):
            assert isinstance(document, schemas.DetectionList)
            assert all(0 <= d.score <= 1 for d in document.detections)
        if args[0] == "schedule":
            assert isinstance(document, schemas.ScheduleList)
            assert len(document.sensors[0].days) == 2
            assert document.sensors[0].bytes_per_second == 16000 * 2
        if args == ("status",):  # stopped: the last status the station wrote
            assert isinstance(document, schemas.StationStatus)
            assert document.running is False and document.last is not None
