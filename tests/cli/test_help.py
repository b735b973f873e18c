"""Every command's ``--help``, walked through the app (so a command added later is walked too):
it works, says something, and shows no Python-ish placeholders or literal backticks; and every
station command takes its station file the one way, ``-c/--config FILE``."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from fieldstation.cli.app import app
from fieldstation.cli.common import CONFIG_ENV

from .conftest import NOT_STATION_COMMANDS, commands, station_commands

runner = CliRunner()

PLACEHOLDERS = re.compile(
    r"`"  # literal backticks (``--csv``, `recordings`)
    r"|<(bool|str|int|float|path|Path|int range|float range|list\[[^\]]*\]|datetime)>"
    r"|\{[a-z_]+\}"  # {config}, {recording_id}
    r"|\[\]"  # markup that ate a [[table]] name
)

WALKED = [path for path, _ in commands()]


def test_the_walk_finds_every_command_group() -> None:
    assert {("record",), ("outbox", "status"), ("db", "check"), ("config", "schema")} <= set(WALKED)
    assert len(WALKED) > 25


@pytest.mark.parametrize("path", WALKED, ids=lambda p: " ".join(p) or "fieldstation")
def test_help_is_plain_words(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith("Usage: ") and "Options:" in text
    found = PLACEHOLDERS.search(text)
    assert found is None, f"{found.group()!r} in the help of {' '.join(path)}:\n{text}"
    summary = text.split("\n\n")[1].strip()
    assert len(summary) > 10, text  # a sentence saying what it does


def test_every_station_command_takes_c_config_file() -> None:
    by_path = dict(commands())
    checked = station_commands()
    assert ("run",) in checked and ("outbox", "status") in checked and ("pin",) in checked
    for path in checked:
        options = {
            opt: param
            for param in by_path[path].params
            if getattr(param, "param_type_name", None) == "option"
            for opt in param.opts
        }
        name = " ".join(path)
        assert "-c" in options and "--config" in options, f"{name} has no -c/--config"
        param = options["-c"]
        assert options["--config"] is param, name
        assert param.envvar == CONFIG_ENV, f"{name}: -c does not read ${CONFIG_ENV}"
        assert param.metavar == "FILE", name
        visible = [
            p.name
            for p in by_path[path].params
            if getattr(p, "param_type_name", None) == "argument" and not p.hidden
        ]
        assert not {"config", "config_path", "legacy"} & set(visible), name
    assert not set(NOT_STATION_COMMANDS) & set(checked)
