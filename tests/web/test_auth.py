"""Who may see and do what on the web page: loopback reads, logins (argon2 password or token),
the login gate beyond loopback, CSRF on every POST, and a wrong ``[web]`` section."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from tests.web.conftest import WebStation, csrf_of

from fieldstation.config import ConfigError, parse_config
from fieldstation.web.auth import hash_password, session_key

PASSWORD = "dawn-chorus-42"


@pytest.fixture
def password_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FS_WEB_HASH", hash_password(PASSWORD))
    return "env:FS_WEB_HASH"


def login(client, secret: str = PASSWORD, next_: str = "/"):
    form = client.get("/login").text
    return client.post(
        "/login",
        data={"csrf": csrf_of(form), "secret": secret, "next": next_},
        follow_redirects=False,
    )


def test_a_non_loopback_address_without_login_is_a_config_error(web_station: WebStation) -> None:
    data = copy.deepcopy(web_station.config.model_dump(mode="json", exclude_unset=True))
    data["web"] = {"enabled": True, "host": "0.0.0.0"}
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert "web.host" in str(caught.value) and "web.password_hash or web.token" in str(caught.value)
    data["web"] = {"host": "127.0.0.1", "port": 70000}
    with pytest.raises(ConfigError, match="port"):
        parse_config(data)
    data["web"] = {"host": "::1"}
    assert parse_config(data).web.host == "::1"
    data["web"] = {"host": "0.0.0.0", "token": "abc"}  # a literal, not a reference
    with pytest.raises(ConfigError, match="env:"):
        parse_config(data)


def test_beyond_loopback_every_page_needs_a_login(web_station: WebStation, password_env) -> None:
    client = web_station.client(host="0.0.0.0", password_hash=password_env)
    page = client.get(
        "/recordings?sensor=mic", headers={"Accept": "text/html"}, follow_redirects=False
    )
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Frecordings%3Fsensor%3Dmic"
    rid = web_station.ids["files"][0]
    for path in (
        f"/recordings/{rid}/audio",
        "/detections.csv",
        f"/recordings/{rid}/spectrogram.png",
    ):
        assert client.get(path).status_code == 401, path
    assert client.get("/static/style.css").status_code == 200
    assert login(client, "wrong password").status_code == 401
    ok = login(client, next_="/recordings?sensor=mic")
    assert ok.status_code == 303 and ok.headers["location"] == "/recordings?sensor=mic"
    assert client.get(f"/recordings/{rid}/audio").status_code == 200


def test_login_with_a_token_from_a_private_file(web_station: WebStation, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("a-long-random-token-123\n")
    os.chmod(secret, 0o600)
    client = web_station.client(host="0.0.0.0", token=f"file:{secret}")
    assert login(client, "a-long-random-token-12").status_code == 401
    assert login(client, "a-long-random-token-123").status_code == 303
    assert client.get("/").status_code == 200


def test_operators_start_and_stop_jobs_with_the_csrf_token(
    web_station: WebStation, password_env
) -> None:
    client = web_station.client(password_hash=password_env)
    anonymous = client.get("/").text
    assert "/jobs/" not in anonymous
    token = csrf_of(anonymous)  # the session's token, but no login
    refused = client.post("/jobs/processor%3Aenergy/start", data={"csrf": token})
    assert refused.status_code == 401  # loopback readers may look, not act
    assert login(client).status_code == 303
    status = client.get("/").text
    assert 'action="/jobs/processor%3Aenergy/start"' in status  # failed -> a start button
    assert 'action="/jobs/recorder%3Amic/stop"' in status
    token = csrf_of(status)
    assert client.post("/jobs/recorder%3Amic/stop", data={}).status_code == 403
    assert client.post("/jobs/recorder%3Amic/stop", data={"csrf": "forged"}).status_code == 403
    assert web_station.control.calls == []
    done = client.post("/jobs/recorder%3Amic/stop", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303
    assert client.post("/jobs/processor%3Aenergy/start", data={"csrf": token}).status_code == 200
    assert web_station.control.calls == [("stop", "recorder:mic"), ("start", "processor:energy")]
    unknown = client.post("/jobs/nope/start", data={"csrf": token})
    assert unknown.status_code == 404 and "no job named" in unknown.text


def test_a_read_only_page_has_no_buttons_even_for_operators(
    web_station: WebStation, password_env
) -> None:
    client = web_station.client(password_hash=password_env, operators_control_jobs=False)
    assert login(client).status_code == 303
    status = client.get("/").text
    assert "/jobs/" not in status
    refused = client.post("/jobs/recorder%3Amic/stop", data={"csrf": csrf_of(status)})
    assert refused.status_code == 403 and web_station.control.calls == []


def test_login_and_logout_forms_need_the_csrf_token(web_station: WebStation, password_env) -> None:
    client = web_station.client(password_hash=password_env)
    client.get("/login")
    forged = client.post("/login", data={"secret": PASSWORD}, follow_redirects=False)
    assert forged.status_code == 403
    assert login(client, next_="//evil.example/").headers["location"] == "/"
    page = client.get("/").text
    assert client.post("/logout", data={}).status_code == 403
    assert (
        client.post("/logout", data={"csrf": csrf_of(page)}, follow_redirects=False).status_code
        == 303
    )
    assert "/jobs/" not in client.get("/").text


def test_without_a_password_or_token_nobody_can_log_in(web_station: WebStation) -> None:
    client = web_station.client()
    page = client.get("/login").text
    assert "No operator login is set up" in page and 'id="login"' not in page
    refused = client.post("/login", data={"csrf": csrf_of(page), "secret": "anything"})
    assert refused.status_code == 401


def test_the_session_key_is_private_and_kept(tmp_path: Path) -> None:
    first = session_key(tmp_path)
    assert (tmp_path / "web.key").stat().st_mode & 0o777 == 0o600
    assert session_key(tmp_path) == first and len(first) == 64
