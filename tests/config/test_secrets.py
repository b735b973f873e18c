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


def test_validate_warns_about_secrets_it_cannot_resolve_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tomli_w
    from typer.testing import CliRunner

    from fieldstation.cli.app import app

    monkeypatch.delenv("FS_UNSET_PW", raising=False)
    data = _mqtt_station("env:FS_UNSET_PW")
    data["outputs"].append(  # type: ignore[attr-defined]
        {"name": "web", "kind": "http", "url": "http://h/", "token": f"file:{tmp_path / 'no'}"}
    )
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    done = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert done.exit_code == 0, done.output  # the station may run where they exist
    assert "outputs[0].password: environment variable FS_UNSET_PW is not set" in done.output
    assert f"outputs[1].token: secret file {tmp_path / 'no'} does not exist" in done.output
    monkeypatch.setenv("FS_UNSET_PW", "x")
    assert "FS_UNSET_PW" not in CliRunner().invoke(app, ["validate", "-c", str(path)]).output
