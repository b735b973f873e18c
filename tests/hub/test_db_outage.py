"""Fault: the fleet database goes away under a running MQTT ingest. The batch is kept
unacknowledged and retried; a hub SIGKILLed during the outage loses nothing either (the broker
still holds what it never acknowledged)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from fieldstation.hub.db import open_hub_database
from fieldstation.hub.models import IngestedMessage
from fieldstation.testing.broker import MosquittoBroker

from .test_mqtt_ingest import HubProcess, Publisher, envelopes, hub_config, wait_until


def set_connections(url: str, allowed: bool) -> None:
    """Let connections into the database of ``url`` or refuse them (and end its sessions)."""
    name = url.rsplit("/", 1)[1]
    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(
                text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
            )
            if not allowed:
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
    finally:
        admin.dispose()


@pytest.mark.slow
def test_a_database_outage_acknowledges_nothing_and_loses_nothing(
    tmp_path: Path, broker: MosquittoBroker, postgres_url: str
) -> None:
    messages = list(envelopes(300))
    db = open_hub_database(postgres_url)

    def stored() -> list[str]:
        with db.session() as s:
            return list(s.scalars(select(IngestedMessage.message_id)))

    hub = HubProcess(hub_config(tmp_path, "hub-a", postgres_url, broker))
    publisher = Publisher(broker)
    try:
        hub.wait_ready()
        for _, topic, payload in messages[:100]:
            publisher.publish(topic, payload)
        wait_until(lambda: len(stored()) == 100, 60, "first 100 stored")
        db.dispose()
        set_connections(postgres_url, False)  # the database goes away (its sessions are cut)
        for _, topic, payload in messages[100:]:
            info = publisher.publish(topic, payload)
        info.wait_for_publish(30)
        wait_until(
            lambda: any("fleet database refused a batch" in line for line in hub.lines),
            60,
            "the hub to report the outage",
        )
        hub.kill()  # SIGKILL during the outage: whatever it held was never acknowledged
        set_connections(postgres_url, True)
        hub = HubProcess(hub_config(tmp_path, "hub-a", postgres_url, broker))
        hub.wait_ready()
        wait_until(lambda: len(stored()) >= 300, 90, "all 300 stored")
        ids = stored()
        assert len(ids) == len(set(ids)) == 300
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(IngestedMessage)) == 300
    finally:
        set_connections(postgres_url, True)
        publisher.close()
        hub.stop()
        db.dispose()
