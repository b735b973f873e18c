"""The page answers only requests whose Host header names it (Starlette's
TrustedHostMiddleware): a site whose DNS name is rebound to 127.0.0.1 (DNS rebinding) gets
400, not the station's page; ``[web] allowed_hosts`` adds names and addresses."""

from __future__ import annotations

from typing import Any

import pytest

from fieldstation.config import ConfigError
from fieldstation.config.web import WebConfig

from .conftest import WebStation


def status(web_station: WebStation, host: str, **web: Any) -> int:
    client = web_station.client(**web)
    return client.get("/", headers={"Host": host}).status_code


def test_a_loopback_page_refuses_a_rebound_host(web_station: WebStation) -> None:
    for host in ("127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.1"):
        assert status(web_station, host) == 200, host
    for host in ("attacker.example:8080", "127.0.0.1.attacker.example", "192.168.4.1:8080"):
        assert status(web_station, host) == 400, host
    client = web_station.client()
    refused = client.get("/detections.csv", headers={"Host": "attacker.example"})
    assert refused.status_code == 400 and "Invalid host header" in refused.text
    assert client.get("/static/style.css", headers={"Host": "attacker.example"}).status_code == (
        400
    )


def test_allowed_hosts_add_names_and_addresses(web_station: WebStation) -> None:
    allowed = ["hedge-07.local", "192.168.4.1", "*.example.org", "fe80::1"]
    for host in ("hedge-07.local:8080", "192.168.4.1", "a.example.org", "[fe80::1]:8080"):
        assert status(web_station, host, allowed_hosts=allowed) == 200, host
    assert status(web_station, "127.0.0.1:8080", allowed_hosts=allowed) == 200
    assert status(web_station, "example.org", allowed_hosts=allowed) == 400
    assert status(web_station, "anything", allowed_hosts=["*"]) == 200


def test_the_configured_host_and_a_wildcard_bind() -> None:
    token = "env:FIELDSTATION_WEB_TOKEN"
    remote = WebConfig(host="192.168.4.1", token=token)
    assert remote.trusted_hosts == ["localhost", "127.0.0.1", "[::1]", "192.168.4.1"]
    assert WebConfig(host="::1").trusted_hosts == ["localhost", "127.0.0.1", "[::1]"]
    everywhere = WebConfig(host="0.0.0.0", token=token)
    assert everywhere.trusted_hosts == ["*"]  # no list given: a login guards it, any host
    listed = WebConfig(host="0.0.0.0", token=token, allowed_hosts=["Hedge-07.local"])
    assert listed.trusted_hosts == ["localhost", "127.0.0.1", "[::1]", "hedge-07.local"]


@pytest.mark.parametrize(
    "entry", ["hedge-07.local:8080", "http://hedge-07.local", "*bad.example", "a b", ""]
)
def test_a_bad_allowed_host_is_refused_naming_the_key(web_station: WebStation, entry: str) -> None:
    with pytest.raises(ConfigError) as caught:
        web_station.client(allowed_hosts=["ok.example", entry])
    text = str(caught.value)
    assert "web.allowed_hosts" in text and "without scheme or port" in text
