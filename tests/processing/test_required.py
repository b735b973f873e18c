"""``FIELDSTATION_REQUIRE``: a listed requirement turns a skip into a failure (tests/conftest.py).

CI sets it (``scripts/ci-extras``: ``extras,samples``) so that a stage cannot pass by silently
skipping the tests it was set up to run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest


def test_a_missing_requirement_skips_unless_it_is_required(
    require: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIELDSTATION_REQUIRE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no broker"):
        require("mosquitto", "no broker")
    monkeypatch.setenv("FIELDSTATION_REQUIRE", "extras, pulse")
    with pytest.raises(pytest.skip.Exception):
        require("mosquitto", "no broker")
    with pytest.raises(
        pytest.fail.Exception, match="no daemon.*FIELDSTATION_REQUIRE lists 'pulse'"
    ):
        require("pulse", "no daemon")


def test_require_module_imports_or_obeys_the_switch(
    require: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIELDSTATION_REQUIRE", "extras")
    assert require.module("extras", "json").dumps(1) == "1"
    with pytest.raises(pytest.fail.Exception, match="no_such_extra_module"):
        require.module("extras", "no_such_extra_module", "the extra is not installed")
    monkeypatch.setenv("FIELDSTATION_REQUIRE", "samples")
    with pytest.raises(pytest.skip.Exception, match="the extra is not installed"):
        require.module("extras", "no_such_extra_module", "the extra is not installed")


def test_unknown_names_are_refused(require: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDSTATION_REQUIRE", "extras,mosquito")
    with pytest.raises(ValueError, match="unknown requirement.*mosquito"):
        require("extras", "x")
    monkeypatch.delenv("FIELDSTATION_REQUIRE")
    with pytest.raises(ValueError, match="unknown requirement 'gpu'"):
        require("gpu", "x")


def test_missing_samples_fail_when_samples_are_required(
    require: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conftest = sys.modules[type(require).__module__]  # tests/conftest.py, which fetches samples
    monkeypatch.setattr(conftest, "SAMPLES", tmp_path)
    monkeypatch.setenv("FIELDSTATION_REQUIRE", "samples")
    with pytest.raises(pytest.fail.Exception, match="no bats samples"):
        conftest._samples("bats")
    monkeypatch.setenv("FIELDSTATION_REQUIRE", "")
    with pytest.raises(pytest.skip.Exception, match="no bats samples"):
        conftest._samples("bats")
