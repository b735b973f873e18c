"""`fieldstation install` carries the station file's `env:` secrets to the service: an
EnvironmentFile (mode 0600, in the home's systemd/ folder) that the unit reads, or a refusal
naming the variable to export. Run as a real process, the unit written into a temporary
XDG_CONFIG_HOME, systemctl never called (--no-enable)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from fieldstation.config import template_text

TRICKY = "p\"a$s`w\\o rd #1 'x'"


def _station(tmp_path: Path) -> tuple[Path, Path]:
    data = tomllib.loads(template_text())
    home = tmp_path / "home"
    data["station"]["id"] = "pond-7"
    data["station"]["home"] = str(home)
    data["outputs"] = [
        {"name": "broker", "kind": "mqtt", "host": "localhost", "password": "env:FS_MQTT_PW"},
        {"name": "api", "kind": "http", "url": "https://x.example/in", "token": "env:FS_TOKEN"},
    ]
    path = tmp_path / "station.toml"
    path.write_text(tomli_w.dumps(data))
    return path, home


def _install(tmp_path: Path, config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("FS_MQTT_PW", "FS_TOKEN")}
    environ.update(env, XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    return subprocess.run(
        [sys.executable, "-m", "fieldstation.cli", "install", "-c", str(config), "--user"]
        + ["--no-enable"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def _shell_reads(path: Path, name: str) -> str:
    """What a shell (and so systemd, which reads EnvironmentFile's quoting the same way)
    takes from ``path`` for ``name``."""
    done = subprocess.run(
        ["bash", "-c", f'set -a; . "$1"; printf %s "${name}"', "bash", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    )
    return done.stdout


def test_install_writes_a_private_environment_file_the_unit_reads(tmp_path: Path) -> None:
    config, home = _station(tmp_path)
    done = _install(tmp_path, config, FS_MQTT_PW=TRICKY, FS_TOKEN="t0k3n")
    assert done.returncode == 0, done.stdout + done.stderr
    env_file = home / "systemd" / "fieldstation-pond-7.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert _shell_reads(env_file, "FS_MQTT_PW") == TRICKY
    assert _shell_reads(env_file, "FS_TOKEN") == "t0k3n"
    unit = tmp_path / "xdg" / "systemd" / "user" / "fieldstation-pond-7.service"
    text = unit.read_text()
    assert f"EnvironmentFile={env_file}" in text
    assert TRICKY not in text and "t0k3n" not in text  # the unit itself holds no secret
    assert TRICKY not in done.stdout + done.stderr
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        runtime_dir = tmp_path / "run"
        runtime_dir.mkdir(mode=0o700)
        verified = subprocess.run(
            [analyze, "verify", "--user", str(unit)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)},
        )
        problems = [
            line
            for line in (verified.stdout + verified.stderr).splitlines()
            if "EnvironmentFile" in line or "fieldstation-pond-7" in line
        ]
        assert problems == [], verified.stdout + verified.stderr


def test_install_refuses_naming_the_variable_to_export(tmp_path: Path) -> None:
    config, home = _station(tmp_path)
    done = _install(tmp_path, config, FS_TOKEN="t0k3n")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "outputs[0].password" in done.stderr
    assert "export FS_MQTT_PW=" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "xdg" / "systemd" / "user" / "fieldstation-pond-7.service").exists()
    assert not (home / "systemd" / "fieldstation-pond-7.env").exists()


def test_environment_file_is_0600_even_under_a_lax_umask(tmp_path: Path) -> None:
    from fieldstation.runtime.systemd import write_environment_file

    old = os.umask(0)
    try:
        path = write_environment_file(tmp_path / "s.env", {"A": "1"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ValueError, match="line break"):
        write_environment_file(tmp_path / "t.env", {"A": "x\ny"})
