"""Station files that used to print a traceback, or pass and then crash-loop the station: each is
now refused by `fieldstation validate` (run as a real process) in one clear line, exit 2."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from fieldstation.config import ConfigError, parse_config, template_text


def default_data() -> dict[str, Any]:
    return tomllib.loads(template_text())


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldstation.cli", "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_clear_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    assert len(output) < 2000, output[:2000]
    for text in expected:
        assert text in output, output


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    text = template_text().replace('name = "Embedded default station"', 'name = "Étang"', 1)
    path.write_bytes(text.encode("latin-1"))
    assert_one_clear_error(validate(path), "not UTF-8", "byte 0xc9", "save the file as UTF-8")


def test_file_nested_5000_deep(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(template_text() + "\n[extra]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    assert_one_clear_error(validate(path), "nest too deeply")


def test_file_of_10_mb_is_refused_before_parsing(tmp_path: Path) -> None:
    data = default_data()
    data["station"]["name"] = "x" * 10_000_000
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    assert_one_clear_error(validate(path), "larger than 1048576 bytes")


@pytest.mark.parametrize(
    ("key", "value"),
    [("name", "x" * 300), ("id", "x" * 1_000_000)],
)
def test_long_names_are_refused_and_shown_clipped(key: str, value: str) -> None:
    data = default_data()
    data["station"][key] = value
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    message = str(caught.value)
    assert f"station.{key}" in message
    assert len(message) < 1000  # the value is shown clipped, with its length
    assert f"({len(value)} characters)" in message


def test_every_string_is_capped() -> None:
    data = default_data()
    data["sensors"][0]["schedule"] = "s" * 5000
    with pytest.raises(ConfigError, match=r"sensors\[0\]\.schedule.*at most 4096"):
        parse_config(data)


def _sensor_file(tmp_path: Path, **sensor: Any) -> Path:
    data = default_data()
    data["sensors"] = [{"name": "mic", "kind": "synthetic", **sensor}]
    data["processors"] = []
    data["retention"].pop("sensors", None)
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    return path


@pytest.mark.parametrize(
    ("sensor", "expected"),
    [
        ({"sample_rate": "48MHz"}, "did you mean kHz"),
        ({"sample_rate": 10**19}, "beyond any audio converter"),
        ({"sample_rate": "768kHz", "format": "flac"}, "above FLAC's limit of 655350 Hz"),
        ({"chunk": "1ms"}, "too short"),
    ],
    ids=["48MHz", "20-digit", "flac-768kHz", "chunk-1ms"],
)
def test_absurd_rates_and_chunks_are_refused(
    tmp_path: Path, sensor: dict[str, Any], expected: str
) -> None:
    assert_one_clear_error(validate(_sensor_file(tmp_path, **sensor)), "sensors[0]", expected)


def test_flac_rate_limit_is_libsndfiles(tmp_path: Path) -> None:
    """655350 Hz is accepted and libsndfile writes it; one hertz more it refuses to write."""
    import numpy as np
    import soundfile as sf

    parse_config({**default_data(), "sensors": [_synthetic(655350)]})
    with pytest.raises(ConfigError):
        parse_config({**default_data(), "sensors": [_synthetic(655351)]})
    sf.write(str(tmp_path / "ok.flac"), np.zeros(10, np.int16), 655350, subtype="PCM_16")
    with pytest.raises(sf.LibsndfileError, match="sample rate"):
        sf.write(str(tmp_path / "no.flac"), np.zeros(10, np.int16), 655351, subtype="PCM_16")


def _synthetic(rate: int) -> dict[str, Any]:
    return {"name": "mic", "kind": "synthetic", "sample_rate": rate, "format": "flac"}
