"""Every field of the station file has a description in the JSON Schema (for editors)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.config import station_model


def properties(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``(path, schema)`` of an object property anywhere in a JSON Schema."""
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            for name, schema in props.items():
                yield f"{where}/properties/{name}", schema
        for key, value in node.items():
            yield from properties(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from properties(value, f"{where}[{index}]")


def undescribed(schema: dict[str, Any]) -> list[str]:
    return [
        path
        for path, prop in properties(schema)
        if not (isinstance(prop, dict) and str(prop.get("description", "")).strip())
    ]


def test_every_property_of_the_schema_command_has_a_description() -> None:
    result = CliRunner().invoke(app, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert len(list(properties(schema))) > 150  # the walk reaches every plugin's fields
    assert undescribed(schema) == []


def test_every_property_of_the_model_schema_has_a_description() -> None:
    assert undescribed(station_model().model_json_schema()) == []
    assert undescribed(station_model().model_json_schema(mode="serialization")) == []


def test_the_walk_finds_a_missing_description() -> None:
    schema = {"$defs": {"A": {"properties": {"x": {"type": "integer"}, "y": {"description": "y"}}}}}
    assert undescribed(schema) == ["#/$defs/A/properties/x"]
