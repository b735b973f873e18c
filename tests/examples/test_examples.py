"""The example station files validate, and minimal.toml is the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldstation.config import config_hash, default_config, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["minimal.toml", "birds.toml", "bats.toml"])
def test_example_validates(name: str) -> None:
    assert load_config(EXAMPLES / name).station.id


def test_minimal_is_the_embedded_default() -> None:
    assert config_hash(load_config(EXAMPLES / "minimal.toml")) == config_hash(default_config())
