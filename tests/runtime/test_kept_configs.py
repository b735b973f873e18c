"""Station files received remotely: the newest N kept, and which one is in force at start-up."""

from __future__ import annotations

import copy
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tomli_w

from fieldstation.config import config_hash, parse_config, template_text
from fieldstation.home import StationHome
from fieldstation.runtime.kept_configs import KeptConfigs, config_in_force

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def data(home: Path, threshold: float = 12.0) -> dict[str, Any]:
    raw = tomllib.loads(template_text())
    raw["station"]["home"] = str(home)
    raw["processors"][0]["threshold_db"] = threshold
    return raw


def test_the_newest_files_are_kept_and_those_in_use_never_deleted(tmp_path: Path) -> None:
    kept = KeptConfigs(StationHome(tmp_path / "home"), keep=2)
    paths = [kept.store(f"# file {i}\n", T0 + timedelta(seconds=i)) for i in range(4)]
    assert kept.folder.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in paths)
    kept.begin_trial(paths[0], new_hash="h0", base_hash="base")  # in force: kept
    assert kept.prune() == [paths[1]]
    assert kept.files() == [paths[0], paths[2], paths[3]]


def test_which_file_is_in_force_at_start_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    given = parse_config(data(home))
    kept = KeptConfigs(StationHome(home))
    assert config_in_force(given)[0] is given  # nothing applied remotely
    first = data(home, 15.0)
    path = kept.store(tomli_w.dumps(first), T0)
    kept.begin_trial(path, new_hash=config_hash(parse_config(first)), base_hash=config_hash(given))
    # stopped while on trial: back to the given file, and the trial is over
    config, source = config_in_force(given)
    assert config is given and "on trial: rolled back" in source
    assert kept.state().current is None and not kept.state().trial
    kept.begin_trial(path, new_hash=config_hash(parse_config(first)), base_hash=config_hash(given))
    kept.confirm()
    config, source = config_in_force(given)
    assert config.processor("energy").threshold_db == 15.0
    # a second remote file on trial: a stop goes back to the first one, not to the given one
    second = data(home, 18.0)
    other = kept.store(tomli_w.dumps(second), T0 + timedelta(seconds=1))
    kept.begin_trial(
        other, new_hash=config_hash(parse_config(second)), base_hash=config_hash(given)
    )
    assert config_in_force(given)[0].processor("energy").threshold_db == 15.0
    # the given file was edited on the station since: it wins
    edited = copy.deepcopy(data(home))
    edited["station"]["name"] = "edited"
    assert config_in_force(parse_config(edited))[0].station.name == "edited"


def test_a_damaged_kept_file_or_state_falls_back_to_the_given_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    given = parse_config(data(home))
    kept = KeptConfigs(StationHome(home))
    path = kept.store("this is = = not toml", T0)
    kept.begin_trial(path, new_hash="x", base_hash=config_hash(given))
    kept.confirm()
    config, source = config_in_force(given)
    assert config is given and "does not load" in source
    kept.state_file.write_text("{not json")
    assert config_in_force(given)[0] is given


def test_run_starts_on_the_kept_file(tmp_path: Path) -> None:
    """``fieldstation run -c FILE`` runs the file applied remotely (its deployment's hash)."""
    import sqlite3
    import subprocess
    import sys

    home = tmp_path / "home"
    given_data = data(home)
    given_data.update(sensors=[], processors=[])
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(given_data))
    remote = copy.deepcopy(given_data)
    remote["station"]["name"] = "set remotely"
    kept = KeptConfigs(StationHome(home))
    kept_path = kept.store(tomli_w.dumps(remote), T0)
    remote_hash = config_hash(parse_config(remote))
    kept.begin_trial(
        kept_path, new_hash=remote_hash, base_hash=config_hash(parse_config(given_data))
    )
    kept.confirm()
    ran = subprocess.run(
        [sys.executable, "-m", "fieldstation.cli", "run", "-c", str(path), "--for", "1s"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    with sqlite3.connect(home / "station.db") as db:
        hashes = [row[0] for row in db.execute("SELECT config_hash FROM deployments")]
    assert hashes == [remote_hash]
