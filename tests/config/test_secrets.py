"""Secrets are references, revealed on use, never shown."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from fieldstation.config import parse_config, template_text
from fieldstation.config.secrets import Secret, SecretError


def _mqtt_station(password: str) -> dict[str, object]:
    data = tomllib.loads(template_text())
    data["outputs"] = [{"name": "b", "kind": "mqtt", "host": "h", "password": password}]
    return data


def test_env_secret_is_revealed_on_use_and_hidden_elsewhere(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FS_TEST_PASSWORD", "s3cr3t-value")
    config = parse_config(_mqtt_station("env:FS_TEST_PASSWORD"))
    secret = config.outputs[0].password  # type: ignore[attr-defined]
    assert secret.reveal() == "s3cr3t-value"
    logging.getLogger("t").warning("config %r %s", config, config.outputs[0])
    shown = repr(config) + str(config) + config.model_dump_json() + caplog.text
    assert "s3cr3t-value" not in shown
    assert "env:FS_TEST_PASSWORD" in config.model_dump_json()


def test_unset_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FS_NOT_SET", raising=False)
    with pytest.raises(SecretError, match="FS_NOT_SET is not set"):
        Secret("env:FS_NOT_SET").reveal()


def test_file_secret_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("tok-123\n")
    path.chmod(0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        Secret(f"file:{path}").reveal()
    path.chmod(0o600)
    assert Secret(f"file:{path}").reveal() == "tok-123"


def test_missing_file_secret(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="does not exist"):
        Secret(f"file:{tmp_path / 'nope'}").reveal()


@pytest.mark.parametrize("bad", ["hunter2", "vault:x", "env:", "file:  "])
def test_literal_secrets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="env:VARIABLE"):
        Secret(bad)
