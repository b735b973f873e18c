"""The web job's socket and the operators' password command."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from fieldstation.job import ConfigurationError
from fieldstation.web.job import bind


def test_a_port_in_use_is_transient_and_a_foreign_address_a_config_error() -> None:
    first = bind("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}") as caught:
            bind("127.0.0.1", port)
        assert not isinstance(caught.value, ConfigurationError)
    finally:
        first.close()
    with pytest.raises(ConfigurationError, match="web.host '192.0.2.1' is not an address"):
        bind("192.0.2.1", 8080)  # TEST-NET-1: no host has it
    with pytest.raises(ConfigurationError, match="web.host"):
        bind("no-such-host.invalid", 8080)
    v6 = bind("::1", 0) if socket.has_ipv6 else None
    if v6 is not None:
        assert v6.family == socket.AF_INET6
        v6.close()


def test_web_password_prints_an_argon2_hash_that_verifies() -> None:
    from argon2 import PasswordHasher

    from fieldstation.cli.app import app

    done = CliRunner().invoke(app, ["web-password"], input="correct horse\ncorrect horse\n")
    assert done.exit_code == 0, done.output
    hashed = done.output.strip().splitlines()[-1]
    assert hashed.startswith("$argon2id$")
    assert PasswordHasher().verify(hashed, "correct horse")
    short = CliRunner().invoke(app, ["web-password", "--password", "short"])
    assert short.exit_code != 0 and "8 characters" in short.output
