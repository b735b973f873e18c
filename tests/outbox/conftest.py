"""Fixtures of the outbox tests: station configs with given outputs, a real Mosquitto, a
private CA with a server certificate."""

from __future__ import annotations

import copy
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fieldstation.config import StationConfig, parse_config, template_text
from fieldstation.home import StationHome

MakeStation = Callable[..., StationConfig]


@pytest.fixture
def make_station(home: StationHome) -> MakeStation:
    """``make_station(outputs=[...], **outbox)``: the default station in ``home`` with these
    outputs and ``[outbox]`` values."""
    base = tomllib.loads(template_text())

    def make(outputs: list[dict[str, Any]], **outbox: Any) -> StationConfig:
        data = copy.deepcopy(base)
        data["station"]["home"] = str(home.root)
        data["outputs"] = outputs
        data["outbox"].update(outbox)
        return parse_config(data)

    return make


@dataclass(frozen=True)
class PrivateCA:
    """A throw-away CA and a server certificate it signed, for ``localhost`` and
    ``127.0.0.1`` (PEM files): ``ca`` is what a client must be told to trust."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is missing: apt-get install openssl"
    done = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


@pytest.fixture(scope="session")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    """A private CA made with the ``openssl`` command (EC P-256, valid 2 days) and a server
    certificate it signed; strict enough for Python 3.13's ``VERIFY_X509_STRICT``."""
    folder = tmp_path_factory.mktemp("private-ca")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    (folder / "ca.ext").write_text(
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n"
    )
    (folder / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl("req", "-new", *ec, "-keyout", "ca.key", "-out", "ca.csr", "-subj",
             "/CN=fieldstation test CA", cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-out", "ca.pem",
             "-days", "2", "-extfile", "ca.ext", cwd=folder)  # fmt: skip
    _openssl("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj",
             "/CN=localhost", cwd=folder)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
             cwd=folder)  # fmt: skip
    for key in ("ca.key", "server.key"):
        (folder / key).chmod(0o644)  # mosquitto may read as another user
    return PrivateCA(ca=folder / "ca.pem", cert=folder / "server.pem", key=folder / "server.key")
