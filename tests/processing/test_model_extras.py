"""A model whose extra is not installed is a configuration error: `validate` refuses it naming
the key and the install command, and the processor job stops with that reason (exit 78)
instead of being restarted."""

from __future__ import annotations

import importlib.util
import multiprocessing
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fieldstation.config import config_data
from fieldstation.job import EXIT_CONFIG, ConfigurationError
from fieldstation.processing.model import ModelUnavailableError

EXTRAS = {"birdnet": "ai_edge_litert", "batdetect2": "torch"}


def _absent(model: str) -> None:
    if importlib.util.find_spec(EXTRAS[model]) is not None:
        pytest.skip(f"the {model} extra is installed here")


@pytest.mark.parametrize("model", ["birdnet", "batdetect2"])
def test_job_raises_configuration_error_naming_processor_and_fix(
    model: str, make_station: Callable[..., Any]
) -> None:
    from fieldstation.processing.worker import run_processor

    _absent(model)
    station = make_station(processors=[{"name": "p", "model": model}])
    with pytest.raises(ConfigurationError) as caught:
        run_processor(station.context(), "p")
    assert isinstance(caught.value, ModelUnavailableError)  # what `analyze` catches
    message = str(caught.value)
    assert "processor 'p'" in message
    assert f"model = '{model}'" in message
    assert "scripts/install-extras" in message
    assert f"pip install 'fieldstation[{model}]'" in message


def test_processor_process_exits_78_with_a_config_error_report(
    make_station: Callable[..., Any],
) -> None:
    from fieldstation.runtime.jobs import ProcessJobSpec, child_main
    from fieldstation.runtime.station import PROCESSOR

    _absent("birdnet")
    station = make_station(processors=[{"name": "p", "model": "birdnet"}])
    spec = ProcessJobSpec(name="processor:p", target=PROCESSOR, args=("p",))
    parent, child = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(
        target=child_main,
        args=(spec, config_data(station.config), station.home, station.deployment_id, child),
    )
    process.start()
    child.close()
    process.join(60)
    assert process.exitcode == EXIT_CONFIG
    reports = []
    while parent.poll(1):
        try:
            reports.append(parent.recv_bytes().decode())
        except EOFError:
            break
    assert any("config_error" in r and "install-extras" in r for r in reports), reports


def test_validate_refuses_a_missing_extra_unless_told_the_file_is_for_elsewhere(
    tmp_path: Path, make_station: Callable[..., Any]
) -> None:
    _absent("birdnet")
    station = make_station(processors=[{"name": "p", "model": "birdnet"}])
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(config_data(station.config)))
    command = [sys.executable, "-m", "fieldstation.cli", "validate", "-c", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "processors[0]" in done.stderr
    assert "pip install 'fieldstation[birdnet]'" in done.stderr
    assert "--no-host-checks" in done.stderr
    done = subprocess.run(
        [*command, "--no-host-checks"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
