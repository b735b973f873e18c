"""``fieldstation hub``: config errors name the key and the fix; with no config the hub runs on
SQLite in ~/.fieldstation-hub and HTTP on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fieldstation.hub.config import HubConfig, HubConfigError, load_hub_config

CLI = [sys.executable, "-m", "fieldstation.cli"]


def test_a_bad_hub_config_lists_every_key_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('databse = "x"\n[mqtt]\nport = "eighty"\ngroup = "a/b"\n')
    with pytest.raises(HubConfigError) as caught:
        load_hub_config(path)
    text = str(caught.value)
    assert "databse: unknown key: remove it or fix its spelling" in text
    assert "mqtt.port:" in text and "mqtt.group:" in text
    run = subprocess.run([*CLI, "hub", "run", str(path)], capture_output=True, text=True)
    assert run.returncode == 2 and "databse: unknown key" in run.stderr
    path.write_text('database = "mysql://x/y"\n')
    run = subprocess.run(
        [*CLI, "hub", "token", "add", "s1", "-c", str(path)], capture_output=True, text=True
    )
    assert run.returncode == 1 and "PostgreSQL" in run.stderr and "SQLite" in run.stderr


def test_defaults_are_sqlite_in_the_hub_home_and_http_on_loopback() -> None:
    config = HubConfig()
    assert config.database_url().endswith(".fieldstation-hub/hub.db")
    assert config.http.host == "127.0.0.1" and config.mqtt is None


@pytest.mark.slow
def test_hub_run_without_a_config_uses_sqlite_in_home(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path)}
    made = subprocess.run(
        [*CLI, "hub", "token", "add", "st-1"], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / ".fieldstation-hub" / "hub.db").exists()
    from fieldstation.testing.broker import free_port

    port = free_port()
    config = tmp_path / "hub.toml"  # the default, on a free port (8780 may be taken)
    config.write_text(f"[http]\nport = {port}\n")
    process = subprocess.Popen(
        [*CLI, "hub", "run", str(config)], env=env, stderr=subprocess.PIPE, text=True
    )
    seen = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "http ingest on http://127.0.0.1:" in line:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert seen.wait(60), "".join(lines)
    finally:
        process.terminate()
        assert process.wait(30) == 0, "".join(lines)


def test_hub_user_add_refuses_a_short_password_and_a_taken_name(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'home = "{tmp_path / "home"}"\n')

    def add(name: str, password: str, role: str = "viewer") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *CLI,
                "hub",
                "user",
                "add",
                name,
                "--role",
                role,
                "--password-stdin",
                "-c",
                str(config),
            ],
            input=password + "\n",
            capture_output=True,
            text=True,
        )

    short = add("ana", "short")
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    assert add("ana", "long enough password").returncode == 0
    taken = add("ana", "another long password", "admin")
    assert taken.returncode == 2 and "exists already" in taken.stderr
    role = add("bo", "long enough password", "root")
    assert role.returncode == 2 and "viewer, operator, admin" in role.stderr
