"""`fieldstation validate` also checks what this machine must provide for the station to run:
replay inputs (exist, regular, readable, headers decode) and model extras. Real files: a real
FIFO, a real FLAC with a damaged header."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import tomli_w

from fieldstation.config import template_text


def _station(tmp_path: Path, **replay: Any) -> Path:
    data = tomllib.loads(template_text())
    data["sensors"] = [{"name": "rep", "kind": "replay", **replay}]
    data["processors"] = []
    data["retention"].pop("sensors", None)
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _validate(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldstation.cli", "validate", "-c", str(path), *options],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _flac(path: Path, frames: int = 8000) -> Path:
    data = (np.random.default_rng(0).standard_normal(frames) * 3000).astype(np.int16)
    sf.write(str(path), data, 8000, subtype="PCM_16")
    return path


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "in.flac")
    return tmp_path / "in.flac"


def _bad_header(tmp_path: Path) -> Path:
    path = _flac(tmp_path / "in.flac")
    raw = bytearray(path.read_bytes())
    raw[:4] = b"XXXX"  # no longer fLaC
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "missing.flac", "missing.flac does not exist"),
        (_fifo, "is a FIFO"),
        (_bad_header, "does not decode"),
    ],
    ids=["missing", "fifo", "bad-header"],
)
def test_validate_refuses_replay_inputs_that_cannot_play_here(
    tmp_path: Path, make: Any, expected: str
) -> None:
    path = _station(tmp_path, files=[str(make(tmp_path))])
    done = _validate(path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "sensors[0]" in done.stderr and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    elsewhere = _validate(path, "--no-host-checks")  # a file meant for another machine
    assert elsewhere.returncode == 0, elsewhere.stdout + elsewhere.stderr


def test_validate_lets_skip_leave_bad_files_out_but_not_all(tmp_path: Path) -> None:
    good = _flac(tmp_path / "a.flac")
    fifo = _fifo(tmp_path)
    path = _station(tmp_path, files=[str(good), str(fifo)], mismatched="skip")
    assert _validate(path).returncode == 0
    path = _station(tmp_path, files=[str(fifo)], mismatched="skip")
    done = _validate(path)
    assert done.returncode == 2 and "no replay file" in done.stderr, done.stderr


def test_validate_refuses_only_empty_files(tmp_path: Path) -> None:
    sf.write(str(tmp_path / "e.wav"), np.zeros((0, 1), np.int16), 8000, subtype="PCM_16")
    done = _validate(_station(tmp_path, files=[str(tmp_path / "e.wav")], loop=True))
    assert done.returncode == 2 and "no replay file" in done.stderr, done.stderr
