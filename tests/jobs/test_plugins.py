"""Job plugins: a third-party package installed with pip adds a job kind that the station
runs supervised; the built-in export and alerts jobs come through the same entry points."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fieldstation.clock import VirtualClock
from fieldstation.config import ConfigError, config_data, parse_config, template_text
from fieldstation.config.jobs import load_job_plugin
from fieldstation.export.job import ExportJob, ExportJobConfig
from fieldstation.home import StationHome
from fieldstation.runtime.plugins_jobs import plugin_thread_jobs
from fieldstation.store import Database

PACKAGE = Path(__file__).parent / "data" / "fieldstation-hello-job"


def station_data(home: Path, **sections: Any) -> dict[str, Any]:
    data = copy.deepcopy(tomllib.loads(template_text()))
    data["station"]["home"] = str(home)
    data.update(sections)
    return data


@pytest.mark.slow
def test_a_third_party_job_package_is_installed_and_run_supervised(tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(PACKAGE),
        ],
        check=True,
        capture_output=True,
    )
    station_file = tmp_path / "station.toml"
    job = {"name": "greeter", "kind": "hello", "message": "hello from a plugin", "every": "1s"}
    station_file.write_text(
        tomli_w.dumps(station_data(tmp_path / "home", sensors=[], processors=[], jobs=[job]))
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "run_station.py"), str(station_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "hello" in report["kinds"] and {"alerts", "export"} <= set(report["kinds"])
    assert report["kind"] == "thread" and report["state"] == "running"
    assert "default hello from a plugin" in report["text"]
    # without the package the same file is refused, naming what is installed
    refused = subprocess.run(
        [sys.executable, "-m", "fieldstation.cli", "validate", str(station_file)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "no job plugin of kind 'hello' (installed: alerts, export" in refused.stderr


def test_job_entries_are_validated_by_their_plugin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"jobs\[0\]: no job plugin of kind 'nope'"):
        parse_config(station_data(tmp_path, jobs=[{"name": "x", "kind": "nope"}]))
    with pytest.raises(ConfigError, match="job 'x' \\(export\\): format: Input should be"):
        parse_config(
            station_data(
                tmp_path,
                jobs=[
                    {
                        "name": "x",
                        "kind": "export",
                        "what": "detections",
                        "format": "xls",
                        "to": "/tmp/x",
                    }
                ],
            )
        )


def test_export_job_from_the_station_file(
    tmp_path: Path, home: StationHome, db: Database, clock: VirtualClock
) -> None:
    target = tmp_path / "readings.csv"
    entry = {
        "name": "nightly",
        "kind": "export",
        "what": "readings",
        "format": "csv",
        "to": str(target),
        "every": "1d",
        "since": "2d",
    }
    config = parse_config(station_data(home.root, jobs=[entry]))
    [job] = config.jobs
    assert isinstance(job, ExportJobConfig) and job.every == 86400.0
    # the job's own fields survive the trip to a child process (JSON and back)
    assert parse_config(config_data(config)).jobs == config.jobs
    [(name, _run, liveness)] = plugin_thread_jobs(config, db, clock, home)
    assert name == "job:nightly" and liveness == load_job_plugin("export").liveness
    worker = load_job_plugin("export").factory(job, station=config, db=db, clock=clock, home=home)
    assert isinstance(worker, ExportJob)
    assert worker.run_once() == 0
    assert target.read_text().splitlines() == ["id,sensor,quantity,unit,value,measured_at"]


def test_alerts_job_starts_when_there_are_rules(
    tmp_path: Path, home: StationHome, db: Database, clock: VirtualClock
) -> None:
    rule = {"name": "owls", "on": "detection", "labels": ["Strix*"]}
    config = parse_config(station_data(home.root, alerts=[rule]))
    assert [spec[0] for spec in plugin_thread_jobs(config, db, clock, home)] == ["job:alerts"]
    config = parse_config(station_data(home.root))
    assert plugin_thread_jobs(config, db, clock, home) == []
