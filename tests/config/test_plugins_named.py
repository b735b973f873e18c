"""A station file loads only the plugins it names (issue 22: start-up time and memory of
every station process); the schema, and the report of a plugin that is not installed, still
know every installed plugin."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest

from fieldstation.config import ConfigError, parse_config, station_model, template_text
from fieldstation.config.plugins import load_plugin, plugin_names


def _modules_after(code: str) -> set[str]:
    """``sys.modules`` of a fresh interpreter after ``code`` (this process has every plugin)."""
    script = f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_default_station_loads_only_its_own_plugins() -> None:
    loaded = _modules_after("from fieldstation.config import default_config; default_config()")
    assert {"fieldstation.sensors.synthetic", "fieldstation.processing.energy"} <= loaded
    unused = {
        "fieldstation.processing.birdnet",
        "fieldstation.processing.batdetect2",
        "fieldstation.processing.motion",
        "fieldstation.outbox.mqtt",
        "fieldstation.outbox.http",
        "fieldstation.outbox.apprise",
        "fieldstation.sensors.video",
    }
    assert sorted(unused & loaded) == []


def test_the_schema_still_has_every_installed_plugin() -> None:
    defined = set(station_model().model_json_schema()["$defs"])
    for group in ("sensors", "models", "messengers"):
        for name in plugin_names(group):  # type: ignore[arg-type]
            assert load_plugin(group, name).config_model.__name__ in defined, (group, name)


def test_a_plugin_not_installed_is_reported_with_every_installed_one() -> None:
    data = tomllib.loads(template_text())
    data["outputs"] = [*data["outputs"], {"name": "x", "kind": "carrier-pigeon"}]
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert f"installed: {', '.join(plugin_names('messengers'))}" in str(caught.value)


def test_a_named_plugin_validates_as_before() -> None:
    data = tomllib.loads(template_text())
    data["sensors"][0]["sample_rate"] = "fast"
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert "sensors[0].sample_rate" in str(caught.value)
