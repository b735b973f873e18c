"""The MQTT output's command subscription against a real Mosquitto, without a station: the
persistent session keeps the commands published while the output is away (MQTT 5 and
3.1.1), and a command is acknowledged only once the inbox stored it (decision record 0140)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from fieldstation.clock import SystemClock
from fieldstation.outbox.mqtt import MqttMessenger, MqttOutputConfig
from fieldstation.testing.broker import MosquittoBroker, Subscriber

WAIT = 60.0


class Inbox:
    """Records what the output hands over; ``fail`` makes the next receive raise (a database
    that refuses the write)."""

    session_expiry = 3600.0

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.fail = 0
        self._changed = threading.Condition()

    def receive(self, raw: bytes, source: str) -> str:
        with self._changed:
            self.received.append((bytes(raw), source))
            self._changed.notify_all()
            if self.fail:
                self.fail -= 1
                raise OSError("database or disk is full")
        return "accepted"

    def wait_count(self, n: int) -> bool:
        deadline = time.monotonic() + WAIT
        with self._changed:
            while len(self.received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True


@pytest.fixture
def status(broker: MosquittoBroker) -> Iterator[Subscriber]:
    sub = Subscriber(broker.host, broker.port, "fieldstation/s1/status", client_id="test-status")
    assert sub.subscribed.wait(WAIT)
    yield sub
    sub.close()


def connected(messenger: MqttMessenger, status: Subscriber, times: int) -> None:
    """Wait for the ``times``-th retained ``online`` (published after the subscription)."""
    ok = status.wait_for(
        lambda s: s.payloads.get("fieldstation/s1/status", []).count("online") >= times, WAIT
    )
    assert ok and messenger.connected


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_commands_published_while_away_arrive_on_reconnect(
    broker: MosquittoBroker,
    status: Subscriber,
    protocol: str,
    publish_command: Callable[[str, bytes], None],
) -> None:
    config = MqttOutputConfig(
        name="hub", kind="mqtt", host=broker.host, port=broker.port, protocol=protocol
    )
    inbox = Inbox()

    def output() -> MqttMessenger:
        return MqttMessenger(config, station_id="s1", clock=SystemClock(), commands=inbox)

    first = output()
    connected(first, status, 1)
    publish_command("s1", b'{"n": 1}')
    assert inbox.wait_count(1)
    assert inbox.received[0] == (b'{"n": 1}', "mqtt:hub")
    first.close()

    publish_command("s1", b'{"n": 2}')  # the output is away: the broker keeps it in the session
    second = output()
    try:
        connected(second, status, 2)
        assert inbox.wait_count(2)
        assert [raw for raw, _ in inbox.received] == [b'{"n": 1}', b'{"n": 2}']
    finally:
        second.close()


def test_a_command_not_stored_is_not_acknowledged(
    broker: MosquittoBroker, status: Subscriber, publish_command: Callable[[str, bytes], None]
) -> None:
    """The inbox raised (the database refused the write): no PUBACK, so the broker delivers
    the command again on the next connection."""
    config = MqttOutputConfig(name="hub", kind="mqtt", host=broker.host, port=broker.port)
    inbox = Inbox()
    inbox.fail = 1
    first = MqttMessenger(config, station_id="s1", clock=SystemClock(), commands=inbox)
    connected(first, status, 1)
    publish_command("s1", b'{"n": 1}')
    assert inbox.wait_count(1)
    first.close()
    second = MqttMessenger(config, station_id="s1", clock=SystemClock(), commands=inbox)
    try:
        assert inbox.wait_count(2)  # delivered again: it was never acknowledged
        assert [raw for raw, _ in inbox.received] == [b'{"n": 1}', b'{"n": 1}']
    finally:
        second.close()


def test_without_commands_the_session_stays_clean(
    broker: MosquittoBroker, status: Subscriber, publish_command: Callable[[str, bytes], None]
) -> None:
    """A station without [commands] keeps a clean session and no subscription, as before."""
    config = MqttOutputConfig(name="hub", kind="mqtt", host=broker.host, port=broker.port)
    messenger = MqttMessenger(config, station_id="s1", clock=SystemClock())
    try:
        connected(messenger, status, 1)
        assert messenger.commands is None
    finally:
        messenger.close()
    publish_command("s1", b'{"n": 1}')  # nobody's session holds it
    inbox = Inbox()
    again = MqttMessenger(config, station_id="s1", clock=SystemClock(), commands=inbox)
    try:
        connected(again, status, 2)
        publish_command("s1", b'{"n": 2}')
        assert inbox.wait_count(1)
        assert [raw for raw, _ in inbox.received] == [b'{"n": 2}']
    finally:
        again.close()


def test_an_output_with_commands_false_takes_no_command(
    broker: MosquittoBroker, status: Subscriber, publish_command: Callable[[str, bytes], None]
) -> None:
    """``commands = false`` (a Home Assistant broker): no subscription to ``/cmd``, whatever
    is published there; the hub's output (the default, true) takes them."""
    ha = MqttOutputConfig(
        name="ha", kind="mqtt", host=broker.host, port=broker.port, client_id="ha", commands=False
    )
    inbox = Inbox()
    messenger = MqttMessenger(ha, station_id="s1", clock=SystemClock(), commands=inbox)
    hub = MqttOutputConfig(name="hub", kind="mqtt", host=broker.host, port=broker.port)
    hub_inbox = Inbox()
    taking = MqttMessenger(hub, station_id="s1", clock=SystemClock(), commands=hub_inbox)
    try:
        connected(messenger, status, 1)
        connected(taking, status, 2)
        assert messenger.commands is None
        publish_command("s1", b'{"n": 1}')
        assert hub_inbox.wait_count(1)  # delivered: had ha subscribed, it would have it too
        assert inbox.received == []
    finally:
        messenger.close()
        taking.close()
