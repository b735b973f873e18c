"""Alerts end to end: rows in the station database -> the alerts job -> the outbox -> Apprise
-> a real local endpoint (an HTTP server taking Apprise's JSON notifications; an SMTP server)."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fieldstation.alerts.job import AlertJob
from fieldstation.clock import VirtualClock
from fieldstation.home import StationHome
from fieldstation.messages import AlertBody, parse_message
from fieldstation.outbox.delivery import DeliveryLoop
from fieldstation.store import Database
from fieldstation.store.models import Delivery, Message

from .conftest import JsonHook, Stored, station_config

OWLS = {"name": "owls", "on": "detection", "labels": ["Strix*"], "min_score": 0.5}


def apprise_output(*urls: str) -> dict[str, Any]:
    return {"name": "notify", "kind": "apprise", "urls": list(urls)}


def deliver(config: Any, db: Database, clock: VirtualClock, home: StationHome) -> int:
    with DeliveryLoop(config, db, clock, home) as loop:
        return loop.run_once()


def test_detection_alert_reaches_a_json_endpoint_with_its_thumbnail(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, hook: JsonHook
) -> None:
    config = station_config(home, outputs=[apprise_output(hook.url)], alerts=[OWLS])
    job = AlertJob(config, db, clock, home.root)
    assert job.run_once() == 0  # first pass: starts at the end of the (empty) data
    thumb = home.root / "thumbnails" / "cam" / "2026-06-01" / "chunk.motion.jpg"
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"\xff\xd8\xff\xe0 a small jpeg \xff\xd9")
    stored.detection("Strix aluco_Tawny Owl", 0.87, thumbnail=str(thumb.relative_to(home.root)))
    stored.detection("Strix aluco_Tawny Owl", 0.3)  # under min_score
    stored.detection("Turdus merula_Eurasian Blackbird", 0.99)  # another label
    assert job.run_once() == 1
    with db.session() as session:
        [message] = session.scalars(select(Message).where(Message.kind == "alert"))
        assert message.priority == 0
        body = parse_message(message.payload).body
    assert isinstance(body, AlertBody) and body.rule == "owls"

    assert deliver(config, db, clock, home) == 1
    [note] = hook.received
    assert note["title"] == "Strix aluco_Tawny Owl (87%) at Hedge 7"
    assert note["message"].startswith("Detected: Strix aluco_Tawny Owl, score 0.87, at 2026-06-01")
    assert "01:00:00 BST on sensor mic (rule owls)" in note["message"]
    [attachment] = note["attachments"]
    assert base64.b64decode(attachment["base64"]) == thumb.read_bytes()
    assert job.run_once() == 0  # nothing new, nothing twice


def test_alert_written_while_offline_arrives_when_the_endpoint_is_back(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, hook: JsonHook
) -> None:
    rule = {"name": "broken", "on": "event", "events": ["job_failed"]}
    config = station_config(home, outputs=[apprise_output(hook.url)], alerts=[rule])
    job = AlertJob(config, db, clock, home.root)
    job.run_once()
    hook.stop()  # the network is gone
    stored.event("job_failed", message="recorder:mic failed 5 times; giving up")
    assert job.run_once() == 1
    assert deliver(config, db, clock, home) == 0
    with db.session() as session:
        [delivery] = session.scalars(select(Delivery).join(Message).where(Message.kind == "alert"))
        assert delivery.state == "pending" and delivery.attempts == 1
        assert "apprise" in (delivery.last_error or "")
        due = delivery.next_attempt_at
    hook.start()  # back, on the same port
    clock.advance((due - clock.now()).total_seconds())
    assert deliver(config, db, clock, home) == 1
    [note] = hook.received
    assert note["title"] == "job failed at Hedge 7"
    assert note["message"].startswith("recorder:mic failed 5 times; giving up")
    assert note["type"] == "failure"
    assert deliver(config, db, clock, home) == 0  # sent once


def test_cooldown_and_quiet_hours_on_the_job_clock(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, hook: JsonHook
) -> None:
    rule = {**OWLS, "cooldown": "30m", "quiet_hours": "02:00-05:00"}  # 01:00-04:00 UTC
    config = station_config(home, outputs=[apprise_output(hook.url)], alerts=[rule])
    job = AlertJob(config, db, clock, home.root)
    job.run_once()
    stored.detection("Strix aluco_Tawny Owl")
    assert job.run_once() == 1  # 00:00 UTC = 01:00 local
    clock.advance(20 * 60)
    stored.detection("Strix aluco_Tawny Owl")
    assert job.run_once() == 0  # in the cooldown
    clock.advance(50 * 60)  # 01:10 UTC = 02:10 local: quiet
    stored.detection("Strix aluco_Tawny Owl")
    assert job.run_once() == 0
    clock.advance(3 * 3600)  # 05:10 local
    stored.detection("Strix aluco_Tawny Owl")
    assert job.run_once() == 1
    assert deliver(config, db, clock, home) == 2
    assert len(hook.received) == 2


def test_first_ever_knows_the_history_before_the_job_started(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, hook: JsonHook
) -> None:
    rule = {"name": "new", "on": "detection", "condition": "first_ever"}
    config = station_config(home, outputs=[apprise_output(hook.url)], alerts=[rule])
    stored.detection("owl")  # before alerts were configured
    job = AlertJob(config, db, clock, home.root)
    job.run_once()
    clock.advance(60)
    stored.detection("owl")
    stored.detection("wren")
    assert job.run_once() == 1
    with db.session() as session:
        [payload] = session.scalars(select(Message.payload).where(Message.kind == "alert"))
    assert json.loads(payload)["body"]["data"]["label"] == "wren"


def test_a_repeated_pass_writes_no_second_message(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, hook: JsonHook
) -> None:
    config = station_config(home, outputs=[apprise_output(hook.url)], alerts=[OWLS])
    job = AlertJob(config, db, clock, home.root)
    job.run_once()
    saved = job.path.read_bytes()
    stored.detection("Strix aluco_Tawny Owl")
    assert job.run_once() == 1
    job.path.write_bytes(saved)  # as if the pass crashed after its commit, before its save
    assert job.run_once() == 0
    with db.session() as session:
        assert len(session.scalars(select(Message).where(Message.kind == "alert")).all()) == 1


def test_a_title_longer_than_the_schema_takes_is_cut_not_refused(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, hook: JsonHook
) -> None:
    config = station_config(home, outputs=[apprise_output(hook.url)], alerts=[OWLS])
    job = AlertJob(config, db, clock, home.root)
    job.run_once()
    stored.detection("Strix " + "x" * 300)  # a 306-character label
    assert job.run_once() == 1
    stored.detection("Strix aluco_Tawny Owl")
    assert job.run_once() == 1  # the pass after it still works
    with db.session() as session:
        alerts = session.scalars(select(Message).where(Message.kind == "alert")).all()
        titles = [parse_message(m.payload).body.title for m in alerts]  # type: ignore[attr-defined]
    assert len(titles[0]) == 250 and titles[0].endswith("…")


def test_reading_alert_over_smtp(
    home: StationHome, db: Database, clock: VirtualClock, stored: Stored, smtp: Any
) -> None:
    rule = {"name": "hot", "on": "reading", "quantity": "temperature", "above": 35}
    url = f"mailto://127.0.0.1:{smtp.port}?from=station@example.org&to=warden@example.org"
    config = station_config(home, outputs=[apprise_output(url)], alerts=[rule])
    job = AlertJob(config, db, clock, home.root)
    job.run_once()
    stored.reading("temperature", 36.5)
    assert job.run_once() == 1
    assert deliver(config, db, clock, home) == 1
    [mail] = smtp.messages
    assert mail["Subject"] == "temperature above 35 Cel at Hedge 7"
    assert "warden@example.org" in mail["To"]
    text = mail.get_payload(decode=True) if not mail.is_multipart() else None
    if text is None:
        text = next(p for p in mail.walk() if p.get_content_type() == "text/plain").get_payload(
            decode=True
        )
    assert b"bme measured temperature = 36.5 Cel" in text


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a free loopback port; :attr:`messages` as parsed."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        sink = self
        self.messages: list[EmailMessage] = []

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                sink.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        with socket.socket() as probe:  # the controller's ready check cannot use port 0
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.controller.start()
    yield sink
    sink.controller.stop()


def test_apprise_output_config_errors(home: StationHome) -> None:
    from fieldstation.config import ConfigError

    with pytest.raises(ConfigError, match="at least one of 'urls' or 'secret_urls'"):
        station_config(home, outputs=[{"name": "n", "kind": "apprise"}])
    with pytest.raises(ConfigError, match="env:VARIABLE"):
        station_config(
            home, outputs=[{"name": "n", "kind": "apprise", "secret_urls": ["tgram://x/y"]}]
        )


def test_unknown_apprise_url_makes_the_output_unavailable(
    home: StationHome, tmp_path: Path
) -> None:
    from fieldstation.outbox.apprise import AppriseMessenger

    config = station_config(home, outputs=[apprise_output("nosuchservice://x")])
    messenger = AppriseMessenger(config.outputs[0], home=home.root)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Apprise does not understand nosuchservice://x"):
        messenger._apprise()
